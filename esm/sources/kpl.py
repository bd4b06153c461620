"""KPL de-aggregation (a mapping's `kpl_deaggregate: true`): records that the Kinesis
Producer Library packed into one Kinesis record are split back into their user records,
with the aws-kinesis-agg package's message format, before filters and lanes see them.

A container is `MAGIC | protobuf AggregatedRecord | MD5(protobuf)`. Each user record
becomes one event record with its own partition key, so ParallelizationFactor spreads the
keys as it would spread records written one by one, and with its sub-sequence number, so a
checkpoint can stop inside a container: `SEQUENCE:SUB` says every user record up to SUB of
container SEQUENCE is settled (KCL's checkpointSubSequenceNumber), and reading resumes at
the container, skipping them. A record that is not a container passes through unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

__all__ = [
    "NotAContainer",
    "UserRecord",
    "deaggregate",
    "user_sequence",
]

_MAGIC: Final = b"\xf3\x89\x9a\xc2"
_DIGEST: Final = 16


class NotAContainer(ValueError):
    """Data that starts like a KPL container but does not parse as one; it is delivered as
    the plain record it then is."""


@dataclass(frozen=True, slots=True)
class UserRecord:
    partition_key: str
    explicit_hash_key: str | None
    data: bytes
    sub_sequence: int


def deaggregate(data: bytes) -> list[UserRecord] | None:
    """The user records of a KPL container; None for data that is not one.

    :raises NotAContainer: it has the magic prefix and a matching digest but its records
        are broken (an index out of its key tables).
    """
    if len(data) <= len(_MAGIC) + _DIGEST or not data.startswith(_MAGIC):
        return None
    body, digest = data[len(_MAGIC) : -_DIGEST], data[-_DIGEST:]
    if hashlib.md5(body, usedforsecurity=False).digest() != digest:
        return None
    # Imported here: mappings that do not de-aggregate never load protobuf.
    import google.protobuf.message
    from aws_kinesis_agg import messages_pb2

    message = messages_pb2.AggregatedRecord()
    try:
        message.ParseFromString(body)
    except google.protobuf.message.DecodeError:
        return None
    keys, hash_keys = list(message.partition_key_table), list(message.explicit_hash_key_table)
    users: list[UserRecord] = []
    for index, record in enumerate(message.records):
        if record.partition_key_index >= len(keys):
            raise NotAContainer(
                f"user record {index} names partition key {record.partition_key_index} of "
                f"{len(keys)}"
            )
        hash_key = None
        if record.HasField("explicit_hash_key_index"):
            if record.explicit_hash_key_index >= len(hash_keys):
                raise NotAContainer(
                    f"user record {index} names hash key {record.explicit_hash_key_index} of "
                    f"{len(hash_keys)}"
                )
            hash_key = hash_keys[record.explicit_hash_key_index]
        users.append(UserRecord(keys[record.partition_key_index], hash_key, record.data, index))
    return users


def user_sequence(container: str, sub_sequence: int) -> str:
    """A user record's position: `SEQUENCE:SUB`."""
    return f"{container}:{sub_sequence}"
