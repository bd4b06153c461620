"""KPL de-aggregation end to end against moto's server: aggregated records come to the
function as their user records, and a restart inside a container resumes after what was
delivered, without replaying it."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from aws_kinesis_agg.aggregator import AggRecord

from esm.checkpoints.sqlite import SqliteCheckpointStore
from esm.engine.lanes import lane_of
from esm.testing import RecordingBackend, function_error

from .helpers import create_stream, daemon_config, run_daemon_until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def put_container(kinesis: Any, stream: str, users: list[tuple[str, bytes]]) -> str:
    aggregate = AggRecord()
    for key, data in users:
        assert aggregate.add_user_record(key, data)
    key, _, data = aggregate.get_contents()
    answer = await kinesis.put_record(StreamName=stream, PartitionKey=key, Data=data)
    return str(answer["SequenceNumber"])


def user_data(backend: RecordingBackend) -> list[bytes]:
    return [base64.b64decode(r["kinesis"]["data"]) for r in backend.delivered_records()]


async def test_a_restart_inside_a_container_goes_on_after_what_was_delivered(
    kinesis: Any, moto_endpoint: str, stream_name: str, tmp_path: Path
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    users = [(f"order-{n % 3}", f"user-{n}".encode()) for n in range(5)]
    container = await put_container(kinesis, stream_name, users)
    await kinesis.put_record(StreamName=stream_name, PartitionKey="plain", Data=b"plain-record")
    state = tmp_path / "state.db"
    config = daemon_config(
        moto_endpoint,
        arn,
        batch_size=2,
        state=f"backend: sqlite\n  path: {state}",
        extra_mapping="    kpl_deaggregate: true",
    )
    # The first batch succeeds; the second keeps failing until esm is stopped.
    first = RecordingBackend(lambda event, call: None if call == 1 else function_error())
    await run_daemon_until(config, first, lambda: len(first.events) >= 3)

    [event] = first.events[:1]
    assert [r["kinesis"]["partitionKey"] for r in event["Records"]] == ["order-0", "order-1"]
    assert [r["kinesis"]["subSequenceNumber"] for r in event["Records"]] == [0, 1]
    assert {r["kinesis"]["sequenceNumber"] for r in event["Records"]} == {container}
    async with SqliteCheckpointStore(str(state)) as store:
        [checkpoint] = (await store.load(config.mappings[0].mapping_id)).values()
    assert checkpoint.sequence == f"{container}:1"

    again = RecordingBackend()
    await run_daemon_until(config, again, lambda: len(again.delivered_records()) >= 4)
    assert user_data(again) == [b"user-2", b"user-3", b"user-4", b"plain-record"]
    last = again.delivered_records()[-1]["kinesis"]
    assert "subSequenceNumber" not in last
    assert last["partitionKey"] == "plain"


async def test_user_records_spread_over_lanes_by_their_own_keys_in_order(
    kinesis: Any, moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    users = [(f"key-{n % 4}", f"{n % 4}:{n}".encode()) for n in range(40)]
    await put_container(kinesis, stream_name, users[:20])
    await put_container(kinesis, stream_name, users[20:])
    config = daemon_config(
        moto_endpoint,
        arn,
        batch_size=5,
        extra_mapping="    kpl_deaggregate: true\n    ParallelizationFactor: 4",
    )
    backend = RecordingBackend()
    await run_daemon_until(config, backend, lambda: len(backend.delivered_records()) >= 40)
    by_key: dict[str, list[bytes]] = {}
    for data in user_data(backend):
        by_key.setdefault(data.split(b":")[0].decode(), []).append(data)
    for key, seen in by_key.items():
        assert seen == [d for _, d in users if d.startswith(f"{key}:".encode())], key
    # Lanes are chosen by each user record's own key: no batch mixes keys of two lanes.
    lanes = [
        {lane_of(r["kinesis"]["partitionKey"], 4) for r in e["Records"]} for e in backend.events
    ]
    assert all(len(lane) == 1 for lane in lanes)
    assert len(set().union(*lanes)) > 1
