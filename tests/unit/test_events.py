"""The Kinesis event shape, field by field, as Lambda builds it."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson

from esm.events import encode_event
from esm.sources.kinesis import KinesisRecordFactory

STREAM_ARN = "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream"
SEQ = "49590338271490256608559692538361571095921575989136588898"


def _factory() -> KinesisRecordFactory:
    return KinesisRecordFactory(
        stream_arn=STREAM_ARN,
        region="us-east-2",
        identity_arn="arn:aws:iam::123456789012:role/lambda-role",
    )


def test_kinesis_record_has_every_field_of_the_lambda_event() -> None:
    raw = {
        "SequenceNumber": SEQ,
        "ApproximateArrivalTimestamp": datetime.fromtimestamp(1545084650.987654, UTC),
        "Data": b"Hello, this is a test.",
        "PartitionKey": "1",
    }
    record = _factory().from_api("shardId-000000000006", raw)
    assert record.entry == {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "1",
            "sequenceNumber": SEQ,
            "data": "SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg==",
            "approximateArrivalTimestamp": 1545084650.988,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"shardId-000000000006:{SEQ}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-role",
        "awsRegion": "us-east-2",
        "eventSourceARN": STREAM_ARN,
    }
    assert record.sequence == SEQ
    assert record.order == int(SEQ)
    assert record.key == "1"
    assert abs(record.arrival - 1545084650.987654) < 1e-6


def test_arrival_timestamp_is_a_json_number_in_seconds_with_milliseconds() -> None:
    record = _factory().create("shardId-000000000000", "1", "k", "", 1700000000.1234)
    encoded = encode_event([record])
    assert b'"approximateArrivalTimestamp":1700000000.123' in encoded


def test_event_wraps_records_in_order_and_sizes_add_up() -> None:
    factory = _factory()
    records = [
        factory.create(
            "shardId-000000000000", str(n), f"k{n}", base64.b64encode(b"x" * n).decode(), 1.0
        )
        for n in range(1, 6)
    ]
    encoded = encode_event(records)
    decoded = orjson.loads(encoded)
    assert list(decoded) == ["Records"]
    assert [r["kinesis"]["sequenceNumber"] for r in decoded["Records"]] == ["1", "2", "3", "4", "5"]
    # Each record's size is its encoding plus a separator: the batch's payload size is exact
    # to within the one comma that the last record does not need.
    assert len(encoded) == len(b'{"Records":[]}') + sum(r.size for r in records) - 1
