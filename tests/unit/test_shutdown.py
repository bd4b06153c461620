"""Shutdown past its grace period: every abandoned batch is logged with what will be delivered
again, and releasing an SQS poller's messages cannot hold the process beyond the grace period."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from esm.checkpoints.memory import MemoryCheckpointStore
from esm.engine.batcher import BatchLimits
from esm.engine.driver import Deliverer, FunctionTarget
from esm.engine.lanes import lane_of
from esm.engine.retry import Backoff
from esm.engine.stream_model import StreamSettings
from esm.engine.streams import StreamEngine
from esm.metrics import Metrics
from esm.model import IteratorType, StartPosition
from esm.sources.kinesis import KinesisRecordFactory, KinesisStreamAPI
from esm.sources.sqs import QueueRunner, QueueSettings
from esm.testing import (
    FakeKinesisClient,
    FakeSqsClient,
    RecordingBackend,
    function_error,
    throttle,
)

pytestmark = pytest.mark.anyio

STREAM = "orders"
STREAM_ARN = f"arn:aws:kinesis:us-east-1:000000000000:stream/{STREAM}"
QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:work"
FAST = Backoff(initial=0.01, maximum=0.05)
TARGET = FunctionTarget(
    name="fn", arn="arn:aws:lambda:us-east-1:000000000000:function:fn", timeout=900
)
# Never answers within a test: what it is given stays in flight.
HANGING = 3600.0
GRACE = 0.2
ABANDONED = "batch abandoned at shutdown, it will be delivered again"


def stream_runner(
    kinesis: FakeKinesisClient,
    backend: RecordingBackend,
    *,
    parallelization: int = 1,
    backoff: Backoff = FAST,
) -> StreamEngine:
    metrics = Metrics()
    factory = KinesisRecordFactory(
        stream_arn=STREAM_ARN, region="us-east-1", identity_arn="arn:aws:iam::0:role/esm"
    )
    api = KinesisStreamAPI(kinesis, stream_name=STREAM, stream_arn=STREAM_ARN, records=factory)
    settings = StreamSettings(
        mapping_id="m1",
        starting_position=StartPosition(IteratorType.TRIM_HORIZON),
        limits=BatchLimits(batch_size=100),
        poll_interval=0.05,
        discovery_interval=0.2,
        parallelization=parallelization,
        read_backoff=FAST,
    )
    deliverer = Deliverer(backend, TARGET, "m1", metrics, backoff=backoff)
    return StreamEngine(api, settings, deliverer, MemoryCheckpointStore(), metrics)


def queue_runner(
    client: Any,
    backend: RecordingBackend,
    *,
    window: float = 0.0,
    batch_size: int = 10,
    backoff: Backoff = FAST,
) -> QueueRunner:
    metrics = Metrics()
    settings = QueueSettings(
        mapping_id="m1",
        queue_arn=QUEUE_ARN,
        region="us-east-1",
        limits=BatchLimits(batch_size=batch_size, window_seconds=window),
        max_concurrency=1,
        wait_time_seconds=0,
        shutdown_grace_seconds=GRACE,
        backoff=FAST,
    )
    deliverer = Deliverer(backend, TARGET, "m1", metrics, backoff=backoff)
    return QueueRunner(client, settings, deliverer, metrics)


async def stop_with_grace(runner: StreamEngine | QueueRunner, tg: Any) -> None:
    """What the daemon does: stop reading, then cancel whatever runs past the grace period."""
    runner.stop()
    tg.cancel_scope.deadline = anyio.current_time() + GRACE


async def wait_for(condition: Any) -> None:
    while not condition():
        await anyio.sleep(0.01)


def abandoned(logs: Sequence[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [line for line in logs if line["event"] == ABANDONED]


# -- streams ---------------------------------------------------------------------------------


async def test_each_stream_batch_in_flight_when_the_grace_period_ends_is_logged() -> None:
    kinesis = FakeKinesisClient()
    kinesis.create_stream(STREAM, 1)
    (shard,) = kinesis.shard_ids(STREAM)
    # Two keys in different lanes: two batches in flight at once.
    keys = ["key-a", "key-d"]
    assert lane_of(keys[0], 2) != lane_of(keys[1], 2)
    sequences: dict[str, list[str]] = {key: [] for key in keys}
    for n in range(6):
        key = keys[n % 2]
        sequences[key].append(kinesis.put_record(STREAM, f"r{n}".encode(), key))
    with capture_logs() as logs:
        runner = stream_runner(kinesis, RecordingBackend(delay=HANGING), parallelization=2)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(runner.run)
                await wait_for(
                    lambda: shard in runner.shards and len(runner.shards[shard].in_flight) == 2
                )
                await stop_with_grace(runner, tg)
        assert tg.cancel_scope.cancelled_caught, "the grace period ended the runner"

    lines = abandoned(logs)
    assert len(lines) == 2, "one line per abandoned batch"
    for line in lines:
        assert line["log_level"] == "warning"
        assert line["mapping"] == "m1"
        assert line["shard"] == shard
        assert line["reason"] == "the shutdown grace period ran out"
        assert line["records"] == 3
        assert line["checkpoint"] is None, "nothing was delivered: it starts over"
    ranges = sorted((line["first_sequence"], line["last_sequence"]) for line in lines)
    assert ranges == sorted((seqs[0], seqs[-1]) for seqs in sequences.values())


async def test_a_stream_batch_waiting_for_its_retry_at_shutdown_is_logged() -> None:
    kinesis = FakeKinesisClient()
    kinesis.create_stream(STREAM, 1)
    (shard,) = kinesis.shard_ids(STREAM)
    first = kinesis.put_record(STREAM, b"r0", "key")
    last = kinesis.put_record(STREAM, b"r1", "key")
    backend = RecordingBackend(lambda event, call: function_error())
    with capture_logs() as logs:
        # The retry is a minute away: shutdown comes first, and needs no grace period.
        runner = stream_runner(kinesis, backend, backoff=Backoff(initial=60, maximum=60))
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(runner.run)
                await wait_for(lambda: len(backend.events) == 1)
                await wait_for(
                    lambda: any(
                        f.next_attempt_at is not None
                        for f in runner.shards[shard].in_flight.values()
                    )
                )
                runner.stop()
        assert not tg.cancel_scope.cancelled_caught

    (line,) = abandoned(logs)
    assert line["shard"] == shard
    assert line["reason"] == "shutdown came between retries"
    assert (line["first_sequence"], line["last_sequence"]) == (first, last)


# -- queues ----------------------------------------------------------------------------------


async def test_an_sqs_batch_in_flight_when_the_grace_period_ends_is_logged() -> None:
    sqs = FakeSqsClient()
    url = str((await sqs.create_queue(QueueName="work"))["QueueUrl"])
    for n in range(3):
        await sqs.send_message(QueueUrl=url, MessageBody=f"m{n}")
    sent = [m["MessageId"] for m in sqs.messages(url)]
    with capture_logs() as logs:
        runner = queue_runner(sqs, RecordingBackend(delay=HANGING))
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(runner.run)
                await wait_for(lambda: runner.in_flight == 1)
                await stop_with_grace(runner, tg)
        assert tg.cancel_scope.cancelled_caught, "the grace period ended the runner"

    (line,) = abandoned(logs)
    assert line["log_level"] == "warning"
    assert line["mapping"] == "m1"
    assert line["queue"] == "work"
    assert line["messages"] == 3
    assert sorted(line["message_ids"]) == sorted(sent)
    assert line["visible_again_within_seconds"] == 30
    # Not deleted: SQS hands them out again.
    assert sqs.deleted(url) == []


async def test_an_sqs_batch_waiting_for_its_retry_at_shutdown_is_logged() -> None:
    sqs = FakeSqsClient()
    url = str((await sqs.create_queue(QueueName="work"))["QueueUrl"])
    await sqs.send_message(QueueUrl=url, MessageBody="m0")
    (sent,) = [m["MessageId"] for m in sqs.messages(url)]
    backend = RecordingBackend(lambda event, call: throttle())
    with capture_logs() as logs:
        # The retry is 10 s away (within the visibility timeout): shutdown comes first.
        runner = queue_runner(sqs, backend, backoff=Backoff(initial=10, maximum=10))
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(runner.run)
                await wait_for(lambda: len(backend.events) == 1)
                runner.stop()
        assert not tg.cancel_scope.cancelled_caught

    (line,) = abandoned(logs)
    assert line["reason"] == "shutdown came between retries"
    assert line["message_ids"] == [sent]
    assert sqs.deleted(url) == []


class _UnansweredVisibility(FakeSqsClient):
    """A queue whose ChangeMessageVisibility calls never answer (the endpoint hangs)."""

    async def change_message_visibility_batch(self, **kwargs: Any) -> Any:
        await anyio.sleep_forever()


async def test_releasing_sqs_messages_at_shutdown_gives_up_when_the_grace_period_ends() -> None:
    sqs = _UnansweredVisibility()
    url = str((await sqs.create_queue(QueueName="work"))["QueueUrl"])
    for n in range(3):
        await sqs.send_message(QueueUrl=url, MessageBody=f"m{n}")
    sent = [m["MessageId"] for m in sqs.messages(url)]
    backend = RecordingBackend()
    with capture_logs() as logs:
        # A long batching window: the poller holds the messages when the stop comes.
        runner = queue_runner(sqs, backend, window=60, batch_size=100)
        received = runner.metrics.polled_events.labels("m1")
        # Nothing outside the runner cancels it: only the runner's own bound can end the
        # release, and run() must return.
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(runner.run)
                await wait_for(lambda: received._value.get() >= 3)
                runner.stop()

    assert backend.events == [], "nothing was delivered"
    (line,) = [
        line
        for line in logs
        if line["event"]
        == "releasing messages at shutdown ran out of time, they will be delivered again"
    ]
    assert line["log_level"] == "warning"
    assert line["queue"] == "work"
    assert sorted(line["message_ids"]) == sorted(sent)
