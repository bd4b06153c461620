"""One SubscribeToShard of enhanced fan-out: where it starts, as an opaque iterator token,
and the event stream it reads, which must outlive a cancelled caller."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Sequence

import anyio

from esm.aws.kinesis import (
    ShardEventStream,
    ShardEventStreamItem,
    StartingPosition,
    close_event_stream,
)
from esm.errors import SourceError
from esm.model import IteratorType, Record, RecordsPage, StartPosition

__all__ = ["Subscription", "Wait", "position_token", "starting_position"]

_SEQUENCE_TYPES = (IteratorType.AFTER_SEQUENCE_NUMBER, IteratorType.AT_SEQUENCE_NUMBER)


def position_token(position: StartPosition) -> str:
    """The opaque iterator of a fan-out shard: where its subscription starts, as text."""
    if position.type in _SEQUENCE_TYPES:
        if position.sequence is None:
            raise ValueError(f"{position.type.value} needs a sequence number")
        return f"{position.type.value}:{position.sequence}"
    if position.type is IteratorType.AT_TIMESTAMP:
        if position.timestamp is None:
            raise ValueError("AT_TIMESTAMP needs a timestamp")
        return f"{position.type.value}:{position.timestamp!r}"
    return str(position.type.value)


def starting_position(token: str) -> StartingPosition:
    """SubscribeToShard's StartingPosition for a token made by `position_token`."""
    kind, _, value = token.partition(":")
    try:
        iterator_type = IteratorType(kind)
    except ValueError:
        raise SourceError(f"{token!r} is not an enhanced fan-out position") from None
    starting: StartingPosition = {"Type": iterator_type.value}
    if iterator_type in _SEQUENCE_TYPES:
        starting["SequenceNumber"] = value
    elif iterator_type is IteratorType.AT_TIMESTAMP:
        starting["Timestamp"] = float(value)
    return starting


class Wait(enum.Enum):
    TIMED_OUT = "timed out"
    """No event yet; the read stays pending for the next call."""
    ENDED = "ended"
    """The subscription is over (its lifetime ran out, or the shard ended)."""


async def _pull(events: AsyncIterator[ShardEventStreamItem]) -> ShardEventStreamItem | Wait:
    try:
        return await anext(events)
    except StopAsyncIteration:
        # A task must not end with StopAsyncIteration: say it with a value.
        return Wait.ENDED


class Subscription:
    """One open SubscribeToShard of one shard, and the position its next event continues."""

    def __init__(self, position: str, stream: ShardEventStream) -> None:
        self.position = position
        """The token whose records this subscription serves next."""
        self._stream = stream
        self._events = aiter(stream)
        self._pending: asyncio.Task[ShardEventStreamItem | Wait] | None = None
        self._held: list[Record] = []
        self._held_next: str | None = None
        self._held_millis: int | None = None

    @property
    def holding(self) -> bool:
        return bool(self._held)

    async def next_event(self, wait: float) -> ShardEventStreamItem | Wait:
        """The next pushed event, or why there is none.

        The read runs in a task of its own: cancelling a read of aiobotocore's event stream
        halfway would end the stream, whereas a task outlives the `wait` or a cancelled
        caller and hands its event to the next call.
        """
        if self._pending is None:
            self._pending = asyncio.get_running_loop().create_task(_pull(self._events))
        done, _ = await asyncio.wait((self._pending,), timeout=wait)
        if not done:
            return Wait.TIMED_OUT
        task, self._pending = self._pending, None
        return task.result()

    def hold(self, records: Sequence[Record], next_token: str | None, millis: int | None) -> None:
        """Keep an event's records until the runner takes them, `limit` at a time."""
        self._held = list(records)
        self._held_next = next_token
        self._held_millis = millis

    def take(self, limit: int) -> RecordsPage:
        limit = max(1, limit)
        if len(self._held) > limit:
            part, self._held = self._held[:limit], self._held[limit:]
            # The rest of the event is served to the call that asks for the position
            # right after this part, which is the next_iterator of this page.
            self.position = position_token(
                StartPosition(IteratorType.AFTER_SEQUENCE_NUMBER, part[-1].sequence)
            )
            return RecordsPage(part, next_iterator=self.position, millis_behind=self._held_millis)
        part, self._held = self._held, []
        if self._held_next is not None:
            self.position = self._held_next
        return RecordsPage(part, next_iterator=self._held_next, millis_behind=self._held_millis)

    async def close(self) -> None:
        """Stop the read in progress and release the connection; never raises."""
        with anyio.CancelScope(shield=True):
            task, self._pending = self._pending, None
            if task is not None:
                task.cancel()
                await asyncio.wait((task,))
                if not task.cancelled():
                    # Retrieved, so that asyncio does not report it as never retrieved.
                    task.exception()
            await close_event_stream(self._stream, self._events)
