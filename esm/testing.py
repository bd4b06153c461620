"""Test doubles that ship with esm: stateful fakes of a Kinesis client and of a function.

They model behaviour (shards, iterators, lineage, failures to inject) rather than replay
canned answers, so tests of the pipeline exercise the same code paths as production.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
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


@dataclass
class _FakeShard:
    shard_id: str
    parents: tuple[str, ...] = ()
    records: list[dict[str, Any]] = field(default_factory=list)
    starting: int = 0
    ending: int | None = None


class FakeKinesisClient:
    """A stateful in-memory Kinesis with the calls esm makes (ListShards, GetShardIterator,
    GetRecords), plus the producer side for tests (create_stream, put_record, split_shard).

    Sequence numbers are large decimal strings like real Kinesis's, increasing across the
    stream. Iterators are opaque tokens; `expire_iterators()` makes every live one expire
    and `fail_next()` injects service errors by error code.
    """

    def __init__(self, *, closed_returns_iterator: bool = False, page_limit: int = 10_000) -> None:
        self.streams: dict[str, list[_FakeShard]] = {}
        self.calls: list[tuple[str, str | None, float]] = []
        """(operation, shard id, monotonic time) of every call, for tests to count."""
        self.closed_returns_iterator = closed_returns_iterator
        self.page_limit = page_limit
        self._sequence = 49_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000
        self._iterators: dict[str, tuple[str, str, int]] = {}
        self._iterator_counter = 0
        self._failures: dict[str, list[str]] = {}

    # -- producer side ---------------------------------------------------------------------

    def create_stream(self, name: str, shard_count: int = 1) -> None:
        self.streams[name] = [_FakeShard(f"shardId-{i:012d}") for i in range(shard_count)]

    def shard_ids(self, name: str) -> list[str]:
        return [s.shard_id for s in self.streams[name]]

    def put_record(
        self,
        name: str,
        data: bytes,
        partition_key: str,
        *,
        shard_id: str | None = None,
        arrival: float | None = None,
    ) -> str:
        """Append a record; without `shard_id` the key picks an open shard, stably."""
        open_shards = [s for s in self.streams[name] if s.ending is None]
        if shard_id is None:
            shard = open_shards[sum(partition_key.encode()) % len(open_shards)]
        else:
            shard = next(s for s in self.streams[name] if s.shard_id == shard_id)
            if shard.ending is not None:
                raise FakeClientError("InvalidArgumentException", f"{shard_id} is closed")
        self._sequence += 1
        sequence = str(self._sequence)
        shard.records.append(
            {
                "SequenceNumber": sequence,
                "ApproximateArrivalTimestamp": datetime.fromtimestamp(
                    time.time() if arrival is None else arrival, UTC
                ),
                "Data": data,
                "PartitionKey": partition_key,
            }
        )
        return sequence

    def split_shard(self, name: str, shard_id: str) -> tuple[str, str]:
        """Close `shard_id` and open two children; returns the children's ids."""
        shards = self.streams[name]
        parent = next(s for s in shards if s.shard_id == shard_id)
        self._sequence += 1
        parent.ending = self._sequence
        children = []
        for _ in range(2):
            child = _FakeShard(
                f"shardId-{len(shards):012d}", parents=(shard_id,), starting=self._sequence
            )
            shards.append(child)
            children.append(child.shard_id)
        return children[0], children[1]

    def expire_iterators(self) -> None:
        self._iterators.clear()

    def fail_next(self, operation: str, code: str, times: int = 1) -> None:
        """Make the next `times` calls of `operation` fail with error `code`."""
        self._failures.setdefault(operation, []).extend([code] * times)

    # -- the client calls --------------------------------------------------------------------

    def _maybe_fail(self, operation: str) -> None:
        pending = self._failures.get(operation)
        if pending:
            raise FakeClientError(pending.pop(0), f"injected failure of {operation}")

    async def list_shards(self, **kwargs: Any) -> Mapping[str, Any]:
        self.calls.append(("ListShards", None, time.monotonic()))
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("ListShards")
        token = kwargs.get("NextToken")
        name = kwargs.get("StreamName") or (token.split("|")[0] if token else "")
        if name not in self.streams:
            raise FakeClientError("ResourceNotFoundException", f"stream {name} not found")
        start = int(token.split("|")[1]) if token else 0
        shards = self.streams[name]
        # Two shards a page, so that every caller has to follow NextToken.
        page = shards[start : start + 2]
        answer: dict[str, Any] = {"Shards": [self._describe(s) for s in page]}
        if start + 2 < len(shards):
            answer["NextToken"] = f"{name}|{start + 2}"
        return answer

    @staticmethod
    def _describe(shard: _FakeShard) -> dict[str, Any]:
        seq_range = {"StartingSequenceNumber": str(shard.starting)}
        if shard.ending is not None:
            seq_range["EndingSequenceNumber"] = str(shard.ending)
        raw: dict[str, Any] = {"ShardId": shard.shard_id, "SequenceNumberRange": seq_range}
        if shard.parents:
            raw["ParentShardId"] = shard.parents[0]
        if len(shard.parents) > 1:
            raw["AdjacentParentShardId"] = shard.parents[1]
        return raw

    def _shard(self, name: str, shard_id: str) -> _FakeShard:
        for shard in self.streams.get(name, []):
            if shard.shard_id == shard_id:
                return shard
        raise FakeClientError("ResourceNotFoundException", f"{name}/{shard_id} not found")

    def _new_iterator(self, name: str, shard_id: str, index: int) -> str:
        self._iterator_counter += 1
        token = f"it-{self._iterator_counter}"
        self._iterators[token] = (name, shard_id, index)
        return token

    async def get_shard_iterator(self, **kwargs: Any) -> Mapping[str, Any]:
        shard_id = kwargs["ShardId"]
        self.calls.append(("GetShardIterator", shard_id, time.monotonic()))
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("GetShardIterator")
        name = kwargs["StreamName"]
        shard = self._shard(name, shard_id)
        kind = kwargs["ShardIteratorType"]
        records = shard.records
        if kind == "TRIM_HORIZON":
            index = 0
        elif kind == "LATEST":
            index = len(records)
        elif kind == "AT_TIMESTAMP":
            when = float(kwargs["Timestamp"])
            index = next(
                (
                    i
                    for i, r in enumerate(records)
                    if r["ApproximateArrivalTimestamp"].timestamp() >= when
                ),
                len(records),
            )
        else:
            sequence = int(kwargs["StartingSequenceNumber"])
            after = kind == "AFTER_SEQUENCE_NUMBER"
            index = next(
                (
                    i
                    for i, r in enumerate(records)
                    if int(r["SequenceNumber"]) > sequence
                    or (not after and int(r["SequenceNumber"]) == sequence)
                ),
                len(records),
            )
        return {"ShardIterator": self._new_iterator(name, shard_id, index)}

    async def get_records(self, **kwargs: Any) -> Mapping[str, Any]:
        token = kwargs["ShardIterator"]
        found = self._iterators.pop(token, None)
        self.calls.append(("GetRecords", found[1] if found else None, time.monotonic()))
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("GetRecords")
        if found is None:
            raise FakeClientError("ExpiredIteratorException", "Iterator expired")
        name, shard_id, index = found
        shard = self._shard(name, shard_id)
        limit = min(int(kwargs.get("Limit", 10_000)), self.page_limit)
        page = shard.records[index : index + limit]
        end = index + len(page)
        at_end = end >= len(shard.records)
        answer: dict[str, Any] = {
            "Records": page,
            "MillisBehindLatest": 0 if at_end else 1000,
        }
        if shard.ending is None or not at_end or self.closed_returns_iterator:
            answer["NextShardIterator"] = self._new_iterator(name, shard_id, end)
        return answer


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
