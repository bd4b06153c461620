"""The SNS call esm makes, typed: Publish (the on-failure destination)."""

from __future__ import annotations

from typing import Any, NotRequired, Protocol, TypedDict, cast

__all__ = ["PublishOutput", "SnsClient", "sns_client"]


class PublishOutput(TypedDict):
    MessageId: NotRequired[str]
    SequenceNumber: NotRequired[str]


class SnsClient(Protocol):
    """The SNS call the on-failure destination makes; an aiobotocore "sns" client has it."""

    async def publish(self, *, TopicArn: str, Message: str) -> PublishOutput: ...


def sns_client(client: Any) -> SnsClient:
    """An aiobotocore "sns" client as the typed client esm uses (aiobotocore's clients carry
    no types: this is the one place that says it fits; the integration tests run it)."""
    return cast(SnsClient, client)
