"""The SQS event shape, field by field, as Lambda builds it from ReceiveMessage messages."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import orjson
import pytest

from esm.events import (
    encode_event,
    md5_of_body,
    md5_of_message_attributes,
    sqs_entry,
    sqs_record,
)

QUEUE_ARN = "arn:aws:sqs:us-east-2:123456789012:my-queue"
FIFO_ARN = "arn:aws:sqs:us-east-2:123456789012:fifo.fifo"
PNG = b"\x89PNG\r\n\x1a\n\x00\xff"


def _standard_message() -> dict[str, Any]:
    """A ReceiveMessage message as botocore returns it (All attributes requested)."""
    attributes: dict[str, dict[str, Any]] = {
        "Author": {"StringValue": "Dev Team", "DataType": "String"},
        "WeeksOn": {"StringValue": "6", "DataType": "Number"},
        "Ratio": {"StringValue": "0.25", "DataType": "Number.float"},
        "Logo": {"BinaryValue": PNG, "DataType": "Binary.png"},
    }
    return {
        "MessageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
        "ReceiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
        "MD5OfBody": md5_of_body("Test message."),
        "Body": "Test message.",
        # SQS and its emulators return these in no particular order.
        "Attributes": {
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1545082649185",
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1545082649183",
        },
        "MD5OfMessageAttributes": md5_of_message_attributes(attributes),
        "MessageAttributes": attributes,
    }


def test_standard_message_entry_has_every_field_of_the_lambda_event() -> None:
    message = _standard_message()
    entry = sqs_entry(message, queue_arn=QUEUE_ARN, region="us-east-2")
    assert entry == {
        "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
        "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
        "body": "Test message.",
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1545082649183",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1545082649185",
        },
        "messageAttributes": {
            "Author": {
                "stringValue": "Dev Team",
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "String",
            },
            "WeeksOn": {
                "stringValue": "6",
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "Number",
            },
            "Ratio": {
                "stringValue": "0.25",
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "Number.float",
            },
            "Logo": {
                "binaryValue": base64.b64encode(PNG).decode(),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "Binary.png",
            },
        },
        "md5OfMessageAttributes": message["MD5OfMessageAttributes"],
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": "us-east-2",
    }


def test_keys_come_in_the_order_lambda_writes_them() -> None:
    entry = sqs_entry(_standard_message(), queue_arn=QUEUE_ARN, region="us-east-2")
    assert list(entry) == [
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfMessageAttributes",
        "md5OfBody",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    ]
    assert list(entry["attributes"]) == [
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    ]
    # Message attributes keep the order SQS returned them in.
    assert list(entry["messageAttributes"]) == ["Author", "WeeksOn", "Ratio", "Logo"]
    assert list(entry["messageAttributes"]["Logo"]) == [
        "binaryValue",
        "stringListValues",
        "binaryListValues",
        "dataType",
    ]


def test_fifo_message_matches_the_recorded_fifo_shape_byte_for_byte() -> None:
    message = {
        "MessageId": "11d6ee51-4cc7-4302-9e22-7cd8afdaadf5",
        "ReceiptHandle": "AQEBBX8nesZEXmkhsmZeyIE8iQAMig7qw...",
        "MD5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "Body": "Test message.",
        "Attributes": {
            "SenderId": "AIDAIO23YVJENQZJOL4VO",
            "ApproximateFirstReceiveTimestamp": "1573251510774",
            "MessageDeduplicationId": "1",
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1573251510774",
            "MessageGroupId": "1",
            "SequenceNumber": "18849496460467696128",
        },
    }
    entry = sqs_entry(message, queue_arn=FIFO_ARN, region="us-east-2")
    # The "Example Amazon SQS message event (FIFO queue)" record of the Lambda guide, plus
    # the md5OfMessageAttributes null that events recorded from AWS carry (the guide's
    # sample leaves the key out).
    sample = {
        "messageId": "11d6ee51-4cc7-4302-9e22-7cd8afdaadf5",
        "receiptHandle": "AQEBBX8nesZEXmkhsmZeyIE8iQAMig7qw...",
        "body": "Test message.",
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1573251510774",
            "SequenceNumber": "18849496460467696128",
            "MessageGroupId": "1",
            "SenderId": "AIDAIO23YVJENQZJOL4VO",
            "MessageDeduplicationId": "1",
            "ApproximateFirstReceiveTimestamp": "1573251510774",
        },
        "messageAttributes": {},
        "md5OfMessageAttributes": None,
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": FIFO_ARN,
        "awsRegion": "us-east-2",
    }
    assert orjson.dumps(entry) == orjson.dumps(sample)


def test_message_without_attributes_has_empty_message_attributes_and_a_null_digest() -> None:
    message = _standard_message()
    del message["MessageAttributes"], message["MD5OfMessageAttributes"]
    entry = sqs_entry(message, queue_arn=QUEUE_ARN, region="us-east-2")
    assert entry["messageAttributes"] == {}
    # AWS always sends the key: JSON null when the message has no attributes, before md5OfBody.
    assert entry["md5OfMessageAttributes"] is None
    keys = list(entry)
    assert keys.index("md5OfMessageAttributes") == keys.index("md5OfBody") - 1
    assert b'"md5OfMessageAttributes":null' in orjson.dumps(entry)
    # An empty map from a client is the same as none.
    message["MessageAttributes"] = {}
    assert sqs_entry(message, queue_arn=QUEUE_ARN, region="r")["md5OfMessageAttributes"] is None


def test_every_system_attribute_is_kept_as_a_string_in_lambda_order() -> None:
    message = _standard_message()
    message["Attributes"] = {
        "SenderId": "AROAEXAMPLE:producer",
        "ApproximateReceiveCount": 3,
        "SentTimestamp": 1696924828536,
        "ApproximateFirstReceiveTimestamp": "1696924828540",
        "AWSTraceHeader": "Root=1-65250495-30b227ef4ea882e709192510;Sampled=0",
        "DeadLetterQueueSourceArn": "arn:aws:sqs:us-east-2:123456789012:source",
        "SomethingNew": True,
    }
    attributes = sqs_entry(message, queue_arn=QUEUE_ARN, region="us-east-2")["attributes"]
    assert attributes == {
        "DeadLetterQueueSourceArn": "arn:aws:sqs:us-east-2:123456789012:source",
        "ApproximateReceiveCount": "3",
        "AWSTraceHeader": "Root=1-65250495-30b227ef4ea882e709192510;Sampled=0",
        "SentTimestamp": "1696924828536",
        "SenderId": "AROAEXAMPLE:producer",
        "ApproximateFirstReceiveTimestamp": "1696924828540",
        "SomethingNew": "True",
    }
    # The order of events captured from Lambda; unknown attributes last.
    assert list(attributes) == [
        "DeadLetterQueueSourceArn",
        "ApproximateReceiveCount",
        "AWSTraceHeader",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
        "SomethingNew",
    ]
    assert all(isinstance(v, str) for v in attributes.values())


def test_list_values_are_passed_through_with_binary_ones_in_base64() -> None:
    message = _standard_message()
    message["MessageAttributes"] = {
        "x": {
            "StringListValues": ["a", "b"],
            "BinaryListValues": [b"\x00", b"\x01\x02"],
            "DataType": "String",
        }
    }
    attribute = sqs_entry(message, queue_arn=QUEUE_ARN, region="r")["messageAttributes"]["x"]
    assert attribute == {
        "stringListValues": ["a", "b"],
        "binaryListValues": ["AA==", "AQI="],
        "dataType": "String",
    }


def test_digests_are_computed_when_the_message_lacks_them() -> None:
    message = _standard_message()
    expected = message.pop("MD5OfMessageAttributes")
    del message["MD5OfBody"]
    entry = sqs_entry(message, queue_arn=QUEUE_ARN, region="r")
    assert entry["md5OfMessageAttributes"] == expected
    assert entry["md5OfBody"] == hashlib.md5(b"Test message.").hexdigest()


@pytest.mark.parametrize(
    ("body", "digest"),
    [
        ("test", "098f6bcd4621d373cade4e832627b4f6"),
        ("Test message.", "e4e68fb7bd0e697a0ae8f1bb342846b3"),
        ("h\u00e9llo \u2603", hashlib.md5("h\u00e9llo \u2603".encode()).hexdigest()),
    ],
)
def test_md5_of_body_is_the_md5_of_the_utf8_body(body: str, digest: str) -> None:
    assert md5_of_body(body) == digest


@pytest.mark.parametrize(
    ("attributes", "digest"),
    [
        # Digests SQS computed, taken from events captured from Lambda.
        (
            {"prioridad": {"DataType": "String", "StringValue": "ALTA"}},
            "c4e4d91a5fa8335e450537c4c88ee317",
        ),
        (
            {
                "WeeksOn": {"DataType": "Number", "StringValue": "6"},
                "Author": {"DataType": "String", "StringValue": "Dev Team"},
                "Title": {"DataType": "String", "StringValue": "Sentiment Analysis"},
            },
            "25fe00b4ee984a6fba20ee5356ce83fd",
        ),
        # Binary values are hashed as their raw bytes, custom suffixes are part of the type.
        (
            {"binaryAttribute": {"DataType": "Binary", "BinaryValue": b"Hello binary world!"}},
            "31a92b15d92f8db860eda32aceb656c3",
        ),
        (
            {
                "customNumberTypeAttrib": {
                    "DataType": "Number.float",
                    "StringValue": "4563442423554324324264524243.32543234",
                }
            },
            "9fe1b90bbd9965bdf77bac517c7d2495",
        ),
    ],
)
def test_md5_of_message_attributes_follows_the_sqs_encoding(
    attributes: dict[str, Any], digest: str
) -> None:
    assert md5_of_message_attributes(attributes) == digest


def test_md5_of_message_attributes_does_not_depend_on_the_order_given() -> None:
    one: dict[str, dict[str, Any]] = {
        "b": {"DataType": "String", "StringValue": "2"},
        "a": {"DataType": "Binary", "BinaryValue": b"\x01"},
    }
    other = dict(reversed(one.items()))
    assert md5_of_message_attributes(one) == md5_of_message_attributes(other)


def test_record_carries_id_order_group_and_sent_time() -> None:
    message = _standard_message()
    message["Attributes"]["MessageGroupId"] = "orders-7"
    record = sqs_record(message, queue_arn=QUEUE_ARN, region="us-east-2", order=42)
    assert record.sequence == "059f36b4-87a3-44ab-83d2-661975830a7d"
    assert record.order == 42
    assert record.key == "orders-7"
    assert record.arrival == pytest.approx(1545082649.183)
    assert record.entry == sqs_entry(message, queue_arn=QUEUE_ARN, region="us-east-2")
    assert record.size == len(orjson.dumps(record.entry)) + 1


def test_record_of_a_standard_message_has_no_key_and_order_defaults_to_zero() -> None:
    record = sqs_record(_standard_message(), queue_arn=QUEUE_ARN, region="us-east-2")
    assert record.key == ""
    assert record.order == 0


def test_record_without_sent_timestamp_arrives_now() -> None:
    message = _standard_message()
    del message["Attributes"]
    before = time.time()
    record = sqs_record(message, queue_arn=QUEUE_ARN, region="us-east-2", order=1)
    assert before <= record.arrival <= time.time()
    assert record.entry["attributes"] == {}


def test_encoded_event_holds_the_records_in_order() -> None:
    first = _standard_message()
    second = {**_standard_message(), "MessageId": "2e1424d4-f796-459a-8184-9c92662be6da"}
    records = [
        sqs_record(m, queue_arn=QUEUE_ARN, region="us-east-2", order=n)
        for n, m in enumerate([first, second], start=1)
    ]
    event = orjson.loads(encode_event(records))
    assert [r["messageId"] for r in event["Records"]] == [
        first["MessageId"],
        second["MessageId"],
    ]
    assert len(encode_event(records)) == len(b'{"Records":[]}') + sum(r.size for r in records) - 1
