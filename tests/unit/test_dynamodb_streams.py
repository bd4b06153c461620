"""DynamoDB Streams through the shared shard runner, against a stateful fake: events, lineage."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import orjson
import pytest
from botocore.parsers import create_parser
from botocore.session import get_session as get_botocore_session

from esm.aws.dynamodb_streams import (
    DescribeStreamOutput,
    DynamoDBStreamsClient,
    GetRecordsOutput,
    GetShardIteratorOutput,
)
from esm.aws.wire import keep_wire_records
from esm.checkpoints.memory import MemoryCheckpointStore
from esm.engine.batcher import BatchLimits
from esm.engine.driver import Deliverer, FunctionTarget
from esm.engine.retry import Backoff
from esm.engine.stream_model import ShardPhase, StreamSettings
from esm.engine.streams import StreamEngine
from esm.errors import (
    AccessDenied,
    DataTrimmed,
    ExpiredIterator,
    ResourceNotFound,
    SourceError,
    ThroughputExceeded,
    TransientSourceError,
)
from esm.metrics import Metrics
from esm.model import Checkpoint, IteratorType, StartPosition
from esm.protocols import StreamAPI
from esm.sources.dynamodb_streams import (
    MAX_RECORDS_PER_CALL,
    POLL_INTERVAL_SECONDS,
    DynamoDBRecordFactory,
    DynamoDBStreamAPI,
)
from esm.testing import FakeDynamoDBStreamsClient, RecordingBackend

pytestmark = pytest.mark.anyio

FAST = Backoff(initial=0.01, maximum=0.05)
T0 = 1_700_000_000
TTL_IDENTITY = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
# The order of fields in a Lambda DynamoDB event record, and in its "dynamodb" part.
ENTRY_FIELDS = [
    "eventID",
    "eventName",
    "eventVersion",
    "eventSource",
    "awsRegion",
    "dynamodb",
    "eventSourceARN",
]
CHANGE_FIELDS = [
    "ApproximateCreationDateTime",
    "Keys",
    "NewImage",
    "OldImage",
    "SequenceNumber",
    "SizeBytes",
    "StreamViewType",
]


def make_api(client: FakeDynamoDBStreamsClient, arn: str) -> DynamoDBStreamAPI:
    # The fake is the typed client itself: mypy checks it against the service's shapes.
    typed: DynamoDBStreamsClient = client
    return DynamoDBStreamAPI(typed, stream_arn=arn, records=DynamoDBRecordFactory(arn, "us-east-1"))


def make_runner(
    client: FakeDynamoDBStreamsClient,
    arn: str,
    backend: RecordingBackend,
    store: MemoryCheckpointStore,
    *,
    batch_size: int = 100,
    start: IteratorType = IteratorType.TRIM_HORIZON,
    poll_interval: float = 0.05,
    parallelization: int = 1,
) -> StreamEngine:
    metrics = Metrics()
    api: StreamAPI = make_api(client, arn)
    settings = StreamSettings(
        mapping_id="m1",
        starting_position=StartPosition(start),
        limits=BatchLimits(batch_size=batch_size),
        poll_interval=poll_interval,
        busy_poll_interval=poll_interval,
        records_limit=MAX_RECORDS_PER_CALL,
        discovery_interval=0.1,
        parallelization=parallelization,
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


async def deliver_all(
    client: FakeDynamoDBStreamsClient, arn: str, count: int, **options: Any
) -> RecordingBackend:
    backend = RecordingBackend()
    runner = make_runner(client, arn, backend, MemoryCheckpointStore(), **options)
    await run_until(runner, lambda: len(backend.delivered_records()) >= count)
    return backend


def item(pk: str, **attributes: Any) -> dict[str, Any]:
    return {"pk": {"S": pk}, **attributes}


def sequences(records: Sequence[Mapping[str, Any]]) -> list[str]:
    return [r["dynamodb"]["SequenceNumber"] for r in records]


def stored_sequences(client: FakeDynamoDBStreamsClient, arn: str, shard_id: str) -> list[str]:
    return sequences(client.stored_records(arn, shard_id))


# -- event shapes ------------------------------------------------------------------------------


async def test_insert_modify_remove_arrive_in_order_exactly_as_lambda_shapes_them() -> None:
    client = FakeDynamoDBStreamsClient()
    arn = client.create_table("orders", ("pk", "sk"))
    shard = client.shard_ids(arn)[0]
    keys = {"pk": {"S": "order-1"}, "sk": {"N": "7"}}
    client.put_item(arn, {**keys, "qty": {"N": "2"}, "tag": {"B": b"\x00\xff"}}, created=T0 + 0.9)
    client.put_item(arn, {**keys, "qty": {"N": "3"}, "tag": {"B": b"\x00\xff"}}, created=T0 + 1)
    client.delete_item(arn, keys, created=T0 + 2)
    stored = client.stored_records(arn, shard)

    backend = await deliver_all(client, arn, 3)
    records = backend.delivered_records()

    inserted = {**keys, "qty": {"N": "2"}, "tag": {"B": "AP8="}}
    modified = {**keys, "qty": {"N": "3"}, "tag": {"B": "AP8="}}
    assert records[0] == {
        "eventID": stored[0]["eventID"],
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            # Whole seconds, rounded down, as an integer.
            "ApproximateCreationDateTime": T0,
            "Keys": keys,
            "NewImage": inserted,
            "SequenceNumber": stored[0]["dynamodb"]["SequenceNumber"],
            "SizeBytes": stored[0]["dynamodb"]["SizeBytes"],
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
        "eventSourceARN": arn,
    }
    assert records[1] == {
        "eventID": stored[1]["eventID"],
        "eventName": "MODIFY",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": T0 + 1,
            "Keys": keys,
            "NewImage": modified,
            "OldImage": inserted,
            "SequenceNumber": stored[1]["dynamodb"]["SequenceNumber"],
            "SizeBytes": stored[1]["dynamodb"]["SizeBytes"],
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
        "eventSourceARN": arn,
    }
    assert records[2] == {
        "eventID": stored[2]["eventID"],
        "eventName": "REMOVE",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": T0 + 2,
            "Keys": keys,
            "OldImage": modified,
            "SequenceNumber": stored[2]["dynamodb"]["SequenceNumber"],
            "SizeBytes": stored[2]["dynamodb"]["SizeBytes"],
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
        "eventSourceARN": arn,
    }
    for record in records:
        assert list(record) == ENTRY_FIELDS
        assert list(record["dynamodb"]) == [f for f in CHANGE_FIELDS if f in record["dynamodb"]]
        assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], int)
        assert isinstance(record["dynamodb"]["SizeBytes"], int)
        assert len(record["eventID"]) == 32
    assert [int(s) for s in sequences(records)] == sorted(int(s) for s in sequences(records))


async def test_ttl_deletion_carries_the_service_identity_and_a_plain_delete_none() -> None:
    client = FakeDynamoDBStreamsClient()
    arn = client.create_table("sessions")
    client.put_item(arn, item("s1", expires={"N": "1"}))
    client.put_item(arn, item("s2"))
    client.delete_item(arn, {"pk": {"S": "s1"}}, ttl=True)
    client.delete_item(arn, {"pk": {"S": "s2"}})

    records = (await deliver_all(client, arn, 4)).delivered_records()

    assert [r["eventName"] for r in records] == ["INSERT", "INSERT", "REMOVE", "REMOVE"]
    expired, deleted = records[2], records[3]
    assert expired["userIdentity"] == TTL_IDENTITY
    assert list(expired["userIdentity"]) == ["type", "principalId"]
    assert list(expired) == [*ENTRY_FIELDS, "userIdentity"]
    assert expired["dynamodb"]["OldImage"] == item("s1", expires={"N": "1"})
    assert "userIdentity" not in deleted
    assert all("userIdentity" not in r for r in records[:2])


# Which images each StreamViewType puts in INSERT, MODIFY and REMOVE records.
VIEWS: dict[str, list[list[str]]] = {
    "KEYS_ONLY": [[], [], []],
    "NEW_IMAGE": [["NewImage"], ["NewImage"], []],
    "OLD_IMAGE": [[], ["OldImage"], ["OldImage"]],
    "NEW_AND_OLD_IMAGES": [["NewImage"], ["NewImage", "OldImage"], ["OldImage"]],
}


@pytest.mark.parametrize("view", sorted(VIEWS))
async def test_images_present_follow_the_stream_view_type(view: str) -> None:
    client = FakeDynamoDBStreamsClient()
    arn = client.create_table("items", view_type=view)
    client.put_item(arn, item("a", v={"N": "1"}))
    client.put_item(arn, item("a", v={"N": "2"}))
    client.delete_item(arn, {"pk": {"S": "a"}})

    records = (await deliver_all(client, arn, 3)).delivered_records()

    for record, images in zip(records, VIEWS[view], strict=True):
        present = [f for f in CHANGE_FIELDS if f not in ("NewImage", "OldImage") or f in images]
        assert list(record["dynamodb"]) == present
        assert record["dynamodb"]["StreamViewType"] == view
        assert record["dynamodb"]["Keys"] == {"pk": {"S": "a"}}


def test_records_of_one_item_share_a_key_whatever_the_attribute_order() -> None:
    arn = "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/2026-01-01T00:00:00.000"
    factory = DynamoDBRecordFactory(arn, "us-east-1")

    def wire(keys: dict[str, Any], sequence: str) -> dict[str, Any]:
        return {
            "eventID": "e" * 32,
            "eventName": "MODIFY",
            "eventVersion": "1.1",
            "dynamodb": {
                "ApproximateCreationDateTime": 1.7e9 + 0.75,
                "Keys": keys,
                "SequenceNumber": sequence,
                "SizeBytes": 10,
                "StreamViewType": "KEYS_ONLY",
            },
        }

    one = factory.from_wire(wire({"pk": {"S": "a"}, "sk": {"N": "1"}}, "100"))
    two = factory.from_wire(wire({"sk": {"N": "1"}, "pk": {"S": "a"}}, "200"))
    other = factory.from_wire(wire({"pk": {"S": "a"}, "sk": {"N": "2"}}, "300"))
    assert one.key == two.key == '{"pk":{"S":"a"},"sk":{"N":"1"}}'
    assert other.key != one.key
    assert (one.sequence, one.order, one.arrival) == ("100", 100, 1.7e9 + 0.75)
    # The event has whole seconds, rounded down, like DynamoDB's own; the age keeps the rest.
    assert one.entry["dynamodb"]["ApproximateCreationDateTime"] == 1_700_000_000
    assert one.size == len(orjson.dumps(one.entry)) + 1


class _AnswerClient:
    """Answers GetRecords with one prepared answer (parsed by botocore, so untyped)."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    async def describe_stream(
        self, *, StreamArn: str, Limit: int = 100, ExclusiveStartShardId: str | None = None
    ) -> DescribeStreamOutput:
        raise NotImplementedError

    async def get_shard_iterator(
        self,
        *,
        StreamArn: str,
        ShardId: str,
        ShardIteratorType: str,
        SequenceNumber: str | None = None,
    ) -> GetShardIteratorOutput:
        raise NotImplementedError

    async def get_records(self, *, ShardIterator: str, Limit: int) -> GetRecordsOutput:
        answer: GetRecordsOutput = self.answer
        return answer


async def test_wire_form_and_botocore_form_make_the_same_event() -> None:
    arn = "arn:aws:dynamodb:eu-west-1:123456789012:table/t/stream/2026-01-01T00:00:00.000"
    images = {
        "pk": {"S": "a"},
        "raw": {"B": "AAE="},
        "set": {"BS": ["AAE=", "Ag=="]},
        "nested": {"M": {"inner": {"B": "/w=="}, "n": {"N": "1.5"}}},
        "list": {"L": [{"B": "AA=="}, {"S": "x"}, {"NULL": True}, {"BOOL": False}]},
        "strings": {"SS": ["p", "q"]},
    }
    wire_record = {
        "eventID": "c4ca4238a0b923820dcc509a6f75849b",
        "eventName": "REMOVE",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "eu-west-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1.594935882e9,
            "Keys": {"pk": {"S": "a"}},
            "OldImage": images,
            "SequenceNumber": "4421584500000000017450439091",
            "SizeBytes": 26,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
        "userIdentity": {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"},
    }
    body = orjson.dumps({"Records": [wire_record], "NextShardIterator": "next"})
    service = get_botocore_session().get_service_model("dynamodbstreams")
    get_records = service.operation_model("GetRecords")
    response = {"body": body, "headers": {}, "status_code": 200}
    parsed = create_parser("json").parse(dict(response), get_records.output_shape)
    assert isinstance(parsed["Records"][0]["dynamodb"]["OldImage"]["raw"]["B"], bytes)
    wire: dict[str, Any] = {}
    keep_wire_records(get_records, dict(response), wire)

    factory = DynamoDBRecordFactory(arn, "eu-west-1")
    pages = [
        await DynamoDBStreamAPI(_AnswerClient(answer), stream_arn=arn, records=factory).get_records(
            "shardId-1", "it", 100
        )
        for answer in (parsed, wire)
    ]
    from_api, from_wire = (page.records[0] for page in pages)
    assert from_api == from_wire
    assert pages[0].next_iterator == pages[1].next_iterator == "next"
    assert from_wire.entry == {
        "eventID": "c4ca4238a0b923820dcc509a6f75849b",
        "eventName": "REMOVE",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "eu-west-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1594935882,
            "Keys": {"pk": {"S": "a"}},
            "OldImage": images,
            "SequenceNumber": "4421584500000000017450439091",
            "SizeBytes": 26,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
        "eventSourceARN": arn,
        "userIdentity": TTL_IDENTITY,
    }
    assert from_wire.arrival == 1594935882.0
    assert from_wire.order == 4421584500000000017450439091


# -- lineage and discovery ---------------------------------------------------------------------


async def test_rolled_over_shard_is_read_before_its_children_and_grandchildren() -> None:
    client = FakeDynamoDBStreamsClient(page_limit=7)
    arn = client.create_table("events")
    parent = client.shard_ids(arn)[0]
    for n in range(30):
        client.put_item(arn, item(f"p{n}"))
    (child,) = client.roll_over(arn, parent)
    for n in range(12):
        client.put_item(arn, item(f"c{n}"))
    left, right = client.roll_over(arn, child, children=2)
    for n in range(20):
        client.put_item(arn, item(f"g{n}"))
    total = 30 + 12 + 20

    backend = RecordingBackend()
    runner = make_runner(client, arn, backend, MemoryCheckpointStore(), batch_size=5)
    await run_until(runner, lambda: len(backend.delivered_records()) >= total)

    delivered = sequences(backend.delivered_records())
    assert len(delivered) == total
    position = {sequence: n for n, sequence in enumerate(delivered)}
    for older, younger in ((parent, child), (child, left), (child, right)):
        assert max(position[s] for s in stored_sequences(client, arn, older)) < min(
            position[s] for s in stored_sequences(client, arn, younger)
        )
    for shard in (parent, child, left, right):
        shard_order = [s for s in delivered if s in set(stored_sequences(client, arn, shard))]
        assert shard_order == stored_sequences(client, arn, shard)
    assert runner.shards[parent].phase is ShardPhase.FINISHED
    assert runner.shards[child].phase is ShardPhase.FINISHED


async def test_describe_stream_pages_are_all_followed() -> None:
    client = FakeDynamoDBStreamsClient(describe_page_size=2)
    arn = client.create_table("wide", shard_count=3)
    first, second, third = client.shard_ids(arn)
    client.put_item(arn, item("x"))
    (first_child,) = client.roll_over(arn, first)
    (third_child,) = client.roll_over(arn, third)

    shards = await make_api(client, arn).list_shards()

    assert [s.shard_id for s in shards] == [first, second, third, first_child, third_child]
    assert [c for c, _, _ in client.calls] == ["DescribeStream"] * 3
    by_id = {s.shard_id: s for s in shards}
    assert by_id[first_child].parent_ids == (first,)
    assert by_id[third_child].parent_ids == (third,)
    assert by_id[second].parent_ids == ()
    assert not by_id[second].closed
    assert by_id[first].closed
    assert by_id[third].closed
    assert all(s.starting_sequence is not None for s in shards)


async def test_every_shard_of_a_paged_listing_is_read() -> None:
    client = FakeDynamoDBStreamsClient(describe_page_size=1)
    arn = client.create_table("wide", shard_count=4)
    for n in range(40):
        client.put_item(arn, item(f"k{n}"))
    backend = await deliver_all(client, arn, 40, batch_size=3)
    delivered = sequences(backend.delivered_records())
    assert sorted(delivered) == sorted(
        s for shard in client.shard_ids(arn) for s in stored_sequences(client, arn, shard)
    )
    # A batch holds records of one shard, in the shard's order.
    for event in backend.events:
        batch = sequences(event["Records"])
        owners = {
            shard
            for shard in client.shard_ids(arn)
            if set(batch) <= set(stored_sequences(client, arn, shard))
        }
        assert len(owners) == 1
        assert [int(s) for s in batch] == sorted(int(s) for s in batch)


async def test_closed_shard_answering_empty_pages_before_its_records_loses_nothing() -> None:
    client = FakeDynamoDBStreamsClient(empty_reads=2)
    arn = client.create_table("sparse")
    parent = client.shard_ids(arn)[0]
    for n in range(5):
        client.put_item(arn, item(f"p{n}"))
    (child,) = client.roll_over(arn, parent)
    client.put_item(arn, item("c0"))
    backend = RecordingBackend()
    runner = make_runner(client, arn, backend, MemoryCheckpointStore())

    def parent_finished() -> bool:
        state = runner.shards.get(parent)
        return state is not None and state.phase is ShardPhase.FINISHED

    await run_until(runner, parent_finished)
    assert sequences(backend.delivered_records()) == stored_sequences(client, arn, parent)
    assert child in runner.shards


async def test_open_shard_answering_empty_pages_is_read_through() -> None:
    client = FakeDynamoDBStreamsClient(empty_reads=3)
    arn = client.create_table("sparse")
    for n in range(4):
        client.put_item(arn, item(f"k{n}"))
    records = (await deliver_all(client, arn, 4)).delivered_records()
    assert sequences(records) == stored_sequences(client, arn, client.shard_ids(arn)[0])


# -- positions, trimming, errors ---------------------------------------------------------------


async def test_restart_resumes_after_the_checkpoint() -> None:
    client = FakeDynamoDBStreamsClient(page_limit=4)
    arn = client.create_table("orders")
    shard = client.shard_ids(arn)[0]
    for n in range(20):
        client.put_item(arn, item(f"k{n}"))
    store = MemoryCheckpointStore()
    first = RecordingBackend()
    await run_until(
        make_runner(client, arn, first, store, batch_size=3), lambda: len(first.events) >= 2
    )
    saved = await store.load("m1")
    assert saved[shard].sequence == sequences(first.delivered_records())[-1]
    second = RecordingBackend()
    remaining = 20 - len(first.delivered_records())
    await run_until(
        make_runner(client, arn, second, store, batch_size=3),
        lambda: len(second.delivered_records()) >= remaining,
    )
    both = sequences(first.delivered_records()) + sequences(second.delivered_records())
    assert both == stored_sequences(client, arn, shard)


async def test_latest_delivers_only_what_is_written_after_the_start() -> None:
    client = FakeDynamoDBStreamsClient()
    arn = client.create_table("orders")
    client.put_item(arn, item("old"))
    backend = RecordingBackend()
    runner = make_runner(client, arn, backend, MemoryCheckpointStore(), start=IteratorType.LATEST)

    async def write_later() -> None:
        while not runner.ready or not all(
            s.phase is ShardPhase.READING for s in runner.shards.values()
        ):
            await anyio.sleep(0.01)
        await anyio.sleep(0.2)
        client.put_item(arn, item("new"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(write_later)
        await run_until(runner, lambda: len(backend.delivered_records()) >= 1)
    assert [r["dynamodb"]["Keys"] for r in backend.delivered_records()] == [{"pk": {"S": "new"}}]


async def test_checkpoint_older_than_the_trim_horizon_resumes_at_trim_horizon() -> None:
    client = FakeDynamoDBStreamsClient()
    arn = client.create_table("orders")
    shard = client.shard_ids(arn)[0]
    for n in range(10):
        client.put_item(arn, item(f"k{n}"))
    stored = stored_sequences(client, arn, shard)
    store = MemoryCheckpointStore()
    await store.save("m1", shard, Checkpoint(stored[1]))
    client.trim(arn, shard, 6)

    backend = RecordingBackend()
    runner = make_runner(client, arn, backend, store)
    await run_until(runner, lambda: len(backend.delivered_records()) >= 4)

    assert sequences(backend.delivered_records()) == stored[6:]


async def test_trimmed_iterator_expired_iterator_and_throttles_lose_nothing() -> None:
    client = FakeDynamoDBStreamsClient(page_limit=5)
    arn = client.create_table("orders")
    shard = client.shard_ids(arn)[0]
    for n in range(30):
        client.put_item(arn, item(f"k{n}"))
    client.fail_next("GetRecords", "TrimmedDataAccessException")
    client.fail_next("GetRecords", "LimitExceededException", times=2)
    client.fail_next("DescribeStream", "InternalServerError")
    client.fail_next("GetShardIterator", "ThrottlingException")

    def expire_sometimes(event: dict[str, Any], call: int) -> Any:
        if call in (2, 4):
            client.expire_iterators()
        return None

    backend = RecordingBackend(expire_sometimes)
    runner = make_runner(client, arn, backend, MemoryCheckpointStore(), batch_size=4)
    await run_until(runner, lambda: len(backend.delivered_records()) >= 30)
    assert sequences(backend.delivered_records()) == stored_sequences(client, arn, shard)
    assert runner.metrics.read_errors.labels("m1", "throttled")._value.get() == 3


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("ExpiredIteratorException", ExpiredIterator),
        # An ExpiredIterator: the runner asks for a new iterator, which falls back to the
        # trim horizon.
        ("TrimmedDataAccessException", DataTrimmed),
        ("LimitExceededException", ThroughputExceeded),
        ("ThrottlingException", ThroughputExceeded),
        ("ResourceNotFoundException", ResourceNotFound),
        ("InternalServerError", TransientSourceError),
        ("AccessDeniedException", AccessDenied),
    ],
)
async def test_get_records_errors_are_translated(code: str, error: type[Exception]) -> None:
    client = FakeDynamoDBStreamsClient()
    arn = client.create_table("orders")
    api = make_api(client, arn)
    shard = client.shard_ids(arn)[0]
    iterator = await api.get_shard_iterator(shard, StartPosition(IteratorType.TRIM_HORIZON))
    client.fail_next("GetRecords", code)
    with pytest.raises(SourceError) as raised:
        await api.get_records(shard, iterator, 100)
    assert type(raised.value) is error


async def test_unknown_stream_is_resource_not_found() -> None:
    client = FakeDynamoDBStreamsClient()
    arn = client.create_table("orders")
    api = make_api(client, arn.replace("orders", "missing"))
    with pytest.raises(ResourceNotFound):
        await api.list_shards()
    with pytest.raises(ResourceNotFound):
        await api.get_shard_iterator(
            client.shard_ids(arn)[0], StartPosition(IteratorType.TRIM_HORIZON)
        )


async def test_sequence_positions_and_the_limit_ceiling() -> None:
    client = FakeDynamoDBStreamsClient()
    arn = client.create_table("orders")
    shard = client.shard_ids(arn)[0]
    for n in range(1200):
        client.put_item(arn, item(f"k{n}"))
    stored = stored_sequences(client, arn, shard)
    api = make_api(client, arn)

    # DynamoDB refuses a Limit above 1000; the Kinesis-sized default is clamped.
    iterator = await api.get_shard_iterator(shard, StartPosition(IteratorType.TRIM_HORIZON))
    page = await api.get_records(shard, iterator, 10_000)
    assert [r.sequence for r in page.records] == stored[:1000]
    assert page.millis_behind is None

    at = await api.get_shard_iterator(
        shard, StartPosition(IteratorType.AT_SEQUENCE_NUMBER, stored[5])
    )
    after = await api.get_shard_iterator(
        shard, StartPosition(IteratorType.AFTER_SEQUENCE_NUMBER, stored[5])
    )
    assert (await api.get_records(shard, at, 1)).records[0].sequence == stored[5]
    assert (await api.get_records(shard, after, 1)).records[0].sequence == stored[6]

    client.trim(arn, shard, 10)
    trimmed = await api.get_shard_iterator(
        shard, StartPosition(IteratorType.AFTER_SEQUENCE_NUMBER, stored[2])
    )
    assert (await api.get_records(shard, trimmed, 1)).records[0].sequence == stored[10]


async def test_at_timestamp_is_refused_clearly() -> None:
    client = FakeDynamoDBStreamsClient()
    arn = client.create_table("orders")
    api = make_api(client, arn)
    with pytest.raises(SourceError, match="TRIM_HORIZON or LATEST"):
        await api.get_shard_iterator(
            client.shard_ids(arn)[0], StartPosition(IteratorType.AT_TIMESTAMP, timestamp=T0)
        )
    assert not any(c == "GetShardIterator" for c, _, _ in client.calls)


async def test_closed_shard_that_keeps_returning_iterators_still_ends() -> None:
    client = FakeDynamoDBStreamsClient(closed_returns_iterator=True)
    arn = client.create_table("orders")
    parent = client.shard_ids(arn)[0]
    for n in range(6):
        client.put_item(arn, item(f"p{n}"))
    (child,) = client.roll_over(arn, parent)
    client.put_item(arn, item("c"))
    backend = RecordingBackend()
    runner = make_runner(client, arn, backend, MemoryCheckpointStore())
    await run_until(runner, lambda: len(backend.delivered_records()) >= 7)
    assert runner.shards[parent].phase is ShardPhase.FINISHED
    assert sequences(backend.delivered_records()) == stored_sequences(
        client, arn, parent
    ) + stored_sequences(client, arn, child)


# -- polling and parallelization ---------------------------------------------------------------


async def test_idle_shard_is_polled_about_four_times_a_second() -> None:
    client = FakeDynamoDBStreamsClient()
    arn = client.create_table("quiet")
    runner = make_runner(
        client,
        arn,
        RecordingBackend(),
        MemoryCheckpointStore(),
        poll_interval=POLL_INTERVAL_SECONDS,
    )

    def polls() -> list[float]:
        return [at for call, _, at in client.calls if call == "GetRecords"]

    await run_until(runner, lambda: len(polls()) >= 6)
    times = polls()
    per_second = (len(times) - 1) / (times[-1] - times[0])
    assert 3.0 <= per_second <= 4.5


async def test_parallel_lanes_keep_each_items_changes_in_order() -> None:
    client = FakeDynamoDBStreamsClient()
    arn = client.create_table("counters", ("pk", "sk"))
    for version in range(5):
        for n in range(8):
            client.put_item(arn, {"pk": {"S": f"c{n}"}, "sk": {"N": "0"}, "v": {"N": str(version)}})
    backend = await deliver_all(client, arn, 40, batch_size=3, parallelization=4)
    by_item: dict[str, list[str]] = {}
    for record in backend.delivered_records():
        by_item.setdefault(record["dynamodb"]["Keys"]["pk"]["S"], []).append(
            record["dynamodb"]["NewImage"]["v"]["N"]
        )
    assert by_item == {f"c{n}": ["0", "1", "2", "3", "4"] for n in range(8)}
    names = [r["eventName"] for r in backend.delivered_records()]
    assert names.count("INSERT") == 8
    assert names.count("MODIFY") == 32
