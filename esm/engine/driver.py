"""Delivers one batch to the function: invoke, classify, back off and retry until it is settled."""

from __future__ import annotations

import enum
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from esm.engine.breaker import CircuitBreaker
from esm.engine.lifecycle import Interruptible
from esm.engine.partial import stream_item_failures
from esm.engine.policy import (
    DeliveryPolicy,
    GiveUpPart,
    Invoke,
    PartState,
    Settle,
    Split,
    Step,
    Wait,
)
from esm.engine.retry import Backoff, GiveUpCondition, RetryPolicy
from esm.errors import InvocationError, describe
from esm.events import encode_event
from esm.log import get_logger
from esm.metrics import Metrics
from esm.model import (
    MAX_INVOKE_PAYLOAD_BYTES,
    Batch,
    Invocation,
    InvokeResult,
    Record,
    ResultKind,
)
from esm.protocols import FunctionBackend
from esm.tracing import NO_SPAN, NO_TRACER, AttemptSpan, BatchResult, BatchSpan, BatchTracer

# A backend enforces the function timeout itself; this margin only guards against one that
# does not, so a stuck backend cannot block a shard forever.
_TIMEOUT_MARGIN_SECONDS = 5.0
# esm's logger: asked, cheaply, whether the per-batch line would be written at all.
_DEBUG_LOG = logging.getLogger("esm")
# What an invocation's span records when shutdown cut the invocation short.
_CUT_SHORT = InvokeResult(kind=ResultKind.SYSTEM_ERROR, error="cut short by shutdown")


class DeliveryOutcome(enum.Enum):
    """How a batch left the delivery stage."""

    DELIVERED = "delivered"
    """The function processed the batch: the partition may move past it."""
    ABANDONED = "abandoned"
    """Shutdown came first: the batch was not delivered and must be read again on restart."""


@dataclass
class InFlight:
    """A batch being delivered, as /status shows it."""

    first_sequence: str
    last_sequence: str
    size: int
    started_at: float
    attempts: int = 0
    """Invocations that reached the function and failed (function errors)."""
    throttles: int = 0
    system_errors: int = 0
    last_error: str | None = None
    next_attempt_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "first_sequence": self.first_sequence,
            "last_sequence": self.last_sequence,
            "records": self.size,
            "started_at": self.started_at,
            "function_errors": self.attempts,
            "throttles": self.throttles,
            "system_errors": self.system_errors,
            "last_error": self.last_error,
            "next_attempt_at": self.next_attempt_at,
        }


@dataclass(frozen=True)
class FunctionTarget:
    """The function a mapping invokes, as the backends and the Lambda context name it."""

    name: str
    arn: str
    timeout: float
    memory_size: int = 128


@dataclass
class _Part:
    """What every part of one batch's delivery shares."""

    interrupt: Interruptible
    in_flight: InFlight
    on_settled: Settled | None
    on_result: Callable[[InvokeResult], Awaitable[None]] | None
    event_fields: EventFields | None
    check_answer: AnswerCheck | None
    span: BatchSpan = NO_SPAN
    result: InvokeResult | None = None
    """The invocation result of the step being performed."""
    gave_up: bool = False
    """Some records were given up on (stored or dropped)."""


@dataclass(frozen=True)
class GiveUp:
    """Records a stream mapping stops retrying: they go to the on-failure destination."""

    partition: str
    records: Sequence[Record]
    condition: GiveUpCondition
    invoke_count: int
    """Invocations of exactly these records (approximateInvokeCount)."""
    last_result: InvokeResult | None
    """The last invocation's result, None when the records were never sent."""
    payload: bytes
    """The event these records make, as the function received (or would have received) it."""


Settled = Callable[[Sequence[Record]], Awaitable[None]]
"""Called with records the partition may move past: delivered, or given up and stored."""
Discard = Callable[[GiveUp, Interruptible], Awaitable[bool]]
"""Stores a given-up batch; False when shutdown came first (the records stay unsettled)."""
EventFields = Callable[[], Mapping[str, Any]]
"""Top-level event fields besides Records, read at each invocation (tumbling windows)."""
AnswerCheck = Callable[[Any], "str | None"]
"""Why a successful answer still counts as a failed invocation, or None."""


@dataclass
class Deliverer:
    """Invokes the function for a mapping's batches until every record is settled.

    A function error retries the batch (the partition stays blocked, keeping order) until it
    succeeds, MaximumRetryAttempts is used up or its oldest record passes
    MaximumRecordAgeInSeconds; with BisectBatchOnFunctionError a failing batch is split in
    halves, first half first, and the split does not count as an attempt. Throttles and
    system errors back off exponentially and never count as attempts, but records still age.
    With ReportBatchItemFailures the records before the lowest reported failure are settled
    and the rest retried.
    """

    backend: FunctionBackend
    target: FunctionTarget
    mapping_id: str
    """The mapping's `mapping` label in metrics and in each invocation's labels (the X-Esm-Mapping
    header); the daemon gives the mapping's name."""
    metrics: Metrics
    backoff: Backoff = field(default_factory=Backoff)
    clock: Callable[[], float] = time.time
    log: Any = None
    max_payload_bytes: int = MAX_INVOKE_PAYLOAD_BYTES
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    bisect: bool = False
    report_item_failures: bool = False
    discard: Discard | None = None
    """Where given-up batches go; None drops them (counted in esm_dropped_events_total)."""
    breaker: CircuitBreaker | None = None
    """The mapping's circuit breaker; None: off."""
    tracer: BatchTracer = NO_TRACER
    """Opens each batch's span; the default does nothing (tracing off)."""

    def __post_init__(self) -> None:
        self.rules = DeliveryPolicy(self.policy, self.backoff, self.bisect)
        self._batch_log = self.log if self.log is not None else get_logger(mapping=self.mapping_id)

    async def deliver(
        self,
        batch: Batch,
        *,
        interrupt: Interruptible,
        in_flight: InFlight,
        on_settled: Settled | None = None,
        on_result: Callable[[InvokeResult], Awaitable[None]] | None = None,
        event_fields: EventFields | None = None,
        check_answer: AnswerCheck | None = None,
    ) -> DeliveryOutcome:
        """Deliver `batch`; parts of it are reported to `on_settled` in order as they settle.

        `on_result` sees every invocation's result, after `check_answer` has turned an
        unacceptable answer into a function error. The decisions are the policy's
        (`esm.engine.policy`); this driver carries them out.
        """
        span = self.tracer.start_batch(batch.partition, batch.records, batch.waited)
        part = _Part(interrupt, in_flight, on_settled, on_result, event_fields, check_answer, span)
        # Cancelled (the grace period ran out) counts as abandoned too.
        outcome = DeliveryOutcome.ABANDONED
        try:
            outcome = await self._deliver(batch, part)
        finally:
            if outcome is DeliveryOutcome.ABANDONED:
                span.end(BatchResult.ABANDONED)
            else:
                span.end(BatchResult.GIVEN_UP if part.gave_up else BatchResult.SUCCESS)
        return outcome

    async def _deliver(self, batch: Batch, part: _Part) -> DeliveryOutcome:
        pending: deque[tuple[Record, ...]] = deque([tuple(batch.records)])
        while pending:
            state: PartState | None = self.rules.start(pending.popleft())
            while state is not None:
                step = self.rules.before_invoke(state, self.clock())
                if not await self._perform(batch.partition, step, part, pending):
                    return DeliveryOutcome.ABANDONED
                if step.state is None or part.result is None:
                    break
                state, result = step.state, part.result
                failed_from = self._failed_from(result, state.records)
                self._note_result(state.records, result, failed_from, part.in_flight)
                step = self.rules.after_result(state, result, failed_from)
                if not await self._perform(batch.partition, step, part, pending):
                    return DeliveryOutcome.ABANDONED
                state = step.state
        return DeliveryOutcome.DELIVERED

    async def _perform(
        self, partition: str, step: Step, part: _Part, pending: deque[tuple[Record, ...]]
    ) -> bool:
        """Carry out a step's decisions in order; False when shutdown came first. An
        invocation's result is left in `part.result`."""
        part.result = None
        for decision in step.decisions:
            if isinstance(decision, Invoke):
                part.result = await self._invoke(partition, decision.records, part)
            elif isinstance(decision, Settle):
                if part.on_settled is not None:
                    await part.on_settled(decision.records)
            elif isinstance(decision, GiveUpPart):
                if not await self._give_up(partition, decision, part):
                    return False
            elif isinstance(decision, Split):
                halves = [r for half in decision.parts for r in half]
                self._note("bisecting the failed batch", partition, halves, None)
                part.span.note("bisect", {"messaging.batch.message_count": len(halves)})
                # Delivered first half first, before anything else still pending.
                pending.extendleft(reversed(decision.parts))
            elif not await self._wait(partition, step.state, decision, part):
                return False
        return True

    async def _invoke(self, partition: str, records: Sequence[Record], part: _Part) -> InvokeResult:
        fields = part.event_fields() if part.event_fields else None
        labels = {"mapping": self.mapping_id, "shard": partition}
        result = self._checked(
            await self.invoke_once(
                encode_event(records, fields), labels, len(records), span=part.span
            ),
            part.check_answer,
        )
        if part.on_result is not None:
            await part.on_result(result)
        return result

    def _note_result(
        self,
        records: Sequence[Record],
        result: InvokeResult,
        failed_from: int | None,
        in_flight: InFlight,
    ) -> None:
        """Count an invocation in the metrics and in the batch's /status entry."""
        function_error = result.kind is ResultKind.FUNCTION_ERROR
        self.count(result, len(records), failed=function_error or failed_from is not None)
        if function_error or failed_from is not None:
            in_flight.attempts += 1
        elif result.kind is ResultKind.THROTTLE:
            in_flight.throttles += 1
        elif result.kind is ResultKind.SYSTEM_ERROR:
            in_flight.system_errors += 1
        if failed_from is not None:
            in_flight.last_error = f"batch item failure from {records[failed_from].sequence}"
        elif not result.ok:
            in_flight.last_error = f"{result.kind.value}: {result.error or result.function_error}"

    async def _wait(self, partition: str, state: PartState | None, wait: Wait, part: _Part) -> bool:
        """Back off before the next attempt; False when shutdown came first."""
        in_flight = part.in_flight
        in_flight.next_attempt_at = self.clock() + wait.seconds
        if state is not None:
            self._note(
                "invoke failed, will retry", partition, state.records, state.last_result, wait
            )
        waited = await part.interrupt.sleep(wait.seconds)
        in_flight.next_attempt_at = None
        return waited

    async def deliver_final(
        self,
        partition: str,
        *,
        interrupt: Interruptible,
        in_flight: InFlight,
        event_fields: EventFields,
        check_answer: AnswerCheck | None = None,
        on_result: Callable[[InvokeResult], Awaitable[None]] | None = None,
    ) -> DeliveryOutcome:
        """The final invocation of a tumbling window: no records, retried until it succeeds
        (the shard waits meanwhile) or MaximumRetryAttempts is used up."""
        span = self.tracer.start_batch(partition, ())
        ended = BatchResult.ABANDONED
        try:
            ended = await self._deliver_final(
                partition, interrupt, in_flight, event_fields, check_answer, on_result, span
            )
        finally:
            span.end(ended)
        return (
            DeliveryOutcome.ABANDONED
            if ended is BatchResult.ABANDONED
            else DeliveryOutcome.DELIVERED
        )

    async def _deliver_final(
        self,
        partition: str,
        interrupt: Interruptible,
        in_flight: InFlight,
        event_fields: EventFields,
        check_answer: AnswerCheck | None,
        on_result: Callable[[InvokeResult], Awaitable[None]] | None,
        span: BatchSpan,
    ) -> BatchResult:
        labels = {"mapping": self.mapping_id, "shard": partition}
        function_errors = failures = 0
        while True:
            payload = encode_event((), event_fields())
            result = self._checked(await self.invoke_once(payload, labels, span=span), check_answer)
            failed = result.kind is ResultKind.FUNCTION_ERROR
            self.count(result, 0, failed=failed)
            if on_result is not None:
                await on_result(result)
            if failed:
                function_errors += 1
                in_flight.attempts += 1
            if self.rules.after_final_result(function_errors, result):
                if not failed:
                    return BatchResult.SUCCESS
                if self.log is not None:
                    self.log.error(
                        "final window invocation failed, giving up on it",
                        shard=partition,
                        error=result.error,
                        invoke_count=function_errors,
                    )
                return BatchResult.GIVEN_UP
            failures += 1
            in_flight.last_error = f"{result.kind.value}: {result.error or result.function_error}"
            if not await interrupt.sleep(self.rules.retry_delay(failures, result)):
                return BatchResult.ABANDONED

    @staticmethod
    def _checked(result: InvokeResult, check_answer: AnswerCheck | None) -> InvokeResult:
        if check_answer is None or not result.ok:
            return result
        problem = check_answer(result.response)
        if problem is None:
            return result
        return InvokeResult(
            kind=ResultKind.FUNCTION_ERROR,
            response=result.response,
            error=problem,
            status_code=result.status_code,
            function_error="Unhandled",
            executed_version=result.executed_version,
            duration=result.duration,
        )

    def _failed_from(self, result: InvokeResult, records: Sequence[Record]) -> int | None:
        if not self.report_item_failures or not result.ok:
            return None
        failures = stream_item_failures(result.response, records)
        if failures.reason is not None and self.log is not None:
            self.log.warning("answer reports the whole batch failed", reason=failures.reason)
        return failures.first_failed

    async def _give_up(self, partition: str, decision: GiveUpPart, part: _Part) -> bool:
        """Store the failure record of given-up records (or drop and count them), then settle
        them; False when shutdown came first."""
        records = decision.records
        fields = part.event_fields() if part.event_fields else None
        give_up = GiveUp(
            partition,
            records,
            decision.condition,
            decision.invoke_count,
            decision.last_result,
            encode_event(records, fields),
        )
        if self.log is not None:
            self.log.warning(
                "giving up on records",
                shard=partition,
                condition=decision.condition.value,
                first_sequence=records[0].sequence,
                last_sequence=records[-1].sequence,
                records=len(records),
                invoke_count=decision.invoke_count,
            )
        part.gave_up = True
        part.span.note(
            "give_up",
            {
                "esm.give_up.condition": decision.condition.value,
                "esm.invoke_count": decision.invoke_count,
                "messaging.batch.message_count": len(records),
            },
        )
        if self.discard is None:
            self.metrics.dropped_events.labels(self.mapping_id).inc(len(records))
        elif not await self.discard(give_up, part.interrupt):
            return False
        if part.on_settled is not None:
            await part.on_settled(records)
        return True

    def _note(
        self,
        message: str,
        partition: str,
        records: Sequence[Record],
        result: InvokeResult | None,
        wait: Wait | None = None,
    ) -> None:
        if self.log is None:
            return
        self.log.warning(
            message,
            shard=partition,
            result=None if result is None else result.kind.value,
            error=None if result is None else result.error,
            function_error=None if result is None else result.function_error,
            retry_in_seconds=None if wait is None else round(wait.seconds, 3),
            first_sequence=records[0].sequence,
            records=len(records),
        )

    def retry_delay(self, failures: int, result: InvokeResult) -> float:
        """Seconds before the next attempt after `failures` failures in a row (SQS uses it)."""
        return self.rules.retry_delay(failures, result)

    async def invoke_once(
        self,
        payload: bytes,
        labels: dict[str, str],
        records: int = 0,
        *,
        span: BatchSpan = NO_SPAN,
    ) -> InvokeResult:
        """One invocation with `payload` (the encoded event of `records` records), never
        raising: an event over the payload limit or a backend that outlives its timeout become
        function errors. It is an attempt of the batch `span`. At debug level, one line per
        invocation says how it went."""
        started = time.monotonic()
        request_id = str(uuid.uuid4())
        attempt = span.attempt(records, request_id)
        result = _CUT_SHORT
        try:
            result = await self._invoke_payload(payload, labels, request_id, attempt)
        finally:
            attempt.end(result)
        if _DEBUG_LOG.isEnabledFor(logging.DEBUG):
            self._batch_log.debug(
                "batch invoked",
                shard=labels.get("shard"),
                queue=labels.get("queue"),
                size=records,
                result=result.kind.value,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
                **({} if result.ok else {"error": result.error or result.function_error}),
            )
        return result

    async def _invoke_payload(
        self, payload: bytes, labels: dict[str, str], request_id: str, attempt: AttemptSpan
    ) -> InvokeResult:
        if len(payload) > self.max_payload_bytes:
            # Lambda refuses such a request before the function runs; the batch is one record
            # too large to ever fit, which the retry policy decides about.
            return InvokeResult(
                kind=ResultKind.FUNCTION_ERROR,
                error=f"RequestEntityTooLargeException: event of {len(payload)} bytes exceeds "
                f"the {self.max_payload_bytes} byte invocation payload limit",
                status_code=413,
                function_error="Unhandled",
            )
        if self.breaker is None:
            return await self._invoke_admitted(payload, labels, request_id, attempt)
        await self.breaker.admit()
        result: InvokeResult | None = None
        try:
            result = await self._invoke_admitted(payload, labels, request_id, attempt)
        finally:
            if result is None:
                self.breaker.release_probe()
            else:
                self.breaker.record(result.ok, result.error or result.function_error)
        return result

    async def _invoke_admitted(
        self, payload: bytes, labels: dict[str, str], request_id: str, attempt: AttemptSpan
    ) -> InvokeResult:
        now = self.clock()
        invocation = Invocation(
            payload=payload,
            request_id=request_id,
            function_name=self.target.name,
            function_arn=self.target.arn,
            timeout=self.target.timeout,
            deadline=now + self.target.timeout,
            memory_limit_mb=self.target.memory_size,
            extra=labels,
            trace_headers=attempt.headers,
        )
        started = time.monotonic()
        result: InvokeResult | None = None
        in_flight = self.metrics.concurrent_invocations.labels(self.mapping_id)
        with (
            in_flight.track_inprogress(),
            anyio.move_on_after(self.target.timeout + _TIMEOUT_MARGIN_SECONDS),
            # The function's own spans in this process (a Python handler's) are children.
            attempt.current(),
        ):
            try:
                result = await self.backend.invoke(invocation)
            except Exception as exc:  # noqa: BLE001 - plugin boundary
                # A backend (a plugin's, above all) that raises must not end the daemon: the
                # exception is this batch's failed invocation, retried like any other.
                result = self._contained(exc, labels)
        if result is None:
            result = InvokeResult(
                kind=ResultKind.FUNCTION_ERROR,
                error=f"Task timed out after {self.target.timeout:.2f} seconds",
                function_error="Unhandled",
            )
        self.metrics.invoke_duration.labels(self.mapping_id).observe(time.monotonic() - started)
        return result

    def _contained(self, exc: Exception, labels: Mapping[str, str]) -> InvokeResult:
        """The result an exception raised by the backend stands for: what an
        InvocationError says, a system error for anything else."""
        error = describe(exc)
        self.metrics.contained_errors.labels(self.mapping_id, "backend").inc()
        if self.log is not None:
            self.log.error(
                "function backend raised; the batch will be retried",
                shard=labels.get("shard"),
                queue=labels.get("queue"),
                error=error,
            )
        if isinstance(exc, InvocationError):
            return InvokeResult(
                kind=ResultKind(exc.kind),
                error=error,
                function_error="Unhandled" if exc.kind == "function_error" else None,
                retry_after=exc.retry_after,
            )
        return InvokeResult(kind=ResultKind.SYSTEM_ERROR, error=error)

    def count(self, result: InvokeResult, records: int, *, failed: bool) -> None:
        """Count one invocation of `records` records in the mapping's metrics."""
        m, mapping = self.metrics, self.mapping_id
        m.invocations.labels(mapping, result.kind.value).inc()
        if result.kind in (ResultKind.SUCCESS, ResultKind.FUNCTION_ERROR):
            # Throttled and failed-to-start invocations never reached the function.
            m.invoked_events.labels(mapping).inc(records)
            m.batch_size.labels(mapping).observe(records)
        if failed:
            # FailedInvokeEventCount counts every record of an invocation that failed or
            # answered with batch item failures.
            m.failed_invoke_events.labels(mapping).inc(records)


def breaker_status(deliverer: Deliverer) -> dict[str, Any]:
    """The `circuit_breaker` entry of a mapping's /status; nothing while it has none."""
    if deliverer.breaker is None:
        return {}
    return {"circuit_breaker": deliverer.breaker.status()}
