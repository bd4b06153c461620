"""On-failure destinations against moto's server: SQS, SNS (into SQS) and S3, read back."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from esm.destinations import create_destination
from esm.destinations.s3 import S3Destination
from esm.destinations.sns import SnsDestination
from esm.destinations.sqs import SqsDestination
from esm.errors import ResourceNotFound, TransientSourceError
from esm.events import encode_event, stream_failure_record
from esm.model import Record
from esm.sources.kinesis import KinesisRecordFactory
from esm.testing import function_error
from tests.conftest import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

REGION = "us-east-1"
SHARD = "shardId-000000000003"
STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:orders"
S3_KEY = re.compile(
    r"aws/lambda/(?P<esm>[0-9a-f-]{36})/(?P<shard>[^/]+)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/"
    r"(?P=y)-(?P=m)-(?P=d)T\d{2}\.\d{2}\.\d{2}-"
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)


@pytest.fixture
async def aws(moto_endpoint: str) -> AsyncIterator[dict[str, Any]]:
    """One client per service, all on moto's server."""
    session = get_session()
    async with (
        session.create_client("sqs", region_name=REGION, endpoint_url=moto_endpoint) as sqs,
        session.create_client("sns", region_name=REGION, endpoint_url=moto_endpoint) as sns,
        session.create_client("s3", region_name=REGION, endpoint_url=moto_endpoint) as s3,
    ):
        yield {"sqs": sqs, "sns": sns, "s3": s3}


def _name() -> str:
    return f"esm-{uuid.uuid4().hex[:12]}"


def _records() -> list[Record]:
    factory = KinesisRecordFactory(
        stream_arn=STREAM_ARN,
        region=REGION,
        identity_arn="arn:aws:iam::123456789012:role/esm",
    )
    return [
        factory.create(SHARD, str(1000 + n), f"key-{n}", "aGVsbG8=", 1700000000.25 + n)
        for n in range(3)
    ]


def _failure(records: list[Record]) -> dict[str, Any]:
    return stream_failure_record(
        source="kinesis",
        records=records,
        shard_id=SHARD,
        stream_arn=STREAM_ARN,
        function_arn=FUNCTION_ARN,
        condition="RetryAttemptsExhausted",
        invoke_count=3,
        last_result=function_error(),
        request_id="5b1b0b5e-0c8e-4a38-9d8a-6f2f0d6f1c11",
        now=1700000100.5,
    )


def _check_record(received: dict[str, Any]) -> None:
    """`received` is the failure record of `_records()`, field by field."""
    assert received["requestContext"] == {
        "requestId": "5b1b0b5e-0c8e-4a38-9d8a-6f2f0d6f1c11",
        "functionArn": FUNCTION_ARN,
        "condition": "RetryAttemptsExhausted",
        "approximateInvokeCount": 3,
    }
    assert received["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert received["version"] == "1.0"
    assert received["timestamp"] == "2023-11-14T22:15:00.500Z"
    assert received["KinesisBatchInfo"] == {
        "shardId": SHARD,
        "startSequenceNumber": "1000",
        "endSequenceNumber": "1002",
        "approximateArrivalOfFirstRecord": "2023-11-14T22:13:20.250Z",
        "approximateArrivalOfLastRecord": "2023-11-14T22:13:22.250Z",
        "batchSize": 3,
        "streamArn": STREAM_ARN,
    }


async def _create_queue(sqs: Any) -> tuple[str, str]:
    url = (await sqs.create_queue(QueueName=_name()))["QueueUrl"]
    attributes = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(url), str(attributes["Attributes"]["QueueArn"])


async def _receive(sqs: Any, url: str) -> list[dict[str, Any]]:
    answer = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    return list(answer.get("Messages", []))


async def test_sqs_destination_sends_the_record_as_the_message_body(aws: dict[str, Any]) -> None:
    url, arn = await _create_queue(aws["sqs"])
    records = _records()
    destination = SqsDestination(aws["sqs"], arn)
    await destination.send(_failure(records), encode_event(records), SHARD)
    messages = await _receive(aws["sqs"], url)
    assert len(messages) == 1
    body = orjson.loads(messages[0]["Body"])
    _check_record(body)
    # Metadata only: the records themselves stay in the stream.
    assert "payload" not in body
    assert set(body) == {
        "requestContext",
        "responseContext",
        "version",
        "timestamp",
        "KinesisBatchInfo",
    }


async def test_sns_destination_publishes_the_record(aws: dict[str, Any]) -> None:
    topic_arn = (await aws["sns"].create_topic(Name=_name()))["TopicArn"]
    url, queue_arn = await _create_queue(aws["sqs"])
    await aws["sns"].subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    records = _records()
    destination = SnsDestination(aws["sns"], topic_arn)
    await destination.send(_failure(records), encode_event(records), SHARD)
    messages = await _receive(aws["sqs"], url)
    assert len(messages) == 1
    body = orjson.loads(messages[0]["Body"])
    _check_record(body)
    assert "payload" not in body


async def test_s3_destination_stores_the_record_and_the_event(aws: dict[str, Any]) -> None:
    bucket = _name()
    await aws["s3"].create_bucket(Bucket=bucket)
    mapping_uuid = str(uuid.uuid4())
    records = _records()
    payload = encode_event(records)
    destination = S3Destination(
        aws["s3"], f"arn:aws:s3:::{bucket}", mapping_uuid, clock=lambda: 1700000100.5
    )
    await destination.send(_failure(records), payload, SHARD)
    listing = await aws["s3"].list_objects_v2(Bucket=bucket)
    keys = [item["Key"] for item in listing.get("Contents", [])]
    assert len(keys) == 1
    match = S3_KEY.fullmatch(keys[0])
    assert match is not None, keys[0]
    assert match["esm"] == mapping_uuid
    assert match["shard"] == SHARD
    assert keys[0].startswith(f"aws/lambda/{mapping_uuid}/{SHARD}/2023/11/14/2023-11-14T22.15.00-")
    stored = await aws["s3"].get_object(Bucket=bucket, Key=keys[0])
    assert stored["ContentType"] == "application/json"
    async with stored["Body"] as body:
        document = orjson.loads(await body.read())
    _check_record(document)
    assert isinstance(document["payload"], str)
    event = orjson.loads(document["payload"])
    assert event == orjson.loads(payload)
    assert [r["kinesis"]["sequenceNumber"] for r in event["Records"]] == ["1000", "1001", "1002"]


async def test_create_destination_delivers_through_the_right_client(
    aws: dict[str, Any],
) -> None:
    url, arn = await _create_queue(aws["sqs"])
    records = _records()
    destination = create_destination(arn, clients=aws.__getitem__, mapping_uuid="m")
    await destination.send(_failure(records), encode_event(records), SHARD)
    messages = await _receive(aws["sqs"], url)
    _check_record(orjson.loads(messages[0]["Body"]))


async def test_missing_queue_is_reported_as_not_found(aws: dict[str, Any]) -> None:
    arn = f"arn:aws:sqs:{REGION}:123456789012:{_name()}"
    destination = SqsDestination(aws["sqs"], arn)
    with pytest.raises(ResourceNotFound, match=re.escape(arn)) as caught:
        await destination.send(_failure(_records()), b"{}", SHARD)
    assert not caught.value.retriable
    assert "GetQueueUrl" in str(caught.value)


async def test_missing_topic_is_reported_as_not_found(aws: dict[str, Any]) -> None:
    arn = f"arn:aws:sns:{REGION}:123456789012:{_name()}"
    destination = SnsDestination(aws["sns"], arn)
    with pytest.raises(ResourceNotFound, match=re.escape(arn)):
        await destination.send(_failure(_records()), b"{}", SHARD)


async def test_missing_bucket_is_reported_as_not_found(aws: dict[str, Any]) -> None:
    arn = f"arn:aws:s3:::{_name()}"
    destination = S3Destination(aws["s3"], arn, str(uuid.uuid4()))
    with pytest.raises(ResourceNotFound, match=re.escape(arn)):
        await destination.send(_failure(_records()), b"{}", SHARD)


async def test_unreachable_destination_is_retriable() -> None:
    # Nothing listens on this port; one attempt keeps the test fast.
    config = AioConfig(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=1)
    session = get_session()
    async with session.create_client(
        "sqs",
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=config,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ) as sqs:
        destination = SqsDestination(sqs, f"arn:aws:sqs:{REGION}:123456789012:dlq")
        with pytest.raises(TransientSourceError) as caught:
            await destination.send(_failure(_records()), b"{}", SHARD)
    assert caught.value.retriable
