"""A stateful fake of a Kinesis client: shards, iterators, lineage, enhanced fan-out."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel

from esm.aws.kinesis import (
    ChildShard,
    GetRecordsOutput,
    GetShardIteratorOutput,
    KinesisRecord,
    ListShardsOutput,
    SequenceNumberRange,
    Shard,
    ShardEventStreamItem,
    StartingPosition,
    SubscribeToShardEvent,
    SubscribeToShardOutput,
)
from esm.testing._common import FailureInjection, FakeClientError, ShardIterators, start_index


@dataclass
class _FakeShard:
    shard_id: str
    parents: tuple[str, ...] = ()
    records: list[KinesisRecord] = field(default_factory=list)
    starting: int = 0
    ending: int | None = None


def _sequence(record: KinesisRecord) -> int:
    return int(record["SequenceNumber"])


def _arrival(record: KinesisRecord) -> float:
    arrival = record["ApproximateArrivalTimestamp"]
    return arrival.timestamp() if isinstance(arrival, datetime) else float(arrival)


class FakeKinesisClient(FailureInjection):
    """A stateful in-memory Kinesis with the calls esm makes (ListShards, GetShardIterator,
    GetRecords), plus the producer side for tests (create_stream, put_record, split_shard).

    Sequence numbers are large decimal strings like real Kinesis's, increasing across the
    stream. Iterators are opaque tokens; `expire_iterators()` makes every live one expire
    and `fail_next()` injects service errors by error code.
    """

    def __init__(self, *, closed_returns_iterator: bool = False, page_limit: int = 10_000) -> None:
        super().__init__()
        self.streams: dict[str, list[_FakeShard]] = {}
        self.calls: list[tuple[str, str | None, float]] = []
        """(operation, shard id, monotonic time) of every call, for tests to count."""
        self.closed_returns_iterator = closed_returns_iterator
        self.page_limit = page_limit
        self._sequence = 49_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000
        self._iterators = ShardIterators("it")

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
        self._iterators.expire()

    # -- the client calls (esm.aws.kinesis.KinesisClient) ---------------------------------

    async def list_shards(
        self, *, StreamName: str | None = None, NextToken: str | None = None
    ) -> ListShardsOutput:
        self.calls.append(("ListShards", None, time.monotonic()))
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("ListShards")
        name = StreamName or (NextToken.split("|")[0] if NextToken else "")
        if name not in self.streams:
            raise FakeClientError("ResourceNotFoundException", f"stream {name} not found")
        start = int(NextToken.split("|")[1]) if NextToken else 0
        shards = self.streams[name]
        # Two shards a page, so that every caller has to follow NextToken.
        page = shards[start : start + 2]
        answer: ListShardsOutput = {"Shards": [self._describe(s) for s in page]}
        if start + 2 < len(shards):
            answer["NextToken"] = f"{name}|{start + 2}"
        return answer

    @staticmethod
    def _describe(shard: _FakeShard) -> Shard:
        seq_range: SequenceNumberRange = {"StartingSequenceNumber": str(shard.starting)}
        if shard.ending is not None:
            seq_range["EndingSequenceNumber"] = str(shard.ending)
        raw: Shard = {"ShardId": shard.shard_id, "SequenceNumberRange": seq_range}
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

    async def get_shard_iterator(
        self,
        *,
        StreamName: str,
        ShardId: str,
        ShardIteratorType: str,
        StartingSequenceNumber: str | None = None,
        Timestamp: datetime | float | None = None,
    ) -> GetShardIteratorOutput:
        self.calls.append(("GetShardIterator", ShardId, time.monotonic()))
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("GetShardIterator")
        shard = self._shard(StreamName, ShardId)
        index = start_index(
            shard.records,
            ShardIteratorType,
            sequence_of=_sequence,
            sequence=StartingSequenceNumber,
            arrival_of=_arrival,
            timestamp=Timestamp,
        )
        return {"ShardIterator": self._iterators.issue(StreamName, ShardId, index)}

    async def get_records(self, *, ShardIterator: str, Limit: int = 10_000) -> GetRecordsOutput:
        found = self._iterators.take(ShardIterator)
        self.calls.append(("GetRecords", found.shard_id if found else None, time.monotonic()))
        await anyio.lowlevel.checkpoint()
        self._maybe_fail("GetRecords")
        if found is None:
            raise FakeClientError("ExpiredIteratorException", "Iterator expired")
        shard = self._shard(found.stream, found.shard_id)
        page = shard.records[found.index : found.index + min(Limit, self.page_limit)]
        end = found.index + len(page)
        at_end = end >= len(shard.records)
        answer: GetRecordsOutput = {"Records": page, "MillisBehindLatest": 0 if at_end else 1000}
        if shard.ending is None or not at_end or self.closed_returns_iterator:
            answer["NextShardIterator"] = self._iterators.issue(found.stream, found.shard_id, end)
        return answer


def _fan_out_start(shard: _FakeShard, position: StartingPosition) -> int:
    """Index in `shard.records` of the first record a StartingPosition points at."""
    return start_index(
        shard.records,
        position["Type"],
        sequence_of=_sequence,
        sequence=position.get("SequenceNumber"),
        arrival_of=_arrival,
        timestamp=position.get("Timestamp"),
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

    async def __anext__(self) -> ShardEventStreamItem:
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
        page = [
            KinesisRecord(**r)
            for r in shard.records[self._index : self._index + owner.event_records]
        ]
        self._index += len(page)
        at_tip = self._index >= len(shard.records)
        event: SubscribeToShardEvent = {
            "Records": page,
            "MillisBehindLatest": 0 if at_tip else 1000,
        }
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


class FakeKinesisFanOutClient(FailureInjection):
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
        super().__init__()
        self.kinesis = kinesis
        self.region = region
        self.account = account
        self.event_records = event_records
        self.events_per_subscription = events_per_subscription
        self.idle_event_seconds = idle_event_seconds
        self.consumers: dict[str, str] = {}
        """Stream name by consumer ARN."""
        self.subscriptions: list[tuple[str, StartingPosition]] = []
        """(shard id, StartingPosition) of every SubscribeToShard call, failed ones too."""
        self._open: dict[tuple[str, str], FakeEventStream] = {}
        self._stream_failures: list[str] = []

    # -- test side -------------------------------------------------------------------------

    def stream_arn(self, name: str) -> str:
        return f"arn:aws:kinesis:{self.region}:{self.account}:stream/{name}"

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

    def child_shards(self, shard_id: str) -> list[ChildShard]:
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

    # -- the client calls (esm.aws.kinesis.KinesisFanOutClient) ----------------------------

    async def register_stream_consumer(
        self, *, StreamARN: str, ConsumerName: str
    ) -> dict[str, Any]:
        """For tests to create a consumer (esm itself never does)."""
        stream_arn, name = StreamARN, ConsumerName
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

    async def subscribe_to_shard(
        self, *, ConsumerARN: str, ShardId: str, StartingPosition: StartingPosition
    ) -> SubscribeToShardOutput:
        consumer_arn, shard_id, position = ConsumerARN, ShardId, StartingPosition
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

    # The polling calls, delegated: one object is the whole client.
    async def list_shards(
        self, *, StreamName: str | None = None, NextToken: str | None = None
    ) -> ListShardsOutput:
        return await self.kinesis.list_shards(StreamName=StreamName, NextToken=NextToken)

    async def get_shard_iterator(
        self,
        *,
        StreamName: str,
        ShardId: str,
        ShardIteratorType: str,
        StartingSequenceNumber: str | None = None,
        Timestamp: datetime | float | None = None,
    ) -> GetShardIteratorOutput:
        return await self.kinesis.get_shard_iterator(
            StreamName=StreamName,
            ShardId=ShardId,
            ShardIteratorType=ShardIteratorType,
            StartingSequenceNumber=StartingSequenceNumber,
            Timestamp=Timestamp,
        )

    async def get_records(self, *, ShardIterator: str, Limit: int = 10_000) -> GetRecordsOutput:
        return await self.kinesis.get_records(ShardIterator=ShardIterator, Limit=Limit)
