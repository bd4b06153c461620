"""Kinesis Data Streams: the StreamAPI over a Kinesis client, and Kinesis records as events."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from esm.events import create_record, kinesis_entry
from esm.model import IteratorType, Record, RecordsPage, ShardInfo, StartPosition
from esm.sources._aws import WIRE_FORM, keep_wire_records, translate_error


class KinesisClient(Protocol):
    """The Kinesis calls esm makes; an aiobotocore client satisfies it."""

    async def list_shards(self, **kwargs: Any) -> Mapping[str, Any]: ...

    async def get_shard_iterator(self, **kwargs: Any) -> Mapping[str, Any]: ...

    async def get_records(self, **kwargs: Any) -> Mapping[str, Any]: ...


def enable_wire_records(client: Any) -> None:
    """Make `client` (an aiobotocore Kinesis client) answer GetRecords in wire form."""
    client.meta.events.register(
        "before-parse.kinesis.GetRecords", keep_wire_records, unique_id="esm-wire-records"
    )


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
        kwargs: dict[str, Any] = {"StreamName": self.stream_name}
        while True:
            try:
                answer = await self.client.list_shards(**kwargs)
            except Exception as exc:
                raise translate_error(exc, "ListShards") from exc
            for raw in answer.get("Shards", []):
                shards.append(_shard_info(raw))
            token = answer.get("NextToken")
            if not token:
                return shards
            # ListShards takes either the stream or the token, never both.
            kwargs = {"NextToken": token}

    async def get_shard_iterator(self, shard_id: str, position: StartPosition) -> str:
        kwargs: dict[str, Any] = {
            "StreamName": self.stream_name,
            "ShardId": shard_id,
            "ShardIteratorType": position.type.value,
        }
        if position.type in (IteratorType.AFTER_SEQUENCE_NUMBER, IteratorType.AT_SEQUENCE_NUMBER):
            kwargs["StartingSequenceNumber"] = position.sequence
        elif position.type is IteratorType.AT_TIMESTAMP:
            kwargs["Timestamp"] = position.timestamp
        try:
            answer = await self.client.get_shard_iterator(**kwargs)
        except Exception as exc:
            raise translate_error(exc, "GetShardIterator") from exc
        return str(answer["ShardIterator"])

    async def get_records(self, shard_id: str, iterator: str, limit: int) -> RecordsPage:
        try:
            answer = await self.client.get_records(ShardIterator=iterator, Limit=limit)
        except Exception as exc:
            raise translate_error(exc, "GetRecords") from exc
        create = self.records.from_wire if answer.get(WIRE_FORM) else self.records.from_api
        return RecordsPage(
            records=[create(shard_id, raw) for raw in answer.get("Records", ())],
            next_iterator=answer.get("NextShardIterator"),
            millis_behind=answer.get("MillisBehindLatest"),
        )


def _shard_info(raw: Mapping[str, Any]) -> ShardInfo:
    parents = tuple(
        p for p in (raw.get("ParentShardId"), raw.get("AdjacentParentShardId")) if p is not None
    )
    seq_range = raw.get("SequenceNumberRange") or {}
    return ShardInfo(
        shard_id=raw["ShardId"],
        parent_ids=parents,
        starting_sequence=seq_range.get("StartingSequenceNumber"),
        ending_sequence=seq_range.get("EndingSequenceNumber"),
    )
