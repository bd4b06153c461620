"""The Lambda call esm makes, typed: Invoke (RequestResponse)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, NotRequired, Protocol, TypedDict, cast

__all__ = [
    "InvokeInput",
    "InvokeOutput",
    "LambdaClient",
    "PayloadStream",
    "ResponseMetadata",
    "lambda_client",
]


class PayloadStream(Protocol):
    """An answer's streaming body (aiobotocore's StreamingBody)."""

    async def read(self, amt: int = ...) -> bytes: ...

    def close(self) -> Awaitable[None] | None: ...


class InvokeInput(TypedDict):
    FunctionName: str
    InvocationType: str
    Payload: bytes
    Qualifier: NotRequired[str]


class ResponseMetadata(TypedDict, total=False):
    HTTPStatusCode: int
    HTTPHeaders: dict[str, str]
    RequestId: str


class InvokeOutput(TypedDict):
    StatusCode: NotRequired[int]
    FunctionError: NotRequired[str]
    ExecutedVersion: NotRequired[str]
    LogResult: NotRequired[str]
    Payload: NotRequired[PayloadStream | bytes]
    """A streaming body from aiobotocore; stand-in clients may answer bytes."""
    ResponseMetadata: NotRequired[ResponseMetadata]


class LambdaClient(Protocol):
    """The Lambda call the backend makes; an aiobotocore "lambda" client has it."""

    async def invoke(
        self,
        *,
        FunctionName: str,
        InvocationType: str,
        Payload: bytes,
        Qualifier: str = ...,
    ) -> InvokeOutput: ...


def lambda_client(client: Any) -> LambdaClient:
    """An aiobotocore "lambda" client as the typed client esm uses.

    aiobotocore's clients are generated at run time and carry no types, so mypy cannot check
    them against the Protocol; this is the one place that says they fit. The call and shapes
    above follow botocore's service model, and the backend's tests run them over HTTP.
    """
    return cast(LambdaClient, client)
