"""Several esm processes on one Kinesis stream through `state.backend: dynamodb`, against
moto's server: the shards are shared, a worker that stops hands its shards on without a
record delivered twice, a KCL application's table is continued without replay, and a sqlite
state file's checkpoints are copied into the lease table."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from esm.checkpoints.sqlite import SqliteCheckpointStore
from esm.cli import main
from esm.config import EsmConfig
from esm.daemon import Daemon
from esm.metrics import Metrics
from esm.model import Checkpoint
from esm.testing import RecordingBackend, kinesis_data

from .helpers import create_stream, daemon_config, put_records

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

DURATION = 2


def shared_config(endpoint: str, arn: str, table: str, worker: str, extra: str = "") -> EsmConfig:
    return daemon_config(
        endpoint,
        arn,
        batch_size=10,
        state=f"backend: dynamodb\n  table: {table}\n  worker_id: {worker}\n"
        f"  lease_duration_seconds: {DURATION}",
        extra_mapping=extra,
    )


class Replica:
    """One esm process: a daemon with a recording function, run in the test's task group."""

    def __init__(self, config: EsmConfig) -> None:
        self.backend = RecordingBackend()
        self.metrics = Metrics()
        self.daemon = Daemon(config, backends={"fn": self.backend}, metrics=self.metrics)
        self.stopped = anyio.Event()

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            await self.daemon.run(handle_signals=False, task_status=task_status)
        finally:
            self.stopped.set()

    def data(self) -> list[bytes]:
        return [kinesis_data(record) for record in self.backend.delivered_records()]

    def shards(self) -> set[str]:
        return {record["eventID"].split(":")[0] for record in self.backend.delivered_records()}

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


async def wait_for(condition: Callable[[], bool], seconds: float = 45) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.05)


async def lease_items(dynamodb: Any, table: str) -> dict[str, dict[str, Any]]:
    items = (await dynamodb.scan(TableName=table))["Items"]
    return {item["leaseKey"]["S"]: item for item in items}


async def test_two_replicas_share_the_shards_and_a_stopped_one_hands_them_on(
    moto_endpoint: str, kinesis: Any, dynamodb: Any, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 4)
    table = f"leases-{uuid.uuid4().hex[:8]}"
    first = Replica(shared_config(moto_endpoint, arn, table, "worker-a"))
    second = Replica(shared_config(moto_endpoint, arn, table, "worker-b"))
    mapping_id = first.daemon.config.mappings[0].mapping_id
    label = first.daemon.config.mappings[0].mapping_name
    written = await put_records(kinesis, stream_name, 120, prefix="one-")

    def delivered() -> Counter[bytes]:
        return Counter(first.data() + second.data())

    async with anyio.create_task_group() as tg:
        await tg.start(first.run)
        await tg.start(second.run)
        # Both read: the shards even out, two each, whoever came first.
        await wait_for(lambda: len(first.shards()) == 2 and len(second.shards()) == 2)
        await wait_for(lambda: set(delivered()) == set(written))

        # /status shows every shard's lease: its owner and its fencing counter (the other
        # worker's leases as of the last pass, a second at most).
        def owners() -> Counter[str | None]:
            (entry,) = first.daemon.status()["mappings"]
            return Counter(shard["lease"]["owner"] for shard in entry["shards"].values())

        await wait_for(lambda: owners() == Counter({"worker-a": 2, "worker-b": 2}), 5)
        (entry,) = first.daemon.status()["mappings"]
        assert all(isinstance(s["lease"]["counter"], int) for s in entry["shards"].values())
        more = await put_records(kinesis, stream_name, 80, prefix="two-")
        first.daemon.request_stop()
        await first.stopped.wait()
        # The survivor takes the released leases on its next pass and reads on from their
        # final checkpoints.
        await wait_for(lambda: set(delivered()) == set(written + more))
        await wait_for(lambda: len(second.shards()) == 4)
        assert second.metric("esm_leases_held", mapping=label) == 4
        items = await lease_items(dynamodb, table)
        assert {items[f"{mapping_id}:{s}"]["leaseOwner"]["S"] for s in second.shards()} == {
            "worker-b"
        }
        second.daemon.request_stop()

    assert delivered() == Counter(written + more)  # nothing twice
    items = await lease_items(dynamodb, table)
    leases = {key: item for key, item in items.items() if key.startswith(f"{mapping_id}:")}
    assert len(leases) == 4
    assert all("leaseOwner" not in item for item in leases.values())  # all released
    assert all(item["checkpoint"]["S"].isdigit() for item in leases.values())
    assert items["esm-workers"]["heartbeats"] == {"M": {}}  # both said goodbye
    assert (
        first.metric("esm_leases_taken_total", mapping=label)
        + second.metric("esm_leases_taken_total", mapping=label)
        + second.metric("esm_leases_stolen_total", mapping=label)
        >= 6
    )
    lease_writes = {"service": "dynamodb", "operation": "UpdateItem", "outcome": "ok"}
    assert second.metric("esm_aws_calls_total", **lease_writes) > 0


async def test_a_kcl_application_s_table_is_continued_without_replay(
    moto_endpoint: str, kinesis: Any, dynamodb: Any, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    written = await put_records(kinesis, stream_name, 10, prefix="kcl-")
    shard = "shardId-000000000000"
    iterator = (
        await kinesis.get_shard_iterator(
            StreamName=stream_name, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )
    )["ShardIterator"]
    sequences = [
        r["SequenceNumber"] for r in (await kinesis.get_records(ShardIterator=iterator))["Records"]
    ]
    kcl_table = f"orders-app-{uuid.uuid4().hex[:6]}"
    await dynamodb.create_table(
        TableName=kcl_table,
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    # As a KCL worker that crashed left it: checkpointed after the sixth record, still owned.
    await dynamodb.put_item(
        TableName=kcl_table,
        Item={
            "leaseKey": {"S": shard},
            "leaseOwner": {"S": "kcl-host-1"},
            "leaseCounter": {"N": "311"},
            "checkpoint": {"S": sequences[5]},
            "checkpointSubSequenceNumber": {"N": "0"},
            "ownerSwitchesSinceCheckpoint": {"N": "0"},
            "pendingCheckpoint": {"S": sequences[7]},
        },
    )
    replica = Replica(
        shared_config(
            moto_endpoint,
            arn,
            f"esm-{uuid.uuid4().hex[:8]}",
            "esm-1",
            extra=f"    kcl_lease_table: {kcl_table}",
        )
    )
    async with anyio.create_task_group() as tg:
        await tg.start(replica.run)
        await wait_for(lambda: len(replica.data()) >= 4)
        await anyio.sleep(0.5)  # nothing more comes
        replica.daemon.request_stop()
    assert replica.data() == written[6:]
    item = (await lease_items(dynamodb, kcl_table))[shard]
    assert item["checkpoint"] == {"S": sequences[9]}
    assert "leaseOwner" not in item
    assert item["pendingCheckpoint"] == {"S": sequences[7]}  # not esm's to touch
    assert int(item["leaseCounter"]["N"]) > 311


async def test_copy_checkpoints_turns_a_state_file_into_free_leases(
    moto_endpoint: str,
    kinesis: Any,
    dynamodb: Any,
    stream_name: str,
    tmp_path: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    arn = await create_stream(kinesis, stream_name, 2)
    table = f"leases-{uuid.uuid4().hex[:8]}"
    config_path = tmp_path / "esm.yaml"
    config_path.write_text(
        f"""
aws: {{region: us-east-1, endpoint_url: "{moto_endpoint}"}}
state: {{backend: dynamodb, table: {table}}}
functions:
  fn: {{type: http, url: "http://127.0.0.1:9/"}}
mappings:
  - {{FunctionName: fn, EventSourceArn: "{arn}", StartingPosition: TRIM_HORIZON}}
"""
    )
    config = shared_config(moto_endpoint, arn, table, "w")
    mapping_id = config.mappings[0].mapping_id
    state_file = tmp_path / "esm-state.db"
    async with SqliteCheckpointStore(str(state_file)) as store:
        await store.save(mapping_id, "shardId-000000000000", Checkpoint("4950001"))
        await store.save(mapping_id, "shardId-000000000001", Checkpoint(None, finished=True))
        await store.save("another-mapping", "shardId-000000000000", Checkpoint("1"))

    argv = ["copy-checkpoints", "-c", str(config_path), "--from", str(state_file)]
    assert await anyio.to_thread.run_sync(main, argv) == 0
    printed = capsys.readouterr().out
    assert "copied 2 checkpoint(s) into leases" in printed
    items = await lease_items(dynamodb, table)
    assert items[f"{mapping_id}:shardId-000000000000"]["checkpoint"] == {"S": "4950001"}
    assert items[f"{mapping_id}:shardId-000000000001"]["checkpoint"] == {"S": "SHARD_END"}
    assert all("leaseOwner" not in item for item in items.values())
    assert len(items) == 2

    # A second copy keeps what the table holds (it may be newer) and says so.
    assert await anyio.to_thread.run_sync(main, argv) == 0
    assert "kept 2 lease(s) that existed already" in capsys.readouterr().out
    # A state file that is not there is one clear line.
    missing = ["copy-checkpoints", "-c", str(config_path), "--from", str(tmp_path / "nope.db")]
    assert await anyio.to_thread.run_sync(main, missing) == 1
    assert "no such state file" in capsys.readouterr().err


async def test_a_seek_moves_every_replica_through_the_leases(
    moto_endpoint: str, kinesis: Any, dynamodb: Any, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 2)
    table = f"leases-{uuid.uuid4().hex[:8]}"
    first = Replica(shared_config(moto_endpoint, arn, table, "worker-a"))
    second = Replica(shared_config(moto_endpoint, arn, table, "worker-b"))
    label = first.daemon.config.mappings[0].mapping_name
    written = await put_records(kinesis, stream_name, 30, prefix="one-")

    def delivered() -> Counter[bytes]:
        return Counter(first.data() + second.data())

    async with anyio.create_task_group() as tg:
        await tg.start(first.run)
        await tg.start(second.run)
        await wait_for(lambda: len(first.shards()) == 1 and len(second.shards()) == 1)
        await wait_for(lambda: delivered() == Counter(written))

        # Asked of one replica, the seek moves the other's shard too: both read again.
        answer = await first.daemon.seek(label, "TRIM_HORIZON")
        assert answer["leases"] is True
        assert len(answer["shards"]) == 2
        await wait_for(lambda: delivered() == Counter(written * 2))
        more = await put_records(kinesis, stream_name, 10, prefix="two-")
        await wait_for(lambda: delivered() == Counter(written * 2 + more))
        first.daemon.request_stop()
        second.daemon.request_stop()

    # Moved leases were set free, not lost: no lease-lost alert for an operator's seek.
    lost = first.metric("esm_leases_lost_total", mapping=label) + second.metric(
        "esm_leases_lost_total", mapping=label
    )
    assert lost == 0
    items = await lease_items(dynamodb, table)
    leases = [item for key, item in items.items() if key != "esm-workers"]
    assert all(item["checkpoint"]["S"].isdigit() for item in leases)
    assert all("esmStartingPosition" not in item for item in leases)


async def test_a_stopped_leased_mapping_is_moved_in_its_lease_table(
    moto_endpoint: str, kinesis: Any, dynamodb: Any, stream_name: str, tmp_path: Any
) -> None:
    from esm.engine.seek import parse_target
    from esm.offline_seek import seek_stopped

    arn = await create_stream(kinesis, stream_name, 1)
    table = f"leases-{uuid.uuid4().hex[:8]}"
    config = shared_config(moto_endpoint, arn, table, "worker-a")
    written = await put_records(kinesis, stream_name, 12, prefix="one-")
    replica = Replica(config)
    async with anyio.create_task_group() as tg:
        await tg.start(replica.run)
        await wait_for(lambda: replica.data() == written)
        replica.daemon.request_stop()
    sequences = [r["kinesis"]["sequenceNumber"] for r in replica.backend.delivered_records()]
    shard = replica.backend.delivered_records()[0]["eventID"].split(":")[0]
    mapping_id = config.mappings[0].mapping_id

    target = parse_target(f"AT_SEQUENCE_NUMBER={sequences[4]}")
    assert await seek_stopped(config, "fn-" + stream_name, target, shard) == [shard]

    item = (await lease_items(dynamodb, table))[f"{mapping_id}:{shard}"]
    # KCL's nearest meaning in `checkpoint`, esm's exact one beside it; the lease is free.
    assert item["checkpoint"] == {"S": sequences[4]}
    assert item["esmStartingPosition"] == {"S": f"AT_SEQUENCE_NUMBER:{sequences[4]}"}
    assert "leaseOwner" not in item
    again = Replica(config)
    async with anyio.create_task_group() as tg:
        await tg.start(again.run)
        await wait_for(lambda: again.data() == written[4:])
        again.daemon.request_stop()
    item = (await lease_items(dynamodb, table))[f"{mapping_id}:{shard}"]
    assert item["checkpoint"] == {"S": sequences[-1]}
    assert "esmStartingPosition" not in item
