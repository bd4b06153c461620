"""What a checkpoint store that holds leases offers the daemon."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from esm.leases.manager import LeaseManager
from esm.model import Checkpoint

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

    async def seek(
        self,
        mapping_id: str,
        checkpoints: Mapping[str, Checkpoint],
        *,
        lease_table: str | None = None,
    ) -> None:
        """Move the mapping's shards to a seek's `checkpoints` in their leases, setting them
        free (`esm.leases.seek`); works whether replicas run or not.

        :raises esm.errors.CheckpointError: the table did not answer.
        """
        ...
