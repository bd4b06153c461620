"""What the fakes share: a client error, a recording function backend, and the shard log of
the stream fakes (injected failures, iterators, where a position starts)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

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


# -- what the stream fakes share: injected failures, iterators, positions in a shard's log --


class FailureInjection:
    """`fail_next(operation, code)`: the next calls of an operation fail with an error code."""

    def __init__(self) -> None:
        self._failures: dict[str, list[str]] = {}

    def fail_next(self, operation: str, code: str, times: int = 1) -> None:
        """Make the next `times` calls of `operation` fail with error `code`."""
        self._failures.setdefault(operation, []).extend([code] * times)

    def _maybe_fail(self, operation: str) -> None:
        pending = self._failures.get(operation)
        if pending:
            raise FakeClientError(pending.pop(0), f"injected failure of {operation}")


@dataclass
class ShardIterator:
    """Where an iterator points: a stream, a shard, an index in the shard's records."""

    stream: str
    shard_id: str
    index: int
    empty_reads: int = 0
    """Empty pages still to answer before the records (DynamoDB Streams walks such gaps)."""


class ShardIterators:
    """Iterator tokens of a fake stream service: each is used once, all can be expired."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._live: dict[str, ShardIterator] = {}
        self._counter = 0

    def issue(self, stream: str, shard_id: str, index: int, empty_reads: int = 0) -> str:
        self._counter += 1
        token = f"{self._prefix}-{self._counter}"
        self._live[token] = ShardIterator(stream, shard_id, index, empty_reads)
        return token

    def take(self, token: str) -> ShardIterator | None:
        """The iterator `token` names, used up; None when it expired (or never was)."""
        return self._live.pop(token, None)

    def expire(self) -> None:
        self._live.clear()


R = TypeVar("R")


def start_index(
    records: Sequence[R],
    iterator_type: str,
    *,
    sequence_of: Callable[[R], int],
    sequence: str | None = None,
    arrival_of: Callable[[R], float] | None = None,
    timestamp: datetime | float | None = None,
    trim_horizon: int = 0,
    invalid_code: str = "InvalidArgumentException",
) -> int:
    """Index in `records` (oldest first) of the first record a position points at, as
    GetShardIterator and SubscribeToShard read ShardIteratorType and its arguments."""
    if iterator_type == "TRIM_HORIZON":
        return trim_horizon
    if iterator_type == "LATEST":
        return len(records)
    if iterator_type == "AT_TIMESTAMP" and arrival_of is not None and timestamp is not None:
        when = timestamp.timestamp() if isinstance(timestamp, datetime) else float(timestamp)
        return next((i for i, r in enumerate(records) if arrival_of(r) >= when), len(records))
    if iterator_type in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER") and sequence is not None:
        target = int(sequence)
        after = iterator_type == "AFTER_SEQUENCE_NUMBER"
        return next(
            (
                i
                for i, r in enumerate(records)
                if sequence_of(r) > target or (not after and sequence_of(r) == target)
            ),
            len(records),
        )
    raise FakeClientError(invalid_code, f"unsupported position {iterator_type}")
