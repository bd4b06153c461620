"""`esm redrive` end to end against moto's server: a batch given up to an SQS or S3
on-failure destination comes back to the function, its failure record is deleted, and what
cannot be redriven stays where it was."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiobotocore.session import get_session

from esm.config import EsmConfig, parse_config
from esm.metrics import Metrics
from esm.redrive.command import redrive
from esm.testing import RecordingBackend, function_error

from .helpers import create_stream, daemon_config, put_records, run_daemon_until, run_esm

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
async def aws(moto_endpoint: str) -> AsyncIterator[dict[str, Any]]:
    session = get_session()
    async with (
        session.create_client("sqs", region_name="us-east-1", endpoint_url=moto_endpoint) as sqs,
        session.create_client("s3", region_name="us-east-1", endpoint_url=moto_endpoint) as s3,
    ):
        yield {"sqs": sqs, "s3": s3}


async def _queue(sqs: Any) -> tuple[str, str]:
    url = (await sqs.create_queue(QueueName=f"dlq-{uuid.uuid4().hex[:10]}"))["QueueUrl"]
    attributes = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return url, attributes["Attributes"]["QueueArn"]


async def _bodies(sqs: Any, url: str) -> list[str]:
    """Every message left in the queue (visible again), without taking any for long."""
    answer = await sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=0
    )
    return [m["Body"] for m in answer.get("Messages", [])]


async def _give_up(
    kinesis: Any, endpoint: str, stream_name: str, destination: str, count: int = 5
) -> tuple[str, list[dict[str, Any]]]:
    """A stream whose first `count` records were given up to `destination`; the stream's
    ARN and the events the failing function got."""
    arn = await create_stream(kinesis, stream_name, 1)
    await put_records(kinesis, stream_name, count)
    backend = RecordingBackend(lambda event, call: function_error("it broke"))
    metrics = Metrics()
    config = daemon_config(
        endpoint,
        arn,
        extra_mapping=f"    name: orders\n    MaximumRetryAttempts: 0\n"
        f"    DestinationConfig: {{OnFailure: {{Destination: '{destination}'}}}}",
    )
    given_up = metrics.on_failure_delivered_events.labels("orders")
    await run_daemon_until(config, backend, lambda: given_up._value.get() >= count, metrics=metrics)
    # Records written after the give-up are not part of its batch.
    await put_records(kinesis, stream_name, 3, prefix="later")
    return arn, backend.events


def _redrive_config(endpoint: str, stream_arn: str, function: str) -> str:
    return f"""
aws:
  region: us-east-1
  endpoint_url: {endpoint}
state:
  backend: memory
delivery:
  backoff_initial_seconds: 0.05
  backoff_max_seconds: 0.2
functions:
  fn:
{function}
mappings:
  - FunctionName: fn
    EventSourceArn: {stream_arn}
    name: orders
    StartingPosition: TRIM_HORIZON
"""


def _jsonl(path: Path) -> str:
    return f"    type: example-jsonl\n    path: {path}"


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _config(text: str) -> EsmConfig:
    return parse_config(text, environ={})


@dataclass(frozen=True)
class _GivenUp:
    """A stream whose first 5 records were given up to a queue, and a redrive
    configuration whose function appends its events to `events`."""

    url: str
    queue_arn: str
    stream_arn: str
    events: Path
    config: EsmConfig


@pytest.fixture
async def given_up(
    kinesis: Any, aws: dict[str, Any], moto_endpoint: str, stream_name: str, tmp_path: Path
) -> _GivenUp:
    url, queue_arn = await _queue(aws["sqs"])
    arn, _ = await _give_up(kinesis, moto_endpoint, stream_name, queue_arn)
    events = tmp_path / "events.jsonl"
    config = _config(_redrive_config(moto_endpoint, arn, _jsonl(events)))
    return _GivenUp(url, queue_arn, arn, events, config)


async def test_a_batch_given_up_to_sqs_comes_back_to_the_function_and_its_record_goes(
    kinesis: Any, aws: dict[str, Any], moto_endpoint: str, stream_name: str, tmp_path: Path
) -> None:
    url, queue_arn = await _queue(aws["sqs"])
    arn, failed = await _give_up(kinesis, moto_endpoint, stream_name, queue_arn)
    events = tmp_path / "events.jsonl"
    config_file = tmp_path / "esm.yaml"
    config_file.write_text(_redrive_config(moto_endpoint, arn, _jsonl(events)))

    code, out, err = await run_esm("redrive", "--from", queue_arn, "-c", str(config_file))

    assert (code, err) == (0, ""), out
    [event] = _events(events)
    # The same event, field by field, as the function got when the batch failed.
    assert event == failed[0]
    assert await _bodies(aws["sqs"], url) == []
    lines = out.splitlines()
    assert lines[0].startswith("redriven")
    assert "orders shardId-000000000000" in lines[0]
    assert "5 record(s)" in lines[0]
    assert lines[-1] == (
        f"redrive from {queue_arn}: 1 failure record(s): 1 redriven; 5 record(s) invoked "
        "successfully"
    )


async def test_a_function_that_fails_again_keeps_the_failure_record(
    kinesis: Any, aws: dict[str, Any], moto_endpoint: str, stream_name: str, tmp_path: Path
) -> None:
    url, queue_arn = await _queue(aws["sqs"])
    arn, _ = await _give_up(kinesis, moto_endpoint, stream_name, queue_arn)
    failing = "    type: python\n    handler: esm.examples.handlers:fail"
    config = _config(_redrive_config(moto_endpoint, arn, failing))

    report = await redrive(config, queue_arn)

    [item] = report.items
    assert item.outcome.value == "failed_again"
    assert item.records == 5
    assert item.error is not None
    assert "example failure on a batch of 5 records" in item.error
    assert not report.clean
    [body] = await _bodies(aws["sqs"], url)
    assert orjson.loads(body)["KinesisBatchInfo"]["batchSize"] == 5


async def test_a_dry_run_invokes_nothing_and_deletes_nothing(
    given_up: _GivenUp, aws: dict[str, Any]
) -> None:
    url, events, config = given_up.url, given_up.events, given_up.config

    report = await redrive(config, given_up.queue_arn, dry_run=True)

    [item] = report.items
    assert (item.outcome.value, item.records, item.expired_records) == ("would_redrive", 5, 0)
    assert report.clean
    assert _events(events) == []
    assert len(await _bodies(aws["sqs"], url)) == 1
    assert report.as_dict()["counts"]["would_redrive"] == 1


async def test_s3_failure_objects_are_redriven_from_their_payload(
    kinesis: Any, aws: dict[str, Any], moto_endpoint: str, stream_name: str, tmp_path: Path
) -> None:
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    await aws["s3"].create_bucket(Bucket=bucket)
    arn, failed = await _give_up(kinesis, moto_endpoint, stream_name, f"arn:aws:s3:::{bucket}")
    events = tmp_path / "events.jsonl"
    config = _config(_redrive_config(moto_endpoint, arn, _jsonl(events)))
    # The payload is what is sent: the stream is not read for it.
    await kinesis.delete_stream(StreamName=stream_name)

    report = await redrive(config, f"s3://{bucket}", mapping="orders")

    [item] = report.items
    assert item.outcome.value == "redriven", item
    assert item.item.startswith(f"aws/lambda/{config.mappings[0].mapping_id}/")
    assert _events(events) == [failed[0]]
    assert "Contents" not in await aws["s3"].list_objects_v2(Bucket=bucket)


async def test_records_gone_from_the_stream_are_expired_and_kept_unless_asked(
    given_up: _GivenUp, aws: dict[str, Any]
) -> None:
    url, events, config = given_up.url, given_up.events, given_up.config
    # A record of a batch on a shard the stream no longer has: past its retention.
    [body] = await _bodies(aws["sqs"], url)
    record = orjson.loads(body)
    record["KinesisBatchInfo"]["shardId"] = "shardId-000000000009"
    await aws["sqs"].send_message(QueueUrl=url, MessageBody=orjson.dumps(record).decode())
    await aws["sqs"].send_message(QueueUrl=url, MessageBody="not a failure record")

    report = await redrive(config, given_up.queue_arn)

    outcomes = sorted(item.outcome.value for item in report.items)
    assert outcomes == ["expired", "redriven", "unreadable"]
    [expired] = [item for item in report.items if item.outcome.value == "expired"]
    assert expired.expired_records == 5
    assert expired.shard == "shardId-000000000009"
    assert len(_events(events)) == 1
    assert len(await _bodies(aws["sqs"], url)) == 2

    again = await redrive(config, given_up.queue_arn, delete_expired=True)

    assert sorted(item.outcome.value for item in again.items) == ["expired", "unreadable"]
    assert await _bodies(aws["sqs"], url) == ["not a failure record"]
    assert len(_events(events)) == 1


async def test_another_mappings_failure_records_are_left_alone(
    kinesis: Any, aws: dict[str, Any], moto_endpoint: str, stream_name: str, tmp_path: Path
) -> None:
    url, queue_arn = await _queue(aws["sqs"])
    arn, _ = await _give_up(kinesis, moto_endpoint, stream_name, queue_arn)
    other = await create_stream(kinesis, f"{stream_name}-other", 1)
    events = tmp_path / "events.jsonl"
    text = _redrive_config(moto_endpoint, arn, _jsonl(events)) + (
        f"  - FunctionName: fn\n    EventSourceArn: {other}\n    name: other\n"
        "    StartingPosition: TRIM_HORIZON\n"
    )

    report = await redrive(_config(text), queue_arn, mapping="other")

    [item] = report.items
    assert item.outcome.value == "skipped"
    assert report.clean
    assert _events(events) == []
    assert len(await _bodies(aws["sqs"], url)) == 1


async def test_a_dynamodb_streams_batch_is_fetched_again_by_sequence_number(
    dynamodb: Any, aws: dict[str, Any], moto_endpoint: str, tmp_path: Path
) -> None:
    from .test_dynamodb_streams import create_table, insert_modify_remove

    table = f"t-{uuid.uuid4().hex[:10]}"
    arn = await create_table(dynamodb, table)
    await insert_modify_remove(dynamodb, table)
    url, queue_arn = await _queue(aws["sqs"])
    backend = RecordingBackend(lambda event, call: function_error("it broke"))
    metrics = Metrics()
    config = daemon_config(
        moto_endpoint,
        arn,
        extra_mapping="    name: orders\n    MaximumRetryAttempts: 0\n"
        f"    DestinationConfig: {{OnFailure: {{Destination: '{queue_arn}'}}}}",
    )
    given_up = metrics.on_failure_delivered_events.labels("orders")
    await run_daemon_until(config, backend, lambda: given_up._value.get() >= 3, metrics=metrics)
    [body] = await _bodies(aws["sqs"], url)
    assert orjson.loads(body)["DDBStreamBatchInfo"]["batchSize"] == 3
    events = tmp_path / "events.jsonl"

    report = await redrive(_config(_redrive_config(moto_endpoint, arn, _jsonl(events))), queue_arn)

    assert [item.outcome.value for item in report.items] == ["redriven"]
    assert _events(events) == backend.events[:1]
    assert [r["eventName"] for r in backend.events[0]["Records"]] == ["INSERT", "MODIFY", "REMOVE"]
    assert await _bodies(aws["sqs"], url) == []
