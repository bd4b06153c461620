"""Fakes every source's tests share: a client error and a recording function backend."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.lowlevel
import orjson

from esm.model import Invocation, InvokeResult, ResultKind


class FakeClientError(Exception):
    """Raised by the fakes with the botocore ClientError shape (`.response["Error"]["Code"]`)."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.response = {"Error": {"Code": code, "Message": message}}


Script = Callable[[dict[str, Any], int], "InvokeResult | Any"]


class RecordingBackend:
    """A function backend that remembers every event it was given, answering from a script.

    `script(event, call_number)` returns an `InvokeResult` to answer with, or any other
    value as the function's successful answer. Without a script every call succeeds.
    """

    def __init__(self, script: Script | None = None, *, delay: float = 0.0) -> None:
        self.script = script
        self.delay = delay
        self.events: list[dict[str, Any]] = []
        self.invocations: list[Invocation] = []
        self.concurrent = 0
        self.max_concurrent = 0
        self.closed = False

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        event = orjson.loads(invocation.payload)
        self.invocations.append(invocation)
        self.events.append(event)
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            if self.delay:
                await anyio.sleep(self.delay)
            answer = self.script(event, len(self.events)) if self.script else None
        finally:
            self.concurrent -= 1
        if isinstance(answer, InvokeResult):
            return answer
        return InvokeResult(kind=ResultKind.SUCCESS, response=answer)

    async def aclose(self) -> None:
        self.closed = True

    def delivered_records(self) -> list[dict[str, Any]]:
        """Every record of every event, in the order the events arrived."""
        return [r for e in self.events for r in e["Records"]]


def kinesis_data(record: Mapping[str, Any]) -> bytes:
    """The bytes of a Kinesis event record."""
    return base64.b64decode(record["kinesis"]["data"])


def function_error(message: str = "boom") -> InvokeResult:
    return InvokeResult(kind=ResultKind.FUNCTION_ERROR, error=message, function_error="Unhandled")


def throttle(retry_after: float | None = None) -> InvokeResult:
    return InvokeResult(kind=ResultKind.THROTTLE, status_code=429, retry_after=retry_after)


# -- DynamoDB Streams ----------------------------------------------------------------------
