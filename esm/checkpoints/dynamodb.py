"""`state.backend: dynamodb`: checkpoints inside per-shard leases in a DynamoDB table, so that
several esm processes share each stream mapping's shards (esm.leases).

The table is in the Kinesis Client Library's lease format. Each stream mapping's leases are
keyed `MAPPING_ID:SHARD_ID`; one item holds every worker's heartbeat. SQS mappings need no
leases: a received message is invisible to the other replicas already.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

import anyio

from esm.aws.dynamodb import DynamoDBClient, dynamodb_client
from esm.errors import CheckpointError
from esm.leases.dynamodb import DynamoDBLeaseTable, ensure_table
from esm.leases.heartbeat import Heartbeat
from esm.leases.liveness import Liveness
from esm.leases.manager import LeaseManager, LeaseSettings
from esm.leases.metrics import LeaseMetrics
from esm.leases.seek import seek_leases
from esm.model import Checkpoint

if TYPE_CHECKING:
    from esm.checkpoints.plugins import DynamoDBStateConfig
    from esm.registry import StoreContext

__all__ = ["DynamoDBLeaseStore", "default_worker_id"]

# How long the heartbeat's removal may take at shutdown.
_FORGET_SECONDS = 5.0


def default_worker_id() -> str:
    """The host (a pod's name), the process and a random suffix: unique per process, and
    readable in the table and in /status."""
    host = os.environ.get("HOSTNAME") or socket.gethostname() or "esm"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class DynamoDBLeaseStore:
    """A `CheckpointStore` and `LeasingStore` over one DynamoDB table."""

    def __init__(self, settings: DynamoDBStateConfig, context: StoreContext) -> None:
        self.settings = settings
        self.context = context
        self.worker = settings.worker_id or default_worker_id()
        self.liveness = Liveness(settings.lease_duration_seconds)
        self.metrics = LeaseMetrics(context.metrics, self.worker)
        self.managers: dict[str, LeaseManager] = {}
        self._client: DynamoDBClient | None = None
        self.heart: Heartbeat | None = None

    @property
    def region(self) -> str:
        return self.settings.region or self.context.region

    @contextlib.asynccontextmanager
    async def leasing(self) -> AsyncIterator[None]:
        """Make sure the table exists, then beat until the block ends (after every mapping
        let go of its leases); then remove this worker's heartbeat."""
        client = dynamodb_client(await self.context.aws_client("dynamodb", self.region))
        await ensure_table(client, self.settings.table, create=self.settings.create_table)
        self._client = client
        heart = Heartbeat(
            self._table(self.settings.table),
            self.worker,
            self.liveness,
            on_failure=self.metrics.heartbeat_failed,
        )
        self.heart = heart
        async with anyio.create_task_group() as tg:
            tg.start_soon(heart.run)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(_FORGET_SECONDS):
            await heart.stop()

    def _table(
        self, name: str, prefix: str = "", client: DynamoDBClient | None = None
    ) -> DynamoDBLeaseTable:
        client = client or self._client
        if client is None:
            raise RuntimeError("the lease table needs leasing() entered first")
        return DynamoDBLeaseTable(
            client,
            name,
            prefix=prefix,
            # A call slower than a lease duration could not keep a lease alive anyway.
            timeout=self.settings.lease_duration_seconds,
        )

    async def check_lease_table(self, table: str) -> None:
        client = dynamodb_client(await self.context.aws_client("dynamodb", self.region))
        await ensure_table(client, table, create=False)

    def _mapping_table(
        self, mapping_id: str, lease_table: str | None, client: DynamoDBClient | None = None
    ) -> DynamoDBLeaseTable:
        if lease_table is None:
            # Leases keep the mapping's id; metrics and logs its name.
            return self._table(self.settings.table, prefix=f"{mapping_id}:", client=client)
        # A KCL application's table: its leases are keyed by the shard id alone.
        return self._table(lease_table, client=client)

    async def seek(
        self,
        mapping_id: str,
        checkpoints: Mapping[str, Checkpoint],
        *,
        lease_table: str | None = None,
    ) -> None:
        # Also from a command on its own (esm seek on a stopped esm): no heartbeat needed.
        client = self._client or dynamodb_client(
            await self.context.aws_client("dynamodb", self.region)
        )
        if self._client is None:
            create = self.settings.create_table and lease_table is None
            await ensure_table(client, lease_table or self.settings.table, create=create)
        await seek_leases(self._mapping_table(mapping_id, lease_table, client), checkpoints)

    def lease_manager(
        self,
        mapping_id: str,
        *,
        label: str,
        initial: str,
        at_timestamp: float | None,
        grace: float | None,
        lease_table: str | None = None,
    ) -> LeaseManager:
        if self._client is None or self.heart is None:
            raise RuntimeError("lease_manager() needs leasing() entered first")
        duration = self.settings.lease_duration_seconds
        table = self._mapping_table(mapping_id, lease_table)
        manager = LeaseManager(
            table,
            LeaseSettings(
                worker=self.worker,
                duration=duration,
                grace=grace,
                handoff_timeout=(grace or 0.0) + duration,
                initial=initial,
                at_timestamp=at_timestamp,
            ),
            self.liveness,
            healthy=self.heart.healthy,
            events=self.metrics.for_mapping(label),
        )
        self.managers[mapping_id] = manager
        return manager

    # -- CheckpointStore -------------------------------------------------------------------

    async def load(self, mapping_id: str) -> dict[str, Checkpoint]:
        # A leased mapping's positions come with each lease it takes, not from here.
        return {}

    async def save(self, mapping_id: str, partition: str, checkpoint: Checkpoint) -> None:
        manager = self.managers.get(mapping_id)
        if manager is None:
            raise CheckpointError(f"mapping {mapping_id} holds no leases in this store")
        await manager.save(partition, checkpoint)

    async def aclose(self) -> None:
        return None
