"""Which records of a shard are settled, and so how far its checkpoint may move."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class SettleTracker:
    """The records of one shard in read order, and which of them are settled.

    A record is settled once it is delivered, filtered out or given up on. With several
    batches of a shard in flight (ParallelizationFactor) they settle out of order.

    INVARIANT: `checkpoint` never passes an unsettled record: it is the sequence number of
    the last record of the longest settled run from the start of what was read.
    """

    def __init__(self, checkpoint: str | None = None) -> None:
        self.checkpoint = checkpoint
        self._pending: deque[tuple[int, str]] = deque()
        self._settled: set[int] = set()

    def __len__(self) -> int:
        """Records read and not yet behind the checkpoint."""
        return len(self._pending)

    def add(self, order: int, sequence: str) -> None:
        """A record was read; records are added in read order."""
        self._pending.append((order, sequence))

    def settle(self, orders: Iterable[int]) -> bool:
        """Mark records settled; True when the checkpoint moved."""
        self._settled.update(orders)
        moved = False
        pending, settled = self._pending, self._settled
        while pending and pending[0][0] in settled:
            order, self.checkpoint = pending.popleft()
            settled.discard(order)
            moved = True
        return moved
