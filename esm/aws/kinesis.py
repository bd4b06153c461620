"""The Kinesis Data Streams calls esm makes, typed: ListShards, GetShardIterator, GetRecords
and, for enhanced fan-out, SubscribeToShard. Shapes hold the members esm reads or sends."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, NotRequired, Protocol, TypedDict, cast

from esm.aws.wire import register_wire_records

__all__ = [
    "GetRecordsOutput",
    "GetShardIteratorInput",
    "GetShardIteratorOutput",
    "KinesisClient",
    "KinesisFanOutClient",
    "KinesisRecord",
    "ListShardsOutput",
    "Shard",
    "ShardEventStream",
    "StartingPosition",
    "SubscribeToShardEvent",
    "SubscribeToShardOutput",
    "close_event_stream",
    "enable_wire_records",
    "kinesis_client",
]


class SequenceNumberRange(TypedDict):
    StartingSequenceNumber: str
    EndingSequenceNumber: NotRequired[str]


class HashKeyRange(TypedDict):
    StartingHashKey: str
    EndingHashKey: str


class Shard(TypedDict):
    ShardId: str
    ParentShardId: NotRequired[str]
    AdjacentParentShardId: NotRequired[str]
    SequenceNumberRange: SequenceNumberRange
    HashKeyRange: NotRequired[HashKeyRange]


class ListShardsOutput(TypedDict):
    Shards: list[Shard]
    NextToken: NotRequired[str]


class GetShardIteratorInput(TypedDict):
    StreamName: str
    ShardId: str
    ShardIteratorType: str
    StartingSequenceNumber: NotRequired[str]
    Timestamp: NotRequired[datetime | float]


class GetShardIteratorOutput(TypedDict):
    ShardIterator: str


class KinesisRecord(TypedDict):
    """As botocore parses it, Data is bytes and the arrival time a datetime; in the wire form
    (`esm.aws.wire`), Data is base64 text and the arrival time epoch seconds."""

    SequenceNumber: str
    ApproximateArrivalTimestamp: datetime | float
    Data: bytes | str
    PartitionKey: str
    EncryptionType: NotRequired[str]


class ChildShard(TypedDict):
    ShardId: str
    ParentShards: list[str]
    HashKeyRange: HashKeyRange


class GetRecordsOutput(TypedDict):
    Records: list[KinesisRecord]
    NextShardIterator: NotRequired[str]
    MillisBehindLatest: NotRequired[int]
    ChildShards: NotRequired[list[ChildShard]]
    EsmWireForm: NotRequired[bool]
    """Set (`esm.aws.wire.WIRE_FORM`) when the records are in their wire form."""


class KinesisClient(Protocol):
    """The Kinesis calls a polling reader makes; an aiobotocore "kinesis" client has them."""

    async def list_shards(
        self, *, StreamName: str = ..., NextToken: str = ...
    ) -> ListShardsOutput: ...

    async def get_shard_iterator(
        self,
        *,
        StreamName: str,
        ShardId: str,
        ShardIteratorType: str,
        StartingSequenceNumber: str = ...,
        Timestamp: datetime | float = ...,
    ) -> GetShardIteratorOutput: ...

    async def get_records(self, *, ShardIterator: str, Limit: int) -> GetRecordsOutput: ...


class StartingPosition(TypedDict):
    Type: str
    SequenceNumber: NotRequired[str]
    Timestamp: NotRequired[datetime | float]


class SubscribeToShardEvent(TypedDict):
    Records: list[KinesisRecord]
    ContinuationSequenceNumber: NotRequired[str]
    MillisBehindLatest: NotRequired[int]
    ChildShards: NotRequired[list[ChildShard]]


class ShardEventStreamItem(TypedDict, total=False):
    """One item of the event stream: a SubscribeToShardEvent (errors are raised instead)."""

    SubscribeToShardEvent: SubscribeToShardEvent


class ShardEventStream(Protocol):
    """A SubscribeToShard's EventStream: the pushed events; `close()` releases the connection."""

    def __aiter__(self) -> AsyncIterator[ShardEventStreamItem]: ...

    def close(self) -> None: ...


class SubscribeToShardOutput(TypedDict):
    EventStream: ShardEventStream


class KinesisFanOutClient(KinesisClient, Protocol):
    """The Kinesis calls an enhanced fan-out reader makes: the polling calls (to list shards)
    and SubscribeToShard."""

    async def subscribe_to_shard(
        self, *, ConsumerARN: str, ShardId: str, StartingPosition: StartingPosition
    ) -> SubscribeToShardOutput: ...


async def close_event_stream(
    stream: ShardEventStream, events: AsyncIterator[ShardEventStreamItem]
) -> None:
    """Release a SubscribeToShard's connection; never raises, for the subscription is over
    either way and a connection that fails to close is dropped by its pool."""
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
    with contextlib.suppress(Exception):
        stream.close()


def kinesis_client(client: Any) -> KinesisFanOutClient:
    """An aiobotocore "kinesis" client as the typed client esm uses.

    aiobotocore's clients are generated at run time and carry no types, so mypy cannot check
    them against the Protocol; this is the one place that says they fit. The calls and shapes
    above follow botocore's service model, and the integration tests run them against moto.
    """
    return cast(KinesisFanOutClient, client)


def enable_wire_records(client: Any) -> None:
    """Make `client` (an aiobotocore "kinesis" client) answer GetRecords in wire form."""
    register_wire_records(client, "before-parse.kinesis.GetRecords")
