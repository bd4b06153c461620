"""AWS event shapes built from source records: the Lambda event a function receives."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from esm.model import Record


def kinesis_entry(
    *,
    shard_id: str,
    sequence_number: str,
    partition_key: str,
    data_b64: str,
    arrival: float,
    stream_arn: str,
    region: str,
    identity_arn: str,
) -> dict[str, Any]:
    """One element of a Kinesis event's "Records", field for field as Lambda sends it."""
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": sequence_number,
            "data": data_b64,
            # Epoch seconds as a JSON number, to the millisecond, as Lambda writes it.
            "approximateArrivalTimestamp": round(arrival, 3),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": identity_arn,
        "awsRegion": region,
        "eventSourceARN": stream_arn,
    }


def create_record(
    *, sequence: str, order: int, key: str, arrival: float, entry: dict[str, Any]
) -> Record:
    """A `Record` carrying `entry`, sized exactly for the 6 MB payload limit."""
    return Record(
        sequence=sequence,
        order=order,
        key=key,
        arrival=arrival,
        size=len(orjson.dumps(entry)) + 1,
        entry=entry,
    )


def encode_event(records: Sequence[Record]) -> bytes:
    """The JSON event for a batch: `{"Records": [...]}` in record order.

    Encoding the entries again is cheaper than keeping each record's bytes and joining them:
    orjson writes a 1,000-record event into one buffer faster than bytes.join copies it.
    """
    return orjson.dumps({"Records": [r.entry for r in records]})
