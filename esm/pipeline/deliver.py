"""Delivers one batch to the function: invoke, classify, back off and retry until it is settled."""

from __future__ import annotations

import enum
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from esm.errors import InvocationError
from esm.events import encode_event
from esm.metrics import Metrics
from esm.model import (
    MAX_INVOKE_PAYLOAD_BYTES,
    Batch,
    Invocation,
    InvokeResult,
    Record,
    ResultKind,
)
from esm.pipeline.partial import stream_item_failures
from esm.pipeline.retry import Backoff, GiveUpCondition, RetryPolicy
from esm.protocols import FunctionBackend

# A backend enforces the function timeout itself; this margin only guards against one that
# does not, so a stuck backend cannot block a shard forever.
_TIMEOUT_MARGIN_SECONDS = 5.0


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


@dataclass(frozen=True)
class _Part:
    """What every part of one batch's delivery shares."""

    stopping: anyio.Event
    in_flight: InFlight
    on_settled: Settled | None
    on_result: Callable[[InvokeResult], Awaitable[None]] | None
    event_fields: EventFields | None
    check_answer: AnswerCheck | None


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
Discard = Callable[[GiveUp, anyio.Event], Awaitable[bool]]
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

    async def deliver(
        self,
        batch: Batch,
        *,
        stopping: anyio.Event,
        in_flight: InFlight,
        on_settled: Settled | None = None,
        on_result: Callable[[InvokeResult], Awaitable[None]] | None = None,
        event_fields: EventFields | None = None,
        check_answer: AnswerCheck | None = None,
    ) -> DeliveryOutcome:
        """Deliver `batch`; parts of it are reported to `on_settled` in order as they settle.

        `on_result` sees every invocation's result, after `check_answer` has turned an
        unacceptable answer into a function error.
        """
        parts: deque[Sequence[Record]] = deque([batch.records])
        part = _Part(stopping, in_flight, on_settled, on_result, event_fields, check_answer)
        while parts:
            records = parts.popleft()
            split = await self._deliver_part(batch.partition, records, part)
            if split is None:
                return DeliveryOutcome.ABANDONED
            # A bisected part comes back as its halves, to be delivered first half first.
            parts.extendleft(reversed(split))
        return DeliveryOutcome.DELIVERED

    async def deliver_final(
        self,
        partition: str,
        *,
        stopping: anyio.Event,
        in_flight: InFlight,
        event_fields: EventFields,
        check_answer: AnswerCheck | None = None,
        on_result: Callable[[InvokeResult], Awaitable[None]] | None = None,
    ) -> DeliveryOutcome:
        """The final invocation of a tumbling window: no records, retried until it succeeds
        (the shard waits meanwhile) or MaximumRetryAttempts is used up."""
        labels = {"mapping": self.mapping_id, "shard": partition}
        function_errors = failures = 0
        while True:
            payload = encode_event((), event_fields())
            result = self._checked(await self.invoke_once(payload, labels), check_answer)
            self.count(result, 0, failed=result.kind is ResultKind.FUNCTION_ERROR)
            if on_result is not None:
                await on_result(result)
            if result.ok:
                return DeliveryOutcome.DELIVERED
            if result.kind is ResultKind.FUNCTION_ERROR:
                function_errors += 1
                in_flight.attempts += 1
                if self.policy.exhausted(function_errors):
                    if self.log is not None:
                        self.log.error(
                            "final window invocation failed, giving up on it",
                            shard=partition,
                            error=result.error,
                            invoke_count=function_errors,
                        )
                    return DeliveryOutcome.DELIVERED
            failures += 1
            in_flight.last_error = f"{result.kind.value}: {result.error or result.function_error}"
            delay = self.retry_delay(failures, result)
            with anyio.move_on_after(delay):
                await stopping.wait()
            if stopping.is_set():
                return DeliveryOutcome.ABANDONED

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

    async def _deliver_part(
        self, partition: str, records: Sequence[Record], part: _Part
    ) -> list[Sequence[Record]] | None:
        """Deliver one part: [] when it is settled, its halves when it was bisected, None
        when shutdown came first."""
        stopping, in_flight, on_settled, on_result = (
            part.stopping,
            part.in_flight,
            part.on_settled,
            part.on_result,
        )
        labels = {"mapping": self.mapping_id, "shard": partition}
        # Failed invocations of exactly `records`: their approximateInvokeCount.
        function_errors = 0
        failures = 0
        last_result: InvokeResult | None = None
        while True:
            if self.policy.maximum_record_age_seconds >= 0:
                fresh = await self._give_up_expired(partition, records, function_errors, part)
                if fresh is None:
                    return None
                if not fresh:
                    return []
                records = fresh
            payload = encode_event(records, part.event_fields() if part.event_fields else None)
            result = self._checked(await self.invoke_once(payload, labels), part.check_answer)
            if on_result is not None:
                await on_result(result)
            failed_from: int | None = None
            if result.ok:
                failed_from = self._failed_from(result, records)
                if failed_from is None:
                    self.count(result, len(records), failed=False)
                    if on_settled is not None:
                        await on_settled(records)
                    return []
                # A partial failure: what comes before the lowest failed record is done.
                self.count(result, len(records), failed=True)
                in_flight.attempts += 1
                if failed_from > 0:
                    if on_settled is not None:
                        await on_settled(records[:failed_from])
                    # The rest is a new, smaller batch with a count of its own, starting at
                    # zero: AWS invokes a record that keeps failing once in its batch, then
                    # 1 + MaximumRetryAttempts times in the retried part.
                    records = records[failed_from:]
                    function_errors = 0
                else:
                    function_errors += 1
            else:
                self.count(result, len(records), failed=result.kind is ResultKind.FUNCTION_ERROR)
                if result.kind is ResultKind.FUNCTION_ERROR:
                    function_errors += 1
                    in_flight.attempts += 1
                    if self.bisect and len(records) > 1:
                        half = len(records) // 2
                        self._note("bisecting the failed batch", partition, records, result)
                        return [records[:half], records[half:]]
                elif result.kind is ResultKind.THROTTLE:
                    in_flight.throttles += 1
                else:
                    in_flight.system_errors += 1
            last_result = result
            counts = result.kind is ResultKind.FUNCTION_ERROR or failed_from is not None
            if counts and self.policy.exhausted(function_errors):
                settled = await self._give_up(
                    GiveUp(
                        partition,
                        records,
                        GiveUpCondition.RETRY_ATTEMPTS_EXHAUSTED,
                        function_errors,
                        last_result,
                        payload,
                    ),
                    stopping,
                    on_settled,
                )
                return [] if settled else None
            failures += 1
            in_flight.last_error = (
                f"batch item failure from {records[0].sequence}"
                if failed_from is not None
                else f"{result.kind.value}: {result.error or result.function_error}"
            )
            delay = self.retry_delay(failures, result)
            in_flight.next_attempt_at = self.clock() + delay
            self._note("invoke failed, will retry", partition, records, result, delay)
            with anyio.move_on_after(delay):
                await stopping.wait()
            in_flight.next_attempt_at = None
            if stopping.is_set():
                return None

    async def _give_up_expired(
        self, partition: str, records: Sequence[Record], invocations: int, part: _Part
    ) -> Sequence[Record] | None:
        """Give up the records of a part that outlived MaximumRecordAgeInSeconds; the records
        still to invoke (possibly none), or None when shutdown came first.

        Only the expired records go: the fresh records of the same batch are invoked as
        usual, as AWS does. Their failure record counts the invocations that included them,
        at least 1 (AWS writes 1 for a record that expired before it was ever invoked), and
        has no responseContext, whatever the function answered before.
        """
        now = self.clock()
        too_old = self.policy.too_old
        expired = [r for r in records if too_old(r.arrival, now)]
        if not expired:
            return records
        give_up = GiveUp(
            partition,
            expired,
            GiveUpCondition.RECORD_AGE_EXCEEDED,
            max(1, invocations),
            None,
            encode_event(expired, part.event_fields() if part.event_fields else None),
        )
        if not await self._give_up(give_up, part.stopping, part.on_settled):
            return None
        if len(expired) == len(records):
            return []
        return [r for r in records if not too_old(r.arrival, now)]

    def _failed_from(self, result: InvokeResult, records: Sequence[Record]) -> int | None:
        if not self.report_item_failures:
            return None
        failures = stream_item_failures(result.response, records)
        if failures.reason is not None and self.log is not None:
            self.log.warning("answer reports the whole batch failed", reason=failures.reason)
        return failures.first_failed

    async def _give_up(
        self, give_up: GiveUp, stopping: anyio.Event, on_settled: Settled | None
    ) -> bool:
        count = len(give_up.records)
        if self.log is not None:
            self.log.warning(
                "giving up on records",
                shard=give_up.partition,
                condition=give_up.condition.value,
                first_sequence=give_up.records[0].sequence,
                last_sequence=give_up.records[-1].sequence,
                records=count,
                invoke_count=give_up.invoke_count,
            )
        if self.discard is None:
            self.metrics.dropped_events.labels(self.mapping_id).inc(count)
        elif not await self.discard(give_up, stopping):
            return False
        if on_settled is not None:
            await on_settled(give_up.records)
        return True

    def _note(
        self,
        message: str,
        partition: str,
        records: Sequence[Record],
        result: InvokeResult,
        delay: float | None = None,
    ) -> None:
        if self.log is None:
            return
        self.log.warning(
            message,
            shard=partition,
            result=result.kind.value,
            error=result.error,
            function_error=result.function_error,
            retry_in_seconds=None if delay is None else round(delay, 3),
            first_sequence=records[0].sequence,
            records=len(records),
        )

    def retry_delay(self, failures: int, result: InvokeResult) -> float:
        """Seconds before the next attempt after `failures` failures in a row, the last one
        `result`: exponential backoff, or longer when the function asked (Retry-After)."""
        delay = self.backoff.delay(failures)
        if result.retry_after is not None:
            delay = max(delay, min(result.retry_after, self.backoff.maximum))
        return delay

    async def invoke_once(self, payload: bytes, labels: dict[str, str]) -> InvokeResult:
        """One invocation with `payload` (the encoded event), never raising: an event over the
        payload limit or a backend that outlives its timeout become function errors."""
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
        now = self.clock()
        invocation = Invocation(
            payload=payload,
            request_id=str(uuid.uuid4()),
            function_name=self.target.name,
            function_arn=self.target.arn,
            timeout=self.target.timeout,
            deadline=now + self.target.timeout,
            memory_limit_mb=self.target.memory_size,
            extra=labels,
        )
        started = time.monotonic()
        result: InvokeResult | None = None
        in_flight = self.metrics.concurrent_invocations.labels(self.mapping_id)
        with (
            in_flight.track_inprogress(),
            anyio.move_on_after(self.target.timeout + _TIMEOUT_MARGIN_SECONDS),
        ):
            try:
                result = await self.backend.invoke(invocation)
            except Exception as exc:
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
        error = f"{type(exc).__name__}: {exc}"
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
