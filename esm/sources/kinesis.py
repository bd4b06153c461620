"""Kinesis Data Streams: the StreamAPI over a Kinesis client, and Kinesis records as events."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from esm.aws.errors import aws_call
from esm.aws.kinesis import (
    GetShardIteratorInput,
    KinesisClient,
    ListShardsOutput,
    Shard,
    enable_wire_records,
)
from esm.aws.wire import WIRE_FORM
from esm.events import create_record, kinesis_entry
from esm.model import IteratorType, Record, RecordsPage, ShardInfo, StartPosition

# Re-exported: the daemon and the benchmarks enable the wire form from here.
__all__ = ["KinesisClient", "KinesisRecordFactory", "KinesisStreamAPI", "enable_wire_records"]


class KinesisRecordFactory:
    """Turns GetRecords records of one stream into `Record`s carrying their Lambda event entry."""

    def __init__(self, *, stream_arn: str, region: str, identity_arn: str) -> None:
        self.stream_arn = stream_arn
        self.region = region
        self.identity_arn = identity_arn

    def create(
        self, shard_id: str, sequence: str, partition_key: str, data_b64: str, arrival: float
    ) -> Record:
        entry = kinesis_entry(
            shard_id=shard_id,
            sequence_number=sequence,
            partition_key=partition_key,
            data_b64=data_b64,
            arrival=arrival,
            stream_arn=self.stream_arn,
            region=self.region,
            identity_arn=self.identity_arn,
        )
        return create_record(
            sequence=sequence, order=int(sequence), key=partition_key, arrival=arrival, entry=entry
        )

    def from_wire(self, shard_id: str, raw: Mapping[str, Any]) -> Record:
        """A record as Kinesis sends it: Data in base64, the arrival time in epoch seconds."""
        return self.create(
            shard_id,
            raw["SequenceNumber"],
            raw["PartitionKey"],
            raw["Data"],
            float(raw.get("ApproximateArrivalTimestamp") or 0.0),
        )

    def from_api(self, shard_id: str, raw: Mapping[str, Any]) -> Record:
        """A record as botocore parses it: Data is bytes, the arrival time a datetime."""
        arrival = raw.get("ApproximateArrivalTimestamp")
        return self.create(
            shard_id,
            raw["SequenceNumber"],
            raw["PartitionKey"],
            base64.b64encode(raw["Data"]).decode("ascii"),
            arrival.timestamp() if isinstance(arrival, datetime) else float(arrival or 0.0),
        )


class KinesisStreamAPI:
    """`StreamAPI` for one Kinesis stream, over an aiobotocore (or compatible) client."""

    def __init__(
        self,
        client: KinesisClient,
        *,
        stream_name: str,
        stream_arn: str,
        records: KinesisRecordFactory,
    ) -> None:
        self.client = client
        self.stream_name = stream_name
        self._stream_arn = stream_arn
        self.records = records

    @property
    def stream_arn(self) -> str:
        return self._stream_arn

    async def list_shards(self) -> list[ShardInfo]:
        shards: list[ShardInfo] = []
        token: str | None = None
        while True:
            answer: ListShardsOutput
            with aws_call("ListShards"):
                # ListShards takes either the stream or the token, never both.
                if token is None:
                    answer = await self.client.list_shards(StreamName=self.stream_name)
                else:
                    answer = await self.client.list_shards(NextToken=token)
            shards.extend(_shard_info(raw) for raw in answer.get("Shards", []))
            token = answer.get("NextToken")
            if not token:
                return shards

    async def get_shard_iterator(self, shard_id: str, position: StartPosition) -> str:
        request: GetShardIteratorInput = {
            "StreamName": self.stream_name,
            "ShardId": shard_id,
            "ShardIteratorType": position.type.value,
        }
        if position.type in (IteratorType.AFTER_SEQUENCE_NUMBER, IteratorType.AT_SEQUENCE_NUMBER):
            if position.sequence is not None:
                request["StartingSequenceNumber"] = position.sequence
        elif position.type is IteratorType.AT_TIMESTAMP and position.timestamp is not None:
            request["Timestamp"] = position.timestamp
        with aws_call("GetShardIterator"):
            answer = await self.client.get_shard_iterator(**request)
        return answer["ShardIterator"]

    async def get_records(self, shard_id: str, iterator: str, limit: int) -> RecordsPage:
        with aws_call("GetRecords"):
            answer = await self.client.get_records(ShardIterator=iterator, Limit=limit)
        create = self.records.from_wire if answer.get(WIRE_FORM) else self.records.from_api
        return RecordsPage(
            records=[create(shard_id, raw) for raw in answer.get("Records", ())],
            next_iterator=answer.get("NextShardIterator"),
            millis_behind=answer.get("MillisBehindLatest"),
        )


def _shard_info(raw: Shard) -> ShardInfo:
    parents = tuple(
        p for p in (raw.get("ParentShardId"), raw.get("AdjacentParentShardId")) if p is not None
    )
    seq_range = raw["SequenceNumberRange"]
    return ShardInfo(
        shard_id=raw["ShardId"],
        parent_ids=parents,
        starting_sequence=seq_range["StartingSequenceNumber"],
        ending_sequence=seq_range.get("EndingSequenceNumber"),
    )
