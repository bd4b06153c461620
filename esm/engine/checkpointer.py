"""A stream mapping's checkpoints: loaded with patience, saved so that shutdown cannot lose
them, and never written for a shard that was lost to another worker."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import structlog

from esm.engine.lifecycle import Interruptible, UnitLife
from esm.engine.retry import Backoff
from esm.errors import CheckpointError, describe
from esm.metrics import Metrics
from esm.model import Checkpoint
from esm.protocols import CheckpointStore

# How long one save may take when nothing else bounds it (no shutdown deadline yet).
_SAVE_TIMEOUT_SECONDS = 30.0


@dataclass
class Checkpointer:
    """Reads and writes one mapping's checkpoints through a (plugin) CheckpointStore.

    Every store call is a plugin boundary: whatever it raises is contained, counted and
    retried or, for a save that a later one covers, skipped. At worst a restart delivers a
    batch again; it never skips one.
    """

    store: CheckpointStore
    mapping_id: str
    """The mapping's UUID: the key of its checkpoints."""
    label: str
    """The mapping's `mapping` label in metrics and logs."""
    metrics: Metrics
    backoff: Backoff

    def __post_init__(self) -> None:
        self.log = structlog.get_logger("esm.shards").bind(mapping=self.label)

    async def load(self, interrupt: Interruptible) -> dict[str, Checkpoint] | None:
        """The mapping's checkpoints, retried with backoff until the store answers; None
        when interrupted first. A store that fails must not end the daemon, nor let the
        mapping start over from StartingPosition."""
        failures = 0
        while True:
            try:
                return await self.store.load(self.mapping_id)
            except Exception as exc:  # noqa: BLE001 - checkpoint store plugin boundary
                failures += 1
                self._contain(exc)
                delay = self.backoff.delay(failures)
                self.log.error(
                    "loading checkpoints failed, will retry",
                    error=describe(exc),
                    retry_in_seconds=round(delay, 3),
                )
                if not await interrupt.sleep(delay):
                    return None

    async def save(
        self, shard_id: str, checkpoint: Checkpoint, life: UnitLife, *, must: bool = False
    ) -> bool:
        """Store `checkpoint` for `shard_id`; True once stored.

        Shielded, so the end of a grace period cannot cut a save in half, but bounded by the
        unit's own deadline. A failed save is retried only when `must` (a finished shard
        unblocks its children) and the unit is not winding down; otherwise the next
        batch's save covers it. A fenced unit (lost to another worker) saves nothing.
        """
        failures = 0
        while not life.fenced:
            try:
                with anyio.CancelScope(shield=True) as scope:
                    scope.deadline = min(
                        life.delivery.deadline, anyio.current_time() + _SAVE_TIMEOUT_SECONDS
                    )
                    await self.store.save(self.mapping_id, shard_id, checkpoint)
                if scope.cancelled_caught:
                    raise TimeoutError("the checkpoint store did not answer in time")
            except Exception as exc:  # noqa: BLE001 - checkpoint store plugin boundary
                self._contain(exc)
                failures += 1
                self.log.error("saving checkpoint failed", shard=shard_id, error=describe(exc))
                if not must or life.stopping:
                    return False
                if not await life.reading.sleep(self.backoff.delay(failures)):
                    return False
                continue
            self.metrics.checkpoints_saved.labels(self.label).inc()
            return True
        return False

    def _contain(self, exc: Exception) -> None:
        # The store's own errors are expected; anything else is a plugin's surprise.
        if not isinstance(exc, CheckpointError | TimeoutError):
            self.metrics.contained_errors.labels(self.label, "checkpoint_store").inc()
