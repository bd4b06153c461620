"""Shard machinery shared by Kinesis and DynamoDB Streams: discovery, lineage, polling, checkpoints.

One `ShardedStreamRunner` runs one mapping. It lists the stream's shards periodically, starts
one worker per shard whose parents are finished, and each worker pairs a reader (GetRecords
loop feeding a bounded channel) with a processor (batcher -> delivery -> checkpoint).
"""

from __future__ import annotations

import enum
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from esm.engine.batcher import Batcher, BatchLimits
from esm.engine.driver import Deliverer, DeliveryOutcome, InFlight, Settled
from esm.engine.lifecycle import Interruptible
from esm.engine.retry import Backoff
from esm.engine.settle import SettleTracker
from esm.engine.window import CLOSE_DELAY_SECONDS, WindowState, answer_problem, window_start
from esm.errors import (
    CheckpointError,
    ExpiredIterator,
    ResourceNotFound,
    SourceError,
    ThroughputExceeded,
    TransientSourceError,
    describe,
)
from esm.metrics import Metrics, ReadClock
from esm.model import (
    Batch,
    Checkpoint,
    InvokeResult,
    IteratorType,
    Record,
    RecordsPage,
    ShardInfo,
    StartPosition,
)
from esm.protocols import CheckpointStore, StreamAPI

# Kinesis allows 5 GetRecords calls per second per shard, shared by every consumer.
MIN_POLL_INTERVAL_SECONDS = 0.2


class ShardPhase(enum.Enum):
    """Where a shard is in its life, as far as this mapping is concerned."""

    WAITING = "waiting"
    """Known, but a parent shard is not finished yet: reading it now would break order."""
    READING = "reading"
    """A worker is reading and delivering it."""
    FINISHED = "finished"
    """Closed, read to its end and every record settled: its children may start."""


class _EndOfShard:
    """Sent by a reader after the last page of a closed shard."""


END_OF_SHARD = _EndOfShard()


@dataclass(frozen=True)
class StreamSettings:
    """How one mapping reads and batches a sharded stream."""

    mapping_id: str
    """The mapping's UUID: the key of its checkpoints."""
    starting_position: StartPosition
    limits: BatchLimits
    poll_interval: float = 1.0
    """Seconds between GetRecords calls on an idle shard."""
    busy_poll_interval: float = MIN_POLL_INTERVAL_SECONDS
    """Seconds between GetRecords calls while records keep coming (5 calls/s on Kinesis)."""
    records_limit: int = 10_000
    discovery_interval: float = 10.0
    """Seconds between ListShards calls that find new shards (resharding)."""
    parallelization: int = 1
    """ParallelizationFactor: batches of one shard in flight at once, one per lane."""
    tumbling_window_seconds: int = 0
    """TumblingWindowInSeconds: 0 for none. A windowed shard runs one lane (state is per
    shard)."""
    record_filter: Callable[[Record], bool] | None = None
    """FilterCriteria: True for records to deliver; None delivers everything."""
    read_backoff: Backoff = field(default_factory=lambda: Backoff(initial=0.5, maximum=30.0))
    checkpoint_backoff: Backoff = field(default_factory=lambda: Backoff(initial=0.5, maximum=30.0))
    mapping_name: str = ""
    """The mapping's name, its `mapping` in metrics and logs; empty: the id."""

    @property
    def label(self) -> str:
        """The mapping's `mapping` label in metrics and logs."""
        return self.mapping_name or self.mapping_id


@dataclass
class ShardState:
    """What the runner knows of a shard, shown in /status."""

    info: ShardInfo
    phase: ShardPhase = ShardPhase.WAITING
    checkpoint: str | None = None
    iterator_age: float | None = None
    in_flight: dict[int, InFlight] = field(default_factory=dict)
    """Batches being delivered, by lane (ParallelizationFactor lanes per shard)."""
    last_read_error: str | None = None
    batches_delivered: int = 0
    records_delivered: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value,
            "parents": list(self.info.parent_ids),
            "closed": self.info.closed,
            "checkpoint": self.checkpoint,
            "iterator_age_seconds": self.iterator_age,
            "batches_delivered": self.batches_delivered,
            "records_delivered": self.records_delivered,
            "in_flight": [f.as_dict() for _, f in sorted(self.in_flight.items())],
            "last_read_error": self.last_read_error,
        }


def _seq(value: str) -> int:
    return int(value)


def lane_of(key: str, lanes: int) -> int:
    """The lane of a partition key: stable across runs and processes (unlike hash())."""
    return zlib.crc32(key.encode()) % lanes


class ShardedStreamRunner:
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
    ) -> None:
        self.api = api
        self.settings = settings
        self.deliverer = deliverer
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.shards: dict[str, ShardState] = {}
        self.ready = False
        self.stopping = Interruptible()
        self._reader_scopes: set[anyio.CancelScope] = set()
        self._discovery_scope: anyio.CancelScope | None = None
        self._lineage_changed = anyio.Event()
        self._first_run = True
        self.log = structlog.get_logger("esm.shards").bind(mapping=settings.label)

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        """Read until `stop()`, then return once in-flight batches are settled."""
        checkpoints = await self._load_checkpoints()
        if checkpoints is None:
            return
        # StartingPosition applies only to a mapping that has never saved a checkpoint;
        # every shard discovered later (children of a split) is read from its start.
        self._first_run = not checkpoints
        for shard_id, cp in checkpoints.items():
            state = ShardState(info=ShardInfo(shard_id), checkpoint=cp.sequence)
            if cp.finished:
                state.phase = ShardPhase.FINISHED
            self.shards[shard_id] = state
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as self._discovery_scope:
                if self.stopping.interrupted:
                    return
                await self._discover_forever(tg)

    async def _load_checkpoints(self) -> dict[str, Checkpoint] | None:
        """The mapping's checkpoints, retried with backoff until the store answers; None
        when stopped first. A store that fails must not end the daemon, nor let the mapping
        start over from StartingPosition."""
        failures = 0
        while True:
            try:
                return await self.store.load(self.settings.mapping_id)
            except Exception as exc:  # noqa: BLE001 - checkpoint store plugin boundary
                failures += 1
                if not isinstance(exc, CheckpointError):
                    self.metrics.contained_errors.labels(
                        self.settings.label, "checkpoint_store"
                    ).inc()
                delay = self.settings.checkpoint_backoff.delay(failures)
                self.log.error(
                    "loading checkpoints failed, will retry",
                    error=describe(exc),
                    retry_in_seconds=round(delay, 3),
                )
                with anyio.move_on_after(delay):
                    await self.stopping.wait()
                if self.stopping.interrupted:
                    return None

    def stop(self) -> None:
        """Stop reading: readers end at once, in-flight deliveries finish, no new batch starts."""
        self.stopping.interrupt()
        if self._discovery_scope is not None:
            self._discovery_scope.cancel()
        for scope in list(self._reader_scopes):
            scope.cancel()

    def status(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "stopping": self.stopping.interrupted,
            "shards": {sid: s.as_dict() for sid, s in sorted(self.shards.items())},
        }

    # -- discovery and lineage -------------------------------------------------------------

    async def _discover_forever(self, tg: anyio.abc.TaskGroup) -> None:
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
            self._start_eligible(tg)
            self.ready = True
            self._first_run = False
            self._lineage_changed = anyio.Event()
            with anyio.move_on_after(self.settings.discovery_interval):
                await self._lineage_changed.wait()

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

    def _start_eligible(self, tg: anyio.abc.TaskGroup) -> None:
        for shard_id, state in sorted(self.shards.items()):
            if state.phase is not ShardPhase.WAITING or self.stopping.interrupted:
                continue
            if not self._parents_finished(state.info):
                continue
            if state.checkpoint is not None:
                start = StartPosition(IteratorType.AFTER_SEQUENCE_NUMBER, state.checkpoint)
            elif self._first_run:
                start = self.settings.starting_position
            else:
                start = StartPosition(IteratorType.TRIM_HORIZON)
            state.phase = ShardPhase.READING
            self.metrics.shards.labels(self.settings.label).inc()
            tg.start_soon(self._run_shard, state, start, name=f"shard {shard_id}")

    # -- one shard ----------------------------------------------------------------------

    async def _run_shard(self, state: ShardState, start: StartPosition) -> None:
        shard_id = state.info.shard_id
        log = self.log.bind(shard=shard_id)
        log.info("shard reading", start=start.type.value, after=start.sequence)
        send, recv = anyio.create_memory_object_stream[RecordsPage | _EndOfShard](2)
        finished = False
        try:
            async with anyio.create_task_group() as tg:
                scope = anyio.CancelScope()
                self._reader_scopes.add(scope)
                if self.stopping.interrupted:
                    scope.cancel()
                tg.start_soon(self._read_shard, state, start, send, scope, log)
                async with recv:
                    finished = await self._process_shard(state, recv, log)
                scope.cancel()
        finally:
            self.metrics.shards.labels(self.settings.label).dec()
        if finished:
            state.phase = ShardPhase.FINISHED
            self.metrics.forget_shard(self.settings.label, shard_id)
            log.info("shard finished", checkpoint=state.checkpoint)
            self._lineage_changed.set()
        else:
            state.phase = ShardPhase.WAITING

    async def _read_shard(
        self,
        state: ShardState,
        start: StartPosition,
        send: MemoryObjectSendStream[RecordsPage | _EndOfShard],
        scope: anyio.CancelScope,
        log: Any,
    ) -> None:
        mapping, shard_id = self.settings.label, state.info.shard_id
        reads = self.metrics.track_shard_reads(mapping, shard_id, self.clock)
        try:
            with scope, reads.reading():
                async with send:
                    await self._read_loop(state, start, send, log, reads)
        finally:
            self._reader_scopes.discard(scope)
            self.metrics.forget_shard_reads(mapping, shard_id)

    async def _read_loop(
        self,
        state: ShardState,
        start: StartPosition,
        send: MemoryObjectSendStream[RecordsPage | _EndOfShard],
        log: Any,
        reads: ReadClock,
    ) -> None:
        settings, mapping = self.settings, self.settings.label
        shard_id = state.info.shard_id
        last_read = start.sequence if start.type is IteratorType.AFTER_SEQUENCE_NUMBER else None
        iterator: str | None = None
        failures = 0
        while True:
            if iterator is None:
                # After an expired iterator, resume after the last record handed on, which
                # is at or past the checkpoint: nothing is skipped and nothing read twice.
                position = (
                    StartPosition(IteratorType.AFTER_SEQUENCE_NUMBER, last_read)
                    if last_read is not None
                    else start
                )
                try:
                    iterator = await self.api.get_shard_iterator(shard_id, position)
                except ResourceNotFound as exc:
                    log.warning("shard is gone, treating it as ended", error=str(exc))
                    with reads.waiting():
                        await send.send(END_OF_SHARD)
                    return
                except SourceError as exc:
                    failures += 1
                    await self._read_failed(state, "get_shard_iterator", exc, failures, log)
                    continue
            called_at = time.monotonic()
            try:
                page = await self.api.get_records(shard_id, iterator, settings.records_limit)
            except ExpiredIterator:
                self.metrics.read_errors.labels(mapping, "expired_iterator").inc()
                log.info("shard iterator expired, getting a new one", after=last_read)
                iterator = None
                continue
            except TransientSourceError as exc:
                failures += 1
                await self._read_failed(state, "get_records", exc, failures, log)
                continue
            except SourceError as exc:
                # Not fixed by waiting alone (a rejected iterator, missing permission): keep
                # the mapping alive and visible in /status, and start over from a new iterator.
                failures += 1
                iterator = None
                await self._read_failed(state, "get_records", exc, failures, log)
                continue
            failures = 0
            state.last_read_error = None
            if page.answered:
                reads.succeeded()
            records = page.records
            if records:
                last_read = records[-1].sequence
                self.metrics.polled_events.labels(mapping).inc(len(records))
                with reads.waiting():
                    await send.send(page)
            elif page.millis_behind is not None and not state.in_flight:
                state.iterator_age = page.millis_behind / 1000.0
                self.metrics.iterator_age.labels(mapping, shard_id).set(state.iterator_age)
            if self._at_end(state.info, page, last_read):
                with reads.waiting():
                    await send.send(END_OF_SHARD)
                return
            iterator = page.next_iterator
            more_waiting = bool(records) and (
                len(records) >= settings.records_limit or bool(page.millis_behind)
            )
            interval = settings.busy_poll_interval if more_waiting else settings.poll_interval
            await anyio.sleep(max(0.0, called_at + interval - time.monotonic()))

    @staticmethod
    def _at_end(info: ShardInfo, page: RecordsPage, last_read: str | None) -> bool:
        if page.next_iterator is None:
            return True
        if info.ending_sequence is None:
            return False
        # Some implementations keep handing out iterators for a closed shard; its
        # EndingSequenceNumber tells that nothing more will come.
        if last_read is not None and _seq(last_read) >= _seq(info.ending_sequence):
            return True
        # Only a service that reports its lag (Kinesis's MillisBehindLatest) can say that an
        # empty page is the tip; DynamoDB Streams may answer empty pages before a closed
        # shard's remaining records.
        return page.millis_behind == 0 and not page.records

    async def _read_failed(
        self, state: ShardState, call: str, exc: Exception, failures: int, log: Any
    ) -> None:
        if isinstance(exc, ThroughputExceeded):
            reason = "throttled"
        elif isinstance(exc, TransientSourceError):
            reason = "transient"
        else:
            reason = "error"
        self.metrics.read_errors.labels(self.settings.label, reason).inc()
        delay = self.settings.read_backoff.delay(failures)
        state.last_read_error = f"{call}: {exc}"
        log.warning("read failed, backing off", call=call, error=str(exc), retry_in_seconds=delay)
        await anyio.sleep(delay)

    async def _process_shard(
        self,
        state: ShardState,
        recv: MemoryObjectReceiveStream[RecordsPage | _EndOfShard],
        log: Any,
    ) -> bool:
        """Filter, dispatch to lanes, deliver; True once the shard is read to its end and
        every record of it is settled, False when the runner stopped first."""
        # A tumbling window's state belongs to the shard, so a windowed shard has one lane.
        lanes = 1 if self.settings.tumbling_window_seconds else self.settings.parallelization
        tracker = SettleTracker(state.checkpoint)
        save_lock = anyio.Lock()

        async def settled(records: Sequence[Record]) -> None:
            if tracker.settle(r.order for r in records):
                # Lanes settle concurrently; saving under a lock, always the tracker's latest
                # position, keeps a slower save from writing an older checkpoint last.
                async with save_lock:
                    if tracker.checkpoint != state.checkpoint and tracker.checkpoint is not None:
                        await self._save(state, Checkpoint(tracker.checkpoint))

        sends: list[MemoryObjectSendStream[list[Record] | _EndOfShard]] = []
        results: list[bool] = [False] * lanes
        async with anyio.create_task_group() as tg:
            for lane in range(lanes):
                lane_send, lane_recv = anyio.create_memory_object_stream[
                    list[Record] | _EndOfShard
                ](1)
                sends.append(lane_send)
                tg.start_soon(self._run_lane, state, lane, lane_recv, settled, results)
            try:
                async for item in recv:
                    if isinstance(item, _EndOfShard):
                        for lane_send in sends:
                            await lane_send.send(END_OF_SHARD)
                        break
                    await self._dispatch(item.records, tracker, settled, sends)
            except anyio.BrokenResourceError:
                # A lane ended before the shard did (the runner is stopping): the records
                # it would have taken are not settled, so a restart reads them again.
                pass
            finally:
                for lane_send in sends:
                    lane_send.close()
        if not all(results):
            return False
        return await self._finish_shard(state, tracker, log)

    async def _dispatch(
        self,
        records: Sequence[Record],
        tracker: SettleTracker,
        settled: Settled,
        sends: Sequence[MemoryObjectSendStream[list[Record] | _EndOfShard]],
    ) -> None:
        """Track a page's records, settle those FilterCriteria leaves out, and hand the rest
        to the lanes."""
        record_filter = self.settings.record_filter
        passed: list[Record] = []
        left_out: list[Record] = []
        for record in records:
            tracker.add(record.order, record.sequence)
            if record_filter is None or record_filter(record):
                passed.append(record)
            else:
                left_out.append(record)
        if left_out:
            # Filtered-out records are skipped: the checkpoint moves past them.
            self.metrics.filtered_out_events.labels(self.settings.label).inc(len(left_out))
            await settled(left_out)
        lanes = len(sends)
        if lanes == 1:
            if passed:
                await sends[0].send(passed)
            return
        # Records of one key always go to the same lane, so they stay in order and are never
        # in flight together.
        by_lane: dict[int, list[Record]] = {}
        for record in passed:
            by_lane.setdefault(lane_of(record.key, lanes), []).append(record)
        for lane, part in by_lane.items():
            await sends[lane].send(part)

    async def _run_lane(
        self,
        state: ShardState,
        lane: int,
        recv: MemoryObjectReceiveStream[list[Record] | _EndOfShard],
        settled: Settled,
        results: list[bool],
    ) -> None:
        """Batch and deliver one lane's records in order; results[lane] is True when the
        lane saw the end of the shard with everything delivered."""
        async with recv:
            results[lane] = await _Lane(self, state, lane, recv, settled).run()

    async def _close_window(self, state: ShardState, lane: int, window: WindowState) -> bool:
        """The open window's final invocation (none when no window is open); False when
        shutdown came first."""
        if window.start is None:
            return True
        in_flight = InFlight("", "", 0, self.clock())
        state.in_flight[lane] = in_flight

        async def keep_state(result: InvokeResult) -> None:
            if result.ok:
                window.accept(result.response)

        try:
            outcome = await self.deliverer.deliver_final(
                state.info.shard_id,
                interrupt=self.stopping,
                in_flight=in_flight,
                event_fields=lambda: window.event_fields(final=True),
                check_answer=answer_problem,
                on_result=keep_state,
            )
        finally:
            del state.in_flight[lane]
        if outcome is DeliveryOutcome.ABANDONED:
            return False
        window.close()
        return True

    async def _deliver(
        self,
        state: ShardState,
        lane: int,
        batch: Batch,
        settled: Settled,
        window: WindowState | None = None,
    ) -> DeliveryOutcome:
        mapping = self.settings.label
        now = self.clock()
        state.iterator_age = max(0.0, now - batch.last.arrival)
        self.metrics.iterator_age.labels(mapping, batch.partition).set(state.iterator_age)
        in_flight = InFlight(
            first_sequence=batch.first.sequence,
            last_sequence=batch.last.sequence,
            size=len(batch.records),
            started_at=now,
        )
        state.in_flight[lane] = in_flight

        async def note_attempt(result: InvokeResult) -> None:
            # While a batch is retried its records keep ageing: the gauge must show a
            # blocked shard falling behind, as IteratorAge does on AWS.
            state.iterator_age = max(0.0, self.clock() - batch.last.arrival)
            self.metrics.iterator_age.labels(mapping, batch.partition).set(state.iterator_age)
            if window is not None and result.ok:
                # The next invocation in this window carries the state just returned.
                window.accept(result.response)

        async def count_settled(records: Sequence[Record]) -> None:
            state.records_delivered += len(records)
            await settled(records)

        try:
            outcome = await self.deliverer.deliver(
                batch,
                interrupt=self.stopping,
                in_flight=in_flight,
                on_settled=count_settled,
                on_result=note_attempt,
                event_fields=(lambda: window.event_fields(final=False)) if window else None,
                check_answer=answer_problem if window else None,
            )
        except anyio.get_cancelled_exc_class():
            if self.stopping.interrupted:
                self._abandoned(state, in_flight, "the shutdown grace period ran out")
            raise
        finally:
            del state.in_flight[lane]
        if outcome is DeliveryOutcome.DELIVERED:
            state.batches_delivered += 1
        else:
            self._abandoned(state, in_flight, "shutdown came between retries")
        return outcome

    def _abandoned(self, state: ShardState, in_flight: InFlight, reason: str) -> None:
        # A restart reads again from the checkpoint, which never passes an unsettled record:
        # whatever of this batch was not settled is delivered again.
        self.log.warning(
            "batch abandoned at shutdown, it will be delivered again",
            shard=state.info.shard_id,
            reason=reason,
            first_sequence=in_flight.first_sequence,
            last_sequence=in_flight.last_sequence,
            records=in_flight.size,
            checkpoint=state.checkpoint,
        )

    async def _finish_shard(self, state: ShardState, tracker: SettleTracker, log: Any) -> bool:
        # INVARIANT: every lane ended with its batcher empty, so everything read is settled.
        assert not len(tracker), "a finished shard has no unsettled records"
        sequence = tracker.checkpoint or state.info.ending_sequence
        return await self._save(state, Checkpoint(sequence, finished=True), must=True)

    async def _save(self, state: ShardState, checkpoint: Checkpoint, *, must: bool = False) -> bool:
        """Store a checkpoint; shielded so shutdown cannot lose the record of a delivered batch.

        A failed save is retried only when `must` (a finished shard unblocks its children);
        otherwise the next batch's save covers it, and a restart at worst redelivers.
        """
        mapping, shard_id = self.settings.label, state.info.shard_id
        failures = 0
        while True:
            try:
                with anyio.CancelScope(shield=True), anyio.fail_after(30):
                    await self.store.save(self.settings.mapping_id, shard_id, checkpoint)
            except Exception as exc:  # noqa: BLE001 - checkpoint store plugin boundary
                # Any store failure, a plugin's surprise included, costs at most a
                # redelivery after a restart; it never ends the daemon.
                if not isinstance(exc, CheckpointError | TimeoutError):
                    self.metrics.contained_errors.labels(mapping, "checkpoint_store").inc()
                failures += 1
                self.log.error(
                    "saving checkpoint failed",
                    shard=shard_id,
                    error=describe(exc),
                )
                if not must or self.stopping.interrupted:
                    return False
                await anyio.sleep(self.settings.checkpoint_backoff.delay(failures))
                continue
            state.checkpoint = checkpoint.sequence
            self.metrics.checkpoints_saved.labels(mapping).inc()
            return True


class _Gathered(enum.Enum):
    """Where a lane stands after waiting for records."""

    DUE = "due"
    """A batch is due: full, or its batching window has passed."""
    AGAIN = "again"
    """Nothing to send yet: wait again."""
    END = "end"
    """The shard ended and everything before its end was delivered."""
    STOP = "stop"
    """The runner is stopping (or a window's final invocation was abandoned)."""


class _Lane:
    """One lane of a shard: its batcher, its tumbling window, and the loop that waits for
    records, cuts batches and hands them to delivery in order."""

    def __init__(
        self,
        runner: ShardedStreamRunner,
        state: ShardState,
        lane: int,
        recv: MemoryObjectReceiveStream[list[Record] | _EndOfShard],
        settled: Settled,
    ) -> None:
        self.runner = runner
        self.state = state
        self.lane = lane
        self.recv = recv
        self.settled = settled
        self.batcher = Batcher(runner.settings.limits)
        self.ended = False
        seconds = runner.settings.tumbling_window_seconds
        self.window = (
            WindowState(seconds, state.info.shard_id, runner.api.stream_arn) if seconds else None
        )

    async def run(self) -> bool:
        """True when the shard ended with every record of this lane delivered."""
        while True:
            try:
                gathered = await self._gather()
            except anyio.EndOfStream:
                # The reader was stopped: undelivered records are read again after restart.
                return False
            if gathered is _Gathered.AGAIN:
                continue
            if gathered is not _Gathered.DUE:
                return gathered is _Gathered.END
            if self.runner.stopping.interrupted:
                return False
            if not await self._deliver_next():
                return False

    def _take(self, item: list[Record] | _EndOfShard) -> None:
        if isinstance(item, _EndOfShard):
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
        remaining = window.end + CLOSE_DELAY_SECONDS - self.runner.clock()
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
        runner, window = self.runner, self.window
        shard_id = self.state.info.shard_id
        if window is None:
            batch = Batch(shard_id, self.batcher.take())
            outcome = await runner._deliver(self.state, self.lane, batch, self.settled)
        else:
            start = window_start(self.batcher.first().arrival, window.length)
            # A record of a later window: the current one is over.
            later = window.start is not None and start > window.start
            if later and not await self._close_window():
                return False
            if window.start is None:
                window.open(start)
            batch = Batch(shard_id, self.batcher.take(until_arrival=window.end))
            outcome = await runner._deliver(self.state, self.lane, batch, self.settled, window)
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
        return await self.runner._close_window(self.state, self.lane, self.window)
