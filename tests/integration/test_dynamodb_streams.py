"""DynamoDB Streams against moto's server: table changes become Lambda events, in order."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
from aiobotocore.session import get_session

from esm.checkpoints.memory import MemoryCheckpointStore
from esm.engine.batcher import BatchLimits
from esm.engine.driver import Deliverer, FunctionTarget
from esm.engine.retry import Backoff
from esm.engine.stream_model import StreamSettings
from esm.engine.streams import StreamEngine
from esm.metrics import Metrics
from esm.model import IteratorType, StartPosition
from esm.sources.dynamodb_streams import (
    MAX_RECORDS_PER_CALL,
    DynamoDBRecordFactory,
    DynamoDBStreamAPI,
    enable_wire_records,
)
from esm.testing import RecordingBackend

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

REGION = "us-east-1"
FAST = Backoff(initial=0.05, maximum=0.2)
KEYS = {"pk": {"S": "order-1"}, "sk": {"N": "7"}}


@pytest.fixture
async def dynamodb(moto_endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "dynamodb", region_name=REGION, endpoint_url=moto_endpoint
    ) as client:
        yield client


@pytest.fixture
async def streams(moto_endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "dynamodbstreams", region_name=REGION, endpoint_url=moto_endpoint
    ) as client:
        yield client


@pytest.fixture
def table_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


async def create_table(dynamodb: Any, name: str, view: str = "NEW_AND_OLD_IMAGES") -> str:
    """A table keyed by pk (string) and sk (number) with a stream; returns the stream ARN."""
    answer = await dynamodb.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": view},
    )
    return str(answer["TableDescription"]["LatestStreamArn"])


async def insert_modify_remove(dynamodb: Any, name: str) -> None:
    await dynamodb.put_item(
        TableName=name, Item={**KEYS, "qty": {"N": "2"}, "tag": {"B": b"\x00\xff"}}
    )
    await dynamodb.update_item(
        TableName=name,
        Key=KEYS,
        UpdateExpression="SET qty = :q, note = :n",
        ExpressionAttributeValues={":q": {"N": "3"}, ":n": {"S": "gift"}},
    )
    await dynamodb.delete_item(TableName=name, Key=KEYS)


def make_runner(
    streams: Any,
    arn: str,
    backend: RecordingBackend,
    store: MemoryCheckpointStore,
    *,
    batch_size: int = 100,
) -> StreamEngine:
    metrics = Metrics()
    api = DynamoDBStreamAPI(streams, stream_arn=arn, records=DynamoDBRecordFactory(arn, REGION))
    settings = StreamSettings(
        mapping_id="ddb",
        starting_position=StartPosition(IteratorType.TRIM_HORIZON),
        limits=BatchLimits(batch_size=batch_size),
        poll_interval=0.1,
        busy_poll_interval=0.1,
        records_limit=MAX_RECORDS_PER_CALL,
        discovery_interval=0.5,
        read_backoff=FAST,
    )
    target = FunctionTarget(
        name="fn", arn=f"arn:aws:lambda:{REGION}:123456789012:function:fn", timeout=3
    )
    deliverer = Deliverer(backend, target, "ddb", metrics, backoff=FAST)
    return StreamEngine(api, settings, deliverer, store, metrics)


async def run_until(runner: StreamEngine, done: Callable[[], bool]) -> None:
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            while not done():
                await anyio.sleep(0.02)
            runner.stop()


async def deliver(
    streams: Any, arn: str, count: int, store: MemoryCheckpointStore | None = None
) -> RecordingBackend:
    backend = RecordingBackend()
    runner = make_runner(streams, arn, backend, store or MemoryCheckpointStore())
    await run_until(runner, lambda: len(backend.delivered_records()) >= count)
    return backend


async def test_insert_modify_remove_arrive_in_order_with_lambdas_shape(
    dynamodb: Any, streams: Any, table_name: str
) -> None:
    arn = await create_table(dynamodb, table_name)
    written_at = time.time()
    await insert_modify_remove(dynamodb, table_name)
    enable_wire_records(streams)

    records = (await deliver(streams, arn, 3)).delivered_records()

    assert len(records) == 3
    numbers = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert numbers == sorted(set(numbers))
    inserted = {**KEYS, "qty": {"N": "2"}, "tag": {"B": "AP8="}}
    modified = {**inserted, "qty": {"N": "3"}, "note": {"S": "gift"}}
    expected_changes: list[dict[str, Any]] = [
        {"Keys": KEYS, "NewImage": inserted},
        {"Keys": KEYS, "NewImage": modified, "OldImage": inserted},
        {"Keys": KEYS, "OldImage": modified},
    ]
    for record, name, change in zip(
        records, ["INSERT", "MODIFY", "REMOVE"], expected_changes, strict=True
    ):
        assert list(record) == [
            "eventID",
            "eventName",
            "eventVersion",
            "eventSource",
            "awsRegion",
            "dynamodb",
            "eventSourceARN",
        ]
        assert len(record["eventID"]) == 32
        int(record["eventID"], 16)
        assert record["eventName"] == name
        # moto writes "1.0" where AWS writes "1.1"; esm passes on what the stream says.
        assert record["eventVersion"] == "1.0"
        assert record["eventSource"] == "aws:dynamodb"
        assert record["awsRegion"] == REGION
        assert record["eventSourceARN"] == arn
        dynamodb_part = record["dynamodb"]
        created = dynamodb_part.pop("ApproximateCreationDateTime")
        # moto keeps milliseconds; the event has whole seconds, as on AWS.
        assert isinstance(created, int)
        assert int(written_at) - 1 <= created <= time.time()
        size = dynamodb_part.pop("SizeBytes")
        assert isinstance(size, int)
        assert size > 0
        sequence = dynamodb_part.pop("SequenceNumber")
        assert sequence.isdigit()
        assert dynamodb_part == {**change, "StreamViewType": "NEW_AND_OLD_IMAGES"}


async def test_wire_form_and_botocore_form_deliver_identical_events(
    dynamodb: Any, streams: Any, moto_endpoint: str, table_name: str
) -> None:
    arn = await create_table(dynamodb, table_name)
    await insert_modify_remove(dynamodb, table_name)
    parsed = (await deliver(streams, arn, 3)).events
    async with get_session().create_client(
        "dynamodbstreams", region_name=REGION, endpoint_url=moto_endpoint
    ) as wire_client:
        enable_wire_records(wire_client)
        wire = (await deliver(wire_client, arn, 3)).events
    assert wire == parsed
    assert wire[0]["Records"][0]["dynamodb"]["NewImage"]["tag"] == {"B": "AP8="}


async def test_keys_only_stream_carries_no_images(
    dynamodb: Any, streams: Any, table_name: str
) -> None:
    arn = await create_table(dynamodb, table_name, view="KEYS_ONLY")
    await insert_modify_remove(dynamodb, table_name)
    enable_wire_records(streams)
    records = (await deliver(streams, arn, 3)).delivered_records()
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "REMOVE"]
    for record in records:
        assert list(record["dynamodb"]) == [
            "ApproximateCreationDateTime",
            "Keys",
            "SequenceNumber",
            "SizeBytes",
            "StreamViewType",
        ]
        assert record["dynamodb"]["Keys"] == KEYS
        assert record["dynamodb"]["StreamViewType"] == "KEYS_ONLY"


async def test_restart_resumes_after_the_checkpoint(
    dynamodb: Any, streams: Any, table_name: str
) -> None:
    arn = await create_table(dynamodb, table_name)
    for n in range(40):
        await dynamodb.put_item(TableName=table_name, Item={"pk": {"S": f"k{n}"}, "sk": {"N": "0"}})
    enable_wire_records(streams)
    store = MemoryCheckpointStore()

    first = RecordingBackend()
    runner = make_runner(streams, arn, first, store, batch_size=7)
    await run_until(runner, lambda: len(first.events) >= 2)
    saved = await store.load("ddb")
    (checkpoint,) = saved.values()
    delivered_first = [r["dynamodb"]["SequenceNumber"] for r in first.delivered_records()]
    assert checkpoint.sequence == delivered_first[-1]

    second = RecordingBackend()
    remaining = 40 - len(delivered_first)
    runner = make_runner(streams, arn, second, store, batch_size=7)
    await run_until(runner, lambda: len(second.delivered_records()) >= remaining)
    delivered_second = [r["dynamodb"]["SequenceNumber"] for r in second.delivered_records()]

    everything = delivered_first + delivered_second
    assert len(everything) == 40
    assert [int(s) for s in everything] == sorted({int(s) for s in everything})
    keys = [r["dynamodb"]["Keys"]["pk"]["S"] for r in first.delivered_records()] + [
        r["dynamodb"]["Keys"]["pk"]["S"] for r in second.delivered_records()
    ]
    assert keys == [f"k{n}" for n in range(40)]


async def test_the_daemon_delivers_a_table_stream_in_order_with_exact_shapes(
    dynamodb: Any, moto_endpoint: str, table_name: str
) -> None:
    from .helpers import daemon_config, run_daemon_until

    stream_arn = await create_table(dynamodb, table_name)
    await insert_modify_remove(dynamodb, table_name)
    backend = RecordingBackend()
    config = daemon_config(moto_endpoint, stream_arn, batch_size=10)
    mapping = config.mappings[0]
    assert mapping.source_kind == "dynamodb"
    await run_daemon_until(config, backend, lambda: len(backend.delivered_records()) >= 3)
    records = backend.delivered_records()
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "REMOVE"]
    for record in records:
        assert set(record) == {
            "eventID",
            "eventName",
            "eventVersion",
            "eventSource",
            "awsRegion",
            "dynamodb",
            "eventSourceARN",
        }
        assert record["eventSource"] == "aws:dynamodb"
        assert record["eventSourceARN"] == stream_arn
        assert record["awsRegion"] == REGION
        assert record["dynamodb"]["Keys"] == KEYS
        assert record["dynamodb"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], int)
        assert isinstance(record["dynamodb"]["SizeBytes"], int)
    insert, modify, remove = (r["dynamodb"] for r in records)
    assert "OldImage" not in insert
    assert insert["NewImage"]["qty"] == {"N": "2"}
    assert modify["OldImage"]["qty"] == {"N": "2"}
    assert "NewImage" not in remove
    sequences = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert sequences == sorted(sequences)


async def test_filters_match_the_new_image_in_dynamodb_json(
    dynamodb: Any, moto_endpoint: str, table_name: str
) -> None:
    from esm.metrics import Metrics

    from .helpers import daemon_config, run_daemon_until

    stream_arn = await create_table(dynamodb, table_name)
    for n, status in enumerate(["shipped", "pending", "shipped", "cancelled"]):
        await dynamodb.put_item(
            TableName=table_name,
            Item={"pk": {"S": f"order-{n}"}, "sk": {"N": "1"}, "status": {"S": status}},
        )
    pattern = '{"eventName": ["INSERT"], "dynamodb": {"NewImage": {"status": {"S": ["shipped"]}}}}'
    backend = RecordingBackend()
    metrics = Metrics()
    config = daemon_config(
        moto_endpoint,
        stream_arn,
        extra_mapping=f"    FilterCriteria: {{Filters: [{{Pattern: '{pattern}'}}]}}",
    )
    filtered = metrics.filtered_out_events.labels(config.mappings[0].mapping_name)
    await run_daemon_until(
        config,
        backend,
        lambda: filtered._value.get() >= 2 and len(backend.delivered_records()) >= 2,
        metrics=metrics,
    )
    keys = [r["dynamodb"]["Keys"]["pk"]["S"] for r in backend.delivered_records()]
    assert keys == ["order-0", "order-2"]
