"""A queue mapping against the stateful fake SQS: scaling, throttles, deletes that fail."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from esm.engine.queue import QueueEngine
from esm.metrics import Metrics
from esm.testing import FakeSqsClient, RecordingBackend, throttle
from tests.unit.queues import queue_engine

pytestmark = pytest.mark.anyio


async def make_queue(client: FakeSqsClient, name: str = "work", **attributes: str) -> str:
    url = (await client.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]
    return str(url)


async def fill(client: FakeSqsClient, url: str, count: int) -> None:
    for start in range(0, count, 10):
        entries = [
            {"Id": str(n), "MessageBody": f"m{start + n}"} for n in range(min(10, count - start))
        ]
        await client.send_message_batch(QueueUrl=url, Entries=entries)


async def run_until(runner: QueueEngine, done: Callable[[], bool], seconds: float = 20) -> None:
    with anyio.fail_after(seconds):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            while not done():
                await anyio.sleep(0.01)
            runner.stop()


async def test_pollers_grow_with_the_backlog_but_never_past_maximum_concurrency() -> None:
    client = FakeSqsClient()
    url = await make_queue(client)
    await fill(client, url, 600)
    backend = RecordingBackend(delay=0.05)
    runner = queue_engine(client, backend, max_concurrency=8)
    targets: list[int] = []

    def done() -> bool:
        targets.append(runner.target)
        return len(client.deleted(url)) >= 600

    await run_until(runner, done)
    assert backend.max_concurrent <= 8
    assert max(targets) == 8, "the backlog raised the pollers to the cap"
    assert backend.max_concurrent > 5, "more batches ran at once than the initial five"
    assert sorted(r["body"] for r in backend.delivered_records()) == sorted(
        f"m{n}" for n in range(600)
    )


async def test_a_throttling_function_halves_the_pollers_and_its_batch_is_retried() -> None:
    client = FakeSqsClient()
    url = await make_queue(client)
    await fill(client, url, 10)

    def throttled_once(event: dict[str, Any], call: int) -> Any:
        return throttle() if call == 1 else None

    backend = RecordingBackend(throttled_once)
    metrics = Metrics()
    runner = queue_engine(client, backend, max_concurrency=4, metrics=metrics)
    await run_until(runner, lambda: len(client.deleted(url)) >= 10)
    assert runner.target <= 2, "the throttle halved the target of four"
    assert backend.events[0] == backend.events[1], "the throttled batch was sent again"
    assert metrics.invocations.labels("m", "throttle")._value.get() == 1


async def test_delete_entries_failing_on_the_service_side_are_retried() -> None:
    client = FakeSqsClient()
    url = await make_queue(client)
    await fill(client, url, 10)
    client.fail_next_entries("DeleteMessageBatch", "InternalError", count=3)
    backend = RecordingBackend()
    metrics = Metrics()
    runner = queue_engine(client, backend, max_concurrency=2, metrics=metrics)
    await run_until(runner, lambda: len(client.deleted(url)) >= 10)
    assert len(backend.events) == 1
    assert metrics.deleted_events.labels("m")._value.get() == 10
    assert metrics.queue_errors.labels("m", "delete")._value.get() == 3


async def test_failed_messages_get_the_failure_visibility() -> None:
    client = FakeSqsClient()
    url = await make_queue(client, VisibilityTimeout="300")
    await fill(client, url, 3)

    def fail_first(event: dict[str, Any], call: int) -> Any:
        if call == 1:
            return {"batchItemFailures": [{"itemIdentifier": event["Records"][1]["messageId"]}]}
        return None

    backend = RecordingBackend(fail_first)
    runner = queue_engine(
        client,
        backend,
        max_concurrency=2,
        report_item_failures=True,
        failure_visibility_seconds=0,
    )
    await run_until(runner, lambda: len(client.deleted(url)) >= 3)
    # With a visibility timeout of five minutes, only the failure visibility of 0 lets the
    # failed message come back within the test.
    assert [len(e["Records"]) for e in backend.events] == [3, 1]
    assert backend.events[1]["Records"][0]["attributes"]["ApproximateReceiveCount"] == "2"


async def test_status_shows_the_queue_and_its_pollers() -> None:
    client = FakeSqsClient()
    url = await make_queue(client, VisibilityTimeout="45")
    await fill(client, url, 5)
    backend = RecordingBackend()
    runner = queue_engine(client, backend, max_concurrency=3)
    await run_until(runner, lambda: len(client.deleted(url)) >= 5)
    status = runner.status()
    assert status["queue_url"] == url
    assert status["visibility_timeout_seconds"] == 45
    assert status["max_concurrency"] == 3
    assert status["fifo"] is False
    assert status["batches_in_flight"] == 0
