"""Stream engines of two workers sharing one stream through leases (a table in memory): the
shards even out, a handoff delivers nothing twice, and a worker that stops hands its shards
to the other."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import anyio
import pytest

from esm.engine.batcher import BatchLimits
from esm.engine.driver import Deliverer, FunctionTarget
from esm.engine.retry import Backoff
from esm.engine.stream_model import StreamSettings
from esm.engine.streams import StreamEngine
from esm.leases.heartbeat import Heartbeat
from esm.leases.liveness import Liveness
from esm.leases.manager import LeaseManager, LeaseSettings
from esm.metrics import Metrics
from esm.model import Checkpoint, IteratorType, StartPosition
from esm.testing import FakeStream, RecordingBackend
from esm.testing.leases import FakeLeaseStore

pytestmark = pytest.mark.anyio

FAST = Backoff(initial=0.01, maximum=0.05)
TARGET = FunctionTarget(
    name="fn", arn="arn:aws:lambda:us-east-1:123456789012:function:fn", timeout=3
)
DURATION = 0.6
BEAT = 0.05


class ManagerCheckpoints:
    """The engine's checkpoint store when leases decide: saves go into the lease."""

    def __init__(self, manager: LeaseManager) -> None:
        self.manager = manager

    async def load(self, mapping_id: str) -> dict[str, Checkpoint]:
        return {}

    async def save(self, mapping_id: str, partition: str, checkpoint: Checkpoint) -> None:
        await self.manager.save(partition, checkpoint)

    async def aclose(self) -> None:
        return None


class Worker:
    def __init__(self, name: str, stream: FakeStream, store: FakeLeaseStore) -> None:
        self.name = name
        self.backend = RecordingBackend()
        liveness = Liveness(DURATION)
        table = store.table()
        self.heart = Heartbeat(table, name, liveness, interval=BEAT)
        self.manager = LeaseManager(
            table,
            LeaseSettings(worker=name, duration=DURATION, pass_interval=BEAT, grace=1.0),
            liveness,
            healthy=self.heart.healthy,
        )
        metrics = Metrics()
        settings = StreamSettings(
            mapping_id="m1",
            starting_position=StartPosition(IteratorType.TRIM_HORIZON),
            limits=BatchLimits(batch_size=5, window_seconds=0),
            poll_interval=0.02,
            busy_poll_interval=0.02,
            discovery_interval=0.1,
            read_backoff=FAST,
            checkpoint_backoff=FAST,
        )
        deliverer = Deliverer(self.backend, TARGET, "m1", metrics, backoff=FAST)
        self.engine = StreamEngine(
            stream,
            settings,
            deliverer,
            ManagerCheckpoints(self.manager),
            metrics,
            ownership=self.manager,
        )
        self.stopped = anyio.Event()

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.heart.run)
            await self.engine.run()
            await self.heart.stop()
            tg.cancel_scope.cancel()
        self.stopped.set()

    def delivered(self) -> list[int]:
        """The order of every record delivered (unique across the stream's shards)."""
        return [int(record["seq"]) for event in self.backend.events for record in event["Records"]]


def _stream(shards: int, records: int) -> tuple[FakeStream, dict[str, list[int]]]:
    stream = FakeStream()
    put: dict[str, list[int]] = {}
    for n in range(shards):
        shard = f"shard-{n}"
        stream.add_shard(shard)
        put[shard] = [stream.put(shard).order for _ in range(records)]
    return stream, put


async def _until(condition: Callable[[], bool], seconds: float = 20) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.02)


async def test_two_workers_share_the_shards_and_deliver_every_record_once() -> None:
    stream, put = _stream(4, 12)
    store = FakeLeaseStore()
    a = Worker("a", stream, store)
    b = Worker("b", stream, store)
    total = sum(len(records) for records in put.values())
    async with anyio.create_task_group() as tg:
        tg.start_soon(a.run)
        await _until(lambda: len(a.engine.running()) == 4)
        tg.start_soon(b.run)
        await _until(lambda: len(b.engine.running()) == 2 and len(a.engine.running()) == 2)
        for shard_id in put:
            put[shard_id] += [stream.put(shard_id).order for _ in range(5)]
        total += 20
        await _until(lambda: len(a.delivered()) + len(b.delivered()) >= total)
        a.engine.stop(grace=1)
        b.engine.stop(grace=1)
    counts = Counter(a.delivered() + b.delivered())
    assert [order for order, n in counts.items() if n > 1] == []  # nothing delivered twice
    assert sorted(counts) == sorted(order for orders in put.values() for order in orders)
    for worker in (a, b):
        for orders in put.values():
            # Each shard's records in order, on each worker that read it.
            mine = [order for order in worker.delivered() if order in orders]
            assert mine == sorted(mine)
    assert {lease.owner for lease in store.leases.values()} == {None}


async def test_a_worker_that_stops_hands_its_shards_over_with_nothing_twice() -> None:
    stream, put = _stream(2, 10)
    store = FakeLeaseStore()
    a = Worker("a", stream, store)
    b = Worker("b", stream, store)
    async with anyio.create_task_group() as tg:
        tg.start_soon(a.run)
        tg.start_soon(b.run)
        await _until(lambda: len(a.delivered()) + len(b.delivered()) == 20)
        await _until(lambda: bool(a.engine.running() and b.engine.running()))
        a.engine.stop(grace=1)
        await a.stopped.wait()
        for shard_id in put:
            put[shard_id] += [stream.put(shard_id).order for _ in range(4)]
            await _until(lambda: len(b.engine.running()) == 2)
        await _until(lambda: len(a.delivered()) + len(b.delivered()) == 28)
        b.engine.stop(grace=1)
    delivered = a.delivered() + b.delivered()
    assert sorted(Counter(delivered).values()) == [1] * 28
    assert store.heartbeats == {}
