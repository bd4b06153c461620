"""A queue mapping: pollers, held by a coordinator, that receive batches and deliver them.

Each poller is a work unit of a `Coordinator[int]`, keyed 0, 1, 2 ...; the mapping runs
pollers 0 to target - 1, the target following the backlog (`esm.engine.scaling`). A poller
gathers a batch (over several receives within the batching window), hands it to
`QueueBatches`, and starts over.

Shutdown is by scopes, not flags: `stop()` interrupts the mapping's own reading (opening the
queue, sampling the backlog, starting pollers) and releases every poller with the grace
period, which interrupts its receive at once and gives its in-flight batch until the grace
deadline. Messages a poller holds for a batch not yet delivered go back to the queue in a
shielded scope bounded by that same deadline.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from esm.engine.batcher import Batcher, BatchLimits
from esm.engine.coordinator import Coordinator
from esm.engine.driver import Deliverer, breaker_status
from esm.engine.lifecycle import Interruptible, UnitLife
from esm.engine.pause import PauseGate
from esm.engine.queue_batch import BatchRules, QueueBatches
from esm.engine.retry import Backoff
from esm.engine.scaling import ScalingLimits, Signal, next_target
from esm.errors import SourceError
from esm.metrics import Metrics
from esm.model import Record
from esm.protocols import QueueReader

# A queue answers at most 10 messages per receive.
RECEIVE_MAX = 10
# Without long polling (a wait of 0) an empty receive answers at once: pause before the
# next, rather than spin.
EMPTY_RECEIVE_PAUSE_SECONDS = 0.5


@dataclass(frozen=True)
class QueueSettings:
    """How one mapping reads a queue."""

    mapping: str
    """The mapping's label in metrics and logs."""
    limits: BatchLimits
    scaling: ScalingLimits = field(default_factory=ScalingLimits)
    report_item_failures: bool = False
    record_filter: Callable[[Record], bool] | None = None
    wait_time_seconds: int = 20
    """Long polling: how long a receive waits for messages."""
    failure_visibility_seconds: int | None = None
    """When failed messages come back; None leaves it to the queue's visibility timeout."""
    release_on_shutdown: bool = True
    """Hand messages received but not delivered back to the queue at shutdown."""
    shutdown_grace_seconds: float = 30.0
    """How long, from `stop()`, an in-flight batch and the release of held messages may take."""
    backlog_interval: float = 30.0
    """Seconds between samples of the queue's backlog."""
    backoff: Backoff = field(default_factory=Backoff)
    """Between attempts to reach the queue."""


class QueueEngine:
    """Runs one queue mapping until `stop()`."""

    def __init__(
        self,
        reader: QueueReader,
        settings: QueueSettings,
        deliverer: Deliverer,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reader = reader
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.ready = False
        self.gate = PauseGate()
        self.target = settings.scaling.start
        self.backlog: dict[str, int] = {}
        self.last_error: str | None = None
        self.batches = QueueBatches(
            reader,
            BatchRules(
                mapping=settings.mapping,
                report_item_failures=settings.report_item_failures,
                record_filter=settings.record_filter,
                failure_visibility_seconds=settings.failure_visibility_seconds,
            ),
            deliverer,
            metrics,
            on_throttle=lambda: self.observe(Signal.THROTTLED),
            on_error=self._note_error,
            clock=clock,
        )
        # The mapping's own reading, apart from its pollers': opening the queue, sampling
        # its backlog, starting pollers.
        self._reading = Interruptible()
        self._pollers: Coordinator[int] | None = None
        self._target_changed_at = -math.inf
        self._target_raised = anyio.Event()
        self._receives = metrics.track_queue_receives(settings.mapping, clock)
        self.log = structlog.get_logger("esm.queue").bind(mapping=settings.mapping)

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until `stop()`, then return once the pollers have wound down."""
        try:
            if not await self._open():
                return
            async with anyio.create_task_group() as tg:
                self._pollers = Coordinator(tg, self._poll, name="poller")
                tg.start_soon(self._sample_backlog)
                self.ready = True
                with self._reading.scope():
                    await self._supervise(self._pollers)
                # Reading was interrupted: pollers started since `stop()` wind down too.
                self._pollers.release_all(self.settings.shutdown_grace_seconds)
        finally:
            self.metrics.forget_queue_receives(self.settings.mapping)

    def stop(self, grace: float | None = None) -> None:
        """Stop reading at once; batches being delivered get `grace` seconds (by default
        the shutdown grace period of the settings)."""
        self._reading.interrupt()
        if self._pollers is not None:
            self._pollers.release_all(
                self.settings.shutdown_grace_seconds if grace is None else grace
            )

    @property
    def in_flight(self) -> int:
        """Batches being delivered."""
        return self.batches.in_flight

    @property
    def running(self) -> int:
        """Pollers whose task is running (one retiring counts until it ends)."""
        return 0 if self._pollers is None else len(self._pollers.held)

    @property
    def deliverer(self) -> Deliverer:
        return self.batches.deliverer

    def status(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "stopping": self._reading.interrupted,
            "paused": self.gate.paused,
            **breaker_status(self.deliverer),
            **self.reader.status(),
            "pollers": {"target": self.target, "running": self.running},
            "max_concurrency": self.settings.scaling.maximum,
            "batches_in_flight": self.in_flight,
            "backlog": self.backlog,
            "last_error": self.last_error,
        }

    # -- the queue -----------------------------------------------------------------------------

    async def _open(self) -> bool:
        """Find the queue, retrying until it answers; False when stopped first."""
        failures = 0
        with self._reading.scope(), self._receives.reading():
            while True:
                try:
                    self._note_backlog(await self.reader.open())
                except SourceError as error:
                    failures += 1
                    self._note_error(str(error))
                    delay = self.settings.backoff.delay(failures)
                    self.log.warning("cannot reach the queue", error=str(error), retry_in=delay)
                    await anyio.sleep(delay)
                    continue
                self._receives.succeeded()
                self._check_visibility()
                return True
        return False

    def _check_visibility(self) -> None:
        timeout = self.batches.deliverer.target.timeout
        if timeout > self.reader.visibility_timeout:
            # AWS refuses such a mapping; esm keeps extending the visibility instead.
            self.log.warning(
                "the function's timeout is longer than the queue's visibility timeout",
                function_timeout=timeout,
                visibility_timeout=self.reader.visibility_timeout,
            )

    async def _sample_backlog(self) -> None:
        while await self._reading.sleep(self.settings.backlog_interval):
            with self._reading.scope():
                try:
                    self._note_backlog(await self.reader.backlog())
                except SourceError as error:
                    self.log.warning("reading the queue's attributes failed", error=str(error))

    def _note_backlog(self, backlog: Mapping[str, int]) -> None:
        for state, count in backlog.items():
            self.backlog[state] = count
            self.metrics.queue_messages.labels(self.settings.mapping, state).set(count)

    def _note_error(self, error: str) -> None:
        self.last_error = error

    # -- scaling -------------------------------------------------------------------------------

    async def _supervise(self, pollers: Coordinator[int]) -> None:
        """Run pollers 0 to target - 1. Pollers past a lowered target retire themselves after
        their batch: interrupting a receive would strand what it took until the messages'
        visibility timeout ran out."""
        mapping = self.settings.mapping
        while True:
            for key in range(self.target):
                pollers.acquire(key)
            self.metrics.pollers.labels(mapping, "target").set(self.target)
            self.metrics.pollers.labels(mapping, "running").set(self.running)
            self._target_raised = anyio.Event()
            async with anyio.create_task_group() as tg:
                for change in (pollers.wait_changed, self._target_raised.wait):
                    tg.start_soon(_cancel_after, change, tg.cancel_scope)

    def observe(self, signal: Signal) -> None:
        """Move the target by what a poller saw."""
        now = self.clock()
        scaling = self.settings.scaling
        target = next_target(self.target, signal, now - self._target_changed_at, scaling)
        if target != self.target or signal is Signal.THROTTLED:
            self._target_changed_at = now
        if target > self.target:
            self._target_raised.set()
        self.target = target

    # -- one poller --------------------------------------------------------------------------

    async def _poll(self, key: int, life: UnitLife) -> None:
        """Gather and deliver batches while this poller is within the target."""
        # Messages received beyond what one batch takes (6 MB) wait here for the next.
        batcher = Batcher(self.settings.limits, self.clock)
        received_at = self.clock()
        try:
            while key < self.target:
                with life.reading.scope(), self._receives.reading():
                    received_at = await self._gather(key, batcher, received_at)
                if life.stopping:
                    return
                if len(batcher):
                    await self.batches.process(batcher.take(), received_at, life)
        finally:
            await self._release(batcher, life)

    async def _gather(self, key: int, batcher: Batcher, received_at: float) -> float:
        """Receive until a batch is due: BatchSize messages or 6 MB of event, the batching
        window's end, or (without a window) the first receive that returns any. Returns when
        the oldest message waiting was received; returns with nothing once the poller is
        past the target (it retires)."""
        limits = self.settings.limits
        while not batcher.full():
            wait = self.settings.wait_time_seconds
            if not len(batcher):
                if key >= self.target:
                    break
            else:
                remaining = batcher.window_remaining()
                # Paused with messages in hand: deliver them now rather than hold them
                # invisible until their visibility runs out.
                if remaining <= 0 or self.gate.closed:
                    break
                wait = min(wait, int(remaining))
            wanted = min(RECEIVE_MAX, limits.batch_size - len(batcher))
            records = await self._receive(wanted, wait)
            if records and not len(batcher):
                received_at = self.clock()
            batcher.add(records)
        return received_at

    async def _receive(self, count: int, wait: int) -> list[Record]:
        """One receive; nothing after a failure (logged and backed off)."""
        if self.gate.closed:
            with self._receives.waiting():
                await self.gate.wait_open()
        try:
            records = await self.reader.receive(count, wait)
        except SourceError as error:
            self._note_error(str(error))
            self.log.warning("receiving failed", error=str(error))
            await anyio.sleep(self.settings.backoff.delay(1))
            return []
        self._receives.succeeded()
        if records:
            self.metrics.polled_events.labels(self.settings.mapping).inc(len(records))
        self.observe(Signal.BUSY if len(records) >= count else Signal.SHORT)
        if not records and wait == 0:
            await anyio.sleep(EMPTY_RECEIVE_PAUSE_SECONDS)
        return records

    async def _release(self, batcher: Batcher, life: UnitLife) -> None:
        """Hand back what the poller holds: at shutdown (if so configured) within the grace
        period, even while the poller is being cancelled; when it retires, to be received by
        the pollers that go on, rather than wait out its visibility."""
        records = _drain(batcher)
        if not records or (life.stopping and not self.settings.release_on_shutdown):
            return
        with anyio.CancelScope(shield=True, deadline=life.delivery.deadline) as scope:
            await self.reader.release(records)
        if scope.cancelled_caught:
            self.log.warning(
                "releasing messages at shutdown ran out of time, they will be delivered again",
                reason="the shutdown grace period ran out",
                **self.batches.describe(records),
            )


def _drain(batcher: Batcher) -> Sequence[Record]:
    records: list[Record] = []
    while len(batcher):
        records.extend(batcher.take())
    return records


async def _cancel_after(wait: Callable[[], Any], scope: anyio.CancelScope) -> None:
    await wait()
    scope.cancel()
