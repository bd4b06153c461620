"""This worker's heartbeat: one small write about once a second, whatever the shard count.

The same loop reads everyone's heartbeats into the shared `Liveness`, so that a pass over
a mapping's leases knows who is alive without reading anything more.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import anyio
import structlog

from esm.errors import CheckpointError, describe
from esm.leases.liveness import Liveness
from esm.leases.table import WorkerBeats

__all__ = ["Heartbeat"]

# A worker dead this many lease durations has its heartbeat removed from the table.
_FORGET_AFTER_DURATIONS = 12


class Heartbeat:
    """Writes this worker's heartbeat and observes everyone's."""

    def __init__(
        self,
        beats: WorkerBeats,
        worker: str,
        liveness: Liveness,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self.beats = beats
        self.worker = worker
        self.liveness = liveness
        self.interval = interval
        self.clock = clock
        self.on_failure = on_failure
        self.value = 0
        self.last_written = -math.inf
        """When the last heartbeat write succeeded (this worker's clock)."""
        self.log = structlog.get_logger("esm.leases").bind(worker=worker)

    def healthy(self, now: float) -> bool:
        """Whether others still see this worker alive, with a pass to spare: a worker whose
        heartbeat is older stops its readers before anyone may take its leases."""
        return now - self.last_written < self.liveness.duration - self.interval

    async def beat_once(self) -> None:
        self.value += 1
        try:
            await self.beats.beat(self.worker, self.value)
            self.last_written = self.clock()
        except CheckpointError as error:
            if self.on_failure is not None:
                self.on_failure()
            self.log.warning("heartbeat write failed", error=describe(error))
        try:
            seen = await self.beats.beats()
        except CheckpointError as error:
            self.log.warning("reading heartbeats failed", error=describe(error))
            return
        now = self.clock()
        self.liveness.observe_beats(seen, now)
        long_dead = _FORGET_AFTER_DURATIONS * self.liveness.duration
        for worker in seen:
            if worker != self.worker and self.liveness.dead_for(worker, now) > long_dead:
                try:
                    await self.beats.forget(worker)
                except CheckpointError:
                    return  # tried again on a later beat

    async def run(self) -> None:
        """Beat until cancelled."""
        while True:
            started = self.clock()
            await self.beat_once()
            await anyio.sleep(max(0.0, started + self.interval - self.clock()))

    async def stop(self) -> None:
        """Remove this worker's heartbeat (a clean shutdown, after its leases are let go)."""
        try:
            await self.beats.forget(self.worker)
        except CheckpointError as error:
            self.log.info("removing the heartbeat failed", error=describe(error))
