"""Enhanced fan-out through the real shard runner, against a stateful fake SubscribeToShard."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from esm.aws.kinesis import KinesisFanOutClient
from esm.checkpoints.memory import MemoryCheckpointStore
from esm.engine.batcher import BatchLimits
from esm.engine.driver import Deliverer, FunctionTarget
from esm.engine.retry import Backoff
from esm.engine.stream_model import ShardPhase, StreamSettings
from esm.engine.streams import StreamEngine
from esm.errors import SourceError, TransientSourceError
from esm.metrics import Metrics
from esm.model import IteratorType, StartPosition
from esm.sources.kinesis import KinesisRecordFactory
from esm.sources.kinesis_efo import (
    FAN_OUT_POLL_INTERVAL_SECONDS,
    KinesisFanOutAPI,
    parse_consumer_arn,
    position_token,
)
from esm.testing import (
    FakeEventStream,
    FakeKinesisClient,
    FakeKinesisFanOutClient,
    RecordingBackend,
    kinesis_data,
)

pytestmark = pytest.mark.anyio

STREAM = "orders"
REGION = "us-east-1"
STREAM_ARN = f"arn:aws:kinesis:{REGION}:000000000000:stream/{STREAM}"
ROLE = "arn:aws:iam::000000000000:role/esm"
FAST = Backoff(initial=0.01, maximum=0.05)


async def fan_out(
    kinesis: FakeKinesisClient, **options: Any
) -> tuple[FakeKinesisFanOutClient, str]:
    """A fan-out client over `kinesis` with a consumer registered; returns its ARN too."""
    client = FakeKinesisFanOutClient(kinesis, **options)
    answer = await client.register_stream_consumer(
        StreamARN=client.stream_arn(STREAM), ConsumerName="esm"
    )
    return client, answer["Consumer"]["ConsumerARN"]


def make_api(
    client: FakeKinesisFanOutClient,
    consumer_arn: str,
    *,
    event_wait: float = 0.2,
    deaggregate: bool = False,
) -> KinesisFanOutAPI:
    stream_arn, stream_name, _ = parse_consumer_arn(consumer_arn)
    factory = KinesisRecordFactory(
        stream_arn=stream_arn, region=REGION, identity_arn=ROLE, deaggregate=deaggregate
    )
    # The fake is the typed client itself: mypy checks it against the service's shapes.
    typed: KinesisFanOutClient = client
    return KinesisFanOutAPI(
        typed,
        consumer_arn=consumer_arn,
        stream_name=stream_name,
        stream_arn=stream_arn,
        records=factory,
        event_wait=event_wait,
        min_subscribe_interval=0.0,
    )


def make_runner(
    api: KinesisFanOutAPI,
    backend: RecordingBackend,
    store: MemoryCheckpointStore,
    *,
    batch_size: int = 100,
    start: StartPosition | None = None,
    metrics: Metrics | None = None,
) -> StreamEngine:
    metrics = metrics or Metrics()
    settings = StreamSettings(
        mapping_id="m1",
        starting_position=start or StartPosition(IteratorType.TRIM_HORIZON),
        limits=BatchLimits(batch_size=batch_size, window_seconds=0.0),
        poll_interval=FAN_OUT_POLL_INTERVAL_SECONDS,
        busy_poll_interval=FAN_OUT_POLL_INTERVAL_SECONDS,
        discovery_interval=0.2,
        read_backoff=FAST,
    )
    target = FunctionTarget(
        name="fn", arn="arn:aws:lambda:us-east-1:000000000000:function:fn", timeout=3
    )
    deliverer = Deliverer(backend, target, "m1", metrics, backoff=FAST)
    return StreamEngine(api, settings, deliverer, store, metrics)


async def run_until(runner: StreamEngine, done: Callable[[], bool], timeout: float = 20) -> None:
    """Run the mapping until `done()` holds, then stop it gracefully."""
    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            while not done():
                await anyio.sleep(0.01)
            runner.stop()


def per_shard_data(backend: RecordingBackend) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for record in backend.delivered_records():
        shard = record["eventID"].split(":")[0]
        out.setdefault(shard, []).append(kinesis_data(record))
    return out


def put_many(
    kinesis: FakeKinesisClient, count: int, *, shard_id: str | None = None, first: int = 0
) -> dict[str, list[bytes]]:
    """Write `count` records spread over the shards; returns what each shard holds, in order."""
    expected: dict[str, list[bytes]] = {}
    shards = kinesis.shard_ids(STREAM)
    for n in range(first, first + count):
        target = shard_id or shards[n % len(shards)]
        data = f"r{n}".encode()
        kinesis.put_record(STREAM, data, f"k{n}", shard_id=target)
        expected.setdefault(target, []).append(data)
    return expected


def test_parse_consumer_arn() -> None:
    arn = f"{STREAM_ARN}/consumer/my-app:1700000000"
    assert parse_consumer_arn(arn) == (STREAM_ARN, STREAM, "my-app")
    gov = "arn:aws-us-gov:kinesis:us-gov-west-1:123456789012:stream/s.1/consumer/c_2:17"
    assert parse_consumer_arn(gov) == (
        "arn:aws-us-gov:kinesis:us-gov-west-1:123456789012:stream/s.1",
        "s.1",
        "c_2",
    )
    for wrong in (STREAM_ARN, f"{STREAM_ARN}/consumer/my-app", "arn:aws:sqs:us-east-1:1:q"):
        with pytest.raises(ValueError, match="consumer ARN"):
            parse_consumer_arn(wrong)


async def test_records_arrive_in_order_per_shard_as_lambda_shapes_them() -> None:
    kinesis = FakeKinesisClient()
    kinesis.create_stream(STREAM, 3)
    first_sequence = kinesis.put_record(
        STREAM, b"first", "pk-0", shard_id="shardId-000000000000", arrival=1_700_000_000.1234
    )
    expected = put_many(kinesis, 300, first=1)
    expected["shardId-000000000000"].insert(0, b"first")
    client, consumer_arn = await fan_out(kinesis, event_records=40)
    api = make_api(client, consumer_arn)
    backend = RecordingBackend()
    runner = make_runner(api, backend, MemoryCheckpointStore(), batch_size=50)
    await run_until(runner, lambda: len(backend.delivered_records()) >= 301)
    await api.aclose()

    assert per_shard_data(backend) == expected
    assert all(len(e["Records"]) <= 50 for e in backend.events)
    first = next(r for r in backend.delivered_records() if kinesis_data(r) == b"first")
    assert first == {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "pk-0",
            "sequenceNumber": first_sequence,
            "data": base64.b64encode(b"first").decode(),
            "approximateArrivalTimestamp": 1_700_000_000.123,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"shardId-000000000000:{first_sequence}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": ROLE,
        "awsRegion": REGION,
        "eventSourceARN": STREAM_ARN,
    }
    assert list(first) == [
        "kinesis",
        "eventSource",
        "eventVersion",
        "eventID",
        "eventName",
        "invokeIdentityArn",
        "awsRegion",
        "eventSourceARN",
    ]
    # The stream's ARN, never the consumer's, as on AWS.
    assert {r["eventSourceARN"] for r in backend.delivered_records()} == {STREAM_ARN}
    # One subscription per shard did it all, and none is left open.
    assert sorted(s for s, _ in client.subscriptions) == kinesis.shard_ids(STREAM)
    assert client.open_subscriptions() == []


async def test_expired_subscriptions_are_renewed_without_loss_or_duplicates() -> None:
    kinesis = FakeKinesisClient()
    kinesis.create_stream(STREAM, 1)
    shard = kinesis.shard_ids(STREAM)[0]
    expected = put_many(kinesis, 60)[shard]
    # Each subscription ends after three events of at most five records.
    client, consumer_arn = await fan_out(kinesis, event_records=5, events_per_subscription=3)
    api = make_api(client, consumer_arn)
    backend = RecordingBackend()

    def write_and_expire(event: dict[str, Any], call: int) -> None:
        if call == 2:
            # Records put while reading arrive over the live subscription.
            expected.extend(put_many(kinesis, 25, first=60)[shard])
        if call == 4:
            # A subscription can also end while an event is awaited.
            client.end_subscriptions()

    backend.script = write_and_expire
    runner = make_runner(api, backend, MemoryCheckpointStore(), batch_size=7)
    await run_until(runner, lambda: len(backend.delivered_records()) >= 85)
    await api.aclose()

    assert per_shard_data(backend) == {shard: expected}
    positions = [p for _, p in client.subscriptions]
    assert positions[0] == {"Type": "TRIM_HORIZON"}
    assert len(positions) >= 85 // 15
    # Every renewal continues right after the last ContinuationSequenceNumber.
    assert all(p["Type"] == "AFTER_SEQUENCE_NUMBER" for p in positions[1:])


async def test_children_of_a_split_shard_are_read_after_the_parent_ends() -> None:
    kinesis = FakeKinesisClient()
    kinesis.create_stream(STREAM, 1)
    parent = kinesis.shard_ids(STREAM)[0]
    parent_data = put_many(kinesis, 25, shard_id=parent)[parent]
    client, consumer_arn = await fan_out(kinesis, event_records=10)
    api = make_api(client, consumer_arn)
    backend = RecordingBackend()
    runner = make_runner(api, backend, MemoryCheckpointStore(), batch_size=10)
    children: list[str] = []
    child_data: dict[str, list[bytes]] = {}

    def split_when_caught_up() -> bool:
        delivered = len(backend.delivered_records())
        if delivered >= 25 and not children:
            # Split while the parent's subscription is open and caught up.
            children.extend(kinesis.split_shard(STREAM, parent))
            for child in children:
                child_data.update(put_many(kinesis, 8, shard_id=child, first=len(child_data) * 8))
        return delivered >= 41

    await run_until(runner, split_when_caught_up)
    await api.aclose()

    assert per_shard_data(backend) == {parent: parent_data, **child_data}
    shards_in_order = [e["Records"][0]["eventID"].split(":")[0] for e in backend.events]
    last_parent = max(i for i, s in enumerate(shards_in_order) if s == parent)
    first_child = min(i for i, s in enumerate(shards_in_order) if s != parent)
    assert last_parent < first_child
    assert runner.shards[parent].phase is ShardPhase.FINISHED
    # The parent's end came over its one subscription (ChildShards, no continuation); the
    # children, found after the first listing, are read from their start.
    assert [p for s, p in client.subscriptions if s == parent] == [{"Type": "TRIM_HORIZON"}]
    assert sorted(s for s, _ in client.subscriptions if s != parent) == sorted(children)
    assert all(p == {"Type": "TRIM_HORIZON"} for s, p in client.subscriptions if s != parent)


async def test_records_of_the_final_event_of_a_closed_shard_are_delivered() -> None:
    kinesis = FakeKinesisClient()
    kinesis.create_stream(STREAM, 1)
    parent = kinesis.shard_ids(STREAM)[0]
    # 25 records in events of 10: the last event holds 5 records and the ChildShards.
    parent_data = put_many(kinesis, 25, shard_id=parent)[parent]
    left, right = kinesis.split_shard(STREAM, parent)
    left_data = put_many(kinesis, 6, shard_id=left, first=100)[left]
    right_data = put_many(kinesis, 6, shard_id=right, first=200)[right]
    client, consumer_arn = await fan_out(kinesis, event_records=10)
    api = make_api(client, consumer_arn)
    backend = RecordingBackend()
    runner = make_runner(api, backend, MemoryCheckpointStore(), batch_size=100)
    await run_until(runner, lambda: len(backend.delivered_records()) >= 37)
    await api.aclose()

    assert per_shard_data(backend) == {parent: parent_data, left: left_data, right: right_data}
    assert runner.shards[parent].phase is ShardPhase.FINISHED
    assert client.child_shards(parent)[0]["ParentShards"] == [parent]


async def test_restart_subscribes_after_the_checkpoint() -> None:
    kinesis = FakeKinesisClient()
    kinesis.create_stream(STREAM, 1)
    shard = kinesis.shard_ids(STREAM)[0]
    before = put_many(kinesis, 30)[shard]
    client, consumer_arn = await fan_out(kinesis, event_records=10)
    store = MemoryCheckpointStore()

    first_api = make_api(client, consumer_arn)
    first = RecordingBackend()
    await run_until(
        make_runner(first_api, first, store, batch_size=10),
        lambda: len(first.delivered_records()) >= 30,
    )
    await first_api.aclose()
    assert client.open_subscriptions() == []
    checkpoint = (await store.load("m1"))[shard].sequence
    assert checkpoint == first.delivered_records()[-1]["kinesis"]["sequenceNumber"]

    # Written while the mapping was down: the next run starts right after the checkpoint.
    after = put_many(kinesis, 45, first=30)[shard]
    client.subscriptions.clear()
    second_api = make_api(client, consumer_arn)
    second = RecordingBackend()
    await run_until(
        make_runner(second_api, second, store, batch_size=10),
        lambda: len(second.delivered_records()) >= 45,
    )
    await second_api.aclose()

    assert client.subscriptions[0] == (
        shard,
        {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": checkpoint},
    )
    # Nothing skipped, nothing before the checkpoint delivered again.
    assert per_shard_data(first)[shard] == before
    assert per_shard_data(second)[shard] == after


async def test_a_subscription_still_in_use_is_retried_until_it_is_released() -> None:
    kinesis = FakeKinesisClient()
    kinesis.create_stream(STREAM, 1)
    shard = kinesis.shard_ids(STREAM)[0]
    expected = put_many(kinesis, 20)[shard]
    client, consumer_arn = await fan_out(kinesis)
    # A subscription left over from before a restart, which AWS keeps open for a while.
    answer = await client.subscribe_to_shard(
        ConsumerARN=consumer_arn, ShardId=shard, StartingPosition={"Type": "LATEST"}
    )
    stale = answer["EventStream"]
    assert isinstance(stale, FakeEventStream)
    api = make_api(client, consumer_arn)
    backend = RecordingBackend()
    metrics = Metrics()
    runner = make_runner(api, backend, MemoryCheckpointStore(), metrics=metrics)
    refused: list[str | None] = []

    def release_after_two_refusals() -> bool:
        if metrics.read_errors.labels("m1", "transient")._value.get() >= 2 and not stale.closed:
            refused.append(runner.shards[shard].last_read_error)
            stale.close()
        return len(backend.delivered_records()) >= 20

    await run_until(runner, release_after_two_refusals)
    await api.aclose()

    assert per_shard_data(backend) == {shard: expected}
    assert refused
    assert refused[0] is not None
    assert "ResourceInUseException" in refused[0]
    assert len([s for s, _ in client.subscriptions if s == shard]) >= 4


async def test_failed_subscriptions_and_broken_streams_lose_nothing() -> None:
    kinesis = FakeKinesisClient()
    kinesis.create_stream(STREAM, 2)
    expected = put_many(kinesis, 80)
    client, consumer_arn = await fan_out(kinesis, event_records=6)
    client.fail_next("SubscribeToShard", "LimitExceededException")
    client.fail_next("SubscribeToShard", "InternalFailure")
    client.fail_stream_next("InternalFailure", times=3)
    api = make_api(client, consumer_arn)
    backend = RecordingBackend()
    metrics = Metrics()
    runner = make_runner(api, backend, MemoryCheckpointStore(), batch_size=9, metrics=metrics)
    await run_until(runner, lambda: len(backend.delivered_records()) >= 80)
    await api.aclose()

    assert per_shard_data(backend) == expected
    assert metrics.read_errors.labels("m1", "throttled")._value.get() == 1
    assert metrics.read_errors.labels("m1", "transient")._value.get() == 4


async def test_subscribe_errors_are_translated() -> None:
    kinesis = FakeKinesisClient()
    kinesis.create_stream(STREAM, 1)
    shard = kinesis.shard_ids(STREAM)[0]
    client, consumer_arn = await fan_out(kinesis)
    api = make_api(client, consumer_arn)
    start = await api.get_shard_iterator(shard, StartPosition(IteratorType.TRIM_HORIZON))
    client.fail_next("SubscribeToShard", "ResourceInUseException")
    with pytest.raises(TransientSourceError, match="ResourceInUseException"):
        await api.get_records(shard, start, 100)
    client.fail_next("SubscribeToShard", "AccessDeniedException")
    with pytest.raises(SourceError, match="AccessDeniedException") as denied:
        await api.get_records(shard, start, 100)
    assert not denied.value.retriable
    unknown = make_api(client, f"{STREAM_ARN}/consumer/gone:1")
    with pytest.raises(SourceError, match="ResourceNotFoundException"):
        await unknown.get_records(shard, start, 100)
    assert api.subscribed_shards == []


async def test_a_wait_without_events_answers_an_empty_page_and_keeps_the_read() -> None:
    kinesis = FakeKinesisClient()
    kinesis.create_stream(STREAM, 1)
    shard = kinesis.shard_ids(STREAM)[0]
    # No empty events while caught up: only the API's own wait ends a call.
    client, consumer_arn = await fan_out(kinesis, idle_event_seconds=60)
    api = make_api(client, consumer_arn, event_wait=0.1)
    start = await api.get_shard_iterator(shard, StartPosition(IteratorType.LATEST))
    with anyio.fail_after(5):
        page = await api.get_records(shard, start, 100)
        assert page.records == []
        assert page.next_iterator == start
        # A caller cancelled while waiting does not lose the subscription either.
        with anyio.move_on_after(0.05):
            await api.get_records(shard, start, 100)
        sequence = kinesis.put_record(STREAM, b"late", "k")
        page = await api.get_records(shard, start, 100)
    assert [r.sequence for r in page.records] == [sequence]
    assert page.next_iterator == position_token(
        StartPosition(IteratorType.AFTER_SEQUENCE_NUMBER, sequence)
    )
    assert page.millis_behind == 0
    assert client.subscriptions == [(shard, {"Type": "LATEST"})]
    assert api.subscribed_shards == [shard]
    await api.aclose()
    assert api.subscribed_shards == []
    assert client.open_subscriptions() == []


async def test_an_event_larger_than_the_limit_is_handed_on_in_parts() -> None:
    kinesis = FakeKinesisClient()
    kinesis.create_stream(STREAM, 1)
    shard = kinesis.shard_ids(STREAM)[0]
    sequences = [kinesis.put_record(STREAM, f"r{n}".encode(), "k") for n in range(10)]
    client, consumer_arn = await fan_out(kinesis, event_records=10)
    api = make_api(client, consumer_arn)
    iterator: str | None = await api.get_shard_iterator(
        shard, StartPosition(IteratorType.AT_SEQUENCE_NUMBER, sequences[0])
    )
    parts: list[list[str]] = []
    with anyio.fail_after(5):
        for _ in range(3):
            assert iterator is not None
            page = await api.get_records(shard, iterator, 4)
            parts.append([r.sequence for r in page.records])
            iterator = page.next_iterator
    await api.aclose()
    assert parts == [sequences[:4], sequences[4:8], sequences[8:]]
    assert iterator == position_token(
        StartPosition(IteratorType.AFTER_SEQUENCE_NUMBER, sequences[-1])
    )
    assert client.subscriptions == [
        (shard, {"Type": "AT_SEQUENCE_NUMBER", "SequenceNumber": sequences[0]})
    ]


async def test_at_timestamp_subscribes_at_the_first_record_at_or_after_it() -> None:
    kinesis = FakeKinesisClient()
    kinesis.create_stream(STREAM, 1)
    for n in range(10):
        kinesis.put_record(STREAM, f"r{n}".encode(), "k", arrival=1_700_000_000 + n)
    client, consumer_arn = await fan_out(kinesis)
    api = make_api(client, consumer_arn)
    backend = RecordingBackend()
    start = StartPosition(IteratorType.AT_TIMESTAMP, timestamp=1_700_000_004.0)
    runner = make_runner(api, backend, MemoryCheckpointStore(), start=start)
    await run_until(runner, lambda: len(backend.delivered_records()) >= 6)
    await api.aclose()
    assert [kinesis_data(r) for r in backend.delivered_records()] == [
        f"r{n}".encode() for n in range(4, 10)
    ]
    assert client.subscriptions[0][1] == {"Type": "AT_TIMESTAMP", "Timestamp": 1_700_000_004.0}


async def test_a_checkpoint_inside_a_kpl_aggregate_subscribes_at_it_and_skips_the_settled() -> None:
    from aws_kinesis_agg.aggregator import AggRecord

    from esm.model import Checkpoint

    kinesis = FakeKinesisClient()
    kinesis.create_stream(STREAM, 1)
    shard = kinesis.shard_ids(STREAM)[0]
    aggregate = AggRecord()
    for n in range(4):
        assert aggregate.add_user_record(f"user-{n}", f"u{n}".encode())
    key, _, data = aggregate.get_contents()
    sequence = kinesis.put_record(STREAM, data, key, shard_id=shard)
    put_many(kinesis, 2, shard_id=shard)
    client, consumer_arn = await fan_out(kinesis, event_records=10)
    store = MemoryCheckpointStore()
    await store.save("m1", shard, Checkpoint(f"{sequence}:1"))

    api = make_api(client, consumer_arn, deaggregate=True)
    backend = RecordingBackend()
    await run_until(
        make_runner(api, backend, store, batch_size=10),
        lambda: len(backend.delivered_records()) >= 4,
    )
    await api.aclose()

    assert client.subscriptions[0] == (
        shard,
        {"Type": "AT_SEQUENCE_NUMBER", "SequenceNumber": sequence},
    )
    assert per_shard_data(backend)[shard] == [b"u2", b"u3", b"r0", b"r1"]
    assert (await store.load("m1"))[shard].sequence != f"{sequence}:1"
