"""The DynamoDB Streams calls esm makes, typed: DescribeStream, GetShardIterator, GetRecords.
Shapes hold the members esm reads or sends."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NotRequired, Protocol, TypedDict, cast

from esm.aws.wire import register_wire_records

__all__ = [
    "DescribeStreamInput",
    "DescribeStreamOutput",
    "DynamoDBStreamsClient",
    "GetRecordsOutput",
    "GetShardIteratorInput",
    "GetShardIteratorOutput",
    "StreamRecord",
    "dynamodb_streams_client",
    "enable_wire_records",
]

AttributeValue = dict[str, Any]
"""DynamoDB JSON, `{"S": "text"}`: binary values are bytes as botocore parses them and base64
text in the wire form."""


class SequenceNumberRange(TypedDict):
    StartingSequenceNumber: str
    EndingSequenceNumber: NotRequired[str]


class StreamShard(TypedDict):
    ShardId: str
    ParentShardId: NotRequired[str]
    SequenceNumberRange: SequenceNumberRange


class KeySchemaElement(TypedDict):
    AttributeName: str
    KeyType: str


class StreamDescription(TypedDict):
    StreamArn: str
    Shards: list[StreamShard]
    LastEvaluatedShardId: NotRequired[str]
    StreamLabel: NotRequired[str]
    StreamStatus: NotRequired[str]
    StreamViewType: NotRequired[str]
    TableName: NotRequired[str]
    KeySchema: NotRequired[list[KeySchemaElement]]


class DescribeStreamInput(TypedDict):
    StreamArn: str
    Limit: NotRequired[int]
    ExclusiveStartShardId: NotRequired[str]


class DescribeStreamOutput(TypedDict):
    StreamDescription: StreamDescription


class GetShardIteratorInput(TypedDict):
    StreamArn: str
    ShardId: str
    ShardIteratorType: str
    SequenceNumber: NotRequired[str]


class GetShardIteratorOutput(TypedDict):
    ShardIterator: str


class StreamRecordChange(TypedDict):
    """The `dynamodb` member of a record. ApproximateCreationDateTime is a datetime as botocore
    parses it and epoch seconds in the wire form."""

    Keys: dict[str, AttributeValue]
    SequenceNumber: str
    SizeBytes: int
    StreamViewType: str
    ApproximateCreationDateTime: NotRequired[datetime | float]
    NewImage: NotRequired[dict[str, AttributeValue]]
    OldImage: NotRequired[dict[str, AttributeValue]]


class UserIdentity(TypedDict):
    PrincipalId: str
    Type: str


class StreamRecord(TypedDict):
    eventID: str
    eventName: str
    eventVersion: str
    eventSource: str
    awsRegion: str
    dynamodb: StreamRecordChange
    userIdentity: NotRequired[UserIdentity]


class GetRecordsOutput(TypedDict):
    Records: list[StreamRecord]
    NextShardIterator: NotRequired[str]
    EsmWireForm: NotRequired[bool]
    """Set (`esm.aws.wire.WIRE_FORM`) when the records are in their wire form."""


class DynamoDBStreamsClient(Protocol):
    """The DynamoDB Streams calls esm makes; an aiobotocore "dynamodbstreams" client has them."""

    async def describe_stream(
        self, *, StreamArn: str, Limit: int = ..., ExclusiveStartShardId: str = ...
    ) -> DescribeStreamOutput: ...

    async def get_shard_iterator(
        self,
        *,
        StreamArn: str,
        ShardId: str,
        ShardIteratorType: str,
        SequenceNumber: str = ...,
    ) -> GetShardIteratorOutput: ...

    async def get_records(self, *, ShardIterator: str, Limit: int) -> GetRecordsOutput: ...


def dynamodb_streams_client(client: Any) -> DynamoDBStreamsClient:
    """An aiobotocore "dynamodbstreams" client as the typed client esm uses.

    aiobotocore's clients are generated at run time and carry no types, so mypy cannot check
    them against the Protocol; this is the one place that says they fit. The calls and shapes
    above follow botocore's service model, and the integration tests run them against moto.
    """
    return cast(DynamoDBStreamsClient, client)


def enable_wire_records(client: Any) -> None:
    """Make `client` (an aiobotocore "dynamodbstreams" client) answer GetRecords in wire form.

    Besides saving botocore's per-record work, the wire form is what the Lambda event needs:
    binary attributes stay base64 and ApproximateCreationDateTime stays epoch seconds.
    """
    register_wire_records(client, "before-parse.dynamodb-streams.GetRecords")
