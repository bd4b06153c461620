"""One queue batch from receipt to settlement: filter, invoke, then ack what succeeded and
nack what failed, keeping the messages invisible meanwhile."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import structlog

from esm.engine.driver import Deliverer
from esm.engine.lifecycle import UnitLife
from esm.engine.partial import fail_rest_of_groups, queue_item_failures
from esm.events import encode_event
from esm.metrics import Metrics
from esm.model import InvokeResult, Record, ResultKind
from esm.protocols import QueueReader
from esm.tracing import BatchResult, BatchSpan

# How a batch whose invocation ended this way ends, when its messages go back to the queue.
_RETURNED = {
    ResultKind.FUNCTION_ERROR: BatchResult.FUNCTION_ERROR,
    ResultKind.THROTTLE: BatchResult.THROTTLE,
    ResultKind.SYSTEM_ERROR: BatchResult.SYSTEM_ERROR,
}

# A batch can hold 10,000 messages: a log line names the first of them only.
_LOGGED_MESSAGE_IDS = 100


@dataclass(frozen=True)
class BatchRules:
    """How a queue mapping settles its batches."""

    mapping: str
    """The mapping's label in metrics and logs."""
    report_item_failures: bool = False
    record_filter: Callable[[Record], bool] | None = None
    failure_visibility_seconds: int | None = None
    """When failed messages come back; None leaves it to the queue's visibility timeout."""


class QueueBatches:
    """Delivers a mapping's queue batches and settles them with the reader.

    A function error fails the batch (or, with ReportBatchItemFailures, the messages it
    names): the failed messages go back to the queue, whose redrive policy decides when they
    stop coming. Throttles and system errors are retried here, with backoff, for as long as
    one visibility timeout; each one makes `on_throttle` lower the mapping's concurrency.
    """

    def __init__(
        self,
        reader: QueueReader,
        rules: BatchRules,
        deliverer: Deliverer,
        metrics: Metrics,
        *,
        on_throttle: Callable[[], None],
        on_error: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reader = reader
        self.rules = rules
        self.deliverer = deliverer
        self.metrics = metrics
        self.on_throttle = on_throttle
        self.on_error = on_error
        self.clock = clock
        self.in_flight = 0
        self.log = structlog.get_logger("esm.queue").bind(mapping=rules.mapping)

    async def process(self, records: Sequence[Record], received_at: float, life: UnitLife) -> None:
        """Filter, deliver and settle `records`, received at `received_at` (engine clock)."""
        records = await self._drop_filtered(records)
        if not records:
            return
        gauge = self.metrics.batches_in_flight.labels(self.rules.mapping)
        self.in_flight += 1
        gauge.inc()
        held_for = self.clock() - received_at
        # From the first receive of its messages until they are deleted or sent back.
        span = self.deliverer.tracer.start_batch(self.reader.queue_name, records, held_for)
        ended = BatchResult.ABANDONED
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.reader.keep_invisible, records, held_for)
                failed, result = await self._invoke(records, life, span)
                tg.cancel_scope.cancel()
            await self._settle(records, failed)
            ended = result
        except anyio.get_cancelled_exc_class():
            if life.stopping:
                # The grace period ran out: neither delivered nor deleted, the messages come
                # back once their visibility (no longer extended) runs out.
                self.log.warning(
                    "batch abandoned at shutdown, it will be delivered again",
                    reason="the shutdown grace period ran out",
                    **self.describe(records),
                )
            raise
        finally:
            span.end(ended)
            self.in_flight -= 1
            gauge.dec()

    async def _drop_filtered(self, records: Sequence[Record]) -> Sequence[Record]:
        """The records that pass FilterCriteria; the others are acknowledged (deleted from
        the queue), as Lambda does."""
        record_filter = self.rules.record_filter
        if record_filter is None:
            return records
        passed: list[Record] = []
        left_out: list[Record] = []
        for record in records:
            (passed if record_filter(record) else left_out).append(record)
        if left_out:
            self.metrics.filtered_out_events.labels(self.rules.mapping).inc(len(left_out))
            await self._ack(left_out)
        return passed

    async def _settle(self, records: Sequence[Record], failed: frozenset[int]) -> None:
        await self._ack([r for i, r in enumerate(records) if i not in failed])
        if failed:
            failed_records = [records[i] for i in sorted(failed)]
            await self.reader.nack(failed_records, self.rules.failure_visibility_seconds)

    async def _ack(self, records: Sequence[Record]) -> None:
        if not records:
            return
        deleted = await self.reader.ack(records)
        if deleted:
            self.metrics.deleted_events.labels(self.rules.mapping).inc(deleted)

    async def _invoke(
        self, records: Sequence[Record], life: UnitLife, span: BatchSpan
    ) -> tuple[frozenset[int], BatchResult]:
        """Invoke the function for a batch; the indices of the messages that failed, and
        how the batch ends."""
        payload = encode_event(records)
        labels = {"mapping": self.rules.mapping, "queue": self.reader.queue_name}
        everything = frozenset(range(len(records)))
        started = self.clock()
        failures = 0
        while True:
            result = await self.deliverer.invoke_once(payload, labels, len(records), span=span)
            if result.kind is ResultKind.SUCCESS:
                failed = self.failed(result, records)
                self.deliverer.count(result, len(records), failed=bool(failed))
                return failed, BatchResult.PARTIAL_FAILURE if failed else BatchResult.SUCCESS
            function_error = result.kind is ResultKind.FUNCTION_ERROR
            self.deliverer.count(result, len(records), failed=function_error)
            self.on_error(f"{result.kind.value}: {result.error or result.function_error}")
            if function_error:
                self.log.warning(
                    "function error, messages go back to the queue",
                    error=result.error,
                    messages=len(records),
                )
                return everything, BatchResult.FUNCTION_ERROR
            # Throttles and system errors: retried while the messages' visibility lasts
            # (the reader keeps extending it), with fewer pollers; then back to the queue.
            self.on_throttle()
            failures += 1
            delay = self.deliverer.retry_delay(failures, result)
            if self.clock() + delay - started > max(self.reader.visibility_timeout, 1):
                return everything, _RETURNED[result.kind]
            if not await life.reading.sleep(delay):
                self.log.warning(
                    "batch abandoned at shutdown, it will be delivered again",
                    reason="shutdown came between retries",
                    **self.describe(records, self.rules.failure_visibility_seconds),
                )
                return everything, BatchResult.ABANDONED

    def failed(self, result: InvokeResult, records: Sequence[Record]) -> frozenset[int]:
        """The indices of the messages a successful invocation's answer says failed."""
        if not self.rules.report_item_failures:
            return frozenset()
        answer = queue_item_failures(result.response, records)
        if isinstance(answer, frozenset):
            return fail_rest_of_groups(answer, records) if self.reader.fifo else answer
        if answer.all_succeeded:
            return frozenset()
        self.log.warning("answer reports the whole batch failed", reason=answer.reason)
        return frozenset(range(len(records)))

    def describe(self, records: Sequence[Record], visibility: int | None = None) -> dict[str, Any]:
        """Log fields naming a batch's messages, for someone tracing where they went;
        `visibility` is the one they were last given, when not the queue's."""
        return {
            "queue": self.reader.queue_name,
            "messages": len(records),
            "message_ids": [r.sequence for r in records[:_LOGGED_MESSAGE_IDS]],
            # Not extended any more: the queue hands them out again within this at the latest.
            "visible_again_within_seconds": (
                self.reader.visibility_timeout if visibility is None else visibility
            ),
        }
