"""Cuts a partition's records into batches by BatchSize, the batching window and 6 MB."""

from __future__ import annotations

import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import accumulate, islice

from esm.model import EVENT_ENVELOPE_BYTES, MAX_INVOKE_PAYLOAD_BYTES, Record


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """When a batch is complete: whichever of the three limits is reached first."""

    batch_size: int
    """BatchSize: most records per invocation."""
    window_seconds: float = 0.0
    """MaximumBatchingWindowInSeconds: how long to gather before invoking."""
    max_payload_bytes: int = MAX_INVOKE_PAYLOAD_BYTES


class Batcher:
    """Records waiting to be delivered, in order, and the rule that cuts them into batches.

    INVARIANT: `take()` returns records in the order they were added, never more than
    `batch_size`, and never more than `max_payload_bytes` of event, except a single record
    that is larger than the limit on its own, which comes out alone (the delivery reports it
    as undeliverable rather than the batcher dropping it).
    """

    def __init__(self, limits: BatchLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._pending: deque[Record] = deque()
        self._pending_bytes = 0
        self._window_opened = 0.0
        self._last_invoke_end = 0.0
        self._first_added = 0.0

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def waited(self) -> float:
        """Seconds since the oldest pending records were read (records left over by a cut
        were read with them, in one page); 0 when none is pending."""
        return self.clock() - self._first_added if self._pending else 0.0

    def add(self, records: Iterable[Record]) -> None:
        if not self._pending:
            self._first_added = self.clock()
            # The window opens when records are waiting, but not before the previous
            # invocation completed (Lambda starts the next window only then).
            self._window_opened = max(self.clock(), self._last_invoke_end)
        for record in records:
            self._pending.append(record)
            self._pending_bytes += record.size

    def full(self) -> bool:
        """A batch is complete without waiting for the window: enough records or bytes."""
        if len(self._pending) >= self.limits.batch_size:
            return True
        return EVENT_ENVELOPE_BYTES + self._pending_bytes >= self.limits.max_payload_bytes

    def window_remaining(self) -> float:
        """Seconds until MaximumBatchingWindowInSeconds has passed for the pending records:
        0 or less once the batch is due (always, without a window)."""
        if self.limits.window_seconds <= 0:
            return 0.0
        return self._window_opened + self.limits.window_seconds - self.clock()

    def invoked(self) -> None:
        """The invocation of the last batch taken has completed: the next window may open."""
        self._last_invoke_end = self.clock()

    def first(self) -> Record:
        """The oldest pending record (the batcher must not be empty)."""
        return self._pending[0]

    def take(self, until_arrival: float | None = None) -> list[Record]:
        """Remove and return the next batch (empty when nothing is pending); with
        `until_arrival`, the batch stops before the first record that arrived at or after it
        (a tumbling window's end)."""
        pending = self._pending
        limit = self.limits.max_payload_bytes
        count = self.limits.batch_size
        if (
            until_arrival is None
            and len(pending) <= count
            and EVENT_ENVELOPE_BYTES + self._pending_bytes <= limit
        ):
            # Everything pending is one batch (a busy shard's page, mostly): no record by
            # record walk.
            whole = list(pending)
            pending.clear()
            self._pending_bytes = 0
            return whole
        if until_arrival is None:
            return self._take_by_size(count, limit)
        batch: list[Record] = []
        size = EVENT_ENVELOPE_BYTES
        while pending and len(batch) < count:
            record = pending[0]
            if batch and size + record.size > limit:
                break
            if batch and until_arrival is not None and record.arrival >= until_arrival:
                break
            pending.popleft()
            batch.append(record)
            size += record.size
        self._pending_bytes -= size - EVENT_ENVELOPE_BYTES
        return batch

    def _take_by_size(self, count: int, limit: int) -> list[Record]:
        """The longest run of at most `count` pending records whose event fits `limit`
        bytes (at least one record: one too large alone is the policy's to refuse)."""
        pending = self._pending
        if not pending:
            return []
        ends = list(accumulate(r.size for r in islice(pending, min(count, len(pending)))))
        cut = max(1, bisect_right(ends, limit - EVENT_ENVELOPE_BYTES))
        popleft = pending.popleft
        batch = [popleft() for _ in range(cut)]
        self._pending_bytes -= ends[cut - 1]
        return batch

    def clear(self) -> None:
        self._pending.clear()
        self._pending_bytes = 0


def cut_batches(records: Iterable[Record], limits: BatchLimits) -> list[list[Record]]:
    """Every batch `records` make, in order (the whole input, no window): for tests and tools."""
    batcher = Batcher(limits)
    batcher.add(records)
    batches = []
    while len(batcher):
        batches.append(batcher.take())
    return batches
