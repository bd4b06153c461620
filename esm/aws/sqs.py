"""The SQS calls the on-failure destination makes, typed: GetQueueUrl and SendMessage.
(The SQS source's calls are typed with the source.)"""

from __future__ import annotations

from typing import Any, NotRequired, Protocol, TypedDict, cast

__all__ = [
    "GetQueueUrlInput",
    "GetQueueUrlOutput",
    "SendMessageOutput",
    "SqsSendClient",
    "sqs_send_client",
]


class GetQueueUrlInput(TypedDict):
    QueueName: str
    QueueOwnerAWSAccountId: NotRequired[str]


class GetQueueUrlOutput(TypedDict):
    QueueUrl: str


class SendMessageOutput(TypedDict):
    MessageId: NotRequired[str]
    MD5OfMessageBody: NotRequired[str]
    SequenceNumber: NotRequired[str]


class SqsSendClient(Protocol):
    """The SQS calls the on-failure destination makes; an aiobotocore "sqs" client has them."""

    async def get_queue_url(
        self, *, QueueName: str, QueueOwnerAWSAccountId: str = ...
    ) -> GetQueueUrlOutput: ...

    async def send_message(self, *, QueueUrl: str, MessageBody: str) -> SendMessageOutput: ...


def sqs_send_client(client: Any) -> SqsSendClient:
    """An aiobotocore "sqs" client as the typed client the destination uses (aiobotocore's
    clients carry no types: this is the one place that says it fits; the integration tests
    run it)."""
    return cast(SqsSendClient, client)
