"""The SQS calls esm makes, typed: narrow client Protocols and the shapes of their answers.

`SqsClient` is what the SQS source calls; `SqsSendClient` what the on-failure destination
calls. An aiobotocore SQS client satisfies both; `esm.testing.FakeSqsClient` the first. Only
the parameters and answer fields esm uses are named: the rest of the API stays out of view.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NotRequired, Protocol, TypedDict, cast


class GetQueueUrlResult(TypedDict):
    QueueUrl: str


class GetQueueAttributesResult(TypedDict, total=False):
    Attributes: dict[str, str]


class MessageAttributeValue(TypedDict, total=False):
    DataType: str
    StringValue: str
    BinaryValue: bytes
    StringListValues: list[str]
    BinaryListValues: list[bytes]


class _MessageRequired(TypedDict):
    MessageId: str
    ReceiptHandle: str
    Body: str


class Message(_MessageRequired, total=False):
    """One received message, with every system and message attribute asked for."""

    MD5OfBody: str
    MD5OfMessageAttributes: str
    Attributes: dict[str, str]
    MessageAttributes: dict[str, MessageAttributeValue]


class ReceiveMessageResult(TypedDict, total=False):
    Messages: list[Message]
    """Left out when no message was received."""


class _EntryRequired(TypedDict):
    Id: str
    ReceiptHandle: str


class BatchEntry(_EntryRequired, total=False):
    """One entry of DeleteMessageBatch, or of ChangeMessageVisibilityBatch with its timeout."""

    VisibilityTimeout: int


class BatchResultEntry(TypedDict):
    Id: str


class _FailedEntryRequired(TypedDict):
    Id: str
    SenderFault: bool
    Code: str


class BatchFailedEntry(_FailedEntryRequired, total=False):
    Message: str


class BatchResult(TypedDict, total=False):
    """A batch call's answer: each entry either succeeded or failed on its own."""

    Successful: list[BatchResultEntry]
    Failed: list[BatchFailedEntry]


class SqsClient(Protocol):
    """The five SQS calls esm makes. Each raises the client's exception on failure, which
    `esm.aws.errors.translate_error` turns into esm's error tree."""

    async def get_queue_url(
        self, *, QueueName: str, QueueOwnerAWSAccountId: str
    ) -> GetQueueUrlResult: ...

    async def get_queue_attributes(
        self, *, QueueUrl: str, AttributeNames: Sequence[str]
    ) -> GetQueueAttributesResult: ...

    async def receive_message(
        self,
        *,
        QueueUrl: str,
        MaxNumberOfMessages: int,
        WaitTimeSeconds: int,
        MessageSystemAttributeNames: Sequence[str],
        MessageAttributeNames: Sequence[str],
    ) -> ReceiveMessageResult: ...

    async def delete_message_batch(
        self, *, QueueUrl: str, Entries: Sequence[BatchEntry]
    ) -> BatchResult: ...

    async def change_message_visibility_batch(
        self, *, QueueUrl: str, Entries: Sequence[BatchEntry]
    ) -> BatchResult: ...


# -- the on-failure destination's calls ---------------------------------------------------


class GetQueueUrlInput(TypedDict):
    QueueName: str
    QueueOwnerAWSAccountId: NotRequired[str]


class SendMessageOutput(TypedDict):
    MessageId: NotRequired[str]
    MD5OfMessageBody: NotRequired[str]
    SequenceNumber: NotRequired[str]


class SqsSendClient(Protocol):
    """The SQS calls the on-failure destination makes; an aiobotocore "sqs" client has them."""

    async def get_queue_url(
        self, *, QueueName: str, QueueOwnerAWSAccountId: str = ...
    ) -> GetQueueUrlResult: ...

    async def send_message(self, *, QueueUrl: str, MessageBody: str) -> SendMessageOutput: ...


def sqs_send_client(client: Any) -> SqsSendClient:
    """An aiobotocore "sqs" client as the typed client the destination uses (aiobotocore's
    clients carry no types: this is the one place that says it fits; the integration tests
    run it)."""
    return cast(SqsSendClient, client)


# -- esm redrive's calls: failure records read back from a destination queue ----------------


class ReceivedMessage(TypedDict):
    MessageId: str
    ReceiptHandle: str
    Body: str


class ReceiveInboxResult(TypedDict, total=False):
    Messages: list[ReceivedMessage]


class SqsInboxClient(Protocol):
    """The SQS calls `esm redrive` makes on a queue of failure records."""

    async def get_queue_url(
        self, *, QueueName: str, QueueOwnerAWSAccountId: str = ...
    ) -> GetQueueUrlResult: ...

    async def receive_message(
        self,
        *,
        QueueUrl: str,
        MaxNumberOfMessages: int,
        WaitTimeSeconds: int,
        VisibilityTimeout: int,
    ) -> ReceiveInboxResult: ...

    async def delete_message(self, *, QueueUrl: str, ReceiptHandle: str) -> object: ...

    async def change_message_visibility(
        self, *, QueueUrl: str, ReceiptHandle: str, VisibilityTimeout: int
    ) -> object: ...


def sqs_inbox_client(client: Any) -> SqsInboxClient:
    """An aiobotocore "sqs" client as the typed client `esm redrive` uses."""
    return cast(SqsInboxClient, client)
