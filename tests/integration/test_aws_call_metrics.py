"""Every AWS call the daemon makes is counted by service, operation and outcome and timed
(esm_aws_calls_total, esm_aws_call_duration_seconds), against moto's server."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiobotocore.session import get_session

from esm.aws.call_metrics import call_outcome, instrument_client
from esm.config import parse_config
from esm.metrics import Metrics
from esm.testing import RecordingBackend

from .helpers import (
    create_stream,
    operations_config,
    put_records,
    queue_mapping,
    run_daemon_until,
    stream_mapping,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_a_running_daemon_counts_and_times_each_kind_of_call(
    kinesis: Any, sqs: Any, moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 2)
    await put_records(kinesis, stream_name, 10)
    queue = f"jobs-{uuid.uuid4().hex[:8]}"
    url = (await sqs.create_queue(QueueName=queue))["QueueUrl"]
    await sqs.send_message(QueueUrl=url, MessageBody="hello")
    backend = RecordingBackend()
    metrics = Metrics()
    queue_arn = f"arn:aws:sqs:us-east-1:123456789012:{queue}"
    text = operations_config(moto_endpoint, stream_mapping(arn) + queue_mapping(queue_arn))
    config = parse_config(text, environ={})
    await run_daemon_until(
        config, backend, lambda: len(backend.delivered_records()) >= 11, metrics=metrics
    )

    def calls(service: str, operation: str, outcome: str = "ok") -> float:
        labels = {"service": service, "operation": operation, "outcome": outcome}
        return metrics.registry.get_sample_value("esm_aws_calls_total", labels) or 0.0

    assert calls("kinesis", "ListShards") >= 1
    assert calls("kinesis", "GetShardIterator") >= 2  # one a shard
    assert calls("kinesis", "GetRecords") >= 2
    assert calls("sqs", "GetQueueUrl") == 1
    assert calls("sqs", "ReceiveMessage") >= 1
    assert calls("sqs", "DeleteMessageBatch") == 1
    timed = metrics.registry.get_sample_value(
        "esm_aws_call_duration_seconds_count", {"service": "kinesis", "operation": "GetRecords"}
    )
    assert timed == calls("kinesis", "GetRecords")


async def test_an_error_answer_and_no_answer_count_as_errors(moto_endpoint: str) -> None:
    seen: list[tuple[str, str, str]] = []
    session = get_session()
    async with session.create_client(
        "kinesis", region_name="us-east-1", endpoint_url=moto_endpoint
    ) as client:
        instrument_client(client, lambda s, op, outcome, seconds: seen.append((s, op, outcome)))
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            await client.list_shards(StreamName=f"missing-{uuid.uuid4().hex[:6]}")
    from aiobotocore.config import AioConfig

    refused = AioConfig(retries={"max_attempts": 0}, connect_timeout=1)
    async with session.create_client(
        "sqs", region_name="us-east-1", endpoint_url="http://127.0.0.1:9", config=refused
    ) as client:
        instrument_client(client, lambda s, op, outcome, seconds: seen.append((s, op, outcome)))
        with pytest.raises(Exception, match="Could not connect"):
            await client.get_queue_url(QueueName="q")
    assert seen == [("kinesis", "ListShards", "error"), ("sqs", "GetQueueUrl", "error")]


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (200, None, "ok"),
        (400, "ProvisionedThroughputExceededException", "throttled"),
        (400, "ThrottlingException", "throttled"),
        (429, "TooManyRequestsException", "throttled"),
        (503, "SlowDown", "throttled"),
        (400, "ConditionalCheckFailedException", "conflict"),
        (400, "ExpiredIteratorException", "error"),
        (500, "InternalFailure", "error"),
    ],
)
def test_outcomes_follow_the_error_code(status: int, code: str | None, outcome: str) -> None:
    parsed = {"Error": {"Code": code}} if code else {}
    assert call_outcome(status, parsed) == outcome
