"""The lease protocol as a state machine (hypothesis): workers beat, pass, checkpoint, stall,
crash and come back, and the table goes down, in any order. Whatever happens, two workers
never both believe they own a lease at the same counter, and a checkpoint is only ever
written by the lease's owner (or, during a handoff, its previous owner)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from esm.leases.heartbeat import Heartbeat
from esm.leases.liveness import Liveness
from esm.leases.manager import LeaseLost, LeaseManager, LeaseSettings
from esm.leases.table import LeaseConflict
from esm.model import Checkpoint, ShardInfo
from esm.testing.leases import FakeLeaseStore, FakeShards

T = TypeVar("T")
WORKERS = ("a", "b", "c")
SHARDS = [
    ShardInfo("s0"),
    ShardInfo("s1"),
    ShardInfo("s2", ("s0",)),
    ShardInfo("s3", ("s0", "s1")),
]
DURATION = 5.0


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


class LeaseProtocol(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = FakeLeaseStore()
        self.now = 0.0
        self.sequence = 0
        self.managers: dict[str, LeaseManager] = {}
        self.hearts: dict[str, Heartbeat] = {}
        self.shards: dict[str, FakeShards] = {}
        self.crashed: set[str] = set()
        for name in WORKERS:
            self._start(name)

    def _start(self, name: str) -> None:
        liveness = Liveness(DURATION)
        table = self.store.table()
        heart = Heartbeat(table, name, liveness, clock=lambda: self.now)
        self.hearts[name] = heart
        self.managers[name] = LeaseManager(
            table, LeaseSettings(worker=name, duration=DURATION), liveness, healthy=heart.healthy
        )
        self.shards[name] = FakeShards(*SHARDS)

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 2.0, 6.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @rule(name=st.sampled_from(WORKERS))
    def beat(self, name: str) -> None:
        if name not in self.crashed:
            _run(self.hearts[name].beat_once())

    @rule(name=st.sampled_from(WORKERS))
    def lease_pass(self, name: str) -> None:
        if name not in self.crashed:
            _run(self.managers[name].tick(self.shards[name], self.now))

    @rule(rounds=st.integers(1, 8))
    def rounds_pass(self, rounds: int) -> None:
        """Seconds pass; each second every running worker beats and passes."""
        for _ in range(rounds):
            self.now += 1.0
            for name in WORKERS:
                self.beat(name)
                self.lease_pass(name)

    @rule(name=st.sampled_from(WORKERS), rounds=st.integers(1, 8))
    def stall(self, name: str, rounds: int) -> None:
        """A worker stops for a while (a long pause), the others go on; then it resumes,
        its memory intact, and checkpoints what it was reading."""
        if name in self.crashed:
            return
        self.crashed.add(name)
        self.rounds_pass(rounds)
        self.crashed.discard(name)
        self.checkpoint_all(name)

    @rule(name=st.sampled_from(WORKERS))
    def checkpoint_all(self, name: str) -> None:
        for shard in SHARDS:
            self.checkpoint(name, False, shard)

    @rule(name=st.sampled_from(WORKERS), finish=st.booleans(), shard=st.sampled_from(SHARDS))
    def checkpoint(self, name: str, finish: bool, shard: ShardInfo) -> None:
        """A worker reading the shard (as far as it knows) checkpoints its next record."""
        shards = self.shards[name]
        if name in self.crashed or shard.shard_id not in shards.readers:
            return
        self.sequence += 1
        checkpoint = Checkpoint(None, finished=True) if finish else Checkpoint(str(self.sequence))
        before = self.store.leases.get(shard.shard_id)
        try:
            _run(self.managers[name].checkpoint(shards, shard.shard_id, checkpoint))
        except (LeaseLost, LeaseConflict):
            assert (
                self.store.leases.get(shard.shard_id) == before
                or before is None
                or (self.store.leases[shard.shard_id].checkpoint == before.checkpoint)
            )
            return
        except Exception:  # noqa: BLE001 - the table is down: nothing written
            assert self.store.down
            return
        after = self.store.leases[shard.shard_id]
        # Written only by the owner, or by the previous owner during a handoff.
        assert name in (after.owner, after.checkpoint_owner), (name, before, after)
        if finish:
            shards.end(shard.shard_id)

    @rule(name=st.sampled_from(WORKERS))
    def reader_winds_down(self, name: str) -> None:
        """Readers asked to stop write their final checkpoint and end."""
        shards = self.shards[name]
        for shard_id in sorted(shards.releasing):
            # Lost, or the table is down: no checkpoint, and the reader ends all the same.
            with contextlib.suppress(Exception):
                _run(self.managers[name].checkpoint(shards, shard_id, Checkpoint("final")))
            shards.end(shard_id)

    @rule(name=st.sampled_from(WORKERS))
    def crash(self, name: str) -> None:
        self.crashed.add(name)

    @precondition(lambda self: bool(self.crashed))
    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        """A crashed worker comes back as a new process: same name, nothing remembered."""
        name = data.draw(st.sampled_from(sorted(self.crashed)))
        self.crashed.discard(name)
        self._start(name)

    @rule(name=st.sampled_from(WORKERS))
    def stall_ends(self, name: str) -> None:
        """A worker that was stalled (not crashed: its memory is intact) runs again."""
        self.crashed.discard(name)

    @rule(down=st.booleans())
    def table_availability(self, down: bool) -> None:
        self.store.down = down

    @invariant()
    def one_owner_per_counter(self) -> None:
        beliefs: dict[tuple[str, int], str] = {}
        for name, manager in self.managers.items():
            for shard_id, lease in manager.held().items():
                if lease.owner != name:
                    continue
                key = (shard_id, lease.counter)
                assert key not in beliefs, f"{name} and {beliefs[key]} both own {key}"
                beliefs[key] = name

    @invariant()
    def readers_only_where_this_worker_holds_the_lease(self) -> None:
        for name, shards in self.shards.items():
            held = self.managers[name].held()
            for shard_id in shards.readers:
                assert shard_id in held, (name, shard_id)


LeaseProtocol.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLeaseProtocol = LeaseProtocol.TestCase
