"""SQS queues: pollers that scale with the backlog, batches delivered, messages deleted on
success, and visibility managed while they are processed."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import anyio.abc
import structlog

from esm.engine.batcher import BatchLimits
from esm.engine.driver import Deliverer
from esm.engine.lifecycle import Interruptible
from esm.engine.partial import queue_item_failures
from esm.engine.retry import Backoff
from esm.errors import SourceError
from esm.events import encode_event, sqs_record
from esm.metrics import Metrics
from esm.model import EVENT_ENVELOPE_BYTES, InvokeResult, Record, ResultKind
from esm.sources._aws import translate_error

# SQS answers at most 10 messages per ReceiveMessage and takes at most 10 entries per batch call.
RECEIVE_MAX = 10
ENTRIES_MAX = 10
# Lambda starts an SQS mapping at 5 concurrent batches and goes down to 2 when idle.
INITIAL_CONCURRENCY = 5
IDLE_CONCURRENCY = 2
# Lambda's ceiling per mapping when ScalingConfig.MaximumConcurrency is not set.
DEFAULT_MAX_CONCURRENCY = 1250
# Lambda adds up to 300 concurrent invokes a minute while messages keep coming.
SCALE_UP_INTERVAL_SECONDS = 0.2
SCALE_DOWN_INTERVAL_SECONDS = 5.0
# Without long polling (wait_time_seconds 0) an empty receive answers at once: pause before
# the next, rather than spin.
EMPTY_RECEIVE_PAUSE_SECONDS = 0.5
# A batch can hold 10,000 messages: a log line names the first of them only.
_LOGGED_MESSAGE_IDS = 100
_RECEIVE_ATTRIBUTES = {"MessageSystemAttributeNames": ["All"], "MessageAttributeNames": ["All"]}


class SqsClient(Protocol):
    """The SQS calls esm makes; an aiobotocore client satisfies it."""

    async def get_queue_url(self, **kwargs: Any) -> Mapping[str, Any]: ...

    async def get_queue_attributes(self, **kwargs: Any) -> Mapping[str, Any]: ...

    async def receive_message(self, **kwargs: Any) -> Mapping[str, Any]: ...

    async def delete_message_batch(self, **kwargs: Any) -> Mapping[str, Any]: ...

    async def change_message_visibility_batch(self, **kwargs: Any) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class QueueSettings:
    """How one mapping reads an SQS queue."""

    mapping_id: str
    """The mapping's UUID."""
    queue_arn: str
    region: str
    limits: BatchLimits
    report_item_failures: bool = False
    record_filter: Callable[[Record], bool] | None = None
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    """ScalingConfig.MaximumConcurrency, or Lambda's ceiling."""
    wait_time_seconds: int = 20
    """Long polling: how long a ReceiveMessage waits for messages."""
    extend_visibility: bool = True
    """Keep messages invisible while their batch is processed, however long it takes."""
    failure_visibility_seconds: int | None = None
    """Visibility of failed messages, spacing their retries; None leaves the queue's."""
    release_on_shutdown: bool = True
    """Make messages received but not delivered visible again at shutdown."""
    shutdown_grace_seconds: float = 30.0
    """How long, from `stop()`, shutdown work may go on (the daemon's
    delivery.shutdown_grace_seconds): releasing messages gives up at its end."""
    attributes_interval: float = 30.0
    """Seconds between samples of the queue's backlog (ApproximateNumberOfMessages)."""
    backoff: Backoff = field(default_factory=Backoff)
    mapping_name: str = ""
    """The mapping's name, its `mapping` in metrics and logs; empty: the id."""

    @property
    def label(self) -> str:
        """The mapping's `mapping` label in metrics and logs."""
        return self.mapping_name or self.mapping_id

    @property
    def fifo(self) -> bool:
        return self.queue_arn.endswith(".fifo")

    @property
    def queue_name(self) -> str:
        return self.queue_arn.rsplit(":", 1)[-1]

    @property
    def account(self) -> str:
        return self.queue_arn.split(":")[4]


@dataclass
class _Received:
    """Messages received for one batch: their records, and when they were received."""

    records: list[Record] = field(default_factory=list)
    received_at: float = field(default_factory=time.monotonic)
    size: int = EVENT_ENVELOPE_BYTES


class QueueRunner:
    """Runs one SQS mapping until `stop()`.

    Pollers each receive a batch (long polling; with a batching window, over several
    receives), deliver it, then delete what succeeded. Their number follows the backlog
    between 2 and the mapping's maximum concurrency, and halves when the function throttles.
    """

    def __init__(
        self,
        client: SqsClient,
        settings: QueueSettings,
        deliverer: Deliverer,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.settings = settings
        self.deliverer = deliverer
        self.metrics = metrics
        self.clock = clock
        self.ready = False
        self.stopping = Interruptible()
        self.queue_url = ""
        self.visibility_timeout = 30
        self.target = min(INITIAL_CONCURRENCY, settings.max_concurrency)
        self.active = 0
        self.in_flight = 0
        self.last_error: str | None = None
        self.backlog: dict[str, int] = {}
        self._order = 0
        self._scaled_at = 0.0
        self._poll_scope = anyio.CancelScope()
        self._receive_scopes: set[anyio.CancelScope] = set()
        self._more_pollers = anyio.Event()
        self._stop_deadline = math.inf
        self._cleanup_scopes: set[anyio.CancelScope] = set()
        self._receives = metrics.track_queue_receives(settings.label, clock)
        self.log = structlog.get_logger("esm.sqs").bind(mapping=settings.label)

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until `stop()`, then return once in-flight batches are settled."""
        try:
            with self._receives.reading():
                await self._resolve_queue()
            if self.stopping.interrupted:
                return
            async with anyio.create_task_group() as tg:
                with self._poll_scope:
                    tg.start_soon(self._sample_backlog)
                    self.ready = True
                    await self._supervise(tg)
        finally:
            self.metrics.forget_queue_receives(self.settings.label)

    def stop(self, grace: float | None = None) -> None:
        """Stop polling at once: receives are cancelled and what they gathered is released;
        batches being delivered finish (within the daemon's grace period)."""
        self.stopping.interrupt()
        self._stop_deadline = anyio.current_time() + self.settings.shutdown_grace_seconds
        for scope in self._cleanup_scopes:
            scope.deadline = min(scope.deadline, self._stop_deadline)
        self._poll_scope.cancel()
        for scope in list(self._receive_scopes):
            scope.cancel()

    def status(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "stopping": self.stopping.interrupted,
            "queue_url": self.queue_url,
            "fifo": self.settings.fifo,
            "visibility_timeout_seconds": self.visibility_timeout,
            "pollers": {"target": self.target, "running": self.active},
            "max_concurrency": self.settings.max_concurrency,
            "batches_in_flight": self.in_flight,
            "backlog": self.backlog,
            "last_error": self.last_error,
        }

    # -- the queue -------------------------------------------------------------------------

    async def _resolve_queue(self) -> None:
        failures = 0
        while not self.stopping.interrupted:
            try:
                answer = await self.client.get_queue_url(
                    QueueName=self.settings.queue_name,
                    QueueOwnerAWSAccountId=self.settings.account,
                )
                self.queue_url = str(answer["QueueUrl"])
                await self._read_attributes()
                self._receives.succeeded()
                timeout = self.deliverer.target.timeout
                if timeout > self.visibility_timeout:
                    # AWS refuses such a mapping; esm keeps extending the visibility instead.
                    self.log.warning(
                        "the function's timeout is longer than the queue's visibility timeout",
                        function_timeout=timeout,
                        visibility_timeout=self.visibility_timeout,
                        extend_visibility=self.settings.extend_visibility,
                    )
                return
            except Exception as exc:  # noqa: BLE001 - AWS boundary, translated
                failures += 1
                error = translate_error(exc, "GetQueueUrl")
                self.last_error = str(error)
                delay = self.settings.backoff.delay(failures)
                self.log.warning("cannot reach the queue", error=str(error), retry_in=delay)
                with anyio.move_on_after(delay):
                    await self.stopping.wait()

    async def _read_attributes(self) -> None:
        answer = await self.client.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=[
                "VisibilityTimeout",
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
        attributes = answer.get("Attributes", {})
        self.visibility_timeout = int(attributes.get("VisibilityTimeout", self.visibility_timeout))
        mapping = self.settings.label
        for state, name in (
            ("visible", "ApproximateNumberOfMessages"),
            ("in_flight", "ApproximateNumberOfMessagesNotVisible"),
            ("delayed", "ApproximateNumberOfMessagesDelayed"),
        ):
            if name in attributes:
                self.backlog[state] = int(attributes[name])
                self.metrics.queue_messages.labels(mapping, state).set(self.backlog[state])

    async def _sample_backlog(self) -> None:
        while True:
            with anyio.move_on_after(self.settings.attributes_interval):
                await self.stopping.wait()
            if self.stopping.interrupted:
                return
            try:
                await self._read_attributes()
            except Exception as exc:  # noqa: BLE001 - AWS boundary, logged and retried
                self.metrics.queue_errors.labels(self.settings.label, "attributes").inc()
                self.log.warning("reading the queue's attributes failed", error=str(exc))

    # -- scaling -----------------------------------------------------------------------------

    async def _supervise(self, tg: anyio.abc.TaskGroup) -> None:
        mapping = self.settings.label
        while True:
            while self.active < self.target:
                self.active += 1
                tg.start_soon(self._poller)
            self.metrics.pollers.labels(mapping, "target").set(self.target)
            self.metrics.pollers.labels(mapping, "running").set(self.active)
            self._more_pollers = anyio.Event()
            await self._more_pollers.wait()

    def _scale(self, busy: bool) -> None:
        """More pollers while receives come back full, fewer while they come back empty."""
        since = time.monotonic() - self._scaled_at
        if busy:
            if self.target < self.settings.max_concurrency and since >= SCALE_UP_INTERVAL_SECONDS:
                self.target += 1
                self._scaled_at += since
                self._more_pollers.set()
            return
        floor = min(IDLE_CONCURRENCY, self.settings.max_concurrency)
        if self.target > floor and since >= SCALE_DOWN_INTERVAL_SECONDS:
            self.target -= 1
            self._scaled_at += since

    def _throttled(self) -> None:
        # A function without capacity gets fewer concurrent batches, as Lambda backs off.
        self.target = max(1, self.target // 2)
        self._scaled_at = time.monotonic()

    # -- one poller --------------------------------------------------------------------------

    async def _poller(self) -> None:
        # Messages received beyond what fits one batch (6 MB): the next batch's first.
        carry: list[Record] = []
        try:
            while not self.stopping.interrupted and self.active <= self.target:
                received = _Received()
                scope = anyio.CancelScope()
                self._receive_scopes.add(scope)
                try:
                    with scope, self._receives.reading():
                        await self._gather(received, carry)
                finally:
                    self._receive_scopes.discard(scope)
                if self.stopping.interrupted:
                    await self._release(received.records + carry)
                    carry = []
                    return
                if received.records:
                    await self._process(received)
        finally:
            self.active -= 1
            self._more_pollers.set()
            if carry:
                # A poller retired by scaling down: what it held for its next batch goes
                # back to the queue for the others, rather than waiting out its visibility.
                await self._release(carry, shutdown=self.stopping.interrupted)

    async def _gather(self, received: _Received, carry: list[Record]) -> None:
        """Receive one batch into `received`: up to BatchSize messages, gathered over the
        batching window (or from the first receive that returns any, without one), within
        6 MB. Messages that do not fit wait in `carry` for the next batch."""
        limits = self.settings.limits
        self._take_carried(received, carry)
        deadline: float | None = None
        if received.records and limits.window_seconds > 0:
            deadline = time.monotonic() + limits.window_seconds
        while len(received.records) < limits.batch_size and not carry:
            if received.records:
                if deadline is None:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                wait = min(self.settings.wait_time_seconds, int(remaining))
            else:
                wait = self.settings.wait_time_seconds
            wanted = min(RECEIVE_MAX, limits.batch_size - len(received.records))
            messages = await self._receive(wanted, wait)
            if messages is None:
                continue
            self._scale(busy=len(messages) >= wanted)
            if not received.records and messages:
                received.received_at = time.monotonic()
                if limits.window_seconds > 0:
                    deadline = received.received_at + limits.window_seconds
            for message in messages:
                record = self._record(message)
                full = len(received.records) >= limits.batch_size
                if full or received.size + record.size > limits.max_payload_bytes:
                    carry.append(record)
                else:
                    received.records.append(record)
                    received.size += record.size

    def _take_carried(self, received: _Received, carry: list[Record]) -> None:
        """Start the batch with the messages left over from the last one, as many as fit."""
        limits = self.settings.limits
        while carry and len(received.records) < limits.batch_size:
            record = carry[0]
            if received.records and received.size + record.size > limits.max_payload_bytes:
                break
            received.records.append(carry.pop(0))
            received.size += record.size

    def _record(self, message: Mapping[str, Any]) -> Record:
        self._order += 1
        return sqs_record(
            message,
            queue_arn=self.settings.queue_arn,
            region=self.settings.region,
            order=self._order,
        )

    async def _receive(self, count: int, wait: int) -> list[Mapping[str, Any]] | None:
        """One ReceiveMessage; None after a failure (already logged and backed off)."""
        try:
            answer = await self.client.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=count,
                WaitTimeSeconds=max(0, wait),
                **_RECEIVE_ATTRIBUTES,
            )
        except Exception as exc:  # noqa: BLE001 - AWS boundary, translated
            error = translate_error(exc, "ReceiveMessage")
            self.metrics.queue_errors.labels(self.settings.label, "receive").inc()
            self.last_error = str(error)
            self.log.warning("receiving failed", error=str(error))
            await anyio.sleep(self.settings.backoff.delay(1))
            return None
        self._receives.succeeded()
        messages = list(answer.get("Messages", []))
        if messages:
            self.metrics.polled_events.labels(self.settings.label).inc(len(messages))
        else:
            self._scale(busy=False)
            if wait == 0:
                await anyio.sleep(EMPTY_RECEIVE_PAUSE_SECONDS)
        return messages

    # -- one batch ---------------------------------------------------------------------------

    async def _process(self, received: _Received) -> None:
        mapping = self.settings.label
        record_filter = self.settings.record_filter
        records = received.records
        if record_filter is not None:
            passed = [r for r in records if record_filter(r)]
            left_out = [r for r in records if not record_filter(r)]
            if left_out:
                # Filtered-out SQS messages are deleted, as Lambda does.
                self.metrics.filtered_out_events.labels(mapping).inc(len(left_out))
                await self._delete(left_out)
            records = passed
        if not records:
            return
        self.in_flight += 1
        self.metrics.batches_in_flight.labels(mapping).inc()
        try:
            async with anyio.create_task_group() as tg:
                if self.settings.extend_visibility:
                    tg.start_soon(self._keep_invisible, records, received.received_at)
                failed = await self._invoke(records)
                tg.cancel_scope.cancel()
            succeeded = [r for i, r in enumerate(records) if i not in failed]
            failed_records = [records[i] for i in sorted(failed)]
            await self._delete(succeeded)
            if failed_records and self.settings.failure_visibility_seconds is not None:
                await self._change_visibility(
                    failed_records, self.settings.failure_visibility_seconds
                )
        except anyio.get_cancelled_exc_class():
            if self.stopping.interrupted:
                # The grace period ran out: neither delivered nor deleted, the messages come
                # back once their visibility (no longer extended) runs out.
                self.log.warning(
                    "batch abandoned at shutdown, it will be delivered again",
                    reason="the shutdown grace period ran out",
                    **self._describe(records),
                )
            raise
        finally:
            self.in_flight -= 1
            self.metrics.batches_in_flight.labels(mapping).dec()

    async def _invoke(self, records: Sequence[Record]) -> frozenset[int]:
        """Invoke the function for a batch; the indices of the messages that failed."""
        payload = encode_event(records)
        labels = {"mapping": self.settings.label, "queue": self.settings.queue_name}
        everything = frozenset(range(len(records)))
        started = time.monotonic()
        failures = 0
        while True:
            result = await self.deliverer.invoke_once(payload, labels)
            if result.kind is ResultKind.SUCCESS:
                failed = self._failed(result, records)
                self.deliverer.count(result, len(records), failed=bool(failed))
                return failed
            self.deliverer.count(
                result, len(records), failed=result.kind is ResultKind.FUNCTION_ERROR
            )
            self.last_error = f"{result.kind.value}: {result.error or result.function_error}"
            if result.kind is ResultKind.FUNCTION_ERROR:
                self.log.warning(
                    "function error, messages go back to the queue",
                    error=result.error,
                    messages=len(records),
                )
                return everything
            # Throttles and system errors: retried while the messages' visibility lasts
            # (esm keeps extending it), with fewer pollers; then they go back to the queue.
            self._throttled()
            failures += 1
            delay = self.deliverer.retry_delay(failures, result)
            if time.monotonic() + delay - started > max(self.visibility_timeout, 1):
                return everything
            with anyio.move_on_after(delay):
                await self.stopping.wait()
            if self.stopping.interrupted:
                # Failed as a whole, they go back to the queue (after the failure visibility
                # when one is set).
                failure_visibility = self.settings.failure_visibility_seconds
                self.log.warning(
                    "batch abandoned at shutdown, it will be delivered again",
                    reason="shutdown came between retries",
                    **self._describe(records, failure_visibility),
                )
                return everything

    def _failed(self, result: InvokeResult, records: Sequence[Record]) -> frozenset[int]:
        if not self.settings.report_item_failures:
            return frozenset()
        answer = queue_item_failures(result.response, records)
        if not isinstance(answer, frozenset):
            if answer.all_succeeded:
                return frozenset()
            self.log.warning("answer reports the whole batch failed", reason=answer.reason)
            return frozenset(range(len(records)))
        if not self.settings.fifo or not answer:
            return answer
        # FIFO: after a failed message, the rest of its group in this batch must not be
        # deleted ahead of it, or the group's order would break: they fail too.
        failed = set(answer)
        failed_groups: set[str] = set()
        for index, record in enumerate(records):
            if record.key in failed_groups:
                failed.add(index)
            elif index in answer:
                failed_groups.add(record.key)
        return frozenset(failed)

    async def _keep_invisible(self, records: Sequence[Record], received_at: float) -> None:
        """Extend the batch's visibility before it runs out, for as long as it is processed,
        so that a slow function never lets SQS hand its messages to another poller."""
        timeout = max(self.visibility_timeout, 2)
        next_at = received_at + timeout / 2
        while True:
            await anyio.sleep(max(0.0, next_at - time.monotonic()))
            await self._change_visibility(records, timeout)
            next_at = time.monotonic() + timeout / 2

    # -- batch calls -------------------------------------------------------------------------

    async def _delete(self, records: Sequence[Record]) -> None:
        deleted = await self._batch_call("delete", records, None)
        if deleted:
            self.metrics.deleted_events.labels(self.settings.label).inc(deleted)

    async def _change_visibility(self, records: Sequence[Record], seconds: int) -> None:
        await self._batch_call("change_visibility", records, seconds)

    async def _release(self, records: Sequence[Record], *, shutdown: bool = True) -> None:
        """Make messages visible again at once (at shutdown only if configured so)."""
        if not records or not (self.settings.release_on_shutdown or not shutdown):
            return
        with self._cleanup_scope() as scope:
            await self._change_visibility(records, 0)
        if scope.cancelled_caught:
            self.log.warning(
                "releasing messages at shutdown ran out of time, they will be delivered again",
                reason="the shutdown grace period ran out",
                **self._describe(records),
            )

    @contextlib.contextmanager
    def _cleanup_scope(self) -> Iterator[anyio.CancelScope]:
        """A scope for cleanup that must survive the cancellation ending a shutdown, but not
        outlast its grace period: a queue that does not answer must not hold the process."""
        scope = anyio.CancelScope(shield=True, deadline=self._stop_deadline)
        self._cleanup_scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._cleanup_scopes.discard(scope)

    def _describe(self, records: Sequence[Record], visibility: int | None = None) -> dict[str, Any]:
        """Log fields naming a batch's messages, for someone tracing where they went;
        `visibility` is the one they were last given, when not the queue's."""
        return {
            "queue": self.settings.queue_name,
            "messages": len(records),
            "message_ids": [r.sequence for r in records[:_LOGGED_MESSAGE_IDS]],
            # Not extended any more: the queue hands them out again within this at the latest.
            "visible_again_within_seconds": (
                self.visibility_timeout if visibility is None else visibility
            ),
        }

    async def _batch_call(
        self, operation: str, records: Sequence[Record], seconds: int | None
    ) -> int:
        """DeleteMessageBatch or ChangeMessageVisibilityBatch over every record, ten at a time,
        retrying entries that failed on the service's side; returns how many succeeded."""
        done = 0
        for start in range(0, len(records), ENTRIES_MAX):
            chunk = records[start : start + ENTRIES_MAX]
            entries: dict[str, dict[str, Any]] = {}
            for n, record in enumerate(chunk):
                entry: dict[str, Any] = {
                    "Id": str(n),
                    "ReceiptHandle": record.entry["receiptHandle"],
                }
                if seconds is not None:
                    entry["VisibilityTimeout"] = seconds
                entries[str(n)] = entry
            for attempt in range(1, 4):
                try:
                    if operation == "delete":
                        answer = await self.client.delete_message_batch(
                            QueueUrl=self.queue_url, Entries=list(entries.values())
                        )
                    else:
                        answer = await self.client.change_message_visibility_batch(
                            QueueUrl=self.queue_url, Entries=list(entries.values())
                        )
                except Exception as exc:  # noqa: BLE001 - AWS boundary, translated
                    error: SourceError = translate_error(exc, operation)
                    self.metrics.queue_errors.labels(self.settings.label, operation).inc()
                    self.log.warning(f"{operation} failed", error=str(error), attempt=attempt)
                    await anyio.sleep(self.settings.backoff.delay(attempt))
                    continue
                done += len(answer.get("Successful", []))
                retry: dict[str, dict[str, Any]] = {}
                for failure in answer.get("Failed", []):
                    self.metrics.queue_errors.labels(self.settings.label, operation).inc()
                    self.log.warning(
                        f"{operation} failed for a message",
                        code=failure.get("Code"),
                        message=failure.get("Message"),
                        sender_fault=failure.get("SenderFault"),
                    )
                    # A sender fault (a stale receipt handle) will not change on retry.
                    if not failure.get("SenderFault") and failure.get("Id") in entries:
                        retry[failure["Id"]] = entries[failure["Id"]]
                entries = retry
                if not entries:
                    break
        return done
