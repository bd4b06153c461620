"""DynamoDB Streams: the StreamAPI over a DynamoDB Streams client, and stream records as events."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import orjson
import structlog

from esm.aws.dynamodb_streams import (
    DescribeStreamInput,
    DynamoDBStreamsClient,
    GetShardIteratorInput,
    StreamShard,
    enable_wire_records,
)
from esm.aws.errors import aws_call
from esm.aws.lean import LeanJsonCalls
from esm.aws.wire import WIRE_FORM
from esm.errors import DataTrimmed, SourceError
from esm.events import create_record, dynamodb_entry
from esm.model import IteratorType, Record, RecordsPage, ShardInfo, StartPosition

# Re-exported: the daemon enables the wire form from here.
__all__ = [
    "MAX_RECORDS_PER_CALL",
    "POLL_INTERVAL_SECONDS",
    "DynamoDBRecordFactory",
    "DynamoDBStreamAPI",
    "DynamoDBStreamsClient",
    "enable_wire_records",
]

POLL_INTERVAL_SECONDS = 0.25
"""Seconds between GetRecords calls on a DynamoDB shard: Lambda polls each one 4 times a second.

Pass it as both `StreamSettings.poll_interval` and `busy_poll_interval`: a DynamoDB shard
serves at most 2 concurrent readers, so esm never reads one faster than Lambda does.
"""
MAX_RECORDS_PER_CALL = 1000
"""GetRecords' Limit ceiling on DynamoDB Streams (Kinesis allows 10,000); pass it as
`StreamSettings.records_limit` so that a full page is recognised as "more is waiting"."""
# DescribeStream returns at most 100 shards a page.
_DESCRIBE_PAGE_LIMIT = 100
_SEQUENCE_TYPES = (IteratorType.AFTER_SEQUENCE_NUMBER, IteratorType.AT_SEQUENCE_NUMBER)

log = structlog.get_logger("esm.dynamodb_streams")


class DynamoDBRecordFactory:
    """Turns GetRecords records of one stream into `Record`s carrying their Lambda event entry."""

    def __init__(
        self, stream_arn: str, region: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.stream_arn = stream_arn
        self.region = region
        self.clock = clock
        """Stands in for a missing ApproximateCreationDateTime, so records never look ancient."""

    def create(
        self,
        raw: Mapping[str, Any],
        created: float | None,
        keys: Mapping[str, Any],
        new_image: Mapping[str, Any] | None,
        old_image: Mapping[str, Any] | None,
    ) -> Record:
        change = raw["dynamodb"]
        sequence = str(change["SequenceNumber"])
        entry = dynamodb_entry(
            raw=raw,
            change=change,
            created=created,
            keys=keys,
            new_image=new_image,
            old_image=old_image,
            stream_arn=self.stream_arn,
            region=self.region,
        )
        return create_record(
            sequence=sequence,
            order=int(sequence),
            # Records of one item share their key whatever order its attributes came in.
            key=orjson.dumps(keys, option=orjson.OPT_SORT_KEYS).decode(),
            arrival=self.clock() if created is None else created,
            entry=entry,
        )

    def from_wire(self, raw: Mapping[str, Any]) -> Record:
        """A record as DynamoDB Streams sends it: binary values in base64, time in epoch seconds."""
        change = raw["dynamodb"]
        created = change.get("ApproximateCreationDateTime")
        return self.create(
            raw,
            None if created is None else float(created),
            change["Keys"],
            change.get("NewImage"),
            change.get("OldImage"),
        )

    def from_api(self, raw: Mapping[str, Any]) -> Record:
        """A record as botocore parses it: binary values as bytes, the time as a datetime."""
        change = raw["dynamodb"]
        created = change.get("ApproximateCreationDateTime")
        if isinstance(created, datetime):
            created = created.timestamp()
        new_image, old_image = change.get("NewImage"), change.get("OldImage")
        return self.create(
            raw,
            None if created is None else float(created),
            _wire_item(change["Keys"]),
            None if new_image is None else _wire_item(new_image),
            None if old_image is None else _wire_item(old_image),
        )


def _wire_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item (or key) parsed by botocore, back in DynamoDB JSON: bytes become base64."""
    return {name: _wire_value(value) for name, value in item.items()}


def _wire_value(value: Mapping[str, Any]) -> Mapping[str, Any]:
    if "B" in value:
        return {"B": _base64(value["B"])}
    if "BS" in value:
        return {"BS": [_base64(v) for v in value["BS"]]}
    if "M" in value:
        return {"M": _wire_item(value["M"])}
    if "L" in value:
        return {"L": [_wire_value(v) for v in value["L"]]}
    return value


def _base64(value: bytes | str) -> str:
    return base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value


class DynamoDBStreamAPI:
    """`StreamAPI` for one DynamoDB stream, over an aiobotocore (or compatible) client."""

    def __init__(
        self,
        client: DynamoDBStreamsClient,
        *,
        stream_arn: str,
        records: DynamoDBRecordFactory,
        lean: LeanJsonCalls | None = None,
    ) -> None:
        self.client = client
        self._stream_arn = stream_arn
        self.records = records
        self.lean = lean
        """GetRecords on the lean path (`esm.aws.lean`); None: through the client."""

    @property
    def stream_arn(self) -> str:
        return self._stream_arn

    async def list_shards(self) -> list[ShardInfo]:
        shards: list[ShardInfo] = []
        request: DescribeStreamInput = {
            "StreamArn": self._stream_arn,
            "Limit": _DESCRIBE_PAGE_LIMIT,
        }
        while True:
            with aws_call("DescribeStream"):
                answer = await self.client.describe_stream(**request)
            description = answer["StreamDescription"]
            shards.extend(_shard_info(raw) for raw in description.get("Shards", ()))
            last = description.get("LastEvaluatedShardId")
            # A service that repeats its cursor would otherwise be paged forever.
            if not last or last == request.get("ExclusiveStartShardId"):
                return shards
            request["ExclusiveStartShardId"] = last

    async def get_shard_iterator(self, shard_id: str, position: StartPosition) -> str:
        if position.type is IteratorType.AT_TIMESTAMP:
            raise SourceError(
                "GetShardIterator: a DynamoDB stream mapping starts at TRIM_HORIZON or LATEST; "
                "AT_TIMESTAMP is a Kinesis-only StartingPosition in Lambda"
            )
        request: GetShardIteratorInput = {
            "StreamArn": self._stream_arn,
            "ShardId": shard_id,
            "ShardIteratorType": position.type.value,
        }
        if position.type in _SEQUENCE_TYPES and position.sequence is not None:
            request["SequenceNumber"] = position.sequence
        try:
            with aws_call("GetShardIterator"):
                answer = await self.client.get_shard_iterator(**request)
        except DataTrimmed:
            if position.type not in _SEQUENCE_TYPES:
                raise
            # The records after `position` are older than the stream's 24-hour retention
            # and gone; what remains begins at the trim horizon, so reading resumes there.
            log.warning(
                "records after the checkpoint were trimmed, resuming at TRIM_HORIZON",
                stream=self._stream_arn,
                shard=shard_id,
                after=position.sequence,
            )
            return await self.get_shard_iterator(shard_id, StartPosition(IteratorType.TRIM_HORIZON))
        return answer["ShardIterator"]

    async def get_records(self, shard_id: str, iterator: str, limit: int) -> RecordsPage:
        # An iterator before the trim horizon raises DataTrimmed, an ExpiredIterator: the
        # runner asks for a new iterator after its last record, and that request falls back
        # to TRIM_HORIZON above.
        count = max(1, min(limit, MAX_RECORDS_PER_CALL))
        answer: Mapping[str, Any]
        with aws_call("GetRecords"):
            if self.lean is not None:
                # The answer as it travels (the wire form), parsed by orjson.
                params = {"ShardIterator": iterator, "Limit": count}
                answer = await self.lean.call("GetRecords", params)
                wire = True
            else:
                answer = await self.client.get_records(ShardIterator=iterator, Limit=count)
                wire = bool(answer.get(WIRE_FORM))
        create = self.records.from_wire if wire else self.records.from_api
        # No MillisBehindLatest on DynamoDB Streams: the page says nothing about lag.
        return RecordsPage(
            records=[create(raw) for raw in answer.get("Records", ())],
            next_iterator=answer.get("NextShardIterator"),
        )


def _shard_info(raw: StreamShard) -> ShardInfo:
    parent = raw.get("ParentShardId")
    seq_range = raw["SequenceNumberRange"]
    return ShardInfo(
        shard_id=raw["ShardId"],
        parent_ids=(parent,) if parent else (),
        starting_sequence=seq_range["StartingSequenceNumber"],
        ending_sequence=seq_range.get("EndingSequenceNumber"),
    )
