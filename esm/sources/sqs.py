"""SQS queues as the engine reads them: receive, delete what succeeded, change the visibility
of what failed, keep a batch's messages invisible while it is processed."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import anyio
import structlog

from esm.aws.errors import aws_call
from esm.aws.lean import LeanJsonCalls
from esm.aws.sqs import BatchEntry, BatchResult, SqsClient
from esm.errors import SourceError
from esm.events import sqs_record
from esm.metrics import Metrics
from esm.model import Record

# SQS takes at most 10 entries per batch call.
ENTRIES_MAX = 10
# Attempts of a batch call whose entries keep failing on the service's side.
BATCH_CALL_ATTEMPTS = 3
# What a ReceiveMessage asks for: every system attribute and every message attribute, as
# the Lambda event carries them all.
_ALL = ["All"]
# GetQueueAttributes names, by the backlog state they count.
_BACKLOG_ATTRIBUTES = {
    "visible": "ApproximateNumberOfMessages",
    "in_flight": "ApproximateNumberOfMessagesNotVisible",
    "delayed": "ApproximateNumberOfMessagesDelayed",
}


def _no_backoff(failures: int) -> float:
    return 0.0


@dataclass(frozen=True)
class SqsSettings:
    """Which queue a mapping reads, and how the reader treats its messages."""

    queue_arn: str
    region: str
    mapping: str = ""
    """The mapping's label in metrics and logs."""
    extend_visibility: bool = True
    """Keep messages invisible while their batch is processed, however long it takes."""
    retry_delay: Callable[[int], float] = _no_backoff
    """Seconds to wait after the n-th failed attempt of a batch call."""

    @property
    def queue_name(self) -> str:
        return self.queue_arn.rsplit(":", 1)[-1]

    @property
    def account(self) -> str:
        return self.queue_arn.split(":")[4]


class SqsReader:
    """One SQS queue behind the engine's `QueueReader` interface."""

    def __init__(
        self,
        client: SqsClient,
        settings: SqsSettings,
        metrics: Metrics,
        lean: LeanJsonCalls | None = None,
    ) -> None:
        self.client = client
        self.lean = lean
        """ReceiveMessage and the batch calls on the lean path (`esm.aws.lean`), answered in
        the client's own shapes; None: through the client."""
        self.settings = settings
        self.metrics = metrics
        self.queue_url = ""
        self._visibility_timeout = 30
        self._order = 0
        self.log = structlog.get_logger("esm.sqs").bind(mapping=settings.mapping)

    @property
    def queue_name(self) -> str:
        return self.settings.queue_name

    @property
    def fifo(self) -> bool:
        return self.settings.queue_arn.endswith(".fifo")

    @property
    def visibility_timeout(self) -> int:
        return self._visibility_timeout

    def status(self) -> dict[str, Any]:
        return {
            "queue_url": self.queue_url,
            "fifo": self.fifo,
            "visibility_timeout_seconds": self._visibility_timeout,
        }

    async def open(self) -> Mapping[str, int]:
        with aws_call("GetQueueUrl"):
            answer = await self.client.get_queue_url(
                QueueName=self.settings.queue_name,
                QueueOwnerAWSAccountId=self.settings.account,
            )
        self.queue_url = answer["QueueUrl"]
        return await self._attributes()

    async def backlog(self) -> Mapping[str, int]:
        try:
            return await self._attributes()
        except SourceError:
            self._count_error("attributes")
            raise

    async def _attributes(self) -> dict[str, int]:
        """Read the visibility timeout and the backlog's counts."""
        with aws_call("GetQueueAttributes"):
            answer = await self.client.get_queue_attributes(
                QueueUrl=self.queue_url,
                AttributeNames=["VisibilityTimeout", *_BACKLOG_ATTRIBUTES.values()],
            )
        attributes = answer.get("Attributes", {})
        self._visibility_timeout = int(
            attributes.get("VisibilityTimeout", self._visibility_timeout)
        )
        return {
            state: int(attributes[name])
            for state, name in _BACKLOG_ATTRIBUTES.items()
            if name in attributes
        }

    async def receive(self, count: int, wait_seconds: int) -> list[Record]:
        try:
            with aws_call("ReceiveMessage"):
                request = {
                    "QueueUrl": self.queue_url,
                    "MaxNumberOfMessages": count,
                    "WaitTimeSeconds": max(0, wait_seconds),
                    "MessageSystemAttributeNames": _ALL,
                    "MessageAttributeNames": _ALL,
                }
                answer: Mapping[str, Any]
                if self.lean is not None:
                    answer = await self.lean.call("ReceiveMessage", request, shaped=True)
                else:
                    answer = await self.client.receive_message(
                        QueueUrl=self.queue_url,
                        MaxNumberOfMessages=count,
                        WaitTimeSeconds=max(0, wait_seconds),
                        MessageSystemAttributeNames=_ALL,
                        MessageAttributeNames=_ALL,
                    )
        except SourceError:
            self._count_error("receive")
            raise
        return [self._record(message) for message in answer.get("Messages", [])]

    def _record(self, message: Mapping[str, Any]) -> Record:
        self._order += 1
        settings = self.settings
        return sqs_record(
            message, queue_arn=settings.queue_arn, region=settings.region, order=self._order
        )

    async def ack(self, records: Sequence[Record]) -> int:
        return await self._batch_call("delete", records, None)

    async def nack(self, records: Sequence[Record], delay: int | None) -> None:
        if delay is not None:
            await self._batch_call("change_visibility", records, delay)

    async def release(self, records: Sequence[Record]) -> None:
        await self._batch_call("change_visibility", records, 0)

    async def keep_invisible(self, records: Sequence[Record], held_for: float) -> None:
        """Extend the messages' visibility back to the full timeout every half of it, so a
        function slower than the visibility timeout never lets SQS hand them to another
        poller; without `extend_visibility`, wait to be cancelled."""
        if not self.settings.extend_visibility:
            await anyio.sleep_forever()
        timeout = max(self._visibility_timeout, 2)
        await anyio.sleep(max(0.0, timeout / 2 - held_for))
        while True:
            await self._batch_call("change_visibility", records, timeout)
            await anyio.sleep(timeout / 2)

    # -- batch calls ---------------------------------------------------------------------------

    async def _batch_call(
        self, operation: str, records: Sequence[Record], seconds: int | None
    ) -> int:
        """DeleteMessageBatch or ChangeMessageVisibilityBatch over every record, ten at a time;
        returns how many entries succeeded."""
        done = 0
        for start in range(0, len(records), ENTRIES_MAX):
            entries: dict[str, BatchEntry] = {}
            for n, record in enumerate(records[start : start + ENTRIES_MAX]):
                entry: BatchEntry = {"Id": str(n), "ReceiptHandle": record.entry["receiptHandle"]}
                if seconds is not None:
                    entry["VisibilityTimeout"] = seconds
                entries[entry["Id"]] = entry
            done += await self._call_with_retries(operation, entries)
        return done

    async def _call_with_retries(self, operation: str, entries: dict[str, BatchEntry]) -> int:
        """One batch call, retrying the call and the entries that failed on the service's
        side; an entry refused as the sender's fault (a stale receipt handle) is not retried."""
        done = 0
        for attempt in range(1, BATCH_CALL_ATTEMPTS + 1):
            try:
                answer = await self._call(operation, list(entries.values()))
            except SourceError as error:
                self._count_error(operation)
                self.log.warning(f"{operation} failed", error=str(error), attempt=attempt)
                await anyio.sleep(self.settings.retry_delay(attempt))
                continue
            done += len(answer.get("Successful", []))
            retry: dict[str, BatchEntry] = {}
            for failure in answer.get("Failed", []):
                self._count_error(operation)
                self.log.warning(
                    f"{operation} failed for a message",
                    code=failure.get("Code"),
                    message=failure.get("Message"),
                    sender_fault=failure.get("SenderFault"),
                )
                if not failure.get("SenderFault") and failure["Id"] in entries:
                    retry[failure["Id"]] = entries[failure["Id"]]
            entries = retry
            if not entries:
                break
        return done

    async def _call(self, operation: str, entries: list[BatchEntry]) -> BatchResult:
        with aws_call(operation):
            if self.lean is not None:
                name = (
                    "DeleteMessageBatch"
                    if operation == "delete"
                    else "ChangeMessageVisibilityBatch"
                )
                request = {"QueueUrl": self.queue_url, "Entries": entries}
                return cast(BatchResult, await self.lean.call(name, request, shaped=True))
            if operation == "delete":
                return await self.client.delete_message_batch(
                    QueueUrl=self.queue_url, Entries=entries
                )
            return await self.client.change_message_visibility_batch(
                QueueUrl=self.queue_url, Entries=entries
            )

    def _count_error(self, operation: str) -> None:
        self.metrics.queue_errors.labels(self.settings.mapping, operation).inc()
