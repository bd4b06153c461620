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


def entry_size(entry: dict[str, Any]) -> int:
    """Bytes an entry adds to the encoded event: its JSON plus the comma that separates it."""
    return len(orjson.dumps(entry)) + 1


def encode_event(records: Sequence[Record]) -> bytes:
    """The JSON event for a batch: `{"Records": [...]}` in record order."""
    return orjson.dumps({"Records": [r.entry for r in records]})
