"""What a checkpoint store that holds leases offers the daemon."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from esm.leases.manager import LeaseManager

__all__ = ["LeasingStore"]


@runtime_checkable
class LeasingStore(Protocol):
    """A checkpoint store shared by several esm processes, with a lease per shard.

    `leasing()` is entered once, before any mapping starts and left after every mapping
    stopped: it keeps this worker's heartbeat. Each stream mapping gets a `LeaseManager`,
    which decides its shards; the store's `save` writes through that manager, fenced.
    """

    def leasing(self) -> AbstractAsyncContextManager[None]: ...

    async def check_lease_table(self, table: str) -> None:
        """:raises esm.errors.SettingError: another application's lease table (a mapping's
        `kcl_lease_table`) cannot be used."""
        ...

    def lease_manager(
        self,
        mapping_id: str,
        *,
        label: str,
        initial: str,
        at_timestamp: float | None,
        grace: float | None,
        lease_table: str | None = None,
    ) -> LeaseManager: ...
