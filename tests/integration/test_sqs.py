"""SQS queues end to end against moto's server: delivery and deletion, partial failures,
redrive, visibility, FIFO order, filters, batching windows, shutdown."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import orjson
import pytest

from esm.config import EsmConfig, parse_config
from esm.metrics import Metrics
from esm.testing import RecordingBackend, function_error

from .helpers import run_daemon_until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def make_queue(sqs: Any, *, fifo: bool = False, **attributes: str) -> tuple[str, str]:
    name = f"q-{uuid.uuid4().hex[:12]}" + (".fifo" if fifo else "")
    if fifo:
        attributes = {"FifoQueue": "true", "ContentBasedDeduplication": "true", **attributes}
    url = (await sqs.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]
    answer = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return url, answer["Attributes"]["QueueArn"]


async def send(sqs: Any, url: str, bodies: list[str], **extra: Any) -> None:
    for start in range(0, len(bodies), 10):
        entries = [
            {"Id": str(n), "MessageBody": body, **extra}
            for n, body in enumerate(bodies[start : start + 10])
        ]
        answer = await sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert not answer.get("Failed")


def sqs_config(
    endpoint: str, queue_arn: str, mapping: str = "", sqs_section: str = "", wait: int = 0
) -> EsmConfig:
    text = f"""
aws:
  region: us-east-1
  endpoint_url: {endpoint}
state:
  backend: memory
admin:
  listen: 127.0.0.1:0
delivery:
  backoff_initial_seconds: 0.05
  backoff_max_seconds: 0.2
  shutdown_grace_seconds: 10
sqs:
  wait_time_seconds: {wait}
{sqs_section}
functions:
  fn:
    type: python
    handler: esm.examples.handlers:handle
    timeout: 30
mappings:
  - FunctionName: fn
    EventSourceArn: {queue_arn}
{mapping}
"""
    return parse_config(text, environ={})


def bodies_of(backend: RecordingBackend) -> list[str]:
    return [r["body"] for r in backend.delivered_records()]


async def queue_count(sqs: Any, url: str) -> int:
    answer = await sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    attributes = answer["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


async def test_two_thousand_messages_each_delivered_and_deleted(
    sqs: Any, moto_endpoint: str
) -> None:
    url, arn = await make_queue(sqs)
    sent = [f"m{n}" for n in range(2000)]
    backend = RecordingBackend()
    metrics = Metrics()
    # moto answers slower the more requests it serves at once, and the more messages its
    # queue holds (it scans them on every receive): a few pollers, and a producer that
    # keeps the queue short, keep the test quick. esm is measured in bench/, not here.
    config = sqs_config(moto_endpoint, arn, "    ScalingConfig: {MaximumConcurrency: 3}")
    deleted = metrics.deleted_events.labels(config.mappings[0].mapping_name)

    async def produce() -> None:
        for start in range(0, len(sent), 100):
            while start - deleted._value.get() > 200:
                await anyio.sleep(0.05)
            await send(sqs, url, sent[start : start + 100])

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        await run_daemon_until(
            config,
            backend,
            lambda: deleted._value.get() >= 2000,
            metrics=metrics,
            limit_seconds=100,
        )
    assert sorted(bodies_of(backend)) == sorted(sent), "each message delivered once"
    assert await queue_count(sqs, url) == 0
    assert all(len(e["Records"]) <= 10 for e in backend.events)
    record = backend.events[0]["Records"][0]
    assert set(record) >= {
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfBody",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    }
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == arn
    assert record["attributes"]["ApproximateReceiveCount"] == "1"


async def test_a_partial_failure_deletes_exactly_the_successes(
    sqs: Any, moto_endpoint: str
) -> None:
    url, arn = await make_queue(sqs, VisibilityTimeout="1")
    await send(sqs, url, [f"m{n}" for n in range(5)])

    def fail_two(event: dict[str, Any], call: int) -> Any:
        failed = [r["messageId"] for r in event["Records"] if r["body"] in ("m1", "m3")]
        if event["Records"][0]["attributes"]["ApproximateReceiveCount"] == "1":
            return {"batchItemFailures": [{"itemIdentifier": i} for i in failed]}
        return {"batchItemFailures": []}

    backend = RecordingBackend(fail_two)
    config = sqs_config(
        moto_endpoint,
        arn,
        "    BatchSize: 10\n    FunctionResponseTypes: [ReportBatchItemFailures]",
        "  failure_visibility_timeout_seconds: 0",
    )
    await run_daemon_until(
        config,
        backend,
        lambda: (
            sorted(bodies_of(backend)).count("m1") >= 2
            and sorted(bodies_of(backend)).count("m3") >= 2
        ),
    )
    again = [r for e in backend.events[1:] for r in e["Records"]]
    assert sorted(r["body"] for r in again) == ["m1", "m3"]
    assert {r["attributes"]["ApproximateReceiveCount"] for r in again} == {"2"}
    with anyio.fail_after(10):
        while await queue_count(sqs, url):
            await anyio.sleep(0.1)


async def test_failing_messages_move_to_the_dead_letter_queue_after_max_receive_count(
    sqs: Any, moto_endpoint: str
) -> None:
    dlq_url, dlq_arn = await make_queue(sqs)
    policy = orjson.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}).decode()
    url, arn = await make_queue(sqs, RedrivePolicy=policy, VisibilityTimeout="1")
    await send(sqs, url, ["poison"])
    backend = RecordingBackend(lambda event, call: function_error("no"))
    config = sqs_config(moto_endpoint, arn, sqs_section="  failure_visibility_timeout_seconds: 0")

    async def in_dlq() -> int:
        return await queue_count(sqs, dlq_url)

    moved = {"n": 0}

    async def watch() -> None:
        while not moved["n"]:
            moved["n"] = await in_dlq()
            await anyio.sleep(0.2)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await run_daemon_until(config, backend, lambda: bool(moved["n"]))
    assert moved["n"] == 1
    assert len(backend.events) == 2, "delivered maxReceiveCount times, then redriven"


async def test_a_slow_function_causes_no_duplicates_thanks_to_visibility_extension(
    sqs: Any, moto_endpoint: str
) -> None:
    url, arn = await make_queue(sqs, VisibilityTimeout="2")
    await send(sqs, url, ["slow-1", "slow-2"])
    backend = RecordingBackend(delay=5.0)
    metrics = Metrics()
    config = sqs_config(moto_endpoint, arn)
    deleted = metrics.deleted_events.labels(config.mappings[0].mapping_name)
    await run_daemon_until(config, backend, lambda: deleted._value.get() >= 2, metrics=metrics)
    assert sorted(bodies_of(backend)) == ["slow-1", "slow-2"], "no message delivered twice"


async def test_fifo_keeps_order_per_group_and_a_failing_group_does_not_block_the_other(
    sqs: Any, moto_endpoint: str
) -> None:
    url, arn = await make_queue(sqs, fifo=True, VisibilityTimeout="1")
    for n in range(4):
        for group in ("a", "b"):
            await sqs.send_message(
                QueueUrl=url,
                MessageBody=f"{group}{n}",
                MessageGroupId=group,
                MessageDeduplicationId=f"{group}{n}",
            )
    seen_a1 = {"n": 0}

    def fail_a1_once(event: dict[str, Any], call: int) -> Any:
        for record in event["Records"]:
            if record["body"] == "a1" and not seen_a1["n"]:
                seen_a1["n"] = 1
                return {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
        return None

    backend = RecordingBackend(fail_a1_once)
    metrics = Metrics()
    config = sqs_config(
        moto_endpoint,
        arn,
        "    BatchSize: 10\n    FunctionResponseTypes: [ReportBatchItemFailures]",
        "  failure_visibility_timeout_seconds: 0",
    )
    deleted = metrics.deleted_events.labels(config.mappings[0].mapping_name)
    await run_daemon_until(config, backend, lambda: deleted._value.get() >= 8, metrics=metrics)
    bodies = bodies_of(backend)
    # Group b went through in order at the first attempt.
    first_b = [b for b in bodies if b.startswith("b")][:4]
    assert first_b == ["b0", "b1", "b2", "b3"]
    # Group a: a0 done, then a1 failed and with it a2, a3; then a1, a2, a3 again, in order.
    a = [b for b in bodies if b.startswith("a")]
    assert a == ["a0", "a1", "a2", "a3", "a1", "a2", "a3"]
    for event in backend.events:
        record = event["Records"][0]
        assert record["attributes"]["MessageGroupId"] in ("a", "b")
        assert "SequenceNumber" in record["attributes"]
        assert "MessageDeduplicationId" in record["attributes"]


async def test_filtered_out_messages_are_deleted(sqs: Any, moto_endpoint: str) -> None:
    url, arn = await make_queue(sqs)
    await send(
        sqs,
        url,
        [orjson.dumps({"kind": k}).decode() for k in ("order", "ping", "order", "ping")]
        + ["plain"],
    )
    backend = RecordingBackend()
    metrics = Metrics()
    pattern = '{"body": {"kind": ["order"]}}'
    config = sqs_config(
        moto_endpoint, arn, f"    FilterCriteria: {{Filters: [{{Pattern: '{pattern}'}}]}}"
    )
    mapping = config.mappings[0].mapping_name
    deleted = metrics.deleted_events.labels(mapping)
    await run_daemon_until(config, backend, lambda: deleted._value.get() >= 5, metrics=metrics)
    assert sorted(bodies_of(backend)) == ['{"kind":"order"}', '{"kind":"order"}']
    assert metrics.filtered_out_events.labels(mapping)._value.get() == 3
    assert await queue_count(sqs, url) == 0


async def test_a_batching_window_gathers_messages_across_receives(
    sqs: Any, moto_endpoint: str
) -> None:
    url, arn = await make_queue(sqs)
    await send(sqs, url, [f"m{n}" for n in range(45)])
    backend = RecordingBackend()
    # Two pollers share the messages (as several pollers do on AWS, where batches come out
    # smaller than BatchSize); each gathers several receives of ten into its batch.
    config = sqs_config(
        moto_endpoint,
        arn,
        "    BatchSize: 100\n    MaximumBatchingWindowInSeconds: 2\n"
        "    ScalingConfig: {MaximumConcurrency: 2}",
    )
    await run_daemon_until(config, backend, lambda: len(bodies_of(backend)) >= 45)
    assert max(len(e["Records"]) for e in backend.events) > 10
    assert sorted(bodies_of(backend)) == sorted(f"m{n}" for n in range(45))


async def test_shutdown_releases_messages_gathered_but_not_delivered(
    sqs: Any, moto_endpoint: str
) -> None:
    url, arn = await make_queue(sqs, VisibilityTimeout="300")
    await send(sqs, url, ["wait-1", "wait-2", "wait-3"])
    backend = RecordingBackend()
    metrics = Metrics()
    config = sqs_config(
        moto_endpoint, arn, "    BatchSize: 100\n    MaximumBatchingWindowInSeconds: 60"
    )
    polled = metrics.polled_events.labels(config.mappings[0].mapping_name)
    await run_daemon_until(config, backend, lambda: polled._value.get() >= 3, metrics=metrics)
    assert backend.events == [], "the window had not ended: nothing was delivered"
    # Released: visible again at once, although the queue's visibility timeout is 5 minutes.
    answer = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    assert sorted(m["Body"] for m in answer.get("Messages", [])) == ["wait-1", "wait-2", "wait-3"]
