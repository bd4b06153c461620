"""The lease protocol between workers, against a table in memory with conditional writes and
a clock the test moves: takes, handoffs, failover, lineage, fencing."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import pytest

from esm.leases.heartbeat import Heartbeat
from esm.leases.liveness import Liveness
from esm.leases.manager import LeaseLost, LeaseManager, LeaseSettings
from esm.leases.model import LATEST, SHARD_END, Lease
from esm.model import Checkpoint, IteratorType, ShardInfo, StartPosition
from esm.testing.leases import FakeLeaseStore, FakeShards

pytestmark = pytest.mark.anyio

DURATION = 5.0


@dataclass
class Worker:
    name: str
    manager: LeaseManager
    heart: Heartbeat
    shards: FakeShards
    crashed: bool = False
    delivered: list[str] = field(default_factory=list)
    """Records delivered by this worker: "shard/sequence"."""

    @property
    def reading(self) -> set[str]:
        return set(self.shards.readers)


class World:
    """Workers sharing one lease table, moved by one clock."""

    def __init__(self, shards: list[ShardInfo], *, initial: str = "TRIM_HORIZON") -> None:
        self.store = FakeLeaseStore()
        self.now = 1000.0
        self.listing = shards
        self.initial = initial
        self.workers: dict[str, Worker] = {}

    def clock(self) -> float:
        return self.now

    def add(self, name: str) -> Worker:
        liveness = Liveness(DURATION)
        table = self.store.table()
        heart = Heartbeat(table, name, liveness, clock=self.clock)
        settings = LeaseSettings(worker=name, duration=DURATION, initial=self.initial)
        manager = LeaseManager(table, settings, liveness, healthy=heart.healthy)
        worker = Worker(name, manager, heart, FakeShards(*self.listing))
        self.workers[name] = worker
        return worker

    async def round(self, seconds: float = 1.0) -> None:
        """Every live worker beats, finishes what it was asked to release, and passes."""
        self.now += seconds
        for worker in self.workers.values():
            if worker.crashed:
                continue
            await worker.heart.beat_once()
            await self.finish_releases(worker)
            await worker.manager.tick(worker.shards, self.now)

    async def finish_releases(self, worker: Worker) -> None:
        for shard_id in sorted(worker.shards.releasing):
            with contextlib.suppress(LeaseLost):
                await self.checkpoint(worker, shard_id, Checkpoint(self.last_of(worker, shard_id)))
            worker.shards.end(shard_id)

    def last_of(self, worker: Worker, shard_id: str) -> str | None:
        mine = [r.split("/")[1] for r in worker.delivered if r.startswith(f"{shard_id}/")]
        return mine[-1] if mine else None

    async def checkpoint(self, worker: Worker, shard_id: str, checkpoint: Checkpoint) -> None:
        await worker.manager.checkpoint(worker.shards, shard_id, checkpoint)

    async def deliver(self, worker: Worker, shard_id: str, sequence: str) -> None:
        """The worker delivers a record of a shard it reads, then checkpoints it."""
        assert shard_id in worker.reading
        worker.delivered.append(f"{shard_id}/{sequence}")
        await self.checkpoint(worker, shard_id, Checkpoint(sequence))

    def spread(self) -> dict[str, int]:
        return {name: len(w.reading) for name, w in self.workers.items() if not w.crashed}


def _shards(count: int) -> list[ShardInfo]:
    return [ShardInfo(f"shard-{n:03d}") for n in range(count)]


async def test_a_lone_worker_creates_and_takes_every_lease_at_the_starting_position() -> None:
    world = World(_shards(4), initial=LATEST)
    worker = world.add("a")
    await world.round()
    assert worker.reading == {f"shard-{n:03d}" for n in range(4)}
    assert {start.type for start in worker.shards.readers.values()} == {IteratorType.LATEST}
    lease = world.store.leases["shard-000"]
    assert (lease.owner, lease.counter, lease.checkpoint, lease.owner_switches) == (
        "a",
        1,
        LATEST,
        1,
    )


async def test_no_lease_is_taken_before_the_first_heartbeat_is_written() -> None:
    world = World(_shards(2))
    worker = world.add("a")
    world.store.down = True
    await world.round()
    world.store.down = False
    await worker.manager.step(worker.shards, world.now + 10)
    assert worker.reading == set()


async def test_three_workers_even_out_twelve_shards_by_handoffs() -> None:
    world = World(_shards(12))
    first = world.add("a")
    await world.round()
    assert len(first.reading) == 12
    world.add("b")
    world.add("c")
    for _ in range(30):
        await world.round()
    assert world.spread() == {"a": 4, "b": 4, "c": 4}
    owners = {lease.owner for lease in world.store.leases.values()}
    assert owners == {"a", "b", "c"}


async def test_a_handoff_continues_after_the_final_checkpoint_with_no_record_twice() -> None:
    world = World(_shards(2))
    a = world.add("a")
    await world.round()
    for n in range(1, 4):
        await world.deliver(a, "shard-001", str(n))
    b = world.add("b")
    for _ in range(6):
        await world.round()
        if "shard-001" in b.reading or "shard-000" in b.reading:
            break
    # b's even share is one lease; it asks a, which holds two, for the last one.
    assert b.reading == {"shard-001"}
    assert a.reading == {"shard-000"}
    [start] = [start for shard, start in b.shards.started if shard == "shard-001"]
    assert start == StartPosition(IteratorType.AFTER_SEQUENCE_NUMBER, "3")
    lease = world.store.leases["shard-001"]
    assert (lease.owner, lease.checkpoint_owner, lease.checkpoint) == ("b", None, "3")


async def test_a_crashed_workers_leases_are_taken_within_the_duration_and_a_pass() -> None:
    world = World(_shards(6))
    a = world.add("a")
    b = world.add("b")
    for _ in range(10):
        await world.round()
    assert world.spread() == {"a": 3, "b": 3}
    orphans = set(a.reading)
    a.crashed = True
    crashed_at = world.now
    while not orphans <= b.reading:
        await world.round(0.25)
        assert world.now - crashed_at <= DURATION + 1.5, "failover took too long"
    assert b.reading == {f"shard-{n:03d}" for n in range(6)}


async def test_a_worker_that_lost_its_lease_writes_no_checkpoint_and_stops_reading() -> None:
    world = World(_shards(1))
    a = world.add("a")
    await world.round()
    await world.deliver(a, "shard-000", "1")
    # a stalls (a long pause): b, which has watched a's heartbeat, takes the lease.
    b = world.add("b")
    a.crashed = True
    for _ in range(8):
        await world.round()
    assert b.reading == {"shard-000"}
    a.crashed = False
    with pytest.raises(LeaseLost):
        await world.checkpoint(a, "shard-000", Checkpoint("2"))
    assert world.store.leases["shard-000"].checkpoint == "1"
    assert world.store.leases["shard-000"].owner == "b"
    assert a.reading == set()
    assert a.shards.lost == ["shard-000"]


async def test_a_worker_whose_heartbeat_fails_stops_its_readers_before_anyone_may_take() -> None:
    world = World(_shards(1))
    a = world.add("a")
    await world.round()
    last_beat = world.now
    world.store.down = True
    while a.reading:
        world.now += 0.5
        await a.heart.beat_once()
        await a.manager.tick(a.shards, world.now)
    assert world.now - last_beat < DURATION


async def test_children_wait_for_their_parents_shard_end_across_workers() -> None:
    parent = ShardInfo("shard-000")
    children = [ShardInfo("shard-001", ("shard-000",)), ShardInfo("shard-002", ("shard-000",))]
    world = World([parent, *children])
    a = world.add("a")
    b = world.add("b")
    for _ in range(4):
        await world.round()
    readers = a.reading | b.reading
    assert readers == {"shard-000"}
    owner = a if "shard-000" in a.reading else b
    await world.deliver(owner, "shard-000", "9")
    await world.checkpoint(owner, "shard-000", Checkpoint(None, finished=True))
    owner.shards.end("shard-000")
    for _ in range(4):
        await world.round()
    assert world.store.leases["shard-000"].checkpoint == SHARD_END
    assert world.store.leases["shard-000"].owner is None
    assert a.reading | b.reading == {"shard-001", "shard-002"}


async def test_shutdown_lets_go_of_every_lease_after_the_final_checkpoints() -> None:
    world = World(_shards(2))
    a = world.add("a")
    await world.round()
    await world.deliver(a, "shard-000", "5")
    for shard_id in list(a.reading):
        a.shards.end(shard_id)
    await a.manager.step(a.shards, world.now, stopping=True)
    await a.manager.release_all()
    await a.heart.stop()
    a.crashed = True  # the process has exited
    assert {lease.owner for lease in world.store.leases.values()} == {None}
    assert world.store.leases["shard-000"].checkpoint == "5"
    b = world.add("b")
    await world.round()
    await world.round()
    assert b.reading == {"shard-000", "shard-001"}
    assert (b.shards.readers["shard-000"].type, b.shards.readers["shard-000"].sequence) == (
        IteratorType.AFTER_SEQUENCE_NUMBER,
        "5",
    )


async def test_a_kcl_worker_without_heartbeat_is_judged_by_its_lease_counter() -> None:
    world = World([ShardInfo("shardId-000000000000")])
    world.store.leases["shardId-000000000000"] = Lease(
        "shardId-000000000000",
        counter=7,
        owner="kcl-worker-1",
        checkpoint="49590338271490256608559692538361571095921575989136588898",
    )
    a = world.add("a")
    await world.round()
    assert a.reading == set()  # the KCL worker might be alive: wait a whole duration
    for _ in range(6):
        await world.round()
    assert a.reading == {"shardId-000000000000"}
    start = a.shards.readers["shardId-000000000000"]
    assert start.sequence == "49590338271490256608559692538361571095921575989136588898"


async def test_a_seek_frees_the_lease_fences_its_reader_and_the_next_taker_starts_there() -> None:
    from esm.leases.seek import seek_leases

    world = World(_shards(2))
    a = world.add("a")
    await world.round()
    await world.deliver(a, "shard-000", "17")
    await world.deliver(a, "shard-001", "20")
    await seek_leases(
        world.store.table(),
        {
            "shard-000": Checkpoint("AT_SEQUENCE_NUMBER:12"),
            "shard-001": Checkpoint("AT_TIMESTAMP:1700000000.5"),
        },
    )
    moved = world.store.leases["shard-000"]
    assert (moved.owner, moved.checkpoint, moved.start) == (None, "12", "AT_SEQUENCE_NUMBER:12")
    assert world.store.leases["shard-001"].checkpoint == "AT_TIMESTAMP"
    # The reader still delivering at the old position cannot checkpoint over the seek.
    with pytest.raises(LeaseLost):
        await world.checkpoint(a, "shard-000", Checkpoint("18"))
    assert world.store.leases["shard-000"].checkpoint == "12"
    await world.round()
    await world.round()
    assert a.shards.readers == {
        "shard-000": StartPosition(IteratorType.AT_SEQUENCE_NUMBER, sequence="12"),
        "shard-001": StartPosition(IteratorType.AT_TIMESTAMP, timestamp=1700000000.5),
    }
    # Its first checkpoint after the seek replaces the position.
    await world.deliver(a, "shard-000", "12")
    assert (world.store.leases["shard-000"].checkpoint, world.store.leases["shard-000"].start) == (
        "12",
        None,
    )


async def test_a_seek_creates_missing_leases_and_marks_closed_shards_at_latest_finished() -> None:
    from esm.leases.seek import seek_leases

    store = FakeLeaseStore()
    await seek_leases(
        store.table(),
        {"shard-000": Checkpoint("LATEST"), "shard-001": Checkpoint(None, finished=True)},
    )
    assert (store.leases["shard-000"].checkpoint, store.leases["shard-000"].start) == (
        LATEST,
        None,
    )
    assert store.leases["shard-001"].checkpoint == SHARD_END
