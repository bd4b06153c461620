"""A shard-based stream at the engine's own seam: `FakeStream` implements `StreamAPI` with
records already in esm's shape, so engine tests need no client, wire format or conversion.

Shards have lineage (parents, a closing sequence number), records are appended by tests,
and an iterator is just the position after which to read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

from esm.errors import ResourceNotFound
from esm.model import IteratorType, Record, RecordsPage, ShardInfo, StartPosition

__all__ = ["FakeStream"]


@dataclass
class _Shard:
    info: ShardInfo
    records: list[Record] = field(default_factory=list)


class FakeStream:
    """An in-memory stream: `StreamAPI` for the engine, `add_shard`/`put`/`close` for tests."""

    def __init__(self, stream_arn: str = "arn:aws:kinesis:us-east-1:123456789012:stream/s") -> None:
        self._arn = stream_arn
        self._shards: dict[str, _Shard] = {}
        self._sequence = 0
        self.reads: list[str] = []
        """The shard of every GetRecords, in order."""

    # -- the test's side -------------------------------------------------------------------

    def add_shard(self, shard_id: str, *parents: str) -> None:
        self._shards[shard_id] = _Shard(ShardInfo(shard_id, tuple(parents)))

    def put(self, shard_id: str, key: str = "key", arrival: float = 1_700_000_000.0) -> Record:
        """Append a record to an open shard and return it."""
        shard = self._shards[shard_id]
        assert not shard.info.closed, f"{shard_id} is closed"
        self._sequence += 1
        record = Record(
            str(self._sequence), self._sequence, key, arrival, 20, {"seq": self._sequence}
        )
        shard.records.append(record)
        return record

    def close(self, shard_id: str) -> None:
        """Close a shard after its last record (a split or merge does this)."""
        shard = self._shards[shard_id]
        last = shard.records[-1].sequence if shard.records else str(self._sequence)
        shard.info = ShardInfo(shard_id, shard.info.parent_ids, ending_sequence=last)

    # -- StreamAPI -------------------------------------------------------------------------

    @property
    def stream_arn(self) -> str:
        return self._arn

    async def list_shards(self) -> list[ShardInfo]:
        await anyio.lowlevel.checkpoint()
        return [shard.info for shard in self._shards.values()]

    async def get_shard_iterator(self, shard_id: str, position: StartPosition) -> str:
        await anyio.lowlevel.checkpoint()
        shard = self._shards.get(shard_id)
        if shard is None:
            raise ResourceNotFound(f"no shard {shard_id}")
        if position.type is IteratorType.AFTER_SEQUENCE_NUMBER:
            assert position.sequence is not None
            return f"{shard_id}/{position.sequence}"
        if position.type is IteratorType.AT_SEQUENCE_NUMBER:
            assert position.sequence is not None
            return f"{shard_id}/{int(position.sequence) - 1}"
        if position.type is IteratorType.LATEST:
            tip = shard.records[-1].sequence if shard.records else "0"
            return f"{shard_id}/{tip}"
        return f"{shard_id}/0"

    async def get_records(self, shard_id: str, iterator: str, limit: int) -> RecordsPage:
        await anyio.lowlevel.checkpoint()
        self.reads.append(shard_id)
        shard = self._shards[shard_id]
        after = int(iterator.rsplit("/", 1)[1])
        records = [r for r in shard.records if r.order > after][:limit]
        last = records[-1].order if records else after
        ended = shard.info.closed and not [r for r in shard.records if r.order > last]
        behind = 0 if not records else None
        return RecordsPage(records, None if ended else f"{shard_id}/{last}", millis_behind=behind)
