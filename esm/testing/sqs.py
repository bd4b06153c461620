"""A stateful fake of an SQS client: visibility, receive counts, FIFO groups, redrive."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import orjson

from esm.aws.sqs import (
    BatchFailedEntry,
    BatchResult,
    BatchResultEntry,
    GetQueueAttributesResult,
    GetQueueUrlResult,
    Message,
    ReceiveMessageResult,
    SqsClient,
)
from esm.testing._common import FakeClientError

_SQS_MAX_VISIBILITY = 43_200
_SQS_MAX_DELAY = 900
_SQS_DEDUP_SECONDS = 300.0
"""How long FIFO queues remember deduplication and receive-attempt IDs."""
_SQS_BATCH_LIMIT = 10
_SQS_QUEUE_DEFAULTS = {
    "VisibilityTimeout": "30",
    "DelaySeconds": "0",
    "ReceiveMessageWaitTimeSeconds": "0",
    "MessageRetentionPeriod": "345600",
    "MaximumMessageSize": "1048576",
}
# Answered in the order Lambda's events show them in.
_SQS_SYSTEM_ATTRIBUTES = (
    "DeadLetterQueueSourceArn",
    "ApproximateReceiveCount",
    "AWSTraceHeader",
    "SentTimestamp",
    "SequenceNumber",
    "MessageGroupId",
    "SenderId",
    "MessageDeduplicationId",
    "ApproximateFirstReceiveTimestamp",
)


@dataclass
class _FakeSqsMessage:
    message_id: str
    body: str
    attributes: dict[str, dict[str, Any]]
    trace_header: str | None
    sent: float
    visible_at: float
    sequence: int
    group_id: str | None = None
    dedup_id: str | None = None
    receive_count: int = 0
    first_receive: float | None = None
    receipt_handle: str | None = None
    """The handle of the latest receive; None until received (and again once redriven)."""
    source_arn: str | None = None
    """The queue the message was moved from to this dead-letter queue."""


@dataclass
class _FakeSqsQueue:
    name: str
    url: str
    arn: str
    fifo: bool
    attributes: dict[str, str]
    created: float
    messages: list[_FakeSqsMessage] = field(default_factory=list)
    """Every message not deleted, in the order sent."""
    deleted: list[str] = field(default_factory=list)
    dedup: dict[str, tuple[float, _FakeSqsMessage]] = field(default_factory=dict)
    attempts: dict[str, tuple[float, list[tuple[str, str]]]] = field(default_factory=dict)


def _sqs_ms(epoch: float) -> str:
    return str(int(epoch * 1000))


def _sqs_invalid(parameter: str, value: Any, reason: str) -> FakeClientError:
    return FakeClientError(
        "InvalidParameterValue",
        f"Value {value} for parameter {parameter} is invalid. Reason: {reason}.",
    )


def _sqs_int(parameter: str, value: Any, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _sqs_invalid(parameter, value, "must be an integer") from None
    if not low <= number <= high:
        raise _sqs_invalid(parameter, value, f"must be between {low} and {high}")
    return number


def _sqs_attribute_selected(name: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        # "All" and ".*" select everything, "prefix.*" the names starting with "prefix".
        if pattern in ("All", name) or (pattern.endswith(".*") and name.startswith(pattern[:-2])):
            return True
    return False


def _sqs_message_attributes(raw: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """SendMessage's MessageAttributes validated and stored as ReceiveMessage returns them."""
    attributes: dict[str, dict[str, Any]] = {}
    if not raw:
        return attributes
    if len(raw) > 10:
        raise FakeClientError(
            "InvalidParameterValue",
            f"Number of message attributes [{len(raw)}] exceeds the allowed maximum [10].",
        )
    for name, value in raw.items():
        data_type = value.get("DataType")
        kind = str(data_type).split(".", 1)[0]
        if not data_type or kind not in ("String", "Number", "Binary"):
            raise FakeClientError(
                "InvalidParameterValue",
                f"The message attribute '{name}' has an invalid message attribute type, "
                "the set of supported type prefixes is Binary, Number, and String.",
            )
        if kind == "Binary":
            blob = value.get("BinaryValue")
            if not blob:
                raise FakeClientError(
                    "InvalidParameterValue",
                    f"The message attribute '{name}' must contain non-empty message "
                    f"attribute value for message attribute type '{data_type}'.",
                )
            # botocore sends a str given for a blob as its UTF-8 bytes, and returns bytes.
            data = blob.encode("utf-8") if isinstance(blob, str) else bytes(blob)
            attributes[name] = {"BinaryValue": data, "DataType": data_type}
            continue
        text = value.get("StringValue")
        if not isinstance(text, str) or not text:
            raise FakeClientError(
                "InvalidParameterValue",
                f"The message attribute '{name}' must contain non-empty message "
                f"attribute value for message attribute type '{data_type}'.",
            )
        if kind == "Number":
            try:
                number = float(text)
            except ValueError:
                number = float("nan")
            if number != number or number in (float("inf"), float("-inf")):
                raise FakeClientError(
                    "InvalidParameterValue",
                    f"Can't cast the value of message (user) attribute '{name}' to a number.",
                )
        attributes[name] = {"StringValue": text, "DataType": data_type}
    return attributes


class FakeSqsClient:
    """A stateful in-memory SQS with the calls esm makes (ReceiveMessage, DeleteMessageBatch,
    ChangeMessageVisibilityBatch, GetQueueAttributes, GetQueueUrl), plus the producer side
    for tests (CreateQueue, SendMessage, SendMessageBatch).

    Standard and FIFO queues (a name ending in ".fifo"), visibility timeouts, a new receipt
    handle on every receive, redrive to a dead-letter queue after maxReceiveCount receives,
    FIFO group ordering and deduplication, and long polling. Visibility, delays and
    timestamps follow the `now` clock; WaitTimeSeconds is waited in real time, and a waiting
    receive looks at the queue again every `poll_interval` seconds besides waking on sends.

    A receipt handle superseded by a later receive is refused with ReceiptHandleIsInvalid,
    which makes stale deletes visible to tests; `stale_deletes_succeed=True` answers them as
    SQS documents it instead: success, with the message left in the queue.
    """

    def __init__(
        self,
        *,
        region: str = "us-east-1",
        account: str = "123456789012",
        now: Callable[[], float] = time.time,
        sender_id: str = "AIDAFAKESQSSENDER0001",
        stale_deletes_succeed: bool = False,
        poll_interval: float = 0.05,
    ) -> None:
        self.region = region
        self.account = account
        self.now = now
        self.sender_id = sender_id
        self.stale_deletes_succeed = stale_deletes_succeed
        self.poll_interval = poll_interval
        self.calls: list[tuple[str, str | None, float]] = []
        """(operation, queue URL, monotonic time) of every call, for tests to count."""
        self._queues: dict[str, _FakeSqsQueue] = {}
        """By URL."""
        self._handles: dict[str, tuple[str, str]] = {}
        """Every receipt handle issued: (queue URL, message ID)."""
        self._deleted_handles: set[str] = set()
        self._changed_handles: set[str] = set()
        self._message_counter = 0
        self._handle_counter = 0
        self._sequence = 18_849_496_460_467_696_128
        self._failures: dict[str, list[str]] = {}
        self._entry_failures: dict[str, list[str]] = {}
        self._condition: anyio.Condition | None = None

    # -- failures and introspection ----------------------------------------------------------

    def fail_next(self, operation: str, code: str, times: int = 1) -> None:
        """Make the next `times` calls of `operation` (e.g. "ReceiveMessage") fail with `code`."""
        self._failures.setdefault(operation, []).extend([code] * times)

    def fail_next_entries(self, operation: str, code: str, count: int = 1) -> None:
        """Make the next `count` entries of `operation` (a batch call) fail on their own with
        `code`, SenderFault false, as a service-side failure of part of a batch."""
        self._entry_failures.setdefault(operation, []).extend([code] * count)

    def messages(self, queue_url: str) -> list[dict[str, Any]]:
        """Every message in the queue, in the order sent, with its state: "visible",
        "in_flight" (received, its visibility timeout running) or "delayed"."""
        queue = self._queue(queue_url)
        now = self.now()
        return [
            {
                "MessageId": m.message_id,
                "Body": m.body,
                "MessageGroupId": m.group_id,
                "State": self._state(m, now),
                "ReceiveCount": m.receive_count,
                "ReceiptHandle": m.receipt_handle,
                "VisibleAt": m.visible_at,
                "SequenceNumber": str(m.sequence) if queue.fifo else None,
            }
            for m in queue.messages
        ]

    def receive_counts(self, queue_url: str) -> dict[str, int]:
        """Message ID -> ApproximateReceiveCount of every message in the queue."""
        return {m.message_id: m.receive_count for m in self._queue(queue_url).messages}

    def deleted(self, queue_url: str) -> list[str]:
        """IDs of the messages deleted from the queue, in the order they were deleted."""
        return list(self._queue(queue_url).deleted)

    @staticmethod
    def _state(message: _FakeSqsMessage, now: float) -> str:
        if message.visible_at <= now:
            return "visible"
        return "delayed" if message.receipt_handle is None else "in_flight"

    # -- internals ---------------------------------------------------------------------------

    def _start(self, operation: str, queue_url: str | None) -> None:
        self.calls.append((operation, queue_url, time.monotonic()))

    def _maybe_fail(self, operation: str) -> None:
        pending = self._failures.get(operation)
        if pending:
            raise FakeClientError(pending.pop(0), f"injected failure of {operation}")

    def _entry_failure(self, operation: str) -> str | None:
        pending = self._entry_failures.get(operation)
        return pending.pop(0) if pending else None

    def _queue(self, queue_url: str) -> _FakeSqsQueue:
        queue = self._queues.get(queue_url)
        if queue is None:
            error = FakeClientError(
                "AWS.SimpleQueueService.NonExistentQueue", "The specified queue does not exist."
            )
            error.response["Error"]["QueryErrorCode"] = "QueueDoesNotExist"
            raise error
        return queue

    def _queue_by_arn(self, arn: str) -> _FakeSqsQueue | None:
        return next((q for q in self._queues.values() if q.arn == arn), None)

    def _condition_for_changes(self) -> anyio.Condition:
        # Made on first use, inside the event loop that will wait on it.
        if self._condition is None:
            self._condition = anyio.Condition()
        return self._condition

    async def _notify(self) -> None:
        condition = self._condition_for_changes()
        async with condition:
            condition.notify_all()

    async def _wait_for_change(self, seconds: float) -> None:
        condition = self._condition_for_changes()
        with anyio.move_on_after(seconds):
            async with condition:
                await condition.wait()

    def _next_sequence(self) -> int:
        # FIFO sequence numbers grow but are not consecutive.
        self._sequence += 65_536
        return self._sequence

    def _check_queue_attributes(
        self, name: str, attributes: Mapping[str, Any], *, fifo: bool
    ) -> dict[str, str]:
        values = {key: str(value) for key, value in attributes.items()}
        if "FifoQueue" in values and (values["FifoQueue"].lower() == "true") != fifo:
            raise FakeClientError(
                "InvalidParameterValue",
                f"Queue {name}: a FIFO queue's name ends in .fifo, and only a FIFO queue's does.",
            )
        if "ContentBasedDeduplication" in values and not fifo:
            raise FakeClientError(
                "InvalidAttributeName", "ContentBasedDeduplication applies to FIFO queues only."
            )
        if "VisibilityTimeout" in values:
            _sqs_int("VisibilityTimeout", values["VisibilityTimeout"], 0, _SQS_MAX_VISIBILITY)
        if "DelaySeconds" in values:
            _sqs_int("DelaySeconds", values["DelaySeconds"], 0, _SQS_MAX_DELAY)
        if "ReceiveMessageWaitTimeSeconds" in values:
            _sqs_int(
                "ReceiveMessageWaitTimeSeconds", values["ReceiveMessageWaitTimeSeconds"], 0, 20
            )
        if values.get("RedrivePolicy"):
            self._redrive_policy(values["RedrivePolicy"], fifo=fifo)
        return values

    def _redrive_policy(self, raw: str, *, fifo: bool) -> tuple[_FakeSqsQueue, int]:
        try:
            policy = orjson.loads(raw)
            target, limit = policy["deadLetterTargetArn"], int(policy["maxReceiveCount"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise _sqs_invalid("RedrivePolicy", raw, "Redrive policy is not a valid JSON") from None
        dlq = self._queue_by_arn(str(target))
        if dlq is None:
            raise _sqs_invalid("RedrivePolicy", raw, "Dead letter target does not exist")
        if dlq.fifo != fifo:
            raise _sqs_invalid(
                "RedrivePolicy", raw, "The dead-letter queue must be of the queue's type"
            )
        if not 1 <= limit <= 1000:
            raise _sqs_invalid("RedrivePolicy", raw, "maxReceiveCount must be within 1..1000")
        return dlq, limit

    def _redrive(self, queue: _FakeSqsQueue) -> tuple[_FakeSqsQueue, int] | None:
        raw = queue.attributes.get("RedrivePolicy")
        return self._redrive_policy(raw, fifo=queue.fifo) if raw else None

    def _enqueue(  # noqa: C901 - SendMessage's rules, one after the other, as SQS checks them
        self, queue: _FakeSqsQueue, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Validate and store one SendMessage; returns its answer."""
        import hashlib

        from esm.events import md5_of_body, md5_of_message_attributes

        body = params.get("MessageBody")
        if not isinstance(body, str) or not body:
            raise FakeClientError("MissingParameter", "The request must contain a MessageBody.")
        attributes = _sqs_message_attributes(params.get("MessageAttributes"))
        system = params.get("MessageSystemAttributes") or {}
        trace = system.get("AWSTraceHeader", {}).get("StringValue")
        group = params.get("MessageGroupId")
        dedup = params.get("MessageDeduplicationId")
        now = self.now()
        if queue.fifo:
            if params.get("DelaySeconds") is not None:
                raise _sqs_invalid(
                    "DelaySeconds",
                    params["DelaySeconds"],
                    "The request includes a parameter that is not valid for this queue type",
                )
            if not group:
                raise FakeClientError(
                    "MissingParameter", "The request must contain the parameter MessageGroupId."
                )
            if dedup is None:
                if queue.attributes.get("ContentBasedDeduplication", "false").lower() != "true":
                    raise FakeClientError(
                        "InvalidParameterValue",
                        "The queue should either have ContentBasedDeduplication enabled or "
                        "MessageDeduplicationId provided explicitly",
                    )
                dedup = hashlib.sha256(body.encode("utf-8")).hexdigest()
            delay = int(queue.attributes["DelaySeconds"])
        else:
            if dedup is not None:
                raise _sqs_invalid(
                    "MessageDeduplicationId",
                    dedup,
                    "The request includes a parameter that is not valid for this queue type",
                )
            raw_delay = params.get("DelaySeconds")
            delay = (
                int(queue.attributes["DelaySeconds"])
                if raw_delay is None
                else _sqs_int("DelaySeconds", raw_delay, 0, _SQS_MAX_DELAY)
            )
        message: _FakeSqsMessage | None = None
        if dedup is not None:
            seen = queue.dedup.get(dedup)
            if seen is not None and now - seen[0] < _SQS_DEDUP_SECONDS:
                # A duplicate within the deduplication interval: accepted, not queued again.
                message = seen[1]
        if message is None:
            self._message_counter += 1
            counter = self._message_counter
            message = _FakeSqsMessage(
                # Shaped like SQS's message IDs (a UUID), unique and in the order sent.
                message_id=f"{counter >> 16:08x}-{counter & 0xFFFF:04x}-4000-8000-{counter:012x}",
                body=body,
                attributes=attributes,
                trace_header=trace,
                sent=now,
                visible_at=now + delay,
                sequence=self._next_sequence(),
                group_id=group,
                dedup_id=dedup if queue.fifo else None,
            )
            queue.messages.append(message)
            if dedup is not None:
                queue.dedup[dedup] = (now, message)
        answer: dict[str, Any] = {"MD5OfMessageBody": md5_of_body(message.body)}
        if message.attributes:
            answer["MD5OfMessageAttributes"] = md5_of_message_attributes(message.attributes)
        answer["MessageId"] = message.message_id
        if queue.fifo:
            answer["SequenceNumber"] = str(message.sequence)
        return answer

    def _take(
        self, queue: _FakeSqsQueue, count: int, timeout: int
    ) -> tuple[list[_FakeSqsMessage], bool]:
        """Receive up to `count` visible messages; also says whether any went to the DLQ."""
        now = self.now()
        redrive = self._redrive(queue)
        # A FIFO group with a message in flight gives nothing until that message is deleted
        # or visible again.
        blocked = {
            m.group_id
            for m in queue.messages
            if queue.fifo and m.receipt_handle is not None and m.visible_at > now
        }
        taken: list[_FakeSqsMessage] = []
        moved = False
        for message in list(queue.messages):
            if len(taken) >= count:
                break
            if queue.fifo and message.group_id in blocked:
                continue
            if message.visible_at > now:
                if queue.fifo:
                    # Later messages of the group must not overtake this one.
                    blocked.add(message.group_id)
                continue
            if redrive is not None and message.receive_count >= redrive[1]:
                # maxReceiveCount receives are used up: this receive moves it instead.
                self._move_to_dead_letters(queue, message, redrive[0], now)
                moved = True
                continue
            self._issue(queue, message, now, timeout)
            taken.append(message)
        return taken, moved

    def _issue(
        self, queue: _FakeSqsQueue, message: _FakeSqsMessage, now: float, timeout: int
    ) -> None:
        message.receive_count += 1
        if message.first_receive is None:
            message.first_receive = now
        message.visible_at = now + timeout
        self._handle_counter += 1
        token = f"{queue.name}/{message.message_id}/{self._handle_counter}".encode()
        handle = "AQEB" + base64.b64encode(token).decode("ascii")
        self._handles[handle] = (queue.url, message.message_id)
        message.receipt_handle = handle

    def _move_to_dead_letters(
        self, queue: _FakeSqsQueue, message: _FakeSqsMessage, dlq: _FakeSqsQueue, now: float
    ) -> None:
        # The message keeps its ID, timestamps and receive count, as SQS moves it.
        queue.messages.remove(message)
        message.receipt_handle = None
        message.visible_at = now
        message.source_arn = queue.arn
        if dlq.fifo:
            message.sequence = self._next_sequence()
        dlq.messages.append(message)

    def _find(self, queue: _FakeSqsQueue, message_id: str) -> _FakeSqsMessage | None:
        return next((m for m in queue.messages if m.message_id == message_id), None)

    def _current(self, queue: _FakeSqsQueue, handle: str) -> _FakeSqsMessage | None:
        """The message `handle` is the latest receipt handle of, if any."""
        found = self._handles.get(handle)
        if found is None or found[0] != queue.url:
            return None
        message = self._find(queue, found[1])
        return message if message is not None and message.receipt_handle == handle else None

    @staticmethod
    def _invalid_handle(handle: str) -> FakeClientError:
        return FakeClientError(
            "ReceiptHandleIsInvalid",
            f'The input receipt handle "{handle}" is not a valid receipt handle.',
        )

    def _delete(self, queue: _FakeSqsQueue, handle: str) -> None:
        message = self._current(queue, handle)
        if message is None:
            if handle in self._deleted_handles:
                # Deleting a deleted message again succeeds, as on SQS.
                return
            found = self._handles.get(handle)
            if (
                self.stale_deletes_succeed
                and found is not None
                and found[0] == queue.url
                and self._find(queue, found[1]) is not None
            ):
                # Superseded by a later receive: SQS answers success and keeps the message.
                return
            raise self._invalid_handle(handle)
        queue.messages.remove(message)
        queue.deleted.append(message.message_id)
        self._deleted_handles.add(handle)

    def _change_visibility(self, queue: _FakeSqsQueue, handle: str, timeout: Any) -> None:
        seconds = _sqs_int("VisibilityTimeout", timeout, 0, _SQS_MAX_VISIBILITY)
        message = self._current(queue, handle)
        if message is None:
            raise self._invalid_handle(handle)
        now = self.now()
        if message.visible_at <= now:
            raise FakeClientError("MessageNotInflight", "The message is not in flight.")
        message.visible_at = now + seconds
        self._changed_handles.add(handle)

    def _retry_attempt(
        self, queue: _FakeSqsQueue, attempt: str, timeout: int
    ) -> list[_FakeSqsMessage] | None:
        """The messages of an earlier receive with this ReceiveRequestAttemptId, when it can
        be answered again: within 5 minutes and with none of them deleted or changed."""
        found = queue.attempts.get(attempt)
        if found is None:
            return None
        when, received = found
        now = self.now()
        if now - when > _SQS_DEDUP_SECONDS or not received:
            del queue.attempts[attempt]
            return None
        messages = []
        for message_id, handle in received:
            message = self._find(queue, message_id)
            if (
                message is None
                or message.receipt_handle != handle
                or handle in self._changed_handles
                or message.visible_at <= now
            ):
                return None
            messages.append(message)
        for message in messages:
            message.visible_at = now + timeout
        return messages

    def _system_attributes(self, queue: _FakeSqsQueue, message: _FakeSqsMessage) -> dict[str, str]:
        values: dict[str, str | None] = {
            "DeadLetterQueueSourceArn": message.source_arn,
            "ApproximateReceiveCount": str(message.receive_count),
            "AWSTraceHeader": message.trace_header,
            "SentTimestamp": _sqs_ms(message.sent),
            "SequenceNumber": str(message.sequence) if queue.fifo else None,
            "MessageGroupId": message.group_id,
            "SenderId": self.sender_id,
            "MessageDeduplicationId": message.dedup_id,
            "ApproximateFirstReceiveTimestamp": (
                _sqs_ms(message.first_receive) if message.first_receive is not None else None
            ),
        }
        return {
            name: value for name in _SQS_SYSTEM_ATTRIBUTES if (value := values[name]) is not None
        }

    def _describe_message(
        self,
        queue: _FakeSqsQueue,
        message: _FakeSqsMessage,
        system_names: list[str],
        attribute_names: list[str],
    ) -> Message:
        from esm.events import md5_of_body, md5_of_message_attributes

        answer: Message = {
            "MessageId": message.message_id,
            "ReceiptHandle": message.receipt_handle or "",
            "MD5OfBody": md5_of_body(message.body),
            "Body": message.body,
        }
        system = {
            name: value
            for name, value in self._system_attributes(queue, message).items()
            if "All" in system_names or name in system_names
        }
        if system:
            answer["Attributes"] = system
        # The digest covers the attributes returned, so a client can check what it got.
        selected = {
            name: dict(value)
            for name, value in message.attributes.items()
            if _sqs_attribute_selected(name, attribute_names)
        }
        if selected:
            answer["MD5OfMessageAttributes"] = md5_of_message_attributes(selected)
            answer["MessageAttributes"] = selected  # type: ignore[typeddict-item]
        return answer

    @staticmethod
    def _check_batch(entries: list[Mapping[str, Any]]) -> None:
        if not entries:
            raise FakeClientError(
                "AWS.SimpleQueueService.EmptyBatchRequest",
                "There should be at least one entry in the request.",
            )
        if len(entries) > _SQS_BATCH_LIMIT:
            raise FakeClientError(
                "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
                f"Maximum number of entries per request are 10. You have sent {len(entries)}.",
            )
        ids = [entry.get("Id") for entry in entries]
        for entry_id in ids:
            if ids.count(entry_id) > 1:
                raise FakeClientError(
                    "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
                    f"Id {entry_id} repeated.",
                )

    @staticmethod
    def _failed(entry_id: Any, code: str, message: str, *, sender_fault: bool) -> BatchFailedEntry:
        return {"Id": entry_id, "SenderFault": sender_fault, "Code": code, "Message": message}

    # -- the client calls --------------------------------------------------------------------

    async def create_queue(self, **kwargs: Any) -> Mapping[str, Any]:
        name = kwargs["QueueName"]
        self._start("CreateQueue", None)
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("CreateQueue")
        base = name.removesuffix(".fifo")
        if (
            not base
            or len(name) > 80
            or not all(c.isascii() and (c.isalnum() or c in "-_") for c in base)
        ):
            raise FakeClientError(
                "InvalidParameterValue",
                "Can only include alphanumeric characters, hyphens, or underscores. "
                "1 to 80 in length",
            )
        fifo = name.endswith(".fifo")
        given = self._check_queue_attributes(name, kwargs.get("Attributes") or {}, fifo=fifo)
        url = f"https://sqs.{self.region}.amazonaws.com/{self.account}/{name}"
        existing = self._queues.get(url)
        if existing is not None:
            if any(existing.attributes.get(key) != value for key, value in given.items()):
                raise FakeClientError(
                    "QueueAlreadyExists",
                    f"A queue already exists with the same name and a different value for "
                    f"attribute(s) {', '.join(sorted(given))}",
                )
            return {"QueueUrl": url}
        attributes = {**_SQS_QUEUE_DEFAULTS, **given}
        if fifo:
            attributes["FifoQueue"] = "true"
            attributes.setdefault("ContentBasedDeduplication", "false")
        self._queues[url] = _FakeSqsQueue(
            name=name,
            url=url,
            arn=f"arn:aws:sqs:{self.region}:{self.account}:{name}",
            fifo=fifo,
            attributes=attributes,
            created=self.now(),
        )
        return {"QueueUrl": url}

    async def set_queue_attributes(self, **kwargs: Any) -> Mapping[str, Any]:
        url = kwargs["QueueUrl"]
        self._start("SetQueueAttributes", url)
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("SetQueueAttributes")
        queue = self._queue(url)
        given = self._check_queue_attributes(queue.name, kwargs["Attributes"], fifo=queue.fifo)
        queue.attributes.update(given)
        return {}

    async def get_queue_url(self, **kwargs: Any) -> GetQueueUrlResult:
        name = kwargs["QueueName"]
        self._start("GetQueueUrl", None)
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("GetQueueUrl")
        url = f"https://sqs.{self.region}.amazonaws.com/{self.account}/{name}"
        return {"QueueUrl": self._queue(url).url}

    async def get_queue_attributes(self, **kwargs: Any) -> GetQueueAttributesResult:
        url = kwargs["QueueUrl"]
        self._start("GetQueueAttributes", url)
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("GetQueueAttributes")
        queue = self._queue(url)
        names = list(kwargs.get("AttributeNames") or [])
        now = self.now()
        states = [self._state(m, now) for m in queue.messages]
        values = {
            "QueueArn": queue.arn,
            "ApproximateNumberOfMessages": str(states.count("visible")),
            "ApproximateNumberOfMessagesNotVisible": str(states.count("in_flight")),
            "ApproximateNumberOfMessagesDelayed": str(states.count("delayed")),
            "CreatedTimestamp": str(int(queue.created)),
            "LastModifiedTimestamp": str(int(queue.created)),
            "SqsManagedSseEnabled": "true",
            **queue.attributes,
        }
        attributes = {k: v for k, v in values.items() if "All" in names or k in names}
        return {"Attributes": attributes} if attributes else {}

    async def send_message(self, **kwargs: Any) -> Mapping[str, Any]:
        url = kwargs["QueueUrl"]
        self._start("SendMessage", url)
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("SendMessage")
        answer = self._enqueue(self._queue(url), kwargs)
        await self._notify()
        return answer

    async def send_message_batch(self, **kwargs: Any) -> Mapping[str, Any]:
        url = kwargs["QueueUrl"]
        self._start("SendMessageBatch", url)
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("SendMessageBatch")
        queue = self._queue(url)
        entries = list(kwargs.get("Entries") or [])
        self._check_batch(entries)
        successful: list[dict[str, Any]] = []
        failed: list[BatchFailedEntry] = []
        for entry in entries:
            injected = self._entry_failure("SendMessageBatch")
            if injected is not None:
                failed.append(self._failed(entry["Id"], injected, "injected", sender_fault=False))
                continue
            try:
                successful.append({"Id": entry["Id"], **self._enqueue(queue, entry)})
            except FakeClientError as error:
                code, text = error.response["Error"]["Code"], error.response["Error"]["Message"]
                failed.append(self._failed(entry["Id"], code, text, sender_fault=True))
        await self._notify()
        return {"Successful": successful, "Failed": failed}

    async def receive_message(self, **kwargs: Any) -> ReceiveMessageResult:
        url = kwargs["QueueUrl"]
        self._start("ReceiveMessage", url)
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("ReceiveMessage")
        queue = self._queue(url)
        count = _sqs_int("MaxNumberOfMessages", kwargs.get("MaxNumberOfMessages", 1), 1, 10)
        wait = _sqs_int(
            "WaitTimeSeconds",
            kwargs.get("WaitTimeSeconds", queue.attributes["ReceiveMessageWaitTimeSeconds"]),
            0,
            20,
        )
        timeout = _sqs_int(
            "VisibilityTimeout",
            kwargs.get("VisibilityTimeout", queue.attributes["VisibilityTimeout"]),
            0,
            _SQS_MAX_VISIBILITY,
        )
        system_names = [
            *(kwargs.get("AttributeNames") or []),
            *(kwargs.get("MessageSystemAttributeNames") or []),
        ]
        attribute_names = list(kwargs.get("MessageAttributeNames") or [])
        attempt = kwargs.get("ReceiveRequestAttemptId") if queue.fifo else None
        taken = self._retry_attempt(queue, attempt, timeout) if attempt else None
        if taken is None:
            deadline = anyio.current_time() + wait
            while True:
                taken, moved = self._take(queue, count, timeout)
                if moved:
                    await self._notify()
                remaining = deadline - anyio.current_time()
                if taken or remaining <= 0:
                    break
                await self._wait_for_change(min(remaining, self.poll_interval))
            if attempt:
                queue.attempts[attempt] = (
                    self.now(),
                    [(m.message_id, m.receipt_handle or "") for m in taken],
                )
        messages = [self._describe_message(queue, m, system_names, attribute_names) for m in taken]
        # SQS leaves "Messages" out of an empty answer.
        return {"Messages": messages} if messages else {}

    async def delete_message(self, **kwargs: Any) -> Mapping[str, Any]:
        url = kwargs["QueueUrl"]
        self._start("DeleteMessage", url)
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("DeleteMessage")
        self._delete(self._queue(url), kwargs["ReceiptHandle"])
        return {}

    async def delete_message_batch(self, **kwargs: Any) -> BatchResult:
        return await self._batch(
            "DeleteMessageBatch",
            kwargs,
            lambda queue, entry: self._delete(queue, entry["ReceiptHandle"]),
        )

    async def _batch(
        self,
        operation: str,
        kwargs: Mapping[str, Any],
        apply: Callable[[_FakeSqsQueue, Mapping[str, Any]], None],
    ) -> BatchResult:
        """A batch call: each entry applied on its own, failures reported per entry."""
        url = kwargs["QueueUrl"]
        self._start(operation, url)
        await anyio.lowlevel.checkpoint()
        self._maybe_fail(operation)
        queue = self._queue(url)
        entries = list(kwargs.get("Entries") or [])
        self._check_batch(entries)
        successful: list[BatchResultEntry] = []
        failed: list[BatchFailedEntry] = []
        for entry in entries:
            injected = self._entry_failure(operation)
            if injected is not None:
                failed.append(self._failed(entry["Id"], injected, "injected", sender_fault=False))
                continue
            try:
                apply(queue, entry)
                successful.append({"Id": entry["Id"]})
            except FakeClientError as error:
                code, text = error.response["Error"]["Code"], error.response["Error"]["Message"]
                failed.append(self._failed(entry["Id"], code, text, sender_fault=True))
        await self._notify()
        return {"Successful": successful, "Failed": failed}

    async def change_message_visibility(self, **kwargs: Any) -> Mapping[str, Any]:
        url = kwargs["QueueUrl"]
        self._start("ChangeMessageVisibility", url)
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("ChangeMessageVisibility")
        queue = self._queue(url)
        self._change_visibility(queue, kwargs["ReceiptHandle"], kwargs["VisibilityTimeout"])
        await self._notify()
        return {}

    async def change_message_visibility_batch(self, **kwargs: Any) -> BatchResult:
        return await self._batch(
            "ChangeMessageVisibilityBatch",
            kwargs,
            lambda queue, entry: self._change_visibility(
                queue, entry["ReceiptHandle"], entry.get("VisibilityTimeout")
            ),
        )


def _is_an_sqs_client(fake: FakeSqsClient) -> SqsClient:
    """mypy checks here that the fake offers the calls esm makes, typed as the real ones."""
    return fake
