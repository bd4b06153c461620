"""A stateful fake of a DynamoDB Streams client: tables, shards, images, TTL deletes."""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel
import orjson

from esm.aws.dynamodb_streams import (
    DescribeStreamOutput,
    GetRecordsOutput,
    GetShardIteratorOutput,
    SequenceNumberRange,
    StreamDescription,
    StreamRecord,
    StreamRecordChange,
    StreamShard,
    UserIdentity,
)
from esm.testing._common import FailureInjection, FakeClientError, ShardIterators, start_index

TTL_IDENTITY: UserIdentity = {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"}
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
    records: list[StreamRecord] = field(default_factory=list)
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


def _item_size(value: Any) -> int:
    """About what DynamoDB counts in SizeBytes: the encoded keys and images."""
    return len(orjson.dumps(value, default=lambda b: base64.b64encode(b).decode()))


def _sequence(record: StreamRecord) -> int:
    return int(record["dynamodb"]["SequenceNumber"])


class FakeDynamoDBStreamsClient(FailureInjection):
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
        super().__init__()
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
        self._iterators = ShardIterators("ddb-it")

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

    def stored_records(self, arn: str, shard_id: str) -> list[StreamRecord]:
        """What the shard holds, oldest first, trimmed records included (botocore form)."""
        return self._shard(arn, shard_id).records

    def put_item(
        self, arn: str, item: dict[str, Any], *, created: float | None = None
    ) -> StreamRecord:
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
    ) -> StreamRecord | None:
        """DeleteItem (or a Time to Live expiry when `ttl`): a REMOVE, None when no such item."""
        table = self.tables[arn]
        old = table.items.pop(self._key(table, keys), None)
        if old is None:
            return None
        identity = UserIdentity(**TTL_IDENTITY) if ttl else None
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
        self._iterators.expire()

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
        identity: UserIdentity | None,
    ) -> StreamRecord:
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
        new_image = new if with_new else None
        old_image = old if with_old else None
        change: StreamRecordChange = {
            "ApproximateCreationDateTime": datetime.fromtimestamp(
                int(time.time() if created is None else created), UTC
            ),
            "Keys": keys,
            "SequenceNumber": str(self._sequence),
            "SizeBytes": _item_size([keys, new_image, old_image]),
            "StreamViewType": table.view_type,
        }
        if new_image is not None:
            change["NewImage"] = new_image
        if old_image is not None:
            change["OldImage"] = old_image
        record: StreamRecord = {
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

    # -- the client calls (esm.aws.dynamodb_streams.DynamoDBStreamsClient) ------------------

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

    async def describe_stream(
        self, *, StreamArn: str, Limit: int = 100, ExclusiveStartShardId: str | None = None
    ) -> DescribeStreamOutput:
        self.calls.append(("DescribeStream", None, time.monotonic()))
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("DescribeStream")
        arn, after = StreamArn, ExclusiveStartShardId
        table = self._table(arn)
        limit = min(Limit, 100, self.describe_page_size)
        start = 0
        if after is not None:
            ids = [s.shard_id for s in table.shards]
            start = ids.index(after) + 1 if after in ids else len(ids)
        page = table.shards[start : start + limit]
        description: StreamDescription = {
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
    def _describe_shard(shard: _FakeStreamShard) -> StreamShard:
        seq_range: SequenceNumberRange = {"StartingSequenceNumber": str(shard.starting)}
        if shard.ending is not None:
            seq_range["EndingSequenceNumber"] = str(shard.ending)
        raw: StreamShard = {"ShardId": shard.shard_id, "SequenceNumberRange": seq_range}
        if shard.parent is not None:
            raw["ParentShardId"] = shard.parent
        return raw

    async def get_shard_iterator(
        self,
        *,
        StreamArn: str,
        ShardId: str,
        ShardIteratorType: str,
        SequenceNumber: str | None = None,
    ) -> GetShardIteratorOutput:
        self.calls.append(("GetShardIterator", ShardId, time.monotonic()))
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("GetShardIterator")
        shard = self._shard(StreamArn, ShardId)
        index = start_index(
            shard.records,
            ShardIteratorType,
            sequence_of=_sequence,
            sequence=SequenceNumber,
            trim_horizon=shard.trimmed,
            invalid_code="ValidationException",
        )
        if index < shard.trimmed:
            raise FakeClientError(
                "TrimmedDataAccessException", f"{SequenceNumber} is beyond the trim horizon"
            )
        return {"ShardIterator": self._iterators.issue(StreamArn, ShardId, index, self.empty_reads)}

    async def get_records(self, *, ShardIterator: str, Limit: int = 1000) -> GetRecordsOutput:
        found = self._iterators.take(ShardIterator)
        self.calls.append(("GetRecords", found.shard_id if found else None, time.monotonic()))
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("GetRecords")
        if not 1 <= Limit <= 1000:
            raise FakeClientError("ValidationException", f"Limit {Limit} is not in 1..1000")
        if found is None:
            raise FakeClientError("ExpiredIteratorException", "Iterator expired")
        shard = self._shard(found.stream, found.shard_id)
        if found.index < shard.trimmed:
            raise FakeClientError("TrimmedDataAccessException", "the iterator's records are gone")
        if found.empty_reads > 0:
            next_token = self._iterators.issue(
                found.stream, found.shard_id, found.index, found.empty_reads - 1
            )
            return {"Records": [], "NextShardIterator": next_token}
        page = shard.records[found.index : found.index + min(Limit, self.page_limit)]
        end = found.index + len(page)
        answer: GetRecordsOutput = {"Records": page}
        if shard.ending is None or end < len(shard.records) or self.closed_returns_iterator:
            answer["NextShardIterator"] = self._iterators.issue(found.stream, found.shard_id, end)
        return answer
