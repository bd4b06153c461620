"""The lease table as the lease manager uses it: conditional writes and nothing else.

One `LeaseTable` serves the leases of one mapping (in esm's own table, under the mapping's
key prefix; or a whole KCL application's table). Implementations: the DynamoDB table of
`state.backend: dynamodb`, and `esm.testing.leases.FakeLeaseTable` in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from esm.errors import CheckpointError
from esm.leases.model import Lease

__all__ = ["LeaseConflict", "LeaseTable", "WorkerBeats"]


class LeaseConflict(CheckpointError):
    """A conditional write found the lease changed: someone else owns it now, or its counter
    moved on. The writer must read it again before it believes anything about it."""


class LeaseTable(Protocol):
    """Reads and fenced writes of one mapping's leases. Every call may raise
    `esm.errors.CheckpointError` (with `retriable`) when the table does not answer."""

    @property
    def name(self) -> str:
        """The table (and prefix) in messages."""
        ...

    async def scan(self) -> list[Lease]:
        """Every lease of the mapping, as of about now (not necessarily the latest write)."""
        ...

    async def get(self, shard_id: str) -> Lease | None:
        """The lease as last written (a strongly consistent read); None when absent."""
        ...

    async def create(self, lease: Lease) -> bool:
        """Write `lease` if no lease of its shard exists; False when one already did."""
        ...

    async def replace(self, expected: Lease, new: Lease) -> None:
        """Write `new` over the lease of its shard, on the condition that the stored lease
        still has `expected`'s owner, checkpoint owner and counter.

        :raises LeaseConflict: the condition failed.
        """
        ...


class WorkerBeats(Protocol):
    """The heartbeats of every worker sharing the table: one small value per worker,
    written about once a second, so that liveness costs a write per worker, not per shard."""

    async def beat(self, worker: str, value: int) -> None:
        """Record that `worker` is alive: its heartbeat is now `value`."""
        ...

    async def beats(self) -> Mapping[str, int]:
        """Every worker's last heartbeat (a strongly consistent read)."""
        ...

    async def forget(self, worker: str) -> None:
        """Remove `worker`'s heartbeat (it shut down, or it has been dead for long)."""
        ...
