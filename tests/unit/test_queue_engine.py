"""The queue engine against a fake queue reader: batches, settlement, scaling, shutdown.

Time that decides something (the batching window, the pollers' target) is an injected clock
that the tests move; nothing here waits for a window in real time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from esm.engine.batcher import BatchLimits
from esm.engine.driver import Deliverer, FunctionTarget
from esm.engine.partial import fail_rest_of_groups
from esm.engine.queue import QueueEngine, QueueSettings
from esm.engine.retry import Backoff
from esm.engine.scaling import ScalingLimits
from esm.events import create_record
from esm.metrics import Metrics
from esm.model import Record
from esm.testing import FakeQueueReader, RecordingBackend, function_error, throttle

pytestmark = pytest.mark.anyio

TARGET = FunctionTarget(name="fn", arn="arn:aws:lambda:us-east-1:1:function:fn", timeout=3)
FAST = Backoff(0.01, 0.05)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def engine(
    reader: FakeQueueReader,
    backend: RecordingBackend,
    *,
    clock: Callable[[], float] | None = None,
    metrics: Metrics | None = None,
    batch_size: int = 10,
    window: float = 0.0,
    max_concurrency: int = 1,
    **settings: Any,
) -> QueueEngine:
    metrics = metrics or Metrics()
    queue_settings = QueueSettings(
        mapping="m",
        limits=BatchLimits(batch_size=batch_size, window_seconds=window),
        scaling=ScalingLimits(maximum=max_concurrency),
        wait_time_seconds=0,
        backoff=FAST,
        **settings,
    )
    deliverer = Deliverer(backend, TARGET, "m", metrics, backoff=FAST)
    return QueueEngine(reader, queue_settings, deliverer, metrics, clock=clock or Clock())


async def run_until(runner: QueueEngine, done: Callable[[], bool], seconds: float = 10) -> None:
    with anyio.fail_after(seconds):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            while not done():
                await anyio.sleep(0.005)
            runner.stop()


def batches(backend: RecordingBackend) -> list[list[str]]:
    return [[r["body"] for r in event["Records"]] for event in backend.events]


async def test_without_a_window_a_batch_is_what_one_receive_returned() -> None:
    reader = FakeQueueReader(page_size=2)
    reader.put("a", "b", "c", "d", "e")
    backend = RecordingBackend()
    runner = engine(reader, backend)
    await run_until(runner, lambda: len(reader.acked) == 5)
    assert batches(backend) == [["a", "b"], ["c", "d"], ["e"]]
    assert [count for count, _ in reader.receives[:3]] == [10, 10, 10]


async def test_the_batching_window_gathers_over_several_receives_on_the_clock() -> None:
    clock = Clock()

    def tick() -> None:
        clock.now += 1.0

    reader = FakeQueueReader(page_size=2, on_receive=tick)
    reader.put(*(f"m{n}" for n in range(20)))
    backend = RecordingBackend()
    runner = engine(reader, backend, clock=clock, batch_size=100, window=3.5)
    await run_until(runner, lambda: len(reader.acked) == 20)
    # The window opens with the first receive's messages and closes 3.5 clock seconds later,
    # after the fifth receive: five receives of two make each batch.
    assert [len(b) for b in batches(backend)] == [10, 10]
    # Each receive asks for what the batch still takes, at most ten.
    assert [count for count, _ in reader.receives[:5]] == [10, 10, 10, 10, 10]


async def test_a_batch_ends_at_batch_size_and_asks_for_no_more_than_fits() -> None:
    reader = FakeQueueReader(page_size=10)
    reader.put(*(f"m{n}" for n in range(14)))
    backend = RecordingBackend()
    runner = engine(reader, backend, batch_size=7, window=60)
    await run_until(runner, lambda: len(reader.acked) == 14)
    assert [len(b) for b in batches(backend)] == [7, 7]
    assert [count for count, _ in reader.receives[:2]] == [7, 7]


async def test_partial_failures_nack_only_the_failed_messages() -> None:
    reader = FakeQueueReader()
    sent = reader.put("a", "b", "c")

    def fail_b(event: dict[str, Any], call: int) -> Any:
        return {"batchItemFailures": [{"itemIdentifier": event["Records"][1]["messageId"]}]}

    runner = engine(
        reader,
        RecordingBackend(fail_b),
        report_item_failures=True,
        failure_visibility_seconds=7,
    )
    await run_until(runner, lambda: len(reader.acked) + len(reader.nacked) == 3)
    assert reader.acked == [sent[0], sent[2]]
    assert reader.nacked == [(sent[1], 7)]


async def test_a_function_error_nacks_the_whole_batch_with_the_queues_visibility() -> None:
    reader = FakeQueueReader()
    sent = reader.put("a", "b")
    backend = RecordingBackend(lambda event, call: function_error("boom"))
    runner = engine(reader, backend)
    await run_until(runner, lambda: len(reader.nacked) == 2)
    assert reader.acked == []
    assert reader.nacked == [(sent[0], None), (sent[1], None)]


async def test_filtered_out_messages_are_acked_without_being_delivered() -> None:
    reader = FakeQueueReader()
    sent = reader.put("keep", "skip", "keep")
    metrics = Metrics()
    backend = RecordingBackend()
    runner = engine(
        reader,
        backend,
        metrics=metrics,
        record_filter=lambda record: record.entry["body"] == "keep",
    )
    await run_until(runner, lambda: len(reader.acked) == 3)
    assert batches(backend) == [["keep", "keep"]]
    assert reader.acked == [sent[1], sent[0], sent[2]], "the filtered one first"
    assert metrics.filtered_out_events.labels("m")._value.get() == 1
    assert metrics.deleted_events.labels("m")._value.get() == 3


def _records(groups: str) -> list[Record]:
    return [
        create_record(sequence=str(n), order=n, key=group, arrival=0.0, entry={})
        for n, group in enumerate(groups)
    ]


def test_fifo_a_failed_message_fails_the_rest_of_its_group_in_the_batch() -> None:
    records = _records("abab")
    assert fail_rest_of_groups(frozenset({0}), records) == {0, 2}
    assert fail_rest_of_groups(frozenset({1}), records) == {1, 3}
    assert fail_rest_of_groups(frozenset({2}), records) == {2}, "what came before stays done"
    assert fail_rest_of_groups(frozenset(), records) == set()


async def test_fifo_partial_failure_nacks_the_failed_messages_group_from_it_on() -> None:
    reader = FakeQueueReader(fifo=True)
    a1, b1 = reader.put("a1", group="a")[0], reader.put("b1", group="b")[0]
    a2, b2 = reader.put("a2", group="a")[0], reader.put("b2", group="b")[0]

    def fail_a1(event: dict[str, Any], call: int) -> Any:
        return {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}

    runner = engine(reader, RecordingBackend(fail_a1), report_item_failures=True)
    await run_until(runner, lambda: len(reader.acked) + len(reader.nacked) == 4)
    assert reader.acked == [b1, b2]
    assert [record for record, _ in reader.nacked] == [a1, a2]


async def test_a_batchs_messages_are_kept_invisible_while_it_is_delivered() -> None:
    reader = FakeQueueReader()
    sent = reader.put("a")
    runner = engine(reader, RecordingBackend())
    await run_until(runner, lambda: len(reader.acked) == 1)
    assert reader.kept_invisible == [sent]


async def test_shutdown_releases_the_messages_held_for_a_batch_not_yet_delivered() -> None:
    reader = FakeQueueReader()
    sent = reader.put("a", "b")
    backend = RecordingBackend()
    # A long batching window: the poller holds the messages when the stop comes.
    runner = engine(reader, backend, batch_size=100, window=60)
    await run_until(runner, lambda: not reader.waiting)
    assert backend.events == []
    assert reader.released == sent
    assert reader.acked == []


async def test_without_release_on_shutdown_held_messages_wait_out_their_visibility() -> None:
    reader = FakeQueueReader()
    reader.put("a", "b")
    runner = engine(
        reader, RecordingBackend(), batch_size=100, window=60, release_on_shutdown=False
    )
    await run_until(runner, lambda: not reader.waiting)
    assert reader.released == []


async def test_a_release_that_hangs_is_given_up_at_the_end_of_the_grace_period() -> None:
    reader = FakeQueueReader()
    reader.release_hangs = True
    sent = reader.put("a", "b")
    with capture_logs() as logs:
        runner = engine(
            reader,
            RecordingBackend(),
            batch_size=100,
            window=60,
            shutdown_grace_seconds=0.1,
        )
        await run_until(runner, lambda: not reader.waiting)
    (line,) = [line for line in logs if line["event"].startswith("releasing messages")]
    assert line["message_ids"] == [r.sequence for r in sent]


async def test_a_batch_in_flight_at_shutdown_finishes_within_the_grace_period() -> None:
    reader = FakeQueueReader()
    sent = reader.put("a")
    backend = RecordingBackend(delay=0.2)
    runner = engine(reader, backend, shutdown_grace_seconds=5)
    await run_until(runner, lambda: runner.in_flight == 1)
    assert reader.acked == sent, "delivered and acked after the stop"


async def test_a_throttle_halves_the_target_and_the_batch_is_retried() -> None:
    reader = FakeQueueReader()
    reader.put("a")
    backend = RecordingBackend(lambda event, call: throttle() if call == 1 else None)
    runner = engine(reader, backend, max_concurrency=4)
    await run_until(runner, lambda: len(reader.acked) == 1)
    assert len(backend.events) == 2
    assert runner.target <= 2


async def test_full_receives_add_pollers_and_empty_ones_retire_them_to_the_floor() -> None:
    clock = Clock()
    targets: list[int] = []

    def tick() -> None:
        # What the target was when each receive began.
        targets.append(runner.target)
        clock.now += 10.0

    reader = FakeQueueReader(page_size=10, on_receive=tick)
    reader.put(*(f"m{n}" for n in range(30)))
    runner = engine(reader, RecordingBackend(), clock=clock, max_concurrency=8)
    assert runner.target == 5

    def idle_at_the_floor() -> bool:
        return len(reader.acked) == 30 and runner.target == 2 and runner.running == 2

    await run_until(runner, idle_at_the_floor)
    assert max(targets) > 5, "full receives raised the target"


async def test_an_unreachable_queue_is_retried_until_it_answers() -> None:
    reader = FakeQueueReader()
    reader.open_failures = 2
    reader.put("a")
    runner = engine(reader, RecordingBackend())
    await run_until(runner, lambda: len(reader.acked) == 1)
    assert runner.status()["last_error"] == "GetQueueUrl: the queue does not answer"


async def test_stop_before_the_queue_answers_ends_the_run() -> None:
    reader = FakeQueueReader()
    reader.open_failures = 1000
    runner = engine(reader, RecordingBackend())
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            await anyio.sleep(0.05)
            runner.stop()
    assert runner.status()["ready"] is False


async def test_status_shows_pollers_backlog_and_the_readers_fields() -> None:
    reader = FakeQueueReader()
    reader.put("a", "b")
    runner = engine(reader, RecordingBackend(), max_concurrency=3)
    status: dict[str, Any] = {}

    def settled() -> bool:
        status.update(runner.status())
        return len(reader.acked) == 2

    await run_until(runner, settled)
    assert status["ready"] is True
    assert status["queue"] == "work"
    assert status["max_concurrency"] == 3
    # Receives that come back short lower the target from the maximum towards the floor.
    assert 2 <= status["pollers"]["target"] <= 3
    assert status["backlog"] == {"visible": 2}
    assert runner.status()["stopping"] is True
