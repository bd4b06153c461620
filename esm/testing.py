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


# -- DynamoDB Streams ----------------------------------------------------------------------

TTL_IDENTITY = {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"}
"""The userIdentity of a GetRecords record for an item deleted by Time to Live."""

_VIEW_IMAGES = {
    "KEYS_ONLY": (False, False),
    "NEW_IMAGE": (True, False),
    "OLD_IMAGE": (False, True),
    "NEW_AND_OLD_IMAGES": (True, True),
}


@dataclass
class _FakeStreamShard:
    shard_id: str
    parent: str | None
    starting: int
    records: list[dict[str, Any]] = field(default_factory=list)
    trimmed: int = 0
    """How many of `records`, from the oldest, have passed the retention period."""
    ending: int | None = None


@dataclass
class _FakeStreamTable:
    name: str
    key_names: tuple[str, ...]
    view_type: str
    label: str
    shards: list[_FakeStreamShard] = field(default_factory=list)
    items: dict[bytes, dict[str, Any]] = field(default_factory=dict)


@dataclass
class _FakeStreamIterator:
    arn: str
    shard_id: str
    index: int
    empty_reads: int


def _item_size(value: Any) -> int:
    """About what DynamoDB counts in SizeBytes: the encoded keys and images."""
    return len(orjson.dumps(value, default=lambda b: base64.b64encode(b).decode()))


class FakeDynamoDBStreamsClient:
    """A stateful in-memory DynamoDB Streams with the calls esm makes (DescribeStream,
    GetShardIterator, GetRecords), plus the table side for tests: put_item, delete_item
    (TTL deletions included), shard rollover and retention trimming.

    Answers look like botocore's: ApproximateCreationDateTime is a datetime (whole seconds,
    as DynamoDB rounds it) and binary attribute values are bytes. As on AWS, a closed shard
    read to its end answers without NextShardIterator, DescribeStream pages with
    LastEvaluatedShardId, GetRecords refuses a Limit above 1000, and reading before the trim
    horizon raises TrimmedDataAccessException. `empty_reads` makes every new iterator answer
    that many empty pages before the records it points at, as DynamoDB does when it walks
    through portions of a shard that hold no records.
    """

    def __init__(
        self,
        *,
        region: str = "us-east-1",
        account: str = "000000000000",
        describe_page_size: int = 2,
        page_limit: int = 1000,
        empty_reads: int = 0,
        closed_returns_iterator: bool = False,
    ) -> None:
        self.region = region
        self.account = account
        self.describe_page_size = describe_page_size
        self.page_limit = page_limit
        self.empty_reads = empty_reads
        self.closed_returns_iterator = closed_returns_iterator
        self.tables: dict[str, _FakeStreamTable] = {}
        """By stream ARN."""
        self.calls: list[tuple[str, str | None, float]] = []
        """(operation, shard id, monotonic time) of every call, for tests to count."""
        self._sequence = 400_000_000_000_000_000_000
        self._shard_counter = 0
        self._event_counter = 0
        self._iterators: dict[str, _FakeStreamIterator] = {}
        self._iterator_counter = 0
        self._failures: dict[str, list[str]] = {}

    # -- table side ------------------------------------------------------------------------

    def create_table(
        self,
        name: str,
        key_names: tuple[str, ...] = ("pk",),
        *,
        view_type: str = "NEW_AND_OLD_IMAGES",
        shard_count: int = 1,
    ) -> str:
        """Create a table with a stream; returns the stream's ARN."""
        if view_type not in _VIEW_IMAGES:
            raise ValueError(f"unknown StreamViewType {view_type}")
        label = datetime.fromtimestamp(time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        arn = f"arn:aws:dynamodb:{self.region}:{self.account}:table/{name}/stream/{label}"
        table = _FakeStreamTable(name, key_names, view_type, label)
        for _ in range(shard_count):
            table.shards.append(self._new_shard(None))
        self.tables[arn] = table
        return arn

    def shard_ids(self, arn: str) -> list[str]:
        return [s.shard_id for s in self.tables[arn].shards]

    def open_shard_ids(self, arn: str) -> list[str]:
        return [s.shard_id for s in self.tables[arn].shards if s.ending is None]

    def stored_records(self, arn: str, shard_id: str) -> list[dict[str, Any]]:
        """What the shard holds, oldest first, trimmed records included (botocore form)."""
        return self._shard(arn, shard_id).records

    def put_item(
        self, arn: str, item: dict[str, Any], *, created: float | None = None
    ) -> dict[str, Any]:
        """PutItem: an INSERT, or a MODIFY when an item with these keys exists. Returns the
        stream record written."""
        table = self.tables[arn]
        key = self._key(table, item)
        old = table.items.get(key)
        table.items[key] = item
        return self._append(arn, "MODIFY" if old else "INSERT", old, item, created, None)

    def delete_item(
        self,
        arn: str,
        keys: dict[str, Any],
        *,
        ttl: bool = False,
        created: float | None = None,
    ) -> dict[str, Any] | None:
        """DeleteItem (or a Time to Live expiry when `ttl`): a REMOVE, None when no such item."""
        table = self.tables[arn]
        old = table.items.pop(self._key(table, keys), None)
        if old is None:
            return None
        identity = dict(TTL_IDENTITY) if ttl else None
        return self._append(arn, "REMOVE", old, None, created, identity)

    def roll_over(self, arn: str, shard_id: str, *, children: int = 1) -> list[str]:
        """Close `shard_id` (DynamoDB does every few hours) and open `children` shards whose
        ParentShardId is it; returns the children's ids."""
        table = self.tables[arn]
        parent = self._shard(arn, shard_id)
        # EndingSequenceNumber is the last record's sequence number in the shard.
        last = parent.records[-1]["dynamodb"]["SequenceNumber"] if parent.records else None
        parent.ending = parent.starting if last is None else int(last)
        created = [self._new_shard(shard_id) for _ in range(children)]
        table.shards.extend(created)
        return [s.shard_id for s in created]

    def trim(self, arn: str, shard_id: str, count: int) -> None:
        """Let the oldest `count` records of the shard pass the 24-hour retention."""
        shard = self._shard(arn, shard_id)
        shard.trimmed = min(len(shard.records), shard.trimmed + count)

    def expire_iterators(self) -> None:
        self._iterators.clear()

    def fail_next(self, operation: str, code: str, times: int = 1) -> None:
        """Make the next `times` calls of `operation` fail with error `code`."""
        self._failures.setdefault(operation, []).extend([code] * times)

    def _new_shard(self, parent: str | None) -> _FakeStreamShard:
        self._shard_counter += 1
        self._sequence += 100
        # Shaped like DynamoDB's: shardId-<20-digit creation time>-<8 hex digits>.
        shard_id = f"shardId-{int(time.time() * 1000):020d}-{self._shard_counter:08x}"
        return _FakeStreamShard(shard_id, parent, self._sequence)

    @staticmethod
    def _key(table: _FakeStreamTable, item: Mapping[str, Any]) -> bytes:
        return orjson.dumps(
            [repr(item[name]) for name in table.key_names], option=orjson.OPT_SORT_KEYS
        )

    def _append(
        self,
        arn: str,
        event_name: str,
        old: dict[str, Any] | None,
        new: dict[str, Any] | None,
        created: float | None,
        identity: dict[str, str] | None,
    ) -> dict[str, Any]:
        table = self.tables[arn]
        some = new if new is not None else old
        assert some is not None
        keys = {name: some[name] for name in table.key_names}
        open_shards = [s for s in table.shards if s.ending is None]
        # The item's keys pick the shard, stably while the open shards stay the same.
        shard = open_shards[sum(self._key(table, keys)) % len(open_shards)]
        self._sequence += 100
        self._event_counter += 1
        with_new, with_old = _VIEW_IMAGES[table.view_type]
        change: dict[str, Any] = {
            "ApproximateCreationDateTime": datetime.fromtimestamp(
                int(time.time() if created is None else created), UTC
            ),
            "Keys": keys,
        }
        if with_new and new is not None:
            change["NewImage"] = new
        if with_old and old is not None:
            change["OldImage"] = old
        change["SequenceNumber"] = str(self._sequence)
        change["SizeBytes"] = _item_size(
            [change.get("Keys"), change.get("NewImage"), change.get("OldImage")]
        )
        change["StreamViewType"] = table.view_type
        record: dict[str, Any] = {
            "eventID": f"{self._event_counter:032x}",
            "eventName": event_name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": self.region,
            "dynamodb": change,
        }
        if identity is not None:
            record["userIdentity"] = identity
        shard.records.append(record)
        return record

    # -- the client calls --------------------------------------------------------------------

    def _maybe_fail(self, operation: str) -> None:
        pending = self._failures.get(operation)
        if pending:
            raise FakeClientError(pending.pop(0), f"injected failure of {operation}")

    def _table(self, arn: str) -> _FakeStreamTable:
        table = self.tables.get(arn)
        if table is None:
            raise FakeClientError("ResourceNotFoundException", f"stream {arn} not found")
        return table

    def _shard(self, arn: str, shard_id: str) -> _FakeStreamShard:
        for shard in self._table(arn).shards:
            if shard.shard_id == shard_id:
                return shard
        raise FakeClientError("ResourceNotFoundException", f"shard {shard_id} not found")

    def _new_iterator(self, arn: str, shard_id: str, index: int, empty_reads: int) -> str:
        self._iterator_counter += 1
        token = f"ddb-it-{self._iterator_counter}"
        self._iterators[token] = _FakeStreamIterator(arn, shard_id, index, empty_reads)
        return token

    async def describe_stream(self, **kwargs: Any) -> Mapping[str, Any]:
        self.calls.append(("DescribeStream", None, time.monotonic()))
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("DescribeStream")
        arn = kwargs["StreamArn"]
        table = self._table(arn)
        limit = min(int(kwargs.get("Limit", 100)), 100, self.describe_page_size)
        start = 0
        after = kwargs.get("ExclusiveStartShardId")
        if after is not None:
            ids = [s.shard_id for s in table.shards]
            start = ids.index(after) + 1 if after in ids else len(ids)
        page = table.shards[start : start + limit]
        description: dict[str, Any] = {
            "StreamArn": arn,
            "StreamLabel": table.label,
            "StreamStatus": "ENABLED",
            "StreamViewType": table.view_type,
            "TableName": table.name,
            "KeySchema": [
                {"AttributeName": name, "KeyType": "HASH" if n == 0 else "RANGE"}
                for n, name in enumerate(table.key_names)
            ],
            "Shards": [self._describe_shard(s) for s in page],
        }
        if start + limit < len(table.shards):
            description["LastEvaluatedShardId"] = page[-1].shard_id
        return {"StreamDescription": description}

    @staticmethod
    def _describe_shard(shard: _FakeStreamShard) -> dict[str, Any]:
        seq_range = {"StartingSequenceNumber": str(shard.starting)}
        if shard.ending is not None:
            seq_range["EndingSequenceNumber"] = str(shard.ending)
        raw: dict[str, Any] = {"ShardId": shard.shard_id, "SequenceNumberRange": seq_range}
        if shard.parent is not None:
            raw["ParentShardId"] = shard.parent
        return raw

    async def get_shard_iterator(self, **kwargs: Any) -> Mapping[str, Any]:
        shard_id = kwargs["ShardId"]
        self.calls.append(("GetShardIterator", shard_id, time.monotonic()))
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("GetShardIterator")
        arn = kwargs["StreamArn"]
        shard = self._shard(arn, shard_id)
        kind = kwargs["ShardIteratorType"]
        records = shard.records
        if kind == "TRIM_HORIZON":
            index = shard.trimmed
        elif kind == "LATEST":
            index = len(records)
        elif kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            sequence = int(kwargs["SequenceNumber"])
            after = kind == "AFTER_SEQUENCE_NUMBER"
            index = next(
                (
                    i
                    for i, r in enumerate(records)
                    if int(r["dynamodb"]["SequenceNumber"]) > sequence
                    or (not after and int(r["dynamodb"]["SequenceNumber"]) == sequence)
                ),
                len(records),
            )
            if index < shard.trimmed:
                raise FakeClientError(
                    "TrimmedDataAccessException", f"{sequence} is beyond the trim horizon"
                )
        else:
            raise FakeClientError("ValidationException", f"unsupported iterator type {kind}")
        return {"ShardIterator": self._new_iterator(arn, shard_id, index, self.empty_reads)}

    async def get_records(self, **kwargs: Any) -> Mapping[str, Any]:
        token = kwargs["ShardIterator"]
        found = self._iterators.pop(token, None)
        self.calls.append(("GetRecords", found.shard_id if found else None, time.monotonic()))
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("GetRecords")
        limit = int(kwargs.get("Limit", 1000))
        if not 1 <= limit <= 1000:
            raise FakeClientError("ValidationException", f"Limit {limit} is not in 1..1000")
        if found is None:
            raise FakeClientError("ExpiredIteratorException", "Iterator expired")
        shard = self._shard(found.arn, found.shard_id)
        if found.index < shard.trimmed:
            raise FakeClientError("TrimmedDataAccessException", "the iterator's records are gone")
        if found.empty_reads > 0:
            next_token = self._new_iterator(
                found.arn, found.shard_id, found.index, found.empty_reads - 1
            )
            return {"Records": [], "NextShardIterator": next_token}
        page = shard.records[found.index : found.index + min(limit, self.page_limit)]
        end = found.index + len(page)
        answer: dict[str, Any] = {"Records": page}
        if shard.ending is None or end < len(shard.records) or self.closed_returns_iterator:
            answer["NextShardIterator"] = self._new_iterator(found.arn, found.shard_id, end, 0)
        return answer


# -- Kinesis enhanced fan-out ----------------------------------------------------------------


def _fan_out_start(shard: _FakeShard, position: Mapping[str, Any]) -> int:
    """Index in `shard.records` of the first record a StartingPosition points at."""
    kind = position["Type"]
    records = shard.records
    if kind == "TRIM_HORIZON":
        return 0
    if kind == "LATEST":
        return len(records)
    if kind == "AT_TIMESTAMP":
        when = position["Timestamp"]
        when = when.timestamp() if isinstance(when, datetime) else float(when)
        return next(
            (
                i
                for i, r in enumerate(records)
                if r["ApproximateArrivalTimestamp"].timestamp() >= when
            ),
            len(records),
        )
    if kind not in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
        raise FakeClientError("InvalidArgumentException", f"unknown StartingPosition {kind}")
    sequence = int(position["SequenceNumber"])
    after = kind == "AFTER_SEQUENCE_NUMBER"
    return next(
        (
            i
            for i, r in enumerate(records)
            if int(r["SequenceNumber"]) > sequence
            or (not after and int(r["SequenceNumber"]) == sequence)
        ),
        len(records),
    )


class FakeEventStream:
    """The EventStream of one fake SubscribeToShard: an async iterable of
    `{"SubscribeToShardEvent": {...}}` dicts, as aiobotocore's event stream yields them."""

    def __init__(
        self, owner: FakeKinesisFanOutClient, key: tuple[str, str], shard: _FakeShard, index: int
    ) -> None:
        self._owner = owner
        self._key = key
        self._shard = shard
        self._index = index
        self._events_left = owner.events_per_subscription
        self.events_sent = 0
        self.closed = False

    def __aiter__(self) -> FakeEventStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        owner, shard = self._owner, self._shard
        if self.closed or self._events_left == 0:
            # The subscription's lifetime is over (5 minutes on AWS).
            self.close()
            raise StopAsyncIteration
        deadline = time.monotonic() + owner.idle_event_seconds
        # Push as soon as there is something to say; while caught up, an empty event now
        # and then, as Kinesis sends them.
        while self._index >= len(shard.records) and shard.ending is None:
            if time.monotonic() >= deadline:
                break
            await anyio.sleep(0.005)
            if self.closed:
                raise StopAsyncIteration
        await anyio.lowlevel.checkpoint()
        if owner._stream_failures:
            self.close()
            raise FakeClientError(owner._stream_failures.pop(0), "injected event stream failure")
        page = [dict(r) for r in shard.records[self._index : self._index + owner.event_records]]
        self._index += len(page)
        at_tip = self._index >= len(shard.records)
        event: dict[str, Any] = {"Records": page, "MillisBehindLatest": 0 if at_tip else 1000}
        if shard.ending is not None and at_tip:
            # The end of a closed shard: no continuation, the children instead.
            event["ChildShards"] = owner.child_shards(self._key[1])
            self.close()
        else:
            previous = shard.records[self._index - 1]["SequenceNumber"] if self._index else None
            event["ContinuationSequenceNumber"] = previous or str(shard.starting)
        if self._events_left is not None:
            self._events_left -= 1
        self.events_sent += 1
        return {"SubscribeToShardEvent": event}

    def close(self) -> None:
        """End the subscription (botocore's EventStream.close releases the connection)."""
        self.closed = True
        if self._owner._open.get(self._key) is self:
            del self._owner._open[self._key]


class FakeKinesisFanOutClient:
    """Enhanced fan-out over a `FakeKinesisClient`'s streams: RegisterStreamConsumer and
    SubscribeToShard, plus the polling calls, delegated, so that one object is the client.

    A subscription pushes the shard's records, existing and newly put, `event_records` per
    event; while caught up it pushes an empty event every `idle_event_seconds`. It ends after
    `events_per_subscription` events (AWS ends one after 5 minutes), and at the end of a
    closed shard with an event that has ChildShards and no ContinuationSequenceNumber. A
    second SubscribeToShard for a consumer and shard with one still open fails with
    ResourceInUseException. `fail_next("SubscribeToShard", code)` makes calls fail and
    `fail_stream_next(code)` makes the next event of any subscription raise instead.
    """

    def __init__(
        self,
        kinesis: FakeKinesisClient,
        *,
        region: str = "us-east-1",
        account: str = "000000000000",
        event_records: int = 100,
        events_per_subscription: int | None = None,
        idle_event_seconds: float = 0.05,
    ) -> None:
        self.kinesis = kinesis
        self.region = region
        self.account = account
        self.event_records = event_records
        self.events_per_subscription = events_per_subscription
        self.idle_event_seconds = idle_event_seconds
        self.consumers: dict[str, str] = {}
        """Stream name by consumer ARN."""
        self.subscriptions: list[tuple[str, dict[str, Any]]] = []
        """(shard id, StartingPosition) of every SubscribeToShard call, failed ones too."""
        self._open: dict[tuple[str, str], FakeEventStream] = {}
        self._failures: dict[str, list[str]] = {}
        self._stream_failures: list[str] = []

    # -- test side -------------------------------------------------------------------------

    def stream_arn(self, name: str) -> str:
        return f"arn:aws:kinesis:{self.region}:{self.account}:stream/{name}"

    def fail_next(self, operation: str, code: str, times: int = 1) -> None:
        """Make the next `times` calls of `operation` fail with error `code`."""
        self._failures.setdefault(operation, []).extend([code] * times)

    def fail_stream_next(self, code: str, times: int = 1) -> None:
        """Make the next `times` event reads fail with error `code`, ending their stream."""
        self._stream_failures.extend([code] * times)

    def open_subscriptions(self) -> list[tuple[str, str]]:
        """(consumer ARN, shard id) of every subscription still open."""
        return sorted(self._open)

    def end_subscriptions(self) -> None:
        """End every open subscription now, as their lifetime running out does."""
        for stream in list(self._open.values()):
            stream.close()

    def child_shards(self, shard_id: str) -> list[dict[str, Any]]:
        """The ChildShards entries of a closed shard."""
        for shards in self.kinesis.streams.values():
            if any(s.shard_id == shard_id for s in shards):
                return [
                    {
                        "ShardId": s.shard_id,
                        "ParentShards": list(s.parents),
                        "HashKeyRange": {
                            "StartingHashKey": "0",
                            "EndingHashKey": str(2**128 - 1),
                        },
                    }
                    for s in shards
                    if shard_id in s.parents
                ]
        return []

    # -- the client calls --------------------------------------------------------------------

    def _maybe_fail(self, operation: str) -> None:
        pending = self._failures.get(operation)
        if pending:
            raise FakeClientError(pending.pop(0), f"injected failure of {operation}")

    async def register_stream_consumer(self, **kwargs: Any) -> Mapping[str, Any]:
        stream_arn, name = kwargs["StreamARN"], kwargs["ConsumerName"]
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("RegisterStreamConsumer")
        stream = stream_arn.rpartition("stream/")[2]
        if stream_arn != self.stream_arn(stream) or stream not in self.kinesis.streams:
            raise FakeClientError("ResourceNotFoundException", f"stream {stream_arn} not found")
        created = datetime.now(UTC)
        arn = f"{stream_arn}/consumer/{name}:{int(created.timestamp())}"
        if any(a.rpartition(":")[0] == arn.rpartition(":")[0] for a in self.consumers):
            raise FakeClientError("ResourceInUseException", f"consumer {name} exists")
        self.consumers[arn] = stream
        # AWS answers CREATING and turns ACTIVE within seconds; the fake is ACTIVE at once.
        return {
            "Consumer": {
                "ConsumerName": name,
                "ConsumerARN": arn,
                "ConsumerStatus": "ACTIVE",
                "ConsumerCreationTimestamp": created,
            }
        }

    async def subscribe_to_shard(self, **kwargs: Any) -> Mapping[str, Any]:
        consumer_arn, shard_id = kwargs["ConsumerARN"], kwargs["ShardId"]
        position = dict(kwargs["StartingPosition"])
        self.subscriptions.append((shard_id, position))
        self.kinesis.calls.append(("SubscribeToShard", shard_id, time.monotonic()))
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("SubscribeToShard")
        stream = self.consumers.get(consumer_arn)
        if stream is None:
            raise FakeClientError("ResourceNotFoundException", f"consumer {consumer_arn} not found")
        shard = self.kinesis._shard(stream, shard_id)
        key = (consumer_arn, shard_id)
        if key in self._open:
            raise FakeClientError(
                "ResourceInUseException",
                f"another subscription of {consumer_arn} to {shard_id} is active",
            )
        events = FakeEventStream(self, key, shard, _fan_out_start(shard, position))
        self._open[key] = events
        return {"EventStream": events}

    async def list_shards(self, **kwargs: Any) -> Mapping[str, Any]:
        return await self.kinesis.list_shards(**kwargs)

    async def get_shard_iterator(self, **kwargs: Any) -> Mapping[str, Any]:
        return await self.kinesis.get_shard_iterator(**kwargs)

    async def get_records(self, **kwargs: Any) -> Mapping[str, Any]:
        return await self.kinesis.get_records(**kwargs)


# -- SQS -----------------------------------------------------------------------------------

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
    ) -> dict[str, Any]:
        from esm.events import md5_of_body, md5_of_message_attributes

        answer: dict[str, Any] = {
            "MessageId": message.message_id,
            "ReceiptHandle": message.receipt_handle,
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
            answer["MessageAttributes"] = selected
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
    def _failed(entry_id: Any, code: str, message: str, *, sender_fault: bool) -> dict[str, Any]:
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

    async def get_queue_url(self, **kwargs: Any) -> Mapping[str, Any]:
        name = kwargs["QueueName"]
        self._start("GetQueueUrl", None)
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("GetQueueUrl")
        url = f"https://sqs.{self.region}.amazonaws.com/{self.account}/{name}"
        return {"QueueUrl": self._queue(url).url}

    async def get_queue_attributes(self, **kwargs: Any) -> Mapping[str, Any]:
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
        failed: list[dict[str, Any]] = []
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

    async def receive_message(self, **kwargs: Any) -> Mapping[str, Any]:
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

    async def delete_message_batch(self, **kwargs: Any) -> Mapping[str, Any]:
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
    ) -> Mapping[str, Any]:
        """A batch call: each entry applied on its own, failures reported per entry."""
        url = kwargs["QueueUrl"]
        self._start(operation, url)
        await anyio.lowlevel.checkpoint()
        self._maybe_fail(operation)
        queue = self._queue(url)
        entries = list(kwargs.get("Entries") or [])
        self._check_batch(entries)
        successful: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
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

    async def change_message_visibility_batch(self, **kwargs: Any) -> Mapping[str, Any]:
        return await self._batch(
            "ChangeMessageVisibilityBatch",
            kwargs,
            lambda queue, entry: self._change_visibility(
                queue, entry["ReceiptHandle"], entry.get("VisibilityTimeout")
            ),
        )
