"""The shard machinery against a stateful fake Kinesis: order, restarts, lineage, retries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import anyio
import pytest

from esm.aws.kinesis import KinesisClient
from esm.checkpoints.memory import MemoryCheckpointStore
from esm.engine.batcher import BatchLimits
from esm.engine.driver import Deliverer, FunctionTarget
from esm.engine.retry import Backoff
from esm.engine.stream_model import ShardPhase, StreamSettings
from esm.engine.streams import StreamEngine
from esm.metrics import Metrics
from esm.model import IteratorType, StartPosition
from esm.sources.kinesis import KinesisRecordFactory, KinesisStreamAPI
from esm.testing import FakeKinesisClient, RecordingBackend, function_error, kinesis_data

pytestmark = pytest.mark.anyio

STREAM = "orders"
ARN = f"arn:aws:kinesis:us-east-1:000000000000:stream/{STREAM}"
FAST = Backoff(initial=0.01, maximum=0.05)


def make_runner(
    client: FakeKinesisClient,
    backend: RecordingBackend,
    store: MemoryCheckpointStore,
    *,
    batch_size: int = 100,
    window: float = 0.0,
    start: IteratorType = IteratorType.TRIM_HORIZON,
    metrics: Metrics | None = None,
) -> StreamEngine:
    metrics = metrics or Metrics()
    factory = KinesisRecordFactory(
        stream_arn=ARN, region="us-east-1", identity_arn="arn:aws:iam::000000000000:role/esm"
    )
    # The fake is the typed client itself: mypy checks it against the service's shapes.
    typed: KinesisClient = client
    api = KinesisStreamAPI(typed, stream_name=STREAM, stream_arn=ARN, records=factory)
    settings = StreamSettings(
        mapping_id="m1",
        starting_position=StartPosition(start),
        limits=BatchLimits(batch_size=batch_size, window_seconds=window),
        poll_interval=0.2,
        discovery_interval=0.2,
        read_backoff=FAST,
    )
    target = FunctionTarget(
        name="fn", arn="arn:aws:lambda:us-east-1:000000000000:function:fn", timeout=3
    )
    deliverer = Deliverer(backend, target, "m1", metrics, backoff=FAST)
    return StreamEngine(api, settings, deliverer, store, metrics)


async def run_until(runner: StreamEngine, done: Callable[[], bool], timeout: float = 20) -> None:
    """Run the mapping until `done()` holds, then stop it gracefully."""
    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            while not done():
                await anyio.sleep(0.01)
            runner.stop()


def per_shard_data(backend: RecordingBackend) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for record in backend.delivered_records():
        shard = record["eventID"].split(":")[0]
        out.setdefault(shard, []).append(kinesis_data(record))
    return out


def put_many(
    client: FakeKinesisClient, count: int, *, shard_id: str | None = None
) -> dict[str, list[bytes]]:
    """Write `count` records spread over the shards; returns what each shard holds, in order."""
    expected: dict[str, list[bytes]] = {}
    shards = client.shard_ids(STREAM)
    for n in range(count):
        target = shard_id or shards[n % len(shards)]
        data = f"r{n}".encode()
        client.put_record(STREAM, data, f"k{n}", shard_id=target)
        expected.setdefault(target, []).append(data)
    return expected


async def test_every_record_delivered_once_in_order_per_shard() -> None:
    client = FakeKinesisClient(page_limit=150)
    client.create_stream(STREAM, 3)
    expected = put_many(client, 1000)
    backend = RecordingBackend()
    runner = make_runner(client, backend, MemoryCheckpointStore(), batch_size=40)
    await run_until(runner, lambda: len(backend.delivered_records()) >= 1000)
    assert per_shard_data(backend) == expected
    assert all(len(e["Records"]) <= 40 for e in backend.events)
    # A batch holds records of one shard only.
    assert all(len({r["eventID"].split(":")[0] for r in e["Records"]}) == 1 for e in backend.events)


async def test_restart_resumes_after_the_checkpoint_without_loss() -> None:
    client = FakeKinesisClient(page_limit=50)
    client.create_stream(STREAM, 2)
    expected = put_many(client, 400)
    store = MemoryCheckpointStore()
    first = RecordingBackend()
    await run_until(
        make_runner(client, first, store, batch_size=25), lambda: len(first.events) >= 5
    )
    delivered_first = per_shard_data(first)
    checkpoints = await store.load("m1")
    assert checkpoints, "a delivered batch must leave a checkpoint"

    second = RecordingBackend()
    remaining = sum(len(v) for v in expected.values()) - sum(
        len(v) for v in delivered_first.values()
    )
    await run_until(
        make_runner(client, second, store, batch_size=25),
        lambda: len(second.delivered_records()) >= remaining,
    )
    delivered_second = per_shard_data(second)
    for shard, records in expected.items():
        # Nothing skipped, nothing before the checkpoint delivered again.
        assert delivered_first.get(shard, []) + delivered_second.get(shard, []) == records


async def test_children_are_read_only_after_their_parent_is_finished() -> None:
    client = FakeKinesisClient(page_limit=20)
    client.create_stream(STREAM, 1)
    parent = client.shard_ids(STREAM)[0]
    parent_data = put_many(client, 100, shard_id=parent)[parent]
    left, right = client.split_shard(STREAM, parent)
    left_data = put_many(client, 30, shard_id=left)[left]
    right_data = put_many(client, 30, shard_id=right)[right]
    backend = RecordingBackend()
    runner = make_runner(client, backend, MemoryCheckpointStore(), batch_size=10)
    await run_until(runner, lambda: len(backend.delivered_records()) >= 160)
    shards_in_order = [e["Records"][0]["eventID"].split(":")[0] for e in backend.events]
    last_parent = max(i for i, s in enumerate(shards_in_order) if s == parent)
    first_child = min(i for i, s in enumerate(shards_in_order) if s != parent)
    assert last_parent < first_child
    assert per_shard_data(backend) == {parent: parent_data, left: left_data, right: right_data}
    assert runner.shards[parent].phase is ShardPhase.FINISHED


async def test_closed_shard_that_keeps_returning_iterators_still_ends() -> None:
    client = FakeKinesisClient(closed_returns_iterator=True)
    client.create_stream(STREAM, 1)
    parent = client.shard_ids(STREAM)[0]
    put_many(client, 10, shard_id=parent)
    left, _ = client.split_shard(STREAM, parent)
    put_many(client, 5, shard_id=left)
    backend = RecordingBackend()
    runner = make_runner(client, backend, MemoryCheckpointStore())
    await run_until(runner, lambda: len(backend.delivered_records()) >= 15)
    assert runner.shards[parent].phase is ShardPhase.FINISHED


async def test_failing_handler_gets_the_same_batch_until_it_succeeds() -> None:
    client = FakeKinesisClient()
    client.create_stream(STREAM, 1)
    put_many(client, 7)

    def fail_twice(event: dict[str, Any], call: int) -> Any:
        return function_error("not yet") if call <= 2 else {"ok": True}

    backend = RecordingBackend(fail_twice)
    metrics = Metrics()
    runner = make_runner(client, backend, MemoryCheckpointStore(), metrics=metrics)
    await run_until(runner, lambda: len(backend.events) >= 3)
    assert len(backend.events) == 3
    assert backend.events[0] == backend.events[1] == backend.events[2]
    assert len(backend.events[0]["Records"]) == 7
    assert metrics.invocations.labels("m1", "function_error")._value.get() == 2
    assert metrics.invocations.labels("m1", "success")._value.get() == 1
    assert metrics.failed_invoke_events.labels("m1")._value.get() == 14


async def test_expired_iterator_and_throttling_lose_nothing() -> None:
    client = FakeKinesisClient(page_limit=10)
    client.create_stream(STREAM, 1)
    expected = put_many(client, 60)
    client.fail_next("GetRecords", "ProvisionedThroughputExceededException", times=3)
    client.fail_next("ListShards", "LimitExceededException", times=1)
    backend = RecordingBackend()
    calls = {"n": 0}

    def expire_sometimes(event: dict[str, Any], call: int) -> Any:
        calls["n"] += 1
        if call in (2, 4):
            client.expire_iterators()
        return None

    backend.script = expire_sometimes
    metrics = Metrics()
    runner = make_runner(client, backend, MemoryCheckpointStore(), batch_size=10, metrics=metrics)
    await run_until(runner, lambda: len(backend.delivered_records()) >= 60)
    assert per_shard_data(backend) == expected
    assert metrics.read_errors.labels("m1", "throttled")._value.get() == 3


async def test_latest_skips_what_was_there_before_the_mapping_started() -> None:
    client = FakeKinesisClient()
    client.create_stream(STREAM, 1)
    put_many(client, 5)
    backend = RecordingBackend()
    runner = make_runner(client, backend, MemoryCheckpointStore(), start=IteratorType.LATEST)

    async def write_later() -> None:
        while not runner.ready or not all(
            s.phase is ShardPhase.READING for s in runner.shards.values()
        ):
            await anyio.sleep(0.01)
        await anyio.sleep(0.3)
        client.put_record(STREAM, b"new", "k")

    async with anyio.create_task_group() as tg:
        tg.start_soon(write_later)
        await run_until(runner, lambda: len(backend.delivered_records()) >= 1)
    assert [kinesis_data(r) for r in backend.delivered_records()] == [b"new"]


async def test_batching_window_gathers_records_from_several_reads() -> None:
    client = FakeKinesisClient(page_limit=10)
    client.create_stream(STREAM, 1)
    put_many(client, 30)
    backend = RecordingBackend()
    runner = make_runner(client, backend, MemoryCheckpointStore(), batch_size=100, window=2.0)
    await run_until(runner, lambda: len(backend.delivered_records()) >= 30)
    # Three GetRecords pages of ten, one invocation.
    assert [len(e["Records"]) for e in backend.events] == [30]


async def test_status_shows_shards_and_checkpoints() -> None:
    client = FakeKinesisClient()
    client.create_stream(STREAM, 2)
    put_many(client, 10)
    backend = RecordingBackend()
    runner = make_runner(client, backend, MemoryCheckpointStore())
    await run_until(runner, lambda: len(backend.delivered_records()) >= 10)
    status = runner.status()
    assert status["ready"] is True
    assert set(status["shards"]) == set(client.shard_ids(STREAM))
    for shard in status["shards"].values():
        assert shard["checkpoint"] is not None
        assert shard["records_delivered"] == 5
        assert shard["in_flight"] == []


async def test_stop_lets_the_in_flight_batch_finish_and_saves_its_checkpoint() -> None:
    client = FakeKinesisClient(page_limit=10)
    client.create_stream(STREAM, 1)
    put_many(client, 50)
    backend = RecordingBackend(delay=0.5)
    store = MemoryCheckpointStore()
    runner = make_runner(client, backend, store, batch_size=10)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            while not backend.events:
                await anyio.sleep(0.01)
            # The first invocation is under way: stop now.
            runner.stop()
    assert len(backend.events) == 1, "no new batch starts after the stop"
    saved = await store.load("m1")
    shard = client.shard_ids(STREAM)[0]
    assert saved[shard].sequence == backend.events[0]["Records"][-1]["kinesis"]["sequenceNumber"]


async def test_at_timestamp_starts_at_the_first_record_at_or_after_it() -> None:
    client = FakeKinesisClient()
    client.create_stream(STREAM, 1)
    for n in range(10):
        client.put_record(STREAM, f"r{n}".encode(), "k", arrival=1_700_000_000 + n)
    backend = RecordingBackend()
    runner = make_runner(client, backend, MemoryCheckpointStore(), start=IteratorType.AT_TIMESTAMP)
    runner.settings = StreamSettings(
        mapping_id="m1",
        starting_position=StartPosition(IteratorType.AT_TIMESTAMP, timestamp=1_700_000_004),
        limits=runner.settings.limits,
        poll_interval=0.2,
        discovery_interval=0.2,
    )
    await run_until(runner, lambda: len(backend.delivered_records()) >= 6)
    assert [kinesis_data(r) for r in backend.delivered_records()] == [
        f"r{n}".encode() for n in range(4, 10)
    ]


async def test_iterator_age_is_exported_per_shard() -> None:
    client = FakeKinesisClient()
    client.create_stream(STREAM, 1)
    client.put_record(STREAM, b"old", "k", arrival=1_000.0)
    backend = RecordingBackend()
    metrics = Metrics()
    runner = make_runner(client, backend, MemoryCheckpointStore(), metrics=metrics)
    await run_until(runner, lambda: len(backend.events) >= 1)
    shard = client.shard_ids(STREAM)[0]
    age = metrics.iterator_age.labels("m1", shard)._value.get()
    # The record arrived at epoch 1000 s: its age when sent is the time since then.
    assert age > 1_000_000_000


@pytest.mark.parametrize("poll", [0.0, 0.2])
async def test_a_stop_while_pages_wait_for_a_stopped_lane_ends_cleanly(poll: float) -> None:
    client = FakeKinesisClient(page_limit=10)
    client.create_stream(STREAM, 1)
    expected = put_many(client, 100)
    store = MemoryCheckpointStore()
    first = RecordingBackend(delay=0.05)
    runner = make_runner(client, first, store, batch_size=10)
    runner.settings = replace(runner.settings, poll_interval=poll, busy_poll_interval=poll)
    await run_until(runner, lambda: len(first.events) >= 3)
    second = RecordingBackend()
    delivered = len(first.delivered_records())
    await run_until(
        make_runner(client, second, store, batch_size=10),
        lambda: len(second.delivered_records()) >= 100 - delivered,
    )
    shard = client.shard_ids(STREAM)[0]
    assert per_shard_data(first)[shard] + per_shard_data(second)[shard] == expected[shard]
