"""Seconds since each source was last read: grows while reads fail, 0 after a successful read
(an empty one too), not counted while the function holds the reader back, gone with the reader."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from esm.checkpoints.memory import MemoryCheckpointStore
from esm.engine.batcher import BatchLimits
from esm.engine.driver import Deliverer, FunctionTarget
from esm.engine.retry import Backoff
from esm.engine.stream_model import StreamSettings
from esm.engine.streams import StreamEngine
from esm.metrics import Metrics, ReadClock
from esm.model import IteratorType, RecordsPage, StartPosition
from esm.protocols import StreamAPI
from esm.sources.dynamodb_streams import DynamoDBRecordFactory, DynamoDBStreamAPI
from esm.sources.kinesis import KinesisRecordFactory, KinesisStreamAPI
from esm.sources.kinesis_efo import (
    FAN_OUT_POLL_INTERVAL_SECONDS,
    KinesisFanOutAPI,
    parse_consumer_arn,
)
from esm.sources.sqs import QueueRunner, QueueSettings
from esm.testing import (
    FakeClientError,
    FakeDynamoDBStreamsClient,
    FakeKinesisClient,
    FakeKinesisFanOutClient,
    FakeSqsClient,
    RecordingBackend,
)

pytestmark = pytest.mark.anyio

STREAM = "orders"
STREAM_ARN = f"arn:aws:kinesis:us-east-1:000000000000:stream/{STREAM}"
ROLE = "arn:aws:iam::000000000000:role/esm"
FAST = Backoff(initial=0.01, maximum=0.05)
TARGET = FunctionTarget(
    name="fn", arn="arn:aws:lambda:us-east-1:000000000000:function:fn", timeout=900
)
# Never answers within a test: the batch it is given stays in flight.
HANGING = 3600.0


class Clock:
    """A clock the test moves by hand, so ages are exact and nothing sleeps."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Outage:
    """A fake client whose named calls fail, as after losing the endpoint or the credentials,
    while `down`; every other call (and every call once it is back up) reaches the fake."""

    def __init__(self, client: Any, *operations: str) -> None:
        self.client = client
        self.operations = set(operations)
        self.down = True
        self.failed = 0

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.client, name)
        if name not in self.operations:
            return call

        async def failing(**kwargs: Any) -> Any:
            if self.down:
                self.failed += 1
                await anyio.lowlevel.checkpoint()
                raise FakeClientError("ExpiredTokenException", "the security token expired")
            return await call(**kwargs)

        return failing


def seconds_since_read(metrics: Metrics, shard: str) -> float | None:
    return metrics.registry.get_sample_value(
        "esm_source_seconds_since_last_read", {"mapping": "m1", "shard": shard}
    )


def seconds_since_receive(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value(
        "esm_queue_seconds_since_last_receive", {"mapping": "m1"}
    )


async def wait_for(condition: Callable[[], bool]) -> None:
    while not condition():
        await anyio.sleep(0.01)


def stream_runner(
    api: StreamAPI,
    backend: RecordingBackend,
    metrics: Metrics,
    clock: Clock,
    *,
    batch_size: int = 100,
    poll_interval: float = 0.05,
) -> StreamEngine:
    settings = StreamSettings(
        mapping_id="m1",
        starting_position=StartPosition(IteratorType.TRIM_HORIZON),
        limits=BatchLimits(batch_size=batch_size),
        poll_interval=poll_interval,
        busy_poll_interval=poll_interval,
        discovery_interval=0.2,
        read_backoff=FAST,
    )
    deliverer = Deliverer(backend, TARGET, "m1", metrics, backoff=FAST)
    return StreamEngine(api, settings, deliverer, MemoryCheckpointStore(), metrics, clock=clock)


def kinesis_api(client: Any) -> KinesisStreamAPI:
    factory = KinesisRecordFactory(stream_arn=STREAM_ARN, region="us-east-1", identity_arn=ROLE)
    return KinesisStreamAPI(client, stream_name=STREAM, stream_arn=STREAM_ARN, records=factory)


# -- the clock itself ------------------------------------------------------------------------


def test_read_clock_counts_only_while_a_reader_is_reading() -> None:
    clock = Clock()
    reads = ReadClock(clock)
    clock.now += 50
    assert reads.seconds() == 0, "no reader yet"
    with reads.reading():
        clock.now += 30
        assert reads.seconds() == 30, "counted from when reading began"
        reads.succeeded()
        clock.now += 5
        assert reads.seconds() == 5
        with reads.waiting():
            clock.now += 600
            assert reads.seconds() == 0, "held back by the function, not failing"
        clock.now += 2
        assert reads.seconds() == 2, "counted again from when reading resumed"
    assert reads.seconds() == 0


def test_read_clock_shared_by_readers_counts_while_any_of_them_reads() -> None:
    clock = Clock()
    reads = ReadClock(clock)
    with reads.reading():
        clock.now += 10
        with reads.reading():
            clock.now += 10
            # One reader waits for the function; the other keeps failing to read.
            with reads.waiting():
                clock.now += 10
                assert reads.seconds() == 30
        clock.now += 10
        assert reads.seconds() == 40


# -- shards ----------------------------------------------------------------------------------


async def test_kinesis_shard_gauge_grows_while_reads_fail_and_an_empty_page_resets_it() -> None:
    kinesis = FakeKinesisClient()
    kinesis.create_stream(STREAM, 1)
    (shard,) = kinesis.shard_ids(STREAM)
    source = Outage(kinesis, "get_records")
    metrics = Metrics()
    clock = Clock()
    runner = stream_runner(kinesis_api(source), RecordingBackend(), metrics, clock)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            await wait_for(lambda: source.failed >= 2)
            clock.now += 120
            assert seconds_since_read(metrics, shard) == 120
            failed = source.failed
            await wait_for(lambda: source.failed > failed)
            clock.now += 60
            assert seconds_since_read(metrics, shard) == 180, "still failing: still growing"
            assert runner.shards[shard].last_read_error is not None

            source.down = False
            # The stream is empty: an empty page is a successful read.
            await wait_for(lambda: seconds_since_read(metrics, shard) == 0)
            assert runner.shards[shard].last_read_error is None
            runner.stop()
    assert seconds_since_read(metrics, shard) is None, "a stopped reader's series is gone"


async def test_kinesis_shard_gauge_stays_zero_while_the_function_holds_the_reader_back() -> None:
    # One record per page and a function that never answers: the pages fill the pipeline's
    # bounded buffers, and the reader waits to hand on the next one.
    kinesis = FakeKinesisClient(page_limit=1)
    kinesis.create_stream(STREAM, 1)
    (shard,) = kinesis.shard_ids(STREAM)
    for n in range(10):
        kinesis.put_record(STREAM, f"r{n}".encode(), "key")
    metrics = Metrics()
    clock = Clock()
    runner = stream_runner(
        kinesis_api(kinesis), RecordingBackend(delay=HANGING), metrics, clock, batch_size=1
    )
    polled = metrics.polled_events.labels("m1")
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            # One record in the function, one in the lane's buffer, one with the dispatcher,
            # two in the reader's buffer: the sixth is the one the reader holds.
            await wait_for(lambda: polled._value.get() >= 6)
            clock.now += 600
            assert seconds_since_read(metrics, shard) == 0
            assert polled._value.get() == 6, "the reader is held back"
            runner.stop()
            tg.cancel_scope.cancel()


async def test_dynamodb_shard_gauge_grows_while_reads_fail_and_resets_after() -> None:
    streams = FakeDynamoDBStreamsClient()
    arn = streams.create_table("orders")
    (shard,) = streams.shard_ids(arn)
    source = Outage(streams, "get_records")
    api = DynamoDBStreamAPI(source, stream_arn=arn, records=DynamoDBRecordFactory(arn, "us-east-1"))
    metrics = Metrics()
    clock = Clock()
    runner = stream_runner(api, RecordingBackend(), metrics, clock)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            await wait_for(lambda: source.failed >= 2)
            clock.now += 45
            assert seconds_since_read(metrics, shard) == 45
            source.down = False
            await wait_for(lambda: seconds_since_read(metrics, shard) == 0)
            runner.stop()


class _CountingFanOut(KinesisFanOutAPI):
    """Counts the pages the runner asks for."""

    pages = 0

    async def get_records(self, shard_id: str, iterator: str, limit: int) -> RecordsPage:
        page = await super().get_records(shard_id, iterator, limit)
        self.pages += 1
        return page


async def test_fan_out_gauge_grows_while_the_subscription_pushes_nothing() -> None:
    # Kinesis pushes an event every few seconds even to an idle consumer: a subscription
    # that stays silent (a connection lost without an error) is not a successful read,
    # although every call of the runner answers an empty page without failing.
    kinesis = FakeKinesisClient()
    kinesis.create_stream(STREAM, 1)
    (shard,) = kinesis.shard_ids(STREAM)
    client = FakeKinesisFanOutClient(kinesis, idle_event_seconds=HANGING)
    answer = await client.register_stream_consumer(
        StreamARN=client.stream_arn(STREAM), ConsumerName="esm"
    )
    consumer_arn = answer["Consumer"]["ConsumerARN"]
    stream_arn, stream_name, _ = parse_consumer_arn(consumer_arn)
    api = _CountingFanOut(
        client,
        consumer_arn=consumer_arn,
        stream_name=stream_name,
        stream_arn=stream_arn,
        records=KinesisRecordFactory(stream_arn=stream_arn, region="us-east-1", identity_arn=ROLE),
        event_wait=0.02,
        min_subscribe_interval=0.0,
    )
    metrics = Metrics()
    clock = Clock()
    backend = RecordingBackend()
    runner = stream_runner(
        api, backend, metrics, clock, poll_interval=FAN_OUT_POLL_INTERVAL_SECONDS
    )
    try:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(runner.run)
                await wait_for(lambda: api.pages >= 1)
                # The subscription was accepted: that much was heard from the service.
                clock.now += 90
                pages = api.pages
                await wait_for(lambda: api.pages >= pages + 3)
                assert seconds_since_read(metrics, shard) == 90, "silence is not a read"

                kinesis.put_record(STREAM, b"r0", "key")
                await wait_for(lambda: len(backend.events) == 1)
                assert seconds_since_read(metrics, shard) == 0, "a pushed event is a read"
                runner.stop()
    finally:
        await api.aclose()


# -- queues ----------------------------------------------------------------------------------


async def make_queue(client: FakeSqsClient) -> str:
    return str((await client.create_queue(QueueName="work"))["QueueUrl"])


def queue_runner(
    client: Any, backend: RecordingBackend, metrics: Metrics, clock: Clock
) -> QueueRunner:
    settings = QueueSettings(
        mapping_id="m1",
        queue_arn="arn:aws:sqs:us-east-1:000000000000:work",
        region="us-east-1",
        limits=BatchLimits(batch_size=10),
        max_concurrency=1,
        wait_time_seconds=0,
        backoff=FAST,
    )
    deliverer = Deliverer(backend, TARGET, "m1", metrics, backoff=FAST)
    return QueueRunner(client, settings, deliverer, metrics, clock=clock)


async def test_queue_gauge_grows_while_receives_fail_and_an_empty_receive_resets_it() -> None:
    sqs = FakeSqsClient()
    await make_queue(sqs)
    source = Outage(sqs, "receive_message")
    metrics = Metrics()
    clock = Clock()
    runner = queue_runner(source, RecordingBackend(), metrics, clock)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            await wait_for(lambda: source.failed >= 2)
            clock.now += 75
            assert seconds_since_receive(metrics) == 75
            failed = source.failed
            await wait_for(lambda: source.failed > failed)
            clock.now += 25
            assert seconds_since_receive(metrics) == 100, "still failing: still growing"

            source.down = False
            await wait_for(lambda: seconds_since_receive(metrics) == 0)
            runner.stop()
    assert seconds_since_receive(metrics) is None, "a stopped mapping's series is gone"


async def test_queue_gauge_grows_while_the_queue_cannot_be_found() -> None:
    sqs = FakeSqsClient()
    await make_queue(sqs)
    source = Outage(sqs, "get_queue_url")
    metrics = Metrics()
    clock = Clock()
    runner = queue_runner(source, RecordingBackend(), metrics, clock)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            await wait_for(lambda: source.failed >= 2)
            clock.now += 30
            assert seconds_since_receive(metrics) == 30
            runner.stop()


async def test_queue_gauge_stays_zero_while_every_poller_is_delivering() -> None:
    sqs = FakeSqsClient()
    url = await make_queue(sqs)
    await sqs.send_message(QueueUrl=url, MessageBody="m0")
    metrics = Metrics()
    clock = Clock()
    runner = queue_runner(sqs, RecordingBackend(delay=HANGING), metrics, clock)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            await wait_for(lambda: runner.in_flight == 1)
            assert runner.active == 1, "the only poller is delivering"
            clock.now += 600
            assert seconds_since_receive(metrics) == 0
            runner.stop()
            tg.cancel_scope.cancel()
