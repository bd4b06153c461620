"""Several `esm run` processes sharing one Kinesis stream through a lease table in DynamoDB
(moto's server for both): the shards spread evenly, a process killed with SIGKILL has its
shards continued by the others with nothing lost, one stopped with SIGTERM hands its shards
over with nothing delivered twice, a fleet grows and shrinks, and a split shard's children
wait for their parent whichever process reads which."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from esm.config import parse_config
from tests.conftest import free_port
from tests.integration.helpers import put_into_shard

from .harness import (
    EsmProcess,
    FunctionReceiver,
    KinesisItem,
    KinesisProducer,
    esm_config,
    kinesis_items,
    wait_until,
)

pytestmark = [pytest.mark.anyio, pytest.mark.reliability, pytest.mark.timeout(300)]

DURATION = 2.0
SETTLE_SECONDS = 60


class Fleet:
    """esm processes on one stream and one lease table. Each start is a new *run*: its own
    worker id (`w<run>`), its own URL at the function, its own admin port."""

    def __init__(
        self, tmp: Path, endpoint: str, receiver: FunctionReceiver, arn: str, table: str
    ) -> None:
        self.tmp = tmp
        self.endpoint = endpoint
        self.receiver = receiver
        self.arn = arn
        self.table = table
        self.processes: dict[int, EsmProcess] = {}
        self.mappings = f"""
  - FunctionName: sink
    EventSourceArn: {arn}
    StartingPosition: TRIM_HORIZON
    BatchSize: 10
"""

    def configure(self, run: int, admin: str) -> str:
        return esm_config(
            endpoint=self.endpoint,
            function_url=self.receiver.url(run),
            state_path=self.tmp / "unused.db",
            mappings=self.mappings,
            admin_listen=admin,
            state=f"backend: dynamodb\n  table: {self.table}\n  worker_id: w{run}\n"
            f"  lease_duration_seconds: {DURATION}",
        )

    @property
    def mapping_id(self) -> str:
        return parse_config(self.configure(0, "127.0.0.1:0"), environ={}).mappings[0].mapping_id

    async def start(self, run: int) -> EsmProcess:
        workdir = self.tmp / f"run-{run}"
        workdir.mkdir()
        port = free_port()
        process = EsmProcess(workdir, lambda r: self.configure(r, f"127.0.0.1:{port}"))
        self.processes[run] = process
        await process.start(run)
        await process.wait_ready(f"http://127.0.0.1:{port}")
        return process

    def cleanup(self) -> None:
        for process in self.processes.values():
            process.cleanup()

    def logs(self) -> str:
        return "\n".join(f"--- run {r}\n{p.log_tail(30)}" for r, p in self.processes.items())


@asynccontextmanager
async def fleet_on(
    tmp: Path, endpoint: str, kinesis: Any, shards: int, *, max_delay: float = 0.02
) -> AsyncIterator[tuple[Fleet, str]]:
    name = f"shared-{uuid.uuid4().hex[:10]}"
    await kinesis.create_stream(StreamName=name, ShardCount=shards)
    summary = await kinesis.describe_stream_summary(StreamName=name)
    arn = str(summary["StreamDescriptionSummary"]["StreamARN"])
    async with FunctionReceiver(7, max_delay=max_delay) as receiver:
        fleet = Fleet(tmp, endpoint, receiver, arn, f"leases-{uuid.uuid4().hex[:8]}")
        try:
            yield fleet, name
        finally:
            fleet.cleanup()


async def owners(dynamodb: Any, fleet: Fleet) -> Counter[str]:
    """How many of the mapping's leases each worker holds, as the table says."""
    items = (await dynamodb.scan(TableName=fleet.table))["Items"]
    prefix = f"{fleet.mapping_id}:"
    return Counter(
        item.get("leaseOwner", {}).get("S", "-")
        for item in items
        if item["leaseKey"]["S"].startswith(prefix)
    )


async def wait_for_owners(dynamodb: Any, fleet: Fleet, expected: dict[str, int]) -> None:
    with anyio.move_on_after(SETTLE_SECONDS):
        while (seen := await owners(dynamodb, fleet)) != Counter(expected):
            await anyio.sleep(0.2)
        return
    raise AssertionError(f"leases held {dict(seen)}, not {expected}\n{fleet.logs()}")


def items_of(fleet: Fleet) -> list[KinesisItem]:
    return kinesis_items(fleet.receiver, fleet.arn)


def delivered_all(fleet: Fleet, producer: KinesisProducer) -> Callable[[], bool]:
    def done() -> bool:
        return len({(i.key, i.n) for i in items_of(fleet)}) == producer.total

    return done


def order_violations(items: list[KinesisItem]) -> list[str]:
    """Within one process, each shard's records arrive in the shard's order."""
    last: dict[tuple[int, str], int] = {}
    problems = []
    for item in items:
        previous = last.get((item.run, item.shard))
        if previous is not None and item.sequence <= previous:
            problems.append(f"run {item.run} {item.shard}: {item.sequence} after {previous}")
        last[(item.run, item.shard)] = item.sequence
    return problems


def raw_items(fleet: Fleet) -> list[KinesisItem]:
    """Records whose data is not the producer's JSON (put straight into a shard)."""
    return [
        KinesisItem(
            run=run,
            shard=r["eventID"].split(":")[0],
            sequence=int(r["kinesis"]["sequenceNumber"]),
            key=r["kinesis"]["partitionKey"],
            n=0,
        )
        for run, r in fleet.receiver.records(fleet.arn)
    ]


def duplicates(items: list[KinesisItem]) -> int:
    return len(items) - len({(i.shard, i.sequence) for i in items})


async def test_three_processes_share_twelve_shards_through_a_kill_and_a_sigterm(
    moto_endpoint: str, kinesis: Any, dynamodb: Any, tmp_path: Path
) -> None:
    async with fleet_on(tmp_path, moto_endpoint, kinesis, 12) as (fleet, stream):
        producer = KinesisProducer(kinesis, stream, keys=60, seed=11)
        for run in range(3):
            await fleet.start(run)
        await producer.put(300)
        await wait_for_owners(dynamodb, fleet, {"w0": 4, "w1": 4, "w2": 4})
        await wait_until(delivered_all(fleet, producer), SETTLE_SECONDS, "every record")
        shards_with_records = {i.shard for i in items_of(fleet)}
        assert len(shards_with_records) == 12

        # kill -9: the two others continue its shards; nothing is lost.
        await fleet.processes[0].kill()
        await producer.put(200)
        await wait_for_owners(dynamodb, fleet, {"w1": 6, "w2": 6})
        await wait_until(delivered_all(fleet, producer), SETTLE_SECONDS, "after the kill")

        # SIGTERM: a graceful handoff, nothing delivered twice from here on.
        mark = len(items_of(fleet))
        assert await fleet.processes[1].stop() == 0
        await producer.put(200)
        await wait_for_owners(dynamodb, fleet, {"w2": 12})
        await wait_until(delivered_all(fleet, producer), SETTLE_SECONDS, "after the SIGTERM")
        items = items_of(fleet)
        before = {(i.shard, i.sequence) for i in items[:mark]}
        after = [(i.shard, i.sequence) for i in items[mark:]]
        assert len(after) == len(set(after))
        assert not before & set(after)
        assert order_violations(items) == []
        assert await fleet.processes[2].stop() == 0
    assert Counter(await owners(dynamodb, fleet)) == Counter({"-": 12})


async def test_a_fleet_grows_from_one_to_three_and_back_with_nothing_twice(
    moto_endpoint: str, kinesis: Any, dynamodb: Any, tmp_path: Path
) -> None:
    async with fleet_on(tmp_path, moto_endpoint, kinesis, 6) as (fleet, stream):
        producer = KinesisProducer(kinesis, stream, keys=30, seed=12)
        await fleet.start(0)
        await producer.put(150)
        await wait_for_owners(dynamodb, fleet, {"w0": 6})
        await wait_until(delivered_all(fleet, producer), SETTLE_SECONDS, "one process")
        await fleet.start(1)
        await fleet.start(2)
        await wait_for_owners(dynamodb, fleet, {"w0": 2, "w1": 2, "w2": 2})
        await producer.put(150)
        await wait_until(delivered_all(fleet, producer), SETTLE_SECONDS, "three processes")
        assert await fleet.processes[1].stop() == 0
        assert await fleet.processes[2].stop() == 0
        await producer.put(150)
        await wait_for_owners(dynamodb, fleet, {"w0": 6})
        await wait_until(delivered_all(fleet, producer), SETTLE_SECONDS, "back to one")
        items = items_of(fleet)
        assert duplicates(items) == 0
        assert order_violations(items) == []
        assert {i.run for i in items} == {0, 1, 2}
        assert await fleet.processes[0].stop() == 0


async def test_a_split_shard_s_children_wait_for_the_parent_across_processes(
    moto_endpoint: str, kinesis: Any, dynamodb: Any, tmp_path: Path
) -> None:
    # A slow function keeps the parent's records in flight while the children exist.
    async with fleet_on(tmp_path, moto_endpoint, kinesis, 2, max_delay=0.2) as (fleet, stream):
        parent = "shardId-000000000000"
        put_into_shard(stream, parent, 60, prefix="parent-")
        put_into_shard(stream, "shardId-000000000001", 10, prefix="other-")
        await kinesis.split_shard(
            StreamName=stream,
            ShardToSplit=parent,
            NewStartingHashKey=str(2**126),
        )
        shards = (await kinesis.list_shards(StreamName=stream))["Shards"]
        children = [s["ShardId"] for s in shards if s.get("ParentShardId") == parent]
        assert len(children) == 2
        for child in children:
            put_into_shard(stream, child, 10, prefix=f"{child}-")
        for run in range(2):
            await fleet.start(run)
        total = 60 + 10 + 20
        receiver = fleet.receiver
        await wait_until(
            lambda: len({(i.shard, i.sequence) for i in raw_items(fleet)}) == total,
            SETTLE_SECONDS,
            f"every record\n{fleet.logs()}",
        )
        records = raw_items(fleet)
        last_parent = max(n for n, i in enumerate(records) if i.shard == parent)
        first_child = min(n for n, i in enumerate(records) if i.shard in children)
        assert last_parent < first_child
        assert receiver.count(fleet.arn) == total  # nothing twice
        for process in fleet.processes.values():
            assert await process.stop() == 0
