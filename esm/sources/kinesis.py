"""Kinesis Data Streams: the StreamAPI over a Kinesis client, and Kinesis records as events."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import orjson

from esm.aws.errors import aws_call
from esm.aws.kinesis import (
    GetShardIteratorInput,
    KinesisClient,
    ListShardsOutput,
    Shard,
    enable_wire_records,
)
from esm.aws.lean import LeanJsonCalls, parse_wire
from esm.aws.wire import WIRE_FORM
from esm.events import create_record, kinesis_entry
from esm.model import IteratorType, Record, RecordsPage, ShardInfo, StartPosition
from esm.positions import split_sub_sequence
from esm.sources.kpl import (
    NotAContainer,
    UserRecord,
    deaggregate,
    user_sequence,
)

# Re-exported: the daemon and the benchmarks enable the wire form from here.
__all__ = [
    "KinesisClient",
    "KinesisRecordFactory",
    "KinesisStreamAPI",
    "enable_wire_records",
    "resume_position",
    "skip_delivered",
]

# base64 of a KPL container's magic prefix (F3 89 9A C2): its text always starts so.
_CONTAINER_B64: Final = "84maw"
# Equal to no arrival time, so a page's first record always has its own worked out.
_NO_STAMP: Final = object()


class KinesisRecordFactory:
    """Turns GetRecords records of one stream into `Record`s carrying their Lambda event entry;
    with `deaggregate`, KPL containers into one `Record` per user record (`esm.sources.kpl`)."""

    def __init__(
        self,
        *,
        stream_arn: str,
        region: str,
        identity_arn: str,
        deaggregate: bool = False,
        on_broken: Callable[[str, str], None] | None = None,
    ) -> None:
        self.stream_arn = stream_arn
        self.region = region
        self.identity_arn = identity_arn
        self.deaggregate = deaggregate
        self.on_broken = on_broken
        """Told of a container that does not parse (sequence, why): it is delivered whole."""
        # Orders in read order: cheaper than parsing 56-digit sequence numbers, and what the
        # settle tracker needs (a key per record, increasing as records are read).
        self._orders = itertools.count()
        # An entry's encoded size but for its variable parts (and with the comma that
        # separates it from the next): the empty strings' quotes stay, the 0.0 goes.
        template = kinesis_entry(
            shard_id="",
            sequence_number="",
            partition_key="",
            data_b64="",
            arrival=0.0,
            stream_arn=stream_arn,
            region=region,
            identity_arn=identity_arn,
        )
        self._fixed_size = len(orjson.dumps(template)) + 1 - len(b"0.0") - 2 * len(b'""')
        self._shard_sizes: dict[str, int] = {}

    def create(
        self, shard_id: str, sequence: str, partition_key: str, data_b64: str, arrival: float
    ) -> Record:
        """The record and its event entry, as `esm.events.kinesis_entry` shapes it.

        This is the read path of every Kinesis record, so the entry is built here in one
        literal rather than through `kinesis_entry`'s keywords, and its size is added up
        from its parts rather than by encoding it (tests/unit/test_kinesis_records.py holds
        both to `kinesis_entry` and `orjson.dumps`).
        """
        rounded = to_millis(arrival)
        entry = {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": partition_key,
                "sequenceNumber": sequence,
                "data": data_b64,
                "approximateArrivalTimestamp": rounded,
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"{shard_id}:{sequence}",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": self.identity_arn,
            "awsRegion": self.region,
            "eventSourceARN": self.stream_arn,
        }
        size = (
            self._fixed_size
            + self._shard_size(shard_id)
            # In sequenceNumber and in eventID: digits, which need no escapes.
            + 2 * len(sequence)
            + len(orjson.dumps(partition_key))
            # Encoding the strings alone is exact (escapes included) and cheap: orjson
            # measures 1 KB of base64 in a fifth of a microsecond.
            + len(orjson.dumps(data_b64))
            + len(orjson.dumps(rounded))
        )
        return Record(sequence, next(self._orders), partition_key, arrival, size, entry)

    def _shard_size(self, shard_id: str) -> int:
        size = self._shard_sizes.get(shard_id)
        if size is None:
            size = self._shard_sizes[shard_id] = len(orjson.dumps(shard_id)) - 2
        return size

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

    def page(
        self,
        shard_id: str,
        raws: Iterable[Mapping[str, Any]],
        wire: bool,
        *,
        unescaped: bool = False,
    ) -> list[Record]:
        """A page's records, in order; de-aggregated when the mapping asks for it.

        `unescaped`: the page came in wire form from a body without a backslash, so none of
        its strings holds a character that JSON escapes (see `_wire_page`).
        """
        raws = raws if isinstance(raws, Sequence) else list(raws)
        if not self.deaggregate:
            if wire:
                return self._wire_page(shard_id, raws, unescaped)
            return [self.from_api(shard_id, raw) for raw in raws]
        create = self.from_wire if wire else self.from_api
        if wire and not any(raw["Data"].startswith(_CONTAINER_B64) for raw in raws):
            # A page without a container (a producer that does not aggregate): as if off.
            return self._wire_page(shard_id, raws, unescaped)
        records: list[Record] = []
        for raw in raws:
            data = raw["Data"]
            text = data if isinstance(data, str) else None
            # A container's base64 always starts so: plain records pass at a prefix check.
            if text is not None and not text.startswith(_CONTAINER_B64):
                records.append(create(shard_id, raw))
                continue
            users = self._users(raw, base64.b64decode(text) if text is not None else data)
            if users is None:
                records.append(create(shard_id, raw))
            else:
                records.extend(self._user_records(shard_id, raw, users))
        return records

    def _wire_page(
        self, shard_id: str, raws: Sequence[Mapping[str, Any]], unescaped: bool
    ) -> list[Record]:
        try:
            return self._wire_loop(shard_id, raws, unescaped)
        except AttributeError:
            # A key or data that is not a string (no Kinesis answers so, an emulator might):
            # record by record, sized by encoding, as `create` takes anything JSON holds.
            return [self.from_wire(shard_id, raw) for raw in raws]

    def _wire_loop(
        self, shard_id: str, raws: Sequence[Mapping[str, Any]], unescaped: bool
    ) -> list[Record]:
        """`from_wire` for every record of a page, in one loop: the read path of a busy shard.

        The same records as `create` makes (tests/unit/test_kinesis_records.py holds the two
        together), for less: the calls per record are inlined; records that arrived in the
        same millisecond, as a busy shard's do, share one rounding and sizing of their
        arrival time; and in a page without escapes an ASCII string's encoded size is its
        length and its quotes (orjson escapes only quotes, backslashes and control
        characters, which in a JSON body without a backslash no string can hold), which
        spares encoding 1 KB of base64 to measure it.
        """
        dumps = orjson.dumps
        orders = self._orders
        fixed = self._fixed_size + self._shard_size(shard_id)
        identity_arn, region, stream_arn = self.identity_arn, self.region, self.stream_arn
        eventid_prefix = f"{shard_id}:"
        last_stamp: object = _NO_STAMP
        arrival = rounded = 0.0
        stamp_size = 0
        records: list[Record] = []
        append = records.append
        for raw in raws:
            sequence = raw["SequenceNumber"]
            key = raw["PartitionKey"]
            data = raw["Data"]
            stamp = raw.get("ApproximateArrivalTimestamp")
            if stamp != last_stamp:
                last_stamp = stamp
                arrival = float(stamp or 0.0)
                rounded = to_millis(arrival)
                stamp_size = len(dumps(rounded))
            entry = {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": key,
                    "sequenceNumber": sequence,
                    "data": data,
                    "approximateArrivalTimestamp": rounded,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": eventid_prefix + sequence,
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": identity_arn,
                "awsRegion": region,
                "eventSourceARN": stream_arn,
            }
            size = (
                fixed
                + 2 * len(sequence)
                + stamp_size
                + (len(key) + 2 if unescaped and key.isascii() else len(dumps(key)))
                + (len(data) + 2 if unescaped and data.isascii() else len(dumps(data)))
            )
            append(Record(sequence, next(orders), key, arrival, size, entry))
        return records

    def _users(self, raw: Mapping[str, Any], data: bytes) -> list[UserRecord] | None:
        try:
            return deaggregate(data)
        except NotAContainer as broken:
            if self.on_broken is not None:
                self.on_broken(raw["SequenceNumber"], str(broken))
            return None

    def _user_records(
        self, shard_id: str, raw: Mapping[str, Any], users: list[UserRecord]
    ) -> list[Record]:
        sequence = raw["SequenceNumber"]
        stamp = raw.get("ApproximateArrivalTimestamp")
        arrival = stamp.timestamp() if isinstance(stamp, datetime) else float(stamp or 0.0)
        records = []
        for user in users:
            entry = kinesis_entry(
                shard_id=shard_id,
                sequence_number=sequence,
                partition_key=user.partition_key,
                data_b64=base64.b64encode(user.data).decode("ascii"),
                arrival=arrival,
                stream_arn=self.stream_arn,
                region=self.region,
                identity_arn=self.identity_arn,
            )
            # As the aws-kinesis-agg de-aggregator gives them to a function.
            kinesis = entry["kinesis"]
            kinesis["subSequenceNumber"] = user.sub_sequence
            kinesis["aggregated"] = True
            if user.explicit_hash_key is not None:
                kinesis["explicitHashKey"] = user.explicit_hash_key
            records.append(
                create_record(
                    sequence=user_sequence(sequence, user.sub_sequence),
                    order=next(self._orders),
                    key=user.partition_key,
                    arrival=arrival,
                    entry=entry,
                )
            )
        return records


def to_millis(epoch: float) -> float:
    """`round(epoch, 3)`, as Lambda writes the arrival time; at once for a time that is
    already whole milliseconds, as Kinesis sends them (round() costs half a microsecond).

    `n / 1000.0` is the float nearest to n thousandths (IEEE division is correctly
    rounded), so a time equal to it is one that round() gives back unchanged.
    """
    if round(epoch * 1000.0) / 1000.0 == epoch:
        return epoch
    return round(epoch, 3)


def resume_position(position: StartPosition) -> tuple[StartPosition, tuple[str, int] | None]:
    """Where to ask for an iterator, and which user records to skip on its first page: a
    checkpoint inside a KPL container (`SEQUENCE:SUB`) reads the container again and skips
    its user records up to SUB."""
    if position.type is not IteratorType.AFTER_SEQUENCE_NUMBER or position.sequence is None:
        return position, None
    container, sub = split_sub_sequence(position.sequence)
    if sub is None:
        return position, None
    return StartPosition(IteratorType.AT_SEQUENCE_NUMBER, container), (container, sub)


def skip_delivered(records: list[Record], skip: tuple[str, int] | None) -> list[Record]:
    """`records` without the user records of container `skip[0]` up to `skip[1]`."""
    if skip is None:
        return records
    container, sub = skip
    kept = []
    for record in records:
        record_container, record_sub = split_sub_sequence(record.sequence)
        if record_container == container and (record_sub is None or record_sub <= sub):
            continue
        kept.append(record)
    return kept


class KinesisStreamAPI:
    """`StreamAPI` for one Kinesis stream, over an aiobotocore (or compatible) client."""

    def __init__(
        self,
        client: KinesisClient,
        *,
        stream_name: str,
        stream_arn: str,
        records: KinesisRecordFactory,
        lean: LeanJsonCalls | None = None,
    ) -> None:
        self.client = client
        self.lean = lean
        """GetRecords on the lean path (`esm.aws.lean`); None: through the client."""
        self.stream_name = stream_name
        self._stream_arn = stream_arn
        self.records = records
        self._skips: dict[str, tuple[str, int]] = {}
        """User records to skip on an iterator's first page (see `resume_position`)."""

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
        position, skip = resume_position(position)
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
        iterator = answer["ShardIterator"]
        if skip is not None:
            self._skips[iterator] = skip
        return iterator

    async def get_records(self, shard_id: str, iterator: str, limit: int) -> RecordsPage:
        answer: Mapping[str, Any]
        with aws_call("GetRecords"):
            if self.lean is not None:
                # The answer as it travels (the wire form), parsed by orjson.
                params = {"ShardIterator": iterator, "Limit": limit}
                body = await self.lean.call_body("GetRecords", params)
                answer = parse_wire(body)
                wire = True
                # A memchr over the body (30 ns per 1 KB record) that lets the records be
                # sized without encoding their data (`KinesisRecordFactory._wire_page`).
                unescaped = b"\\" not in body
            else:
                answer = await self.client.get_records(ShardIterator=iterator, Limit=limit)
                wire = bool(answer.get(WIRE_FORM))
                unescaped = False
        records = self.records.page(
            shard_id, answer.get("Records") or (), wire, unescaped=unescaped
        )
        if self._skips:
            records = skip_delivered(records, self._skips.pop(iterator, None))
        return RecordsPage(
            records=records,
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
