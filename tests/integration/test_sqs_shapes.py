"""SQS events built from what moto's SQS really returns, and the fake's digests against moto's."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from aiobotocore.session import get_session

from esm.events import sqs_entry, sqs_record
from esm.testing import FakeSqsClient

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

REGION = "us-east-1"
RECEIVE_ALL = {
    "MessageSystemAttributeNames": ["All"],
    "MessageAttributeNames": ["All"],
    "MaxNumberOfMessages": 10,
}
ATTRIBUTES: dict[str, dict[str, Any]] = {
    "Author": {"DataType": "String", "StringValue": "Dev Team"},
    "WeeksOn": {"DataType": "Number", "StringValue": "6"},
    "Ratio": {"DataType": "Number.float", "StringValue": "-0.125"},
    "Unicode": {"DataType": "String.text", "StringValue": "h\u00e9llo \u2603"},
    "Blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xfe\xffbinary"},
    "Png": {"DataType": "Binary.png", "BinaryValue": b"\x89PNG\r\n\x1a\n"},
}


@pytest.fixture
async def sqs(moto_endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "sqs", region_name=REGION, endpoint_url=moto_endpoint
    ) as client:
        yield client


async def _queue(sqs: Any, suffix: str = "", **attributes: str) -> tuple[str, str]:
    name = f"shapes-{uuid.uuid4().hex[:12]}{suffix}"
    url = (await sqs.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]
    answer = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return url, answer["Attributes"]["QueueArn"]


def _check_entry(entry: Mapping[str, Any], message: Mapping[str, Any], arn: str) -> None:
    """Every field of `entry` against the ReceiveMessage message it was built from."""
    assert entry["messageId"] == message["MessageId"]
    assert entry["receiptHandle"] == message["ReceiptHandle"]
    assert entry["body"] == message["Body"]
    assert entry["attributes"] == {k: str(v) for k, v in message["Attributes"].items()}
    assert all(isinstance(v, str) for v in entry["attributes"].values())
    raw = message.get("MessageAttributes", {})
    assert list(entry["messageAttributes"]) == list(raw)
    for name, value in raw.items():
        built = entry["messageAttributes"][name]
        assert built["dataType"] == value["DataType"]
        assert built["stringListValues"] == []
        assert built["binaryListValues"] == []
        if "BinaryValue" in value:
            assert base64.b64decode(built["binaryValue"]) == value["BinaryValue"]
            assert "stringValue" not in built
        else:
            assert built["stringValue"] == value["StringValue"]
            assert "binaryValue" not in built
    assert entry["md5OfBody"] == message["MD5OfBody"]
    assert entry["md5OfBody"] == hashlib.md5(message["Body"].encode()).hexdigest()
    if raw:
        assert entry["md5OfMessageAttributes"] == message["MD5OfMessageAttributes"]
    else:
        assert entry["md5OfMessageAttributes"] is None
    assert entry["eventSource"] == "aws:sqs"
    assert entry["eventSourceARN"] == arn
    assert entry["awsRegion"] == REGION


async def test_standard_queue_entries_match_what_sqs_returned(sqs: Any) -> None:
    url, arn = await _queue(sqs)
    sent = await sqs.send_message(
        QueueUrl=url, MessageBody="with attributes", MessageAttributes=ATTRIBUTES
    )
    plain = await sqs.send_message(QueueUrl=url, MessageBody='{"plain": true}')
    messages = (await sqs.receive_message(QueueUrl=url, **RECEIVE_ALL))["Messages"]
    by_id = {m["MessageId"]: m for m in messages}
    assert set(by_id) == {sent["MessageId"], plain["MessageId"]}
    for message in messages:
        _check_entry(sqs_entry(message, queue_arn=arn, region=REGION), message, arn)
    rich = sqs_entry(by_id[sent["MessageId"]], queue_arn=arn, region=REGION)
    assert rich["md5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert (
        rich["messageAttributes"]["Blob"]["binaryValue"]
        == base64.b64encode(b"\x00\x01\xfe\xffbinary").decode()
    )
    assert set(rich["attributes"]) >= {
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    }
    bare = sqs_entry(by_id[plain["MessageId"]], queue_arn=arn, region=REGION)
    assert bare["messageAttributes"] == {}


async def test_fifo_queue_entries_carry_group_sequence_and_deduplication(sqs: Any) -> None:
    url, arn = await _queue(sqs, ".fifo", FifoQueue="true")
    sent = []
    for n in range(3):
        sent.append(
            await sqs.send_message(
                QueueUrl=url,
                MessageBody=f"order {n}",
                MessageGroupId="customer-1",
                MessageDeduplicationId=f"order-{n}",
                MessageAttributes={"Step": {"DataType": "Number", "StringValue": str(n)}},
            )
        )
    messages = (await sqs.receive_message(QueueUrl=url, **RECEIVE_ALL))["Messages"]
    assert [m["MessageId"] for m in messages] == [s["MessageId"] for s in sent]
    for n, message in enumerate(messages, start=1):
        entry = sqs_entry(message, queue_arn=arn, region=REGION)
        _check_entry(entry, message, arn)
        attributes = entry["attributes"]
        assert attributes["MessageGroupId"] == "customer-1"
        assert attributes["MessageDeduplicationId"] == f"order-{n - 1}"
        assert attributes["SequenceNumber"] == sent[n - 1]["SequenceNumber"]
        record = sqs_record(message, queue_arn=arn, region=REGION, order=n)
        assert record.key == "customer-1"
        assert record.sequence == message["MessageId"]
        assert record.order == n
        assert record.arrival == int(message["Attributes"]["SentTimestamp"]) / 1000


async def test_fake_digests_equal_moto_digests(sqs: Any) -> None:
    url, _ = await _queue(sqs)
    fake = FakeSqsClient(region=REGION)
    fake_url = (await fake.create_queue(QueueName="digests"))["QueueUrl"]
    cases: list[dict[str, dict[str, Any]]] = [
        ATTRIBUTES,
        {"One": {"DataType": "String", "StringValue": "x"}},
        {"Only.binary": {"DataType": "Binary", "BinaryValue": bytes(range(256))}},
    ]
    for attributes in cases:
        real = await sqs.send_message(
            QueueUrl=url, MessageBody="digest me", MessageAttributes=attributes
        )
        ours = await fake.send_message(
            QueueUrl=fake_url, MessageBody="digest me", MessageAttributes=attributes
        )
        assert ours["MD5OfMessageAttributes"] == real["MD5OfMessageAttributes"]
        assert ours["MD5OfMessageBody"] == real["MD5OfMessageBody"]
    received_real = (await sqs.receive_message(QueueUrl=url, **RECEIVE_ALL))["Messages"]
    received_ours = (await fake.receive_message(QueueUrl=fake_url, **RECEIVE_ALL))["Messages"]
    assert [m["MD5OfMessageAttributes"] for m in received_ours] == [
        m["MD5OfMessageAttributes"] for m in received_real
    ]
    # The fake answers in the shape moto's botocore answers come in.
    assert [m["MessageAttributes"] for m in received_ours] == [
        m["MessageAttributes"] for m in received_real
    ]
