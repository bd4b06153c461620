"""A given-up batch read back from its stream: from its first sequence number
(GetShardIterator AT_SEQUENCE_NUMBER) to its last, while the stream still keeps them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import anyio

from esm.errors import (
    DataTrimmed,
    ExpiredIterator,
    ResourceNotFound,
    SourceError,
    TransientSourceError,
)
from esm.model import IteratorType, Record, RecordsPage, StartPosition
from esm.positions import container_sequence
from esm.protocols import StreamAPI

__all__ = ["FetchedRange", "fetch_range"]


def _position(record: Record) -> int:
    """The record's Kinesis sequence number (a KPL user record's container's)."""
    return int(container_sequence(record.sequence))


def _whole(page: RecordsPage, last: Record) -> bool:
    # Every user record of a container comes in one page: the page's last record ends it.
    return page.records[-1] is last


# Kinesis answers empty pages while an iterator catches up through sparse data; this many in
# a row, or one at the tip of the shard, ends the search.
_MAX_EMPTY_PAGES = 30
_EMPTY_PAGE_PAUSE_SECONDS = 0.2
# Transient failures (throttling, an unreachable endpoint) are retried this many times.
_MAX_RETRIES = 8


@dataclass(frozen=True, slots=True)
class FetchedRange:
    """The records of the range the stream still holds, and why some may be missing."""

    records: list[Record]
    expired: str | None = None
    """Why the range's first record was not found (trimmed, the shard gone); None when it was."""


async def fetch_range(
    api: StreamAPI,
    shard_id: str,
    start: str,
    end: str,
    *,
    limit: int,
    retry_delay: Callable[[int], float],
) -> FetchedRange:
    """Every record of `shard_id` from sequence `start` to `end`, inclusive, as the
    mapping's source converts them (the same event entries the function was sent).

    :raises SourceError: the stream cannot be read (access denied, unreachable after retries).
    """
    return await _RangeReader(api, shard_id, int(start), int(end), limit, retry_delay).read(start)


@dataclass
class _RangeReader:
    api: StreamAPI
    shard_id: str
    first: int
    last: int
    limit: int
    retry_delay: Callable[[int], float]

    async def read(self, start: str) -> FetchedRange:
        found: list[Record] = []
        position = StartPosition(IteratorType.AT_SEQUENCE_NUMBER, sequence=start)
        iterator: str | None = None
        empty = 0
        while True:
            page = await self._page(position, iterator, found)
            if isinstance(page, FetchedRange):
                return page
            for record in page.records:
                at = _position(record)
                if at > self.last:
                    return self._done(found)
                if at >= self.first:
                    found.append(record)
            if found and _position(found[-1]) == self.last and _whole(page, found[-1]):
                return self._done(found)
            if page.records:
                empty = 0
                position = StartPosition(
                    IteratorType.AFTER_SEQUENCE_NUMBER, sequence=page.records[-1].sequence
                )
            else:
                empty += 1
                if page.millis_behind == 0 or empty >= _MAX_EMPTY_PAGES:
                    return self._done(found)
                # Read on at a poller's pace: GetRecords allows 5 calls a second a shard.
                await anyio.sleep(_EMPTY_PAGE_PAUSE_SECONDS)
            iterator = page.next_iterator
            if iterator is None:  # a closed shard, read to its end
                return self._done(found)

    async def _page(
        self, position: StartPosition, iterator: str | None, found: list[Record]
    ) -> RecordsPage | FetchedRange:
        """The next page (from `iterator`, else a new one at `position`); or the range as
        far as it goes when the stream no longer holds the rest."""
        retries = 0
        while True:
            try:
                if iterator is None:
                    iterator = await self.api.get_shard_iterator(self.shard_id, position)
                return await self.api.get_records(self.shard_id, iterator, self.limit)
            except (DataTrimmed, ResourceNotFound) as gone:
                # Past the stream's retention, or the shard itself is gone.
                return FetchedRange(found, None if found else str(gone))
            except ExpiredIterator:
                iterator = None
            except TransientSourceError:
                retries += 1
                if retries > _MAX_RETRIES:
                    raise
                await anyio.sleep(self.retry_delay(retries))
            except SourceError as refused:
                if found or refused.retriable:
                    raise
                # An AT_SEQUENCE_NUMBER the shard no longer holds (InvalidArgumentException).
                return FetchedRange(found, str(refused))

    def _done(self, found: list[Record]) -> FetchedRange:
        if found and _position(found[0]) == self.first:
            return FetchedRange(found)
        return FetchedRange(found, "the batch's first record is no longer in the stream")
