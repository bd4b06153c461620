"""Leases (state.backend dynamodb): what liveness costs, and how fast shards move.

- `writes`: 3 workers and 10, 100 or 1,000 idle shards on a lease table in memory, moved by
  a simulated clock (no sleeping): the table's writes and reads per second once the shards
  are even, beside what KCL's per-lease renewals would write.
- `failover`: 3 `esm run` processes on a 6-shard stream, against moto's server (Kinesis and
  DynamoDB) in this process, at the default lease settings. Each trial kills one process
  with SIGKILL and times, from the kill, the first record of one of its shards delivered by
  another process; then it starts a new process and waits until the shards are even again.
- `handoff`: the same, with SIGTERM: from the signal to the first record of one of its
  shards delivered elsewhere.

    .venv/bin/python bench/leases.py                 # all three, 20 kills, 10 SIGTERMs
    .venv/bin/python bench/leases.py --part writes
    .venv/bin/python bench/leases.py --part failover --trials 30
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
from aiobotocore.session import get_session
from common import Column, machine, quiet_logs, table

from esm.leases.heartbeat import Heartbeat
from esm.leases.liveness import Liveness
from esm.leases.manager import LeaseManager, LeaseSettings
from esm.model import ShardInfo
from esm.testing.leases import FakeLeaseStore, FakeShards

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import free_port
from tests.reliability.harness import EsmProcess, FunctionReceiver

WORKERS = 3
KCL_RENEWALS_PER_LEASE_PER_SECOND = 3 / 10.0
"""KCL renews every lease it holds every failoverTimeMillis / 3 (10 s / 3 by default)."""


# --------------------------------------------------------------------------- writes


class SimulatedWorker:
    def __init__(self, name: str, store: FakeLeaseStore, shards: int, clock: Any) -> None:
        liveness = Liveness(5.0)
        lease_table = store.table()
        self.heart = Heartbeat(lease_table, name, liveness, clock=clock)
        self.manager = LeaseManager(
            lease_table, LeaseSettings(worker=name), liveness, healthy=self.heart.healthy
        )
        self.shards = FakeShards(*(ShardInfo(f"shardId-{n:012d}") for n in range(shards)))

    async def second(self, now: float) -> None:
        """What a worker does in a second: one heartbeat, one pass; readers asked to let go
        end at once (an idle shard has no batch in flight)."""
        await self.heart.beat_once()
        for shard_id in sorted(self.shards.releasing):
            self.shards.end(shard_id)
        await self.manager.tick(self.shards, now)


async def idle_cost(shards: int, *, together: bool, measure_seconds: int = 120) -> dict[str, float]:
    store = FakeLeaseStore()
    now = [1000.0]
    workers = [SimulatedWorker(f"w{n}", store, shards, lambda: now[0]) for n in range(WORKERS)]
    even = shards // WORKERS
    if together:
        # Replicas that start at once see each other's heartbeats before their first pass.
        for worker in workers:
            await worker.heart.beat_once()
    balance_seconds = 0
    for _ in range(shards * 3 + 60):
        now[0] += 1.0
        balance_seconds += 1
        for worker in workers:
            await worker.second(now[0])
        held = sorted(len(w.shards.readers) for w in workers)
        if (
            held[0] >= even
            and held[-1] <= even + 1
            and not any(w.shards.releasing for w in workers)
        ):
            break
    before = dict(store.writes)
    for _ in range(measure_seconds):
        now[0] += 1.0
        for worker in workers:
            await worker.second(now[0])
    writes = {
        k: (store.writes.get(k, 0) - before.get(k, 0)) / measure_seconds for k in store.writes
    }
    return {
        "balance_seconds": float(balance_seconds),
        "beat": writes.get("beat", 0.0),
        "lease": writes.get("replace", 0.0) + writes.get("create", 0.0),
        "conflict": writes.get("conflict", 0.0),
        "scans": WORKERS * 1.0,  # one scan per worker per pass, and one pass a second
        "scanned_items": WORKERS * float(shards),
        "kcl": shards * KCL_RENEWALS_PER_LEASE_PER_SECOND,
    }


async def writes_part() -> str:
    rows = []
    for shards in (10, 100, 1000):
        cost = await idle_cost(shards, together=False)
        together = await idle_cost(shards, together=True, measure_seconds=10)
        rows.append(
            [
                f"{shards:,}",
                f"{together['balance_seconds']:,.0f}",
                f"{cost['balance_seconds']:,.0f}",
                f"{cost['beat']:.2f}",
                f"{cost['lease']:.2f}",
                f"{cost['beat'] + cost['lease']:.2f}",
                f"{cost['scanned_items']:,.0f}",
                f"{cost['kcl']:,.0f}",
            ]
        )
    columns = [
        Column("idle shards"),
        Column("s to even out, started together"),
        Column("s to even out, one took all"),
        Column("heartbeat writes/s"),
        Column("lease writes/s"),
        Column("esm writes/s"),
        Column("items scanned/s"),
        Column("KCL renewals/s"),
    ]
    return (
        f"3 workers, lease table in memory, simulated clock (1 pass and 1 heartbeat per "
        f"worker per second)\n\n{table(columns, rows)}"
    )


# --------------------------------------------------------------------------- processes


def config_text(endpoint: str, url: str, arn: str, lease_table: str, run: int, port: int) -> str:
    """Default lease and polling settings; only where to find AWS and the function."""
    return f"""
aws: {{region: us-east-1, endpoint_url: "{endpoint}"}}
state: {{backend: dynamodb, table: {lease_table}, worker_id: w{run}}}
admin: {{listen: "127.0.0.1:{port}"}}
log: {{format: json, level: warning}}
functions:
  sink: {{type: http, url: "{url}", timeout: 30}}
mappings:
  - {{FunctionName: sink, EventSourceArn: "{arn}", StartingPosition: LATEST, BatchSize: 100}}
"""


class Bench:
    def __init__(self, endpoint: str, receiver: FunctionReceiver, tmp: Path) -> None:
        self.endpoint = endpoint
        self.receiver = receiver
        self.tmp = tmp
        self.processes: dict[int, EsmProcess] = {}
        self.next_run = 0
        self.arn = ""
        self.lease_table = f"bench-leases-{uuid.uuid4().hex[:6]}"

    async def start(self) -> EsmProcess:
        run = self.next_run
        self.next_run += 1
        workdir = self.tmp / f"run-{run}"
        workdir.mkdir()
        port = free_port()
        text = config_text(
            self.endpoint, self.receiver.url(run), self.arn, self.lease_table, run, port
        )
        process = EsmProcess(workdir, lambda _run: text)
        self.processes[run] = process
        await process.start(run)
        await process.wait_ready(f"http://127.0.0.1:{port}")
        return process

    def live(self) -> dict[int, EsmProcess]:
        return {run: p for run, p in self.processes.items() if p.alive}

    def cleanup(self) -> None:
        for process in self.processes.values():
            process.cleanup()


async def owned(dynamodb: Any, lease_table: str) -> dict[str, str]:
    """Each shard's owner; "" for a free lease, and "handoff" while one is being handed over
    (its previous owner may still be delivering)."""
    items = (await dynamodb.scan(TableName=lease_table))["Items"]
    return {
        item["leaseKey"]["S"].split(":", 1)[1]: (
            "handoff" if "checkpointOwner" in item else item.get("leaseOwner", {}).get("S", "")
        )
        for item in items
        if ":" in item["leaseKey"]["S"]
    }


async def wait_even(dynamodb: Any, bench: Bench, shards: int, limit: float = 120) -> None:
    live = {f"w{run}" for run in bench.live()}
    with anyio.fail_after(limit):
        while True:
            counts = Counter((await owned(dynamodb, bench.lease_table)).values())
            if set(counts) == live and all(counts[w] == shards // len(live) for w in live):
                return
            await anyio.sleep(0.2)


async def first_delivery_elsewhere(
    receiver: FunctionReceiver, since: int, shards: set[str], victim: int, limit: float = 60
) -> float:
    """Seconds until a record of `shards` reaches the function from another process than
    `victim`, looking at deliveries from index `since` on."""
    started = time.monotonic()
    seen = since
    with anyio.fail_after(limit):
        while True:
            deliveries = receiver.deliveries
            for delivery in deliveries[seen:]:
                if delivery.run != victim and any(
                    r["eventID"].split(":")[0] in shards for r in delivery.records
                ):
                    return time.monotonic() - started
            seen = len(deliveries)
            await anyio.sleep(0.01)


async def produce(kinesis: Any, stream: str, stop: anyio.Event) -> None:
    n = 0
    while not stop.is_set():
        entries = [{"Data": b"x", "PartitionKey": f"key-{n + i}"} for i in range(24)]
        n += 24
        await kinesis.put_records(StreamName=stream, Records=entries)
        with anyio.move_on_after(0.1):
            await stop.wait()


async def moving_part(kind: str, trials: int, shards: int = 6) -> str:
    from esm.demo import serial_emulator

    # moto takes any credentials; these keep botocore (here and in esm) from looking further.
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)
    port = free_port()
    server = serial_emulator("127.0.0.1", port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    timings: list[float] = []
    session = get_session()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with (
                session.create_client(
                    "kinesis", region_name="us-east-1", endpoint_url=endpoint
                ) as kinesis,
                session.create_client(
                    "dynamodb", region_name="us-east-1", endpoint_url=endpoint
                ) as dynamodb,
                FunctionReceiver(1, max_delay=0.0) as receiver,
                anyio.create_task_group() as tg,
            ):
                stream = f"bench-{uuid.uuid4().hex[:6]}"
                await kinesis.create_stream(StreamName=stream, ShardCount=shards)
                summary = await kinesis.describe_stream_summary(StreamName=stream)
                bench = Bench(endpoint, receiver, Path(tmp))
                bench.arn = summary["StreamDescriptionSummary"]["StreamARN"]
                stop = anyio.Event()
                tg.start_soon(produce, kinesis, stream, stop)
                try:
                    for _ in range(WORKERS):
                        await bench.start()
                    for trial in range(trials):
                        await wait_even(dynamodb, bench, shards)
                        runs = sorted(bench.live())
                        victim = runs[trial % len(runs)]
                        held = {
                            s
                            for s, owner in (await owned(dynamodb, bench.lease_table)).items()
                            if owner == f"w{victim}"
                        }
                        mark = len(receiver.deliveries)
                        process = bench.processes[victim]
                        assert process.process is not None
                        if kind == "failover":
                            process.process.send_signal(9)
                        else:
                            process.process.send_signal(15)
                        timings.append(await first_delivery_elsewhere(receiver, mark, held, victim))
                        with anyio.fail_after(60):
                            await process.process.wait()
                        print(f"{kind} {trial + 1}/{trials}: {timings[-1]:.2f} s", file=sys.stderr)
                        await bench.start()
                finally:
                    stop.set()
                    bench.cleanup()
    finally:
        server.stop()
    ordered = sorted(timings)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    what = "SIGKILL" if kind == "failover" else "SIGTERM"
    rows = [
        [
            what,
            str(len(timings)),
            f"{statistics.median(timings):.2f}",
            f"{p95:.2f}",
            f"{min(timings):.2f}",
            f"{max(timings):.2f}",
        ]
    ]
    columns = [
        Column("signal", "<"),
        Column("trials"),
        Column("p50 s"),
        Column("p95 s"),
        Column("min s"),
        Column("max s"),
    ]
    return (
        f"{kind}: {WORKERS} esm run processes, {shards} shards, default lease settings "
        f"(lease_duration_seconds 5, a pass a second), polling at the default interval; "
        f"from the signal to the first record of one of the process's shards delivered by "
        f"another\n\n{table(columns, rows)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("writes", "failover", "handoff", "all"), default="all")
    parser.add_argument("--trials", type=int, default=20, help="kills for failover")
    parser.add_argument("--handoffs", type=int, default=10, help="SIGTERMs for handoff")
    args = parser.parse_args()
    quiet_logs()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    print(machine())
    print()
    if args.part in ("writes", "all"):
        print(anyio.run(writes_part))
        print()
    if args.part in ("failover", "all"):
        print(anyio.run(moving_part, "failover", args.trials))
        print()
    if args.part in ("handoff", "all"):
        print(anyio.run(moving_part, "handoff", args.handoffs))


if __name__ == "__main__":
    main()
