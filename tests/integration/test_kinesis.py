"""Kinesis end to end against moto's server: order, restarts, resharding, retries."""

from __future__ import annotations

import time
from typing import Any

import pytest

from esm.checkpoints.sqlite import SqliteCheckpointStore
from esm.testing import RecordingBackend, function_error

from .helpers import (
    create_stream,
    daemon_config,
    data_by_shard,
    put_into_shard,
    put_records,
    read_back,
    run_daemon_until,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_four_shards_five_thousand_records_in_order_none_missing(
    kinesis: Any, moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 4)
    written = await put_records(kinesis, stream_name, 5000)
    expected = await read_back(kinesis, stream_name)
    assert len(expected) == 4, "the keys spread over every shard"
    assert sorted(r for rs in expected.values() for r in rs) == sorted(written)
    backend = RecordingBackend()
    config = daemon_config(moto_endpoint, arn, batch_size=250)
    daemon = await run_daemon_until(
        config, backend, lambda: len(backend.delivered_records()) >= 5000
    )
    assert data_by_shard(backend) == expected
    assert all(len(e["Records"]) <= 250 for e in backend.events)
    # The event as the emulator's records make it, field by field.
    first = backend.events[0]["Records"][0]
    shard_id, sequence = first["eventID"].split(":")
    assert shard_id.startswith("shardId-")
    assert first["kinesis"]["sequenceNumber"] == sequence
    assert set(first) == {
        "kinesis",
        "eventSource",
        "eventVersion",
        "eventID",
        "eventName",
        "invokeIdentityArn",
        "awsRegion",
        "eventSourceARN",
    }
    assert set(first["kinesis"]) == {
        "kinesisSchemaVersion",
        "partitionKey",
        "sequenceNumber",
        "data",
        "approximateArrivalTimestamp",
    }
    assert first["kinesis"]["kinesisSchemaVersion"] == "1.0"
    assert first["kinesis"]["partitionKey"].startswith("key-")
    assert first["eventSource"] == "aws:kinesis"
    assert first["eventVersion"] == "1.0"
    assert first["eventName"] == "aws:kinesis:record"
    assert first["awsRegion"] == "us-east-1"
    assert first["eventSourceARN"] == arn
    assert first["invokeIdentityArn"] == f"arn:aws:iam::{arn.split(':')[4]}:role/esm"
    arrival = first["kinesis"]["approximateArrivalTimestamp"]
    assert isinstance(arrival, float)
    assert abs(arrival - time.time()) < 600
    assert round(arrival, 3) == arrival
    status = daemon.status()["mappings"][0]
    assert sum(s["records_delivered"] for s in status["shards"].values()) == 5000


async def test_restart_resumes_from_the_checkpoint_with_no_loss(
    kinesis: Any, moto_endpoint: str, stream_name: str, tmp_path: Any
) -> None:
    arn = await create_stream(kinesis, stream_name, 2)
    await put_records(kinesis, stream_name, 600)
    expected = await read_back(kinesis, stream_name)
    state = f"backend: sqlite\n  path: {tmp_path / 'state.db'}"
    config = daemon_config(moto_endpoint, arn, batch_size=50, state=state)

    first = RecordingBackend()
    await run_daemon_until(config, first, lambda: len(first.events) >= 4)
    store = SqliteCheckpointStore(str(tmp_path / "state.db"))
    saved = await store.load(config.mappings[0].mapping_id)
    await store.aclose()
    assert saved, "delivered batches left checkpoints in the state file"

    second = RecordingBackend()
    already = len(first.delivered_records())
    await run_daemon_until(config, second, lambda: len(second.delivered_records()) >= 600 - already)
    one, two = data_by_shard(first), data_by_shard(second)
    for shard, records in expected.items():
        assert one.get(shard, []) + two.get(shard, []) == records


async def test_split_shard_children_are_read_after_the_parent(
    kinesis: Any, moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    parent = (await kinesis.list_shards(StreamName=stream_name))["Shards"][0]["ShardId"]
    await put_records(kinesis, stream_name, 300, prefix="before")
    await kinesis.split_shard(
        StreamName=stream_name, ShardToSplit=parent, NewStartingHashKey=str(2**127)
    )
    children = [
        s["ShardId"]
        for s in (await kinesis.list_shards(StreamName=stream_name))["Shards"]
        if s.get("ParentShardId") == parent
    ]
    assert len(children) == 2
    for child in children:
        put_into_shard(stream_name, child, 150, prefix=f"{child}-")
    expected = await read_back(kinesis, stream_name)
    assert len(expected) == 3
    backend = RecordingBackend()
    config = daemon_config(moto_endpoint, arn, batch_size=20)
    await run_daemon_until(config, backend, lambda: len(backend.delivered_records()) >= 600)
    order = [e["Records"][0]["eventID"].split(":")[0] for e in backend.events]
    last_parent_batch = max(i for i, shard in enumerate(order) if shard == parent)
    first_child_batch = min(i for i, shard in enumerate(order) if shard != parent)
    assert last_parent_batch < first_child_batch
    assert data_by_shard(backend) == expected


async def test_handler_failing_twice_gets_the_same_batch_three_times(
    kinesis: Any, moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    await put_records(kinesis, stream_name, 30)

    def fail_twice(event: dict[str, Any], call: int) -> Any:
        return function_error("try again") if call <= 2 else None

    backend = RecordingBackend(fail_twice)
    config = daemon_config(moto_endpoint, arn, batch_size=100)
    await run_daemon_until(config, backend, lambda: len(backend.events) >= 3)
    assert len(backend.events) == 3
    assert backend.events[0] == backend.events[1] == backend.events[2]
    assert len(backend.events[0]["Records"]) == 30
