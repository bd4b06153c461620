"""A checkpoint store held in memory: nothing survives the process (tests, demos)."""

from __future__ import annotations

from types import TracebackType

import anyio.lowlevel

from esm.errors import CheckpointError
from esm.model import Checkpoint


class MemoryCheckpointStore:
    """Checkpoints in a dict, per mapping then per partition.

    Every restart starts from each mapping's StartingPosition again, so this store suits
    tests, demos and sources where replay does not matter. `Checkpoint` is frozen, so the
    stored values can be handed out without copying.
    """

    def __init__(self) -> None:
        self._mappings: dict[str, dict[str, Checkpoint]] = {}
        self._closed = False

    async def load(self, mapping_id: str) -> dict[str, Checkpoint]:
        """Every partition's checkpoint saved for `mapping_id` (empty when none)."""
        # Yield like a real store would, so callers see the same scheduling and cancellation.
        await anyio.lowlevel.checkpoint()
        self._check_open()
        return dict(self._mappings.get(mapping_id, {}))

    async def save(self, mapping_id: str, partition: str, checkpoint: Checkpoint) -> None:
        """Record `checkpoint` for `partition`, replacing what was there."""
        await anyio.lowlevel.checkpoint()
        self._check_open()
        self._mappings.setdefault(mapping_id, {})[partition] = checkpoint

    async def delete(self, mapping_id: str, partition: str) -> None:
        """Forget `partition`'s checkpoint; nothing happens when there is none."""
        await anyio.lowlevel.checkpoint()
        self._check_open()
        partitions = self._mappings.get(mapping_id)
        if partitions is not None:
            partitions.pop(partition, None)
            if not partitions:
                del self._mappings[mapping_id]

    async def aclose(self) -> None:
        """Close the store; later calls raise `CheckpointError`. Closing twice is harmless."""
        self._closed = True

    async def __aenter__(self) -> MemoryCheckpointStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise CheckpointError("the memory checkpoint store is closed")
