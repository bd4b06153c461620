"""Kinesis enhanced fan-out: the StreamAPI of a stream consumer ARN, over SubscribeToShard."""

from __future__ import annotations

import re
import time

import anyio
import structlog

from esm.aws.errors import aws_call
from esm.aws.kinesis import KinesisFanOutClient, SubscribeToShardEvent
from esm.errors import SourceError
from esm.model import IteratorType, RecordsPage, ShardInfo, StartPosition
from esm.sources.kinesis import (
    KinesisRecordFactory,
    KinesisStreamAPI,
    resume_position,
    skip_delivered,
)
from esm.sources.kinesis_subscription import Subscription, Wait, position_token, starting_position

__all__ = [
    "DEFAULT_EVENT_WAIT_SECONDS",
    "FAN_OUT_POLL_INTERVAL_SECONDS",
    "MIN_SUBSCRIBE_INTERVAL_SECONDS",
    "KinesisFanOutAPI",
    "parse_consumer_arn",
    "position_token",
]

FAN_OUT_POLL_INTERVAL_SECONDS = 0.0
"""StreamSettings.poll_interval and busy_poll_interval for a fan-out mapping: get_records
itself waits for pushed events, so the runner must not pause between calls."""

DEFAULT_EVENT_WAIT_SECONDS = 3.0
"""How long get_records waits for a pushed event before answering an empty page."""

# SubscribeToShard allows one call per second per consumer and shard.
MIN_SUBSCRIBE_INTERVAL_SECONDS = 1.0

_CONSUMER_ARN = re.compile(
    r"(?P<stream_arn>arn:aws[a-zA-Z0-9-]*:kinesis:[a-z0-9-]+:\d{12}:"
    r"stream/(?P<stream>[a-zA-Z0-9_.-]{1,128}))"
    r"/consumer/(?P<consumer>[a-zA-Z0-9_.-]{1,128}):\d+"
)


def parse_consumer_arn(arn: str) -> tuple[str, str, str]:
    """The stream ARN, stream name and consumer name of a Kinesis stream consumer ARN
    (`arn:aws:kinesis:REGION:ACCOUNT:stream/NAME/consumer/CONSUMER:EPOCH`).

    :raises ValueError: `arn` is not a stream consumer ARN.
    """
    found = _CONSUMER_ARN.fullmatch(arn)
    if found is None:
        raise ValueError(
            f"{arn!r} is not a Kinesis stream consumer ARN: expected "
            "arn:aws:kinesis:REGION:ACCOUNT:stream/NAME/consumer/CONSUMER:EPOCH"
        )
    return found["stream_arn"], found["stream"], found["consumer"]


class KinesisFanOutAPI:
    """`StreamAPI` for a Kinesis stream read through an enhanced fan-out consumer.

    Shards are listed with ListShards, as for a polled stream. Records are pushed: each
    shard keeps one SubscribeToShard open, renewed from its last ContinuationSequenceNumber
    when it ends (after 5 minutes on AWS), and get_records hands on one pushed event per
    call. Iterators are positions, not AWS iterators, so they never expire. Call `aclose()`
    once the runner has returned.
    """

    def __init__(
        self,
        client: KinesisFanOutClient,
        *,
        consumer_arn: str,
        stream_name: str,
        stream_arn: str,
        records: KinesisRecordFactory,
        event_wait: float = DEFAULT_EVENT_WAIT_SECONDS,
        min_subscribe_interval: float = MIN_SUBSCRIBE_INTERVAL_SECONDS,
    ) -> None:
        self.client = client
        self.consumer_arn = consumer_arn
        self.records = records
        self.event_wait = event_wait
        self.min_subscribe_interval = min_subscribe_interval
        self._shards = KinesisStreamAPI(
            client, stream_name=stream_name, stream_arn=stream_arn, records=records
        )
        self._subscriptions: dict[str, Subscription] = {}
        self._subscribed_at: dict[str, float] = {}
        self._skips: dict[str, tuple[str, int]] = {}
        """User records to skip on a subscription's first event (see `resume_position`)."""
        self.log = structlog.get_logger("esm.kinesis_efo").bind(consumer=consumer_arn)

    @property
    def stream_arn(self) -> str:
        return self._shards.stream_arn

    @property
    def stream_name(self) -> str:
        return self._shards.stream_name

    @property
    def subscribed_shards(self) -> list[str]:
        """Shards with a subscription open, for status and tests."""
        return sorted(self._subscriptions)

    async def list_shards(self) -> list[ShardInfo]:
        return await self._shards.list_shards()

    async def get_shard_iterator(self, shard_id: str, position: StartPosition) -> str:
        # SubscribeToShard takes the starting position itself: nothing to ask AWS yet.
        position, skip = resume_position(position)
        token = position_token(position)
        if skip is not None:
            self._skips[token] = skip
        return token

    async def get_records(self, shard_id: str, iterator: str, limit: int) -> RecordsPage:
        subscription = self._subscriptions.get(shard_id)
        if subscription is not None and subscription.position != iterator:
            # The runner started the shard over from elsewhere (a new reader after a stop,
            # a recovery from an error): the open subscription serves another position.
            await self._drop(shard_id)
            subscription = None
        if subscription is not None and subscription.holding:
            return subscription.take(limit)
        deadline = time.monotonic() + self.event_wait
        # Whether the service answered during this call (a subscription accepted, an event
        # pushed): Kinesis pushes an event every few seconds even to an idle consumer, so a
        # wait that runs out with neither says nothing about the source's health.
        answered = False
        while True:
            if subscription is None:
                subscription = await self._subscribe(shard_id, iterator)
                answered = True
            try:
                # The event stream raises the errors AWS sends on it (an exception event).
                with aws_call("SubscribeToShard"):
                    raw = await subscription.next_event(max(0.0, deadline - time.monotonic()))
            except SourceError:
                await self._drop(shard_id)
                raise
            if raw is Wait.TIMED_OUT:
                # Nothing pushed yet: an empty page at the same position keeps the runner
                # calling, and the read under way carries over to the next call.
                return RecordsPage([], next_iterator=iterator, answered=answered)
            if raw is Wait.ENDED:
                # The subscription lived out its time: renew it where it stopped.
                self.log.debug("subscription ended, renewing", shard=shard_id, position=iterator)
                await self._drop(shard_id)
                subscription = None
                if time.monotonic() >= deadline:
                    return RecordsPage([], next_iterator=iterator, answered=answered)
                continue
            answered = True
            event = raw.get("SubscribeToShardEvent")
            if event is None:
                # Nothing else the stream can carry holds records (errors raise).
                continue
            page = self._accept(shard_id, subscription, event, limit)
            if page.next_iterator is None:
                await self._drop(shard_id)
            return page

    def _accept(
        self, shard_id: str, subscription: Subscription, event: SubscribeToShardEvent, limit: int
    ) -> RecordsPage:
        records = self.records.page(shard_id, event.get("Records") or (), wire=False)
        if self._skips:
            # The subscription's first event: a checkpoint inside a KPL container.
            records = skip_delivered(records, self._skips.pop(subscription.position, None))
        continuation = event.get("ContinuationSequenceNumber")
        if continuation is None:
            # The shard is closed and read to its end; the event names its ChildShards,
            # which the runner finds in ListShards and starts once this shard is settled.
            next_token = None
            self.log.info(
                "shard ended",
                shard=shard_id,
                children=[c.get("ShardId") for c in event.get("ChildShards") or ()],
            )
        else:
            next_token = position_token(
                StartPosition(IteratorType.AFTER_SEQUENCE_NUMBER, str(continuation))
            )
        subscription.hold(records, next_token, event.get("MillisBehindLatest"))
        return subscription.take(limit)

    async def _subscribe(self, shard_id: str, position: str) -> Subscription:
        starting = starting_position(position)
        last = self._subscribed_at.get(shard_id)
        if last is not None:
            await anyio.sleep(max(0.0, last + self.min_subscribe_interval - time.monotonic()))
        self._subscribed_at[shard_id] = time.monotonic()
        # ResourceInUseException, another subscription of this consumer to the shard still
        # open (AWS refuses a new one within 5 s of the last, as after a quick restart) or a
        # consumer not ACTIVE yet, passes with time: the translator calls it transient.
        with aws_call("SubscribeToShard"):
            answer = await self.client.subscribe_to_shard(
                ConsumerARN=self.consumer_arn, ShardId=shard_id, StartingPosition=starting
            )
        subscription = Subscription(position, answer["EventStream"])
        self._subscriptions[shard_id] = subscription
        self.log.debug("subscribed", shard=shard_id, position=position)
        return subscription

    async def _drop(self, shard_id: str) -> None:
        subscription = self._subscriptions.pop(shard_id, None)
        if subscription is not None:
            await subscription.close()

    async def aclose(self) -> None:
        """Close every open subscription."""
        for shard_id in list(self._subscriptions):
            await self._drop(shard_id)
