"""One shard, as one work unit: a reader (GetRecords loop feeding a bounded channel) and a
processor (filter -> lanes -> delivery -> settle and checkpoint).

The reader stops first when the unit winds down; the lanes then finish or abandon their
batch within the unit's deadline; settled records are checkpointed unless the unit was lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from esm.engine.checkpointer import Checkpointer
from esm.engine.driver import Deliverer, DeliveryOutcome, InFlight, Settled
from esm.engine.lanes import END_OF_SHARD, EndOfShard, Lane, LaneItem, lane_of
from esm.engine.lifecycle import UnitLife
from esm.engine.pause import PauseGate
from esm.engine.settle import SettleTracker
from esm.engine.stream_model import ShardState, StreamSettings
from esm.engine.window import WindowState, answer_problem
from esm.errors import (
    ExpiredIterator,
    ResourceNotFound,
    SourceError,
    ThroughputExceeded,
    TransientSourceError,
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
from esm.positions import container_sequence
from esm.protocols import StreamAPI

PageItem = RecordsPage | EndOfShard


@dataclass
class StreamContext:
    """What every shard of one mapping shares."""

    api: StreamAPI
    settings: StreamSettings
    deliverer: Deliverer
    checkpointer: Checkpointer
    metrics: Metrics
    clock: Callable[[], float]
    log: Any
    gate: PauseGate = field(default_factory=PauseGate)
    """Closed while the mapping is paused: no shard reads."""


def _seq(value: str) -> int:
    # A KPL user record's SEQUENCE:SUB is at its container's sequence number.
    return int(container_sequence(value))


def at_end(info: ShardInfo, page: RecordsPage, last_read: str | None) -> bool:
    """Whether `page` is the last a closed shard will give."""
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


class ShardWorker:
    """Reads and delivers one shard until its end or until its unit winds down."""

    def __init__(
        self, context: StreamContext, state: ShardState, life: UnitLife, start: StartPosition
    ) -> None:
        self.context = context
        self.settings = context.settings
        self.state = state
        self.life = life
        self.start = start
        self.shard_id = state.info.shard_id
        self.log = context.log.bind(shard=self.shard_id)

    async def run(self) -> bool:
        """True once the shard is read to its end and every record of it is settled."""
        self.log.info("shard reading", start=self.start.type.value, after=self.start.sequence)
        send, recv = anyio.create_memory_object_stream[PageItem](2)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._read, send)
            async with recv:
                finished = await self._process(recv)
            # The lanes are done (the shard ended, or the unit winds down): stop reading.
            self.life.reading.interrupt()
        return finished

    # -- reading -------------------------------------------------------------------------

    async def _read(self, send: MemoryObjectSendStream[PageItem]) -> None:
        mapping, metrics = self.settings.label, self.context.metrics
        reads = metrics.track_shard_reads(mapping, self.shard_id, self.context.clock)
        try:
            with self.life.reading.scope(), reads.reading():
                async with send:
                    await self._read_loop(send, reads)
        finally:
            metrics.forget_shard_reads(mapping, self.shard_id)

    async def _read_loop(self, send: MemoryObjectSendStream[PageItem], reads: ReadClock) -> None:
        settings, start = self.settings, self.start
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
                    iterator = await self.context.api.get_shard_iterator(self.shard_id, position)
                except ResourceNotFound as exc:
                    self.log.warning("shard is gone, treating it as ended", error=str(exc))
                    with reads.waiting():
                        await send.send(END_OF_SHARD)
                    return
                except SourceError as exc:
                    failures += 1
                    await self._read_failed("get_shard_iterator", exc, failures)
                    continue
            if self.context.gate.closed:
                # Paused: not a read that is late, so the staleness gauge does not grow.
                with reads.waiting():
                    await self.context.gate.wait_open()
            called_at = time.monotonic()
            try:
                page = await self.context.api.get_records(
                    self.shard_id, iterator, settings.records_limit
                )
            except SourceError as exc:
                keep, failures = await self._get_records_failed(exc, failures, last_read)
                if not keep:
                    iterator = None
                continue
            failures = 0
            self.state.last_read_error = None
            if page.answered:
                reads.succeeded()
            if page.records:
                last_read = page.records[-1].sequence
                self.context.metrics.polled_events.labels(settings.label).inc(len(page.records))
                with reads.waiting():
                    await send.send(page)
            elif page.millis_behind is not None and not self.state.in_flight:
                self._note_age(page.millis_behind / 1000.0, self.shard_id)
            if at_end(self.state.info, page, last_read):
                with reads.waiting():
                    await send.send(END_OF_SHARD)
                return
            iterator = page.next_iterator
            await anyio.sleep(max(0.0, called_at + self._interval(page) - time.monotonic()))

    def _interval(self, page: RecordsPage) -> float:
        """Seconds from one GetRecords call to the next: short while records keep coming."""
        settings, records = self.settings, page.records
        more_waiting = bool(records) and (
            len(records) >= settings.records_limit or bool(page.millis_behind)
        )
        return settings.busy_poll_interval if more_waiting else settings.poll_interval

    async def _get_records_failed(
        self, exc: SourceError, failures: int, last_read: str | None
    ) -> tuple[bool, int]:
        """Handle a failed GetRecords: whether to keep the iterator (False: get a new one),
        and the failure count."""
        if isinstance(exc, ExpiredIterator):
            self.context.metrics.read_errors.labels(self.settings.label, "expired_iterator").inc()
            self.log.info("shard iterator expired, getting a new one", after=last_read)
            return False, failures
        await self._read_failed("get_records", exc, failures + 1)
        # A failure that waiting fixes keeps the iterator. Any other (a rejected iterator,
        # missing permission) is not fixed by waiting alone: keep the mapping alive and
        # visible in /status, and start over from a new iterator.
        return exc.retriable, failures + 1

    async def _read_failed(self, call: str, exc: Exception, failures: int) -> None:
        if isinstance(exc, ThroughputExceeded):
            reason = "throttled"
        elif isinstance(exc, TransientSourceError):
            reason = "transient"
        else:
            reason = "error"
        self.context.metrics.read_errors.labels(self.settings.label, reason).inc()
        delay = self.settings.read_backoff.delay(failures)
        self.state.last_read_error = f"{call}: {exc}"
        self.log.warning(
            "read failed, backing off", call=call, error=str(exc), retry_in_seconds=delay
        )
        await anyio.sleep(delay)

    def _note_age(self, seconds: float, partition: str) -> None:
        self.state.iterator_age = seconds
        self.context.metrics.iterator_age.labels(self.settings.label, partition).set(seconds)

    # -- processing ----------------------------------------------------------------------

    async def _process(self, recv: MemoryObjectReceiveStream[PageItem]) -> bool:
        """Filter, dispatch to lanes, deliver; True once the shard is read to its end and
        every record of it is settled, False when the unit wound down first."""
        # A tumbling window's state belongs to the shard, so a windowed shard has one lane.
        settings = self.settings
        lanes = 1 if settings.tumbling_window_seconds else settings.parallelization
        tracker = SettleTracker(self.state.checkpoint)
        # Uncontended (one lane, the usual case) it is taken without a checkpoint: a batch's
        # save then costs no extra trip through the event loop.
        save_lock = anyio.Lock(fast_acquire=True)

        async def settled(records: Sequence[Record]) -> None:
            if tracker.settle(records):
                # Lanes settle concurrently; saving under a lock, always the tracker's latest
                # position, keeps a slower save from writing an older checkpoint last.
                async with save_lock:
                    latest = tracker.checkpoint
                    if latest is not None and latest != self.state.checkpoint:
                        await self._save(Checkpoint(latest))

        sends: list[MemoryObjectSendStream[LaneItem]] = []
        results: list[bool] = [False] * lanes
        async with anyio.create_task_group() as tg:
            for number in range(lanes):
                lane_send, lane_recv = anyio.create_memory_object_stream[LaneItem](1)
                sends.append(lane_send)
                tg.start_soon(self._run_lane, self._lane(number, lane_recv, settled), results)
            try:
                async for item in recv:
                    if isinstance(item, EndOfShard):
                        for lane_send in sends:
                            await lane_send.send(END_OF_SHARD)
                        break
                    await self._dispatch(item.records, tracker, settled, sends)
            except anyio.BrokenResourceError:
                # A lane ended before the shard did (the unit winds down): the records it
                # would have taken are not settled, so a restart reads them again.
                pass
            finally:
                for lane_send in sends:
                    lane_send.close()
        if not all(results):
            return False
        # INVARIANT: every lane ended with its batcher empty, so everything read is settled.
        assert not len(tracker), "a finished shard has no unsettled records"
        sequence = tracker.checkpoint or self.state.info.ending_sequence
        return await self._save(Checkpoint(sequence, finished=True), must=True)

    def _lane(
        self, number: int, recv: MemoryObjectReceiveStream[LaneItem], settled: Settled
    ) -> Lane:
        seconds = self.settings.tumbling_window_seconds
        window = (
            WindowState(seconds, self.shard_id, self.context.api.stream_arn) if seconds else None
        )

        async def deliver(lane: int, batch: Batch, window: WindowState | None) -> DeliveryOutcome:
            return await self._deliver(lane, batch, settled, window)

        return Lane(
            number,
            recv,
            limits=self.settings.limits,
            partition=self.shard_id,
            life=self.life,
            clock=self.context.clock,
            window=window,
            deliver=deliver,
            close_window=self._close_window,
        )

    @staticmethod
    async def _run_lane(lane: Lane, results: list[bool]) -> None:
        results[lane.lane] = await lane.run()

    async def _dispatch(
        self,
        records: Sequence[Record],
        tracker: SettleTracker,
        settled: Settled,
        sends: Sequence[MemoryObjectSendStream[LaneItem]],
    ) -> None:
        """Track a page's records, settle those FilterCriteria leaves out, and hand the rest
        to the lanes."""
        record_filter = self.settings.record_filter
        passed: list[Record] = []
        left_out: list[Record] = []
        tracker.add(records)
        if record_filter is None:
            passed = list(records)
        else:
            for record in records:
                (passed if record_filter(record) else left_out).append(record)
        if left_out:
            # Filtered-out records are skipped: the checkpoint moves past them.
            self.context.metrics.filtered_out_events.labels(self.settings.label).inc(len(left_out))
            await settled(left_out)
        if len(sends) == 1:
            if passed:
                await sends[0].send(passed)
            return
        by_lane: dict[int, list[Record]] = {}
        for record in passed:
            by_lane.setdefault(lane_of(record.key, len(sends)), []).append(record)
        for lane, part in by_lane.items():
            await sends[lane].send(part)

    # -- delivery ------------------------------------------------------------------------

    async def _deliver(
        self, lane: int, batch: Batch, settled: Settled, window: WindowState | None
    ) -> DeliveryOutcome:
        state, clock = self.state, self.context.clock
        now = clock()
        self._note_age(max(0.0, now - batch.last.arrival), batch.partition)
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
            self._note_age(max(0.0, clock() - batch.last.arrival), batch.partition)
            if window is not None and result.ok:
                # The next invocation in this window carries the state just returned.
                window.accept(result.response)

        async def count_settled(records: Sequence[Record]) -> None:
            state.records_delivered += len(records)
            await settled(records)

        try:
            outcome = await self.context.deliverer.deliver(
                batch,
                interrupt=self.life.reading,
                in_flight=in_flight,
                on_settled=count_settled,
                on_result=note_attempt,
                event_fields=(lambda: window.event_fields(final=False)) if window else None,
                check_answer=answer_problem if window else None,
            )
        except anyio.get_cancelled_exc_class():
            if self.life.stopping:
                self._abandoned(in_flight, "the shutdown grace period ran out")
            raise
        finally:
            del state.in_flight[lane]
        if outcome is DeliveryOutcome.DELIVERED:
            state.batches_delivered += 1
        else:
            self._abandoned(in_flight, "shutdown came between retries")
        return outcome

    async def _close_window(self, lane: int, window: WindowState) -> bool:
        """The open window's final invocation (none when no window is open); False when
        shutdown came first."""
        if window.start is None:
            return True
        in_flight = InFlight("", "", 0, self.context.clock())
        self.state.in_flight[lane] = in_flight

        async def keep_state(result: InvokeResult) -> None:
            if result.ok:
                window.accept(result.response)

        try:
            outcome = await self.context.deliverer.deliver_final(
                self.shard_id,
                interrupt=self.life.reading,
                in_flight=in_flight,
                event_fields=lambda: window.event_fields(final=True),
                check_answer=answer_problem,
                on_result=keep_state,
            )
        finally:
            del self.state.in_flight[lane]
        if outcome is DeliveryOutcome.ABANDONED:
            return False
        window.close()
        return True

    def _abandoned(self, in_flight: InFlight, reason: str) -> None:
        # A restart reads again from the checkpoint, which never passes an unsettled record:
        # whatever of this batch was not settled is delivered again.
        self.log.warning(
            "batch abandoned at shutdown, it will be delivered again",
            reason=reason,
            first_sequence=in_flight.first_sequence,
            last_sequence=in_flight.last_sequence,
            records=in_flight.size,
            checkpoint=self.state.checkpoint,
        )

    async def _save(self, checkpoint: Checkpoint, *, must: bool = False) -> bool:
        saved = await self.context.checkpointer.save(
            self.shard_id, checkpoint, self.life, must=must
        )
        if saved:
            self.state.checkpoint = checkpoint.sequence
        return saved
