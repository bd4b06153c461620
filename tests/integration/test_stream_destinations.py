"""Given-up stream batches end to end against moto's server: retry limits, bisect and record
age feeding SQS, SNS and S3 on-failure destinations, checked field by field."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiobotocore.session import get_session

from esm.metrics import Metrics
from esm.testing import RecordingBackend, function_error

from .helpers import age_records, create_stream, daemon_config, put_records, run_daemon_until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ISO_MILLIS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture
async def aws(moto_endpoint: str) -> AsyncIterator[dict[str, Any]]:
    session = get_session()
    async with (
        session.create_client("sqs", region_name="us-east-1", endpoint_url=moto_endpoint) as sqs,
        session.create_client("sns", region_name="us-east-1", endpoint_url=moto_endpoint) as sns,
        session.create_client("s3", region_name="us-east-1", endpoint_url=moto_endpoint) as s3,
    ):
        yield {"sqs": sqs, "sns": sns, "s3": s3}


async def _queue(sqs: Any) -> tuple[str, str]:
    url = (await sqs.create_queue(QueueName=f"dlq-{uuid.uuid4().hex[:10]}"))["QueueUrl"]
    attributes = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return url, attributes["Attributes"]["QueueArn"]


async def _messages(sqs: Any, url: str, count: int) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []
    for _ in range(20):
        answer = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        bodies.extend(orjson.loads(m["Body"]) for m in answer.get("Messages", []))
        if len(bodies) >= count:
            break
    return bodies


def _destination(arn: str, **more: Any) -> str:
    lines = [f"    DestinationConfig: {{OnFailure: {{Destination: '{arn}'}}}}"]
    lines += [f"    {key}: {value}" for key, value in more.items()]
    return "\n".join(lines)


def _sequences(event: dict[str, Any]) -> list[str]:
    return [r["kinesis"]["sequenceNumber"] for r in event["Records"]]


async def test_retries_exhausted_after_three_invocations_go_to_sqs_field_by_field(
    kinesis: Any, aws: dict[str, Any], moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    await put_records(kinesis, stream_name, 5)
    url, queue_arn = await _queue(aws["sqs"])
    backend = RecordingBackend(lambda event, call: function_error("it broke"))
    metrics = Metrics()
    config = daemon_config(
        moto_endpoint, arn, extra_mapping=_destination(queue_arn, MaximumRetryAttempts=2)
    )
    mapping = config.mappings[0]
    delivered = metrics.on_failure_delivered_events.labels(mapping.mapping_name)
    await run_daemon_until(config, backend, lambda: delivered._value.get() >= 5, metrics=metrics)
    assert len(backend.events) == 3, "one invocation and two retries"
    [message] = await _messages(aws["sqs"], url, 1)
    sequences = _sequences(backend.events[0])
    assert set(message) == {
        "requestContext",
        "responseContext",
        "version",
        "timestamp",
        "KinesisBatchInfo",
    }
    context = message["requestContext"]
    assert set(context) == {"requestId", "functionArn", "condition", "approximateInvokeCount"}
    assert re.fullmatch(r"[0-9a-f-]{36}", context["requestId"])
    assert context["functionArn"] == f"arn:aws:lambda:us-east-1:{arn.split(':')[4]}:function:fn"
    assert context["condition"] == "RetryAttemptsExhausted"
    assert context["approximateInvokeCount"] == 3
    assert message["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert message["version"] == "1.0"
    assert ISO_MILLIS.match(message["timestamp"])
    info = message["KinesisBatchInfo"]
    assert info["shardId"] == backend.events[0]["Records"][0]["eventID"].split(":")[0]
    assert info["startSequenceNumber"] == sequences[0]
    assert info["endSequenceNumber"] == sequences[-1]
    assert ISO_MILLIS.match(info["approximateArrivalOfFirstRecord"])
    assert ISO_MILLIS.match(info["approximateArrivalOfLastRecord"])
    assert info["batchSize"] == 5
    assert info["streamArn"] == arn
    assert metrics.dropped_events.labels(mapping.mapping_name)._value.get() == 0


async def test_bisect_leaves_the_poison_record_alone_in_the_destination(
    kinesis: Any, aws: dict[str, Any], moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    written = await put_records(kinesis, stream_name, 16)
    poison = written[11]
    url, queue_arn = await _queue(aws["sqs"])

    def script(event: dict[str, Any], call: int) -> Any:
        data = [record_data(r) for r in event["Records"]]
        return function_error("poison") if poison in data else None

    backend = RecordingBackend(script)
    metrics = Metrics()
    config = daemon_config(
        moto_endpoint,
        arn,
        extra_mapping=_destination(
            queue_arn, BisectBatchOnFunctionError="true", MaximumRetryAttempts=1
        ),
    )
    mapping = config.mappings[0]
    delivered = metrics.on_failure_delivered_events.labels(mapping.mapping_name)
    await run_daemon_until(config, backend, lambda: delivered._value.get() >= 1, metrics=metrics)
    [message] = await _messages(aws["sqs"], url, 1)
    info = message["KinesisBatchInfo"]
    assert info["batchSize"] == 1
    assert info["startSequenceNumber"] == info["endSequenceNumber"]
    good = [
        record_data(r)
        for event in backend.events
        if poison not in [record_data(r) for r in event["Records"]]
        for r in event["Records"]
    ]
    assert sorted(good) == sorted(w for w in written if w != poison), "each good record once"
    assert message["requestContext"]["approximateInvokeCount"] == 2


async def test_record_age_exceeded_is_sent_without_a_response_context(
    kinesis: Any, aws: dict[str, Any], moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    await put_records(kinesis, stream_name, 4)
    age_records(stream_name, 300)
    url, queue_arn = await _queue(aws["sqs"])
    backend = RecordingBackend()
    metrics = Metrics()
    config = daemon_config(
        moto_endpoint, arn, extra_mapping=_destination(queue_arn, MaximumRecordAgeInSeconds=60)
    )
    delivered = metrics.on_failure_delivered_events.labels(config.mappings[0].mapping_name)
    await run_daemon_until(config, backend, lambda: delivered._value.get() >= 4, metrics=metrics)
    assert backend.events == []
    [message] = await _messages(aws["sqs"], url, 1)
    assert message["requestContext"]["condition"] == "RecordAgeExceeded"
    # AWS writes 1 for records that expired before they were ever invoked.
    assert message["requestContext"]["approximateInvokeCount"] == 1
    assert "responseContext" not in message
    assert message["KinesisBatchInfo"]["batchSize"] == 4


async def test_sns_destination_receives_the_failure_record(
    kinesis: Any, aws: dict[str, Any], moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    await put_records(kinesis, stream_name, 3)
    topic = (await aws["sns"].create_topic(Name=f"t-{uuid.uuid4().hex[:10]}"))["TopicArn"]
    url, queue_arn = await _queue(aws["sqs"])
    await aws["sns"].subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    backend = RecordingBackend(lambda event, call: function_error())
    metrics = Metrics()
    config = daemon_config(
        moto_endpoint, arn, extra_mapping=_destination(topic, MaximumRetryAttempts=0)
    )
    delivered = metrics.on_failure_delivered_events.labels(config.mappings[0].mapping_name)
    await run_daemon_until(config, backend, lambda: delivered._value.get() >= 3, metrics=metrics)
    [message] = await _messages(aws["sqs"], url, 1)
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["requestContext"]["approximateInvokeCount"] == 1
    assert message["KinesisBatchInfo"]["batchSize"] == 3
    assert message["KinesisBatchInfo"]["streamArn"] == arn


async def test_s3_destination_stores_the_record_and_the_payload(
    kinesis: Any, aws: dict[str, Any], moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    await put_records(kinesis, stream_name, 3)
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    await aws["s3"].create_bucket(Bucket=bucket)
    backend = RecordingBackend(lambda event, call: function_error())
    metrics = Metrics()
    config = daemon_config(
        moto_endpoint,
        arn,
        extra_mapping=_destination(f"arn:aws:s3:::{bucket}", MaximumRetryAttempts=0),
    )
    mapping = config.mappings[0]
    delivered = metrics.on_failure_delivered_events.labels(mapping.mapping_name)
    await run_daemon_until(config, backend, lambda: delivered._value.get() >= 3, metrics=metrics)
    listing = await aws["s3"].list_objects_v2(Bucket=bucket)
    [entry] = listing["Contents"]
    shard = backend.events[0]["Records"][0]["eventID"].split(":")[0]
    assert entry["Key"].startswith(f"aws/lambda/{mapping.mapping_id}/{shard}/")
    body = await (await aws["s3"].get_object(Bucket=bucket, Key=entry["Key"]))["Body"].read()
    stored = orjson.loads(body)
    assert stored["KinesisBatchInfo"]["batchSize"] == 3
    assert isinstance(stored["payload"], str)
    assert orjson.loads(stored["payload"]) == backend.events[0]


def record_data(record: dict[str, Any]) -> bytes:
    return base64.b64decode(record["kinesis"]["data"])
