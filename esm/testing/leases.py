"""A lease table in memory with DynamoDB's conditional-write semantics, shared by the
workers of a test, and a switch to make it stop answering."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import anyio.lowlevel

from esm.errors import CheckpointError
from esm.leases.manager import LeasedShards
from esm.leases.model import Lease
from esm.leases.table import LeaseConflict, LeaseTable, WorkerBeats
from esm.model import ShardInfo, StartPosition

__all__ = ["FakeLeaseStore", "FakeLeaseTable", "FakeShards"]


@dataclass
class FakeLeaseStore:
    """The items of one table: leases by shard, and the workers' heartbeats.

    `down` makes every call fail (the table unreachable); `writes` counts each kind of
    write, as a DynamoDB bill would.
    """

    leases: dict[str, Lease] = field(default_factory=dict)
    heartbeats: dict[str, int] = field(default_factory=dict)
    down: bool = False
    writes: dict[str, int] = field(default_factory=dict)
    history: list[tuple[str, Lease]] = field(default_factory=list)
    """Every lease write, in order: (what, the lease written)."""

    def table(self, name: str = "leases") -> FakeLeaseTable:
        return FakeLeaseTable(self, name)

    def count(self, what: str) -> None:
        self.writes[what] = self.writes.get(what, 0) + 1

    async def answer(self) -> None:
        await anyio.lowlevel.checkpoint()
        if self.down:
            raise CheckpointError("the lease table does not answer")


class FakeLeaseTable:
    """`LeaseTable` and `WorkerBeats` over a `FakeLeaseStore`."""

    def __init__(self, store: FakeLeaseStore, name: str = "leases") -> None:
        self.store = store
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def scan(self) -> list[Lease]:
        await self.store.answer()
        return list(self.store.leases.values())

    async def get(self, shard_id: str) -> Lease | None:
        await self.store.answer()
        return self.store.leases.get(shard_id)

    async def create(self, lease: Lease) -> bool:
        await self.store.answer()
        if lease.shard_id in self.store.leases:
            return False
        self.store.count("create")
        self.store.leases[lease.shard_id] = lease
        self.store.history.append(("create", lease))
        return True

    async def replace(self, expected: Lease, new: Lease) -> None:
        await self.store.answer()
        stored = self.store.leases.get(new.shard_id)
        if stored is None or (stored.owner, stored.checkpoint_owner, stored.counter) != (
            expected.owner,
            expected.checkpoint_owner,
            expected.counter,
        ):
            self.store.count("conflict")
            raise LeaseConflict(f"lease {new.shard_id} changed")
        self.store.count("replace")
        self.store.leases[new.shard_id] = new
        self.store.history.append(("replace", new))

    # -- WorkerBeats -------------------------------------------------------------------------

    async def beat(self, worker: str, value: int) -> None:
        await self.store.answer()
        self.store.count("beat")
        self.store.heartbeats[worker] = value

    async def beats(self) -> Mapping[str, int]:
        await self.store.answer()
        return dict(self.store.heartbeats)

    async def forget(self, worker: str) -> None:
        await self.store.answer()
        self.store.heartbeats.pop(worker, None)


class FakeShards:
    """A stream engine's shards as the lease manager sees them: readers are started,
    released and lost; a test ends a reader with `end` (after its final checkpoint)."""

    def __init__(self, *shards: ShardInfo) -> None:
        self.shards = {info.shard_id: info for info in shards}
        self.readers: dict[str, StartPosition] = {}
        """The running readers and where each started."""
        self.releasing: set[str] = set()
        self.started: list[tuple[str, StartPosition]] = []
        self.lost: list[str] = []
        self.listed = True

    def listing(self) -> Mapping[str, ShardInfo] | None:
        return self.shards if self.listed else None

    def running(self) -> frozenset[str]:
        return frozenset(self.readers)

    def acquire(self, shard_id: str, start: StartPosition) -> bool:
        if shard_id in self.readers:
            return False
        self.readers[shard_id] = start
        self.started.append((shard_id, start))
        return True

    def release(self, shard_id: str, grace: float | None) -> None:
        if shard_id in self.readers:
            self.releasing.add(shard_id)

    def lose(self, shard_id: str) -> None:
        if self.readers.pop(shard_id, None) is not None:
            self.lost.append(shard_id)
        self.releasing.discard(shard_id)

    def end(self, shard_id: str) -> None:
        self.readers.pop(shard_id, None)
        self.releasing.discard(shard_id)


def _fakes_keep_to_the_interfaces(
    table: FakeLeaseTable, shards: FakeShards
) -> tuple[LeaseTable, WorkerBeats, LeasedShards]:
    """mypy checks here that the fakes keep to the interfaces they stand in for."""
    return table, table, shards
