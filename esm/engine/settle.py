"""Which records of a shard are settled, and so how far its checkpoint may move."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from esm.model import Record


class SettleTracker:
    """The records of one shard in read order, and which of them are settled.

    A record is settled once it is delivered, filtered out or given up on. With several
    batches of a shard in flight (ParallelizationFactor) they settle out of order.

    INVARIANT: `checkpoint` never passes an unsettled record: it is the sequence number of
    the last record of the longest settled run from the start of what was read.
    """

    def __init__(self, checkpoint: str | None = None) -> None:
        self.checkpoint = checkpoint
        self._pending: deque[Record] = deque()
        self._settled: set[int] = set()
        """Orders of records settled ahead of an unsettled one."""

    def __len__(self) -> int:
        """Records read and not yet behind the checkpoint."""
        return len(self._pending)

    def add(self, records: Iterable[Record]) -> None:
        """Records were read; records are added in read order."""
        self._pending.extend(records)

    def settle(self, records: Sequence[Record]) -> bool:
        """Mark records (a part of what was read, in read order) settled; True when the
        checkpoint moved."""
        count = len(records)
        if not count:
            return False
        pending = self._pending
        if (
            not self._settled
            and count <= len(pending)
            and pending[0] is records[0]
            and pending[count - 1] is records[-1]
        ):
            # The oldest records, all of them (one lane, in order: the usual case). An
            # in-order part of `pending` as long as its first `count` records, starting and
            # ending with theirs, is those records.
            for _ in range(count):
                pending.popleft()
            self.checkpoint = records[-1].sequence
            return True
        settled = self._settled
        settled.update(r.order for r in records)
        moved = False
        while pending and pending[0].order in settled:
            record = pending.popleft()
            settled.discard(record.order)
            self.checkpoint = record.sequence
            moved = True
        return moved
