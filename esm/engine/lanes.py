"""One lane of a shard: its batcher, its tumbling window, and the loop that waits for records,
cuts batches and hands them to delivery in order.

ParallelizationFactor gives a shard several lanes; records of one partition key always go to
the same lane, so they stay in order and are never in flight together.
"""

from __future__ import annotations

import enum
import time
import zlib
from collections.abc import Awaitable, Callable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from esm.engine.batcher import Batcher, BatchLimits
from esm.engine.driver import DeliveryOutcome
from esm.engine.lifecycle import UnitLife
from esm.engine.window import CLOSE_DELAY_SECONDS, WindowState, window_start
from esm.model import Batch, Record


class EndOfShard:
    """Sent after the last page of a closed shard."""


END_OF_SHARD = EndOfShard()

LaneItem = list[Record] | EndOfShard

DeliverBatch = Callable[[int, Batch, "WindowState | None"], Awaitable[DeliveryOutcome]]
"""Deliver a batch of lane `n`, in `window` when the shard is windowed."""
CloseWindow = Callable[[int, WindowState], Awaitable[bool]]
"""The final invocation of lane `n`'s window; False when shutdown came first."""


def lane_of(key: str, lanes: int) -> int:
    """The lane of a partition key: stable across runs and processes (unlike hash())."""
    return zlib.crc32(key.encode()) % lanes


class _Gathered(enum.Enum):
    """Where a lane stands after waiting for records."""

    DUE = "due"
    """A batch is due: full, or its batching window has passed."""
    AGAIN = "again"
    """Nothing to send yet: wait again."""
    END = "end"
    """The shard ended and everything before its end was delivered."""
    STOP = "stop"
    """A window's final invocation was abandoned at shutdown."""


class Lane:
    """Batches and delivers one lane's records in order."""

    def __init__(
        self,
        lane: int,
        recv: MemoryObjectReceiveStream[LaneItem],
        *,
        limits: BatchLimits,
        partition: str,
        life: UnitLife,
        clock: Callable[[], float],
        window: WindowState | None,
        deliver: DeliverBatch,
        close_window: CloseWindow,
        batch_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lane = lane
        self.recv = recv
        self.partition = partition
        self.life = life
        self.clock = clock
        # The batching window is a duration: it runs on a monotonic clock, unlike tumbling
        # windows, which are aligned to the records' wall-clock arrival.
        self.batcher = Batcher(limits, clock=batch_clock)
        self.window = window
        self._deliver = deliver
        self._close = close_window
        self.ended = False

    async def run(self) -> bool:
        """True when the shard ended with every record of this lane delivered."""
        async with self.recv:
            while True:
                try:
                    gathered = await self._gather()
                except anyio.EndOfStream:
                    # The reader was stopped: undelivered records are read again after
                    # a restart.
                    return False
                if gathered is _Gathered.AGAIN:
                    continue
                if gathered is not _Gathered.DUE:
                    return gathered is _Gathered.END
                # Winding down: no new batch starts, the records are read again later.
                if self.life.stopping or not await self._deliver_next():
                    return False

    def _take(self, item: LaneItem) -> None:
        if isinstance(item, EndOfShard):
            self.ended = True
        else:
            self.batcher.add(item)

    async def _gather(self) -> _Gathered:
        batcher, window = self.batcher, self.window
        if len(batcher):
            await self._fill()
            return _Gathered.DUE
        if self.ended:
            # A window never spans a shard's end (nor a resharding).
            if window and not await self._close_window():
                return _Gathered.STOP
            return _Gathered.END
        if window is None or window.start is None:
            self._take(await self.recv.receive())
            return _Gathered.AGAIN
        remaining = window.end + CLOSE_DELAY_SECONDS - self.clock()
        with anyio.move_on_after(max(0.0, remaining)):
            self._take(await self.recv.receive())
        # Nothing more came before the window's end: it is over.
        quiet = not len(batcher) and not self.ended
        if quiet and not await self._close_window():
            return _Gathered.STOP
        return _Gathered.AGAIN

    async def _fill(self) -> None:
        """Add to the pending records until a batch is full or its window has passed."""
        batcher = self.batcher
        # Whatever is already waiting joins the batch without delay.
        while not self.ended and not batcher.full():
            try:
                self._take(self.recv.receive_nowait())
            except anyio.WouldBlock:
                break
        while not self.ended and not batcher.full():
            remaining = batcher.window_remaining()
            if remaining <= 0:
                break
            with anyio.move_on_after(remaining):
                self._take(await self.recv.receive())

    async def _deliver_next(self) -> bool:
        """Deliver the next batch; False when shutdown came first."""
        window = self.window
        if window is None:
            waited = self.batcher.waited()  # before the cut empties the batcher
            batch = Batch(self.partition, self.batcher.take(), waited)
            outcome = await self._deliver(self.lane, batch, None)
        else:
            start = window_start(self.batcher.first().arrival, window.length)
            # A record of a later window: the current one is over.
            later = window.start is not None and start > window.start
            if later and not await self._close_window():
                return False
            if window.start is None:
                window.open(start)
            waited = self.batcher.waited()
            batch = Batch(self.partition, self.batcher.take(until_arrival=window.end), waited)
            outcome = await self._deliver(self.lane, batch, window)
            if outcome is DeliveryOutcome.DELIVERED and window.terminated_early:
                # The state outgrew its limit: end the window early, then go on in the same
                # window with a fresh state.
                current = window.start
                if not await self._close_window():
                    return False
                window.open(current if current is not None else start)
        self.batcher.invoked()
        return outcome is not DeliveryOutcome.ABANDONED

    async def _close_window(self) -> bool:
        assert self.window is not None
        return await self._close(self.lane, self.window)
