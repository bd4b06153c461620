"""One stream mapping (Kinesis, DynamoDB Streams): its shards' lineage, and which shards run.

The engine lists the stream's shards periodically and keeps their lineage. A shard is ready
once its parents are finished (read to their end and checkpointed), so records of one key
are delivered in order across a resharding. Ready shards are handed to a `Coordinator` as
work units. A lone esm acquires every ready shard itself; when several share the stream, a
`ShardOwnership` (the lease manager) decides, through `acquire`, `release` and `lose`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import anyio
import anyio.abc
import structlog

from esm.engine.checkpointer import Checkpointer
from esm.engine.coordinator import Coordinator
from esm.engine.driver import Deliverer, breaker_status
from esm.engine.lifecycle import Interruptible, UnitLife
from esm.engine.pause import PauseGate
from esm.engine.seek import decode_position
from esm.engine.shard import ShardWorker, StreamContext
from esm.engine.stream_model import ShardPhase, ShardState, StreamSettings
from esm.errors import SourceError
from esm.metrics import Metrics
from esm.model import IteratorType, ShardInfo, StartPosition
from esm.protocols import CheckpointStore, StreamAPI


class ShardOwnership(Protocol):
    """Who decides which shards this process reads, when it is not alone (leases)."""

    async def run(self, shards: StreamEngine, stopping: Callable[[], bool]) -> None:
        """Acquire, release and lose the engine's shards until `stopping()` and every
        reader has ended; then return."""
        ...

    def status(self) -> dict[str, dict[str, Any]]:
        """Each shard's owner and lease counter, for /status."""
        ...


class StreamEngine:
    """Runs one stream mapping until `stop()`: every shard read in order, parents first."""

    def __init__(
        self,
        api: StreamAPI,
        settings: StreamSettings,
        deliverer: Deliverer,
        store: CheckpointStore,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        ownership: ShardOwnership | None = None,
    ) -> None:
        self.api = api
        self.ownership = ownership
        self.gate = PauseGate()
        self.settings = settings
        self.deliverer = deliverer
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.log = structlog.get_logger("esm.shards").bind(mapping=settings.label)
        self.shards: dict[str, ShardState] = {}
        self.ready = False
        self.reading = Interruptible()
        """Interrupted when the mapping winds down: discovery and waits stop at once."""
        self._grace: float | None = None
        self._coordinator: Coordinator[str] | None = None
        self._first_run = True
        self._starts: dict[str, StartPosition] = {}
        """Where each acquired shard starts, decided when it was acquired."""

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        """Read until `stop()`, then return once in-flight batches are settled."""
        settings = self.settings
        checkpointer = Checkpointer(
            self.store,
            settings.mapping_id,
            settings.label,
            self.metrics,
            settings.checkpoint_backoff,
        )
        self.context = StreamContext(
            self.api,
            settings,
            self.deliverer,
            checkpointer,
            self.metrics,
            self.clock,
            self.log,
            self.gate,
        )
        checkpoints = await checkpointer.load(self.reading)
        if checkpoints is None:
            return
        # StartingPosition applies only to a mapping that has never saved a checkpoint;
        # every shard discovered later (children of a split) is read from its start.
        self._first_run = not checkpoints
        for shard_id, cp in checkpoints.items():
            seek = decode_position(cp.sequence)
            state = ShardState(
                info=ShardInfo(shard_id),
                checkpoint=None if seek is not None else cp.sequence,
                seek=seek,
            )
            if cp.finished:
                state.phase = ShardPhase.FINISHED
            self.shards[shard_id] = state
        async with anyio.create_task_group() as tg:
            self._coordinator = Coordinator(tg, self._run_shard, name="shard")
            if self.ownership is not None:
                tg.start_soon(self.ownership.run, self, lambda: self.stopping)
            with self.reading.scope():
                await self._discover_forever()
            self._coordinator.release_all(self._grace)

    def stop(self, grace: float | None = None) -> None:
        """Wind down: discovery and reading end at once; in-flight batches get `grace`
        seconds (None: as long as they take), then their settled records are checkpointed."""
        self._grace = grace
        self.reading.interrupt()
        if self._coordinator is not None:
            self._coordinator.release_all(grace)

    @property
    def units(self) -> Coordinator[str] | None:
        """The shards being read, as work units (None before `run()` set them up): what a
        lease manager acquires, releases and loses."""
        return self._coordinator

    @property
    def stopping(self) -> bool:
        return self.reading.interrupted

    def status(self) -> dict[str, Any]:
        shards = {sid: s.as_dict() for sid, s in sorted(self.shards.items())}
        if self.ownership is not None:
            for sid, lease in self.ownership.status().items():
                shards.setdefault(sid, {})["lease"] = lease
        return {
            "ready": self.ready,
            "stopping": self.stopping,
            "paused": self.gate.paused,
            **breaker_status(self.deliverer),
            "shards": shards,
        }

    # -- the shards as a lease manager drives them (esm.leases.manager.LeasedShards) ----------

    def listing(self) -> Mapping[str, ShardInfo] | None:
        """The shards as last listed; None before the first listing."""
        if not self.ready:
            return None
        return {sid: state.info for sid, state in self.shards.items()}

    def running(self) -> frozenset[str]:
        return self._coordinator.held if self._coordinator is not None else frozenset()

    def acquire(self, shard_id: str, start: StartPosition) -> bool:
        """Read `shard_id` from `start` (a position the lease says)."""
        if self._coordinator is None or self.stopping:
            return False
        state = self.shards.setdefault(shard_id, ShardState(info=ShardInfo(shard_id)))
        state.phase = ShardPhase.WAITING
        state.checkpoint = start.sequence
        self._starts[shard_id] = start
        return self._coordinator.acquire(shard_id)

    def release(self, shard_id: str, grace: float | None) -> None:
        if self._coordinator is not None:
            self._coordinator.release(shard_id, grace)

    def lose(self, shard_id: str) -> None:
        if self._coordinator is not None:
            self._coordinator.lose(shard_id)

    # -- discovery and lineage -----------------------------------------------------------

    async def _discover_forever(self) -> None:
        failures = 0
        while True:
            try:
                listed = await self.api.list_shards()
            except SourceError as exc:
                failures += 1
                delay = self.settings.read_backoff.delay(failures)
                self.metrics.read_errors.labels(self.settings.label, "list_shards").inc()
                self.log.warning("listing shards failed", error=str(exc), retry_in_seconds=delay)
                await anyio.sleep(delay)
                continue
            failures = 0
            self._merge_listing(listed)
            if self.ownership is None:
                self._acquire_ready()
            self.ready = True
            self._first_run = False
            assert self._coordinator is not None
            # A shard that finishes may unblock its children: look again at once.
            with anyio.move_on_after(self.settings.discovery_interval):
                await self._coordinator.wait_changed()

    def _merge_listing(self, listed: list[ShardInfo]) -> None:
        for info in listed:
            state = self.shards.get(info.shard_id)
            if state is None:
                self.shards[info.shard_id] = ShardState(info=info)
            else:
                # Keep the freshest description: a shard open at the last listing may be
                # closed now, and only the listing tells where it ends.
                state.info = info

    def _parents_finished(self, info: ShardInfo) -> bool:
        for parent in info.parent_ids:
            state = self.shards.get(parent)
            # A parent the service no longer lists and that we never read has aged out of
            # the stream's retention: nothing of it is left to read first.
            if state is not None and state.phase is not ShardPhase.FINISHED:
                return False
        return True

    def ready_shards(self) -> list[str]:
        """Shards waiting to be read whose parents are finished, in shard order."""
        return [
            shard_id
            for shard_id, state in sorted(self.shards.items())
            if state.phase is ShardPhase.WAITING and self._parents_finished(state.info)
        ]

    def _acquire_ready(self) -> None:
        assert self._coordinator is not None
        for shard_id in self.ready_shards():
            if self.stopping:
                return
            self._starts[shard_id] = self._start_of(self.shards[shard_id])
            self._coordinator.acquire(shard_id)

    # -- one shard, as a work unit ---------------------------------------------------------

    def _start_of(self, state: ShardState) -> StartPosition:
        if state.checkpoint is not None:
            return StartPosition(IteratorType.AFTER_SEQUENCE_NUMBER, state.checkpoint)
        if state.seek is not None:
            return state.seek
        if self._first_run:
            return self.settings.starting_position
        return StartPosition(IteratorType.TRIM_HORIZON)

    async def _run_shard(self, shard_id: str, life: UnitLife) -> None:
        state = self.shards[shard_id]
        label = self.settings.label
        state.phase = ShardPhase.READING
        self.metrics.shards.labels(label).inc()
        finished = False
        try:
            start = self._starts.pop(shard_id, None) or self._start_of(state)
            worker = ShardWorker(self.context, state, life, start)
            finished = await worker.run()
        finally:
            self.metrics.shards.labels(label).dec()
            state.phase = ShardPhase.FINISHED if finished else ShardPhase.WAITING
        if finished:
            self.metrics.forget_shard(label, shard_id)
            self.log.info("shard finished", shard=shard_id, checkpoint=state.checkpoint)
