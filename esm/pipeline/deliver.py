"""Delivers one batch to the function: invoke, classify, back off and retry until it is settled."""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from esm.events import encode_event
from esm.metrics import Metrics
from esm.model import MAX_INVOKE_PAYLOAD_BYTES, Batch, Invocation, InvokeResult, ResultKind
from esm.pipeline.retry import Backoff
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


@dataclass
class Deliverer:
    """Invokes the function for a mapping's batches and retries until each is delivered.

    A function error retries the whole batch (the partition stays blocked, keeping order);
    throttles and system errors back off exponentially and do not count as attempts.
    """

    backend: FunctionBackend
    target: FunctionTarget
    mapping_id: str
    metrics: Metrics
    backoff: Backoff = field(default_factory=Backoff)
    clock: Callable[[], float] = time.time
    log: Any = None
    max_payload_bytes: int = MAX_INVOKE_PAYLOAD_BYTES

    async def deliver(
        self,
        batch: Batch,
        *,
        stopping: anyio.Event,
        in_flight: InFlight,
        on_result: Callable[[InvokeResult], Awaitable[None]] | None = None,
    ) -> DeliveryOutcome:
        payload = encode_event(batch.records)
        labels = {"mapping": self.mapping_id, "shard": batch.partition}
        failures = 0
        while True:
            result = await self._invoke_once(payload, labels)
            self._count(result, len(batch.records))
            if on_result is not None:
                await on_result(result)
            if result.ok:
                return DeliveryOutcome.DELIVERED
            failures += 1
            if result.kind is ResultKind.FUNCTION_ERROR:
                in_flight.attempts += 1
            elif result.kind is ResultKind.THROTTLE:
                in_flight.throttles += 1
            else:
                in_flight.system_errors += 1
            in_flight.last_error = f"{result.kind.value}: {result.error or result.function_error}"
            delay = self.retry_delay(failures, result)
            in_flight.next_attempt_at = self.clock() + delay
            if self.log is not None:
                self.log.warning(
                    "invoke failed, will retry",
                    shard=batch.partition,
                    result=result.kind.value,
                    error=result.error,
                    function_error=result.function_error,
                    retry_in_seconds=round(delay, 3),
                    first_sequence=batch.first.sequence,
                    records=len(batch.records),
                )
            with anyio.move_on_after(delay):
                await stopping.wait()
            in_flight.next_attempt_at = None
            if stopping.is_set():
                return DeliveryOutcome.ABANDONED

    def retry_delay(self, failures: int, result: InvokeResult) -> float:
        """Seconds before the next attempt after `failures` failures in a row, the last one
        `result`: exponential backoff, or longer when the function asked (Retry-After)."""
        delay = self.backoff.delay(failures)
        if result.retry_after is not None:
            delay = max(delay, min(result.retry_after, self.backoff.maximum))
        return delay

    async def _invoke_once(self, payload: bytes, labels: dict[str, str]) -> InvokeResult:
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
        with anyio.move_on_after(self.target.timeout + _TIMEOUT_MARGIN_SECONDS):
            result = await self.backend.invoke(invocation)
        if result is None:
            result = InvokeResult(
                kind=ResultKind.FUNCTION_ERROR,
                error=f"Task timed out after {self.target.timeout:.2f} seconds",
                function_error="Unhandled",
            )
        self.metrics.invoke_duration.labels(self.mapping_id).observe(time.monotonic() - started)
        return result

    def _count(self, result: InvokeResult, records: int) -> None:
        m, mapping = self.metrics, self.mapping_id
        m.invocations.labels(mapping, result.kind.value).inc()
        if result.kind in (ResultKind.SUCCESS, ResultKind.FUNCTION_ERROR):
            # Throttled and failed-to-start invocations never reached the function.
            m.invoked_events.labels(mapping).inc(records)
            m.batch_size.labels(mapping).observe(records)
        if result.kind is ResultKind.FUNCTION_ERROR:
            m.failed_invoke_events.labels(mapping).inc(records)
