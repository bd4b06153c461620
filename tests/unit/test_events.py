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
    assert isinstance(record.order, int)  # the read order: a counter, not the sequence
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


class _Protocol:
    def __init__(self, protocol: str) -> None:
        self.service_model = type("ServiceModel", (), {"resolved_protocol": protocol})()


def _wire_answer(records: list[dict[str, object]]) -> bytes:
    return orjson.dumps({"Records": records, "NextShardIterator": "it", "MillisBehindLatest": 0})


def test_wire_form_gives_the_same_records_as_botocore_parsing() -> None:
    from esm.aws.wire import keep_wire_records

    data = b"\x00\x01binary and text \xe2\x82\xac"
    wire = {
        "SequenceNumber": SEQ,
        "ApproximateArrivalTimestamp": 1545084650.987,
        "Data": base64.b64encode(data).decode(),
        "PartitionKey": "p",
    }
    response = {"status_code": 200, "body": _wire_answer([wire]), "headers": {}}
    customized: dict[str, object] = {}
    keep_wire_records(_Protocol("json"), response, customized)
    assert response["body"] == b"{}", "botocore is left nothing to parse"
    assert customized["NextShardIterator"] == "it"
    records = customized["Records"]
    assert isinstance(records, list)
    factory = _factory()
    from_wire = factory.from_wire("shardId-000000000001", records[0])
    from_api = factory.from_api(
        "shardId-000000000001",
        {
            "SequenceNumber": SEQ,
            "ApproximateArrivalTimestamp": datetime.fromtimestamp(1545084650.987, UTC),
            "Data": data,
            "PartitionKey": "p",
        },
    )
    assert from_wire.entry == from_api.entry
    assert from_wire.size == from_api.size


def test_wire_form_leaves_errors_and_other_protocols_to_botocore() -> None:
    from esm.aws.wire import keep_wire_records

    body = _wire_answer([])
    for status, protocol in ((400, "json"), (500, "json"), (200, "smithy-rpc-v2-cbor")):
        response = {"status_code": status, "body": body, "headers": {}}
        customized: dict[str, object] = {}
        keep_wire_records(_Protocol(protocol), response, customized)
        assert response["body"] == body
        assert customized == {}
    response = {"status_code": 200, "body": b"not json", "headers": {}}
    customized = {}
    keep_wire_records(_Protocol("json"), response, customized)
    assert response["body"] == b"not json"
    assert customized == {}
