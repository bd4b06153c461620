"""Idle-shard benchmark: what esm costs while its shards have nothing to read.

A canned Kinesis server, in a process of its own, lists N shards and answers every
GetRecords with no records (`MillisBehindLatest` 0, the tip of the shard), counting the
calls by operation. esm, in another process of its own per shard count, reads the stream as
the daemon does: the real `KinesisStreamAPI` over an aiobotocore client in wire form, with
GetRecords on the lean path (`esm/aws/lean.py`; `--client-path`: through the client), a
`StreamEngine` with the shipped idle polling interval (`polling.interval_seconds`, 1 s), a
no-op function and memory checkpoints, the collector tuned as `esm run` tunes it. After a
warm-up (every shard read once), the run is timed for `--seconds`: esm's CPU time (user +
system, its own process), its resident memory at the end, and the GetRecords calls the
server counted.

Run: .venv/bin/python bench/idle.py [--shards 10 100 1000] [--seconds 20] [--interval 1.0]
     [--client-path]
"""

from __future__ import annotations

import argparse
import resource
import time

import anyio
from canned_kinesis import CannedKinesis
from common import (
    Column,
    FinishLineStore,
    add_client_path_flag,
    get_records_path,
    in_own_process,
    local_kinesis_api,
    machine,
    make_runner,
    process_cpu_seconds,
    quiet_logs,
    table,
)


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


async def _measure(
    server: CannedKinesis, shards: int, seconds: float, interval: float, use_lean: bool
) -> dict[str, float]:
    from esm.gc_tuning import freeze_startup_heap, tune_collector

    quiet_logs()
    tune_collector()
    async with local_kinesis_api(server.port, lean=use_lean) as api:
        runner, _ = make_runner(api, FinishLineStore(shards), 100, poll_interval=interval)
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            # Warm-up: every shard has read at least once.
            with anyio.fail_after(120):
                while server.counts().get("GetRecords", 0) < shards:
                    await anyio.sleep(0.5)
            await anyio.sleep(interval * 2)
            freeze_startup_heap()
            before, cpu, wall = server.counts(), process_cpu_seconds(), time.monotonic()
            await anyio.sleep(seconds)
            after = server.counts()
            cpu, wall = process_cpu_seconds() - cpu, time.monotonic() - wall
            rss = _rss_mb()
            runner.stop()
            tg.cancel_scope.cancel()
    reads = after.get("GetRecords", 0) - before.get("GetRecords", 0)
    return {
        "shards": shards,
        "cpu_share": cpu / wall,
        "rss_mb": rss,
        "reads_per_shard_s": reads / shards / wall,
        "cpu_us_per_read": cpu / reads * 1e6 if reads else 0.0,
    }


def measure(shards: int, seconds: float, interval: float, use_lean: bool) -> dict[str, float]:
    """One esm against its canned stream, each in a process of its own."""
    with CannedKinesis(shards) as server:
        result: dict[str, float] = anyio.run(_measure, server, shards, seconds, interval, use_lean)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--shards", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=1.0, help="idle polling interval")
    add_client_path_flag(parser)
    args = parser.parse_args()
    print(f"esm idle benchmark: {machine()}")
    path = get_records_path(args)
    print(
        f"idle polling interval {args.interval} s; {args.seconds} s timed after a warm-up; "
        f"GetRecords through {path}"
    )
    rows = []
    for shards in args.shards:
        result = in_own_process(measure, shards, args.seconds, args.interval, not args.client_path)
        rows.append(
            [
                f"{shards:,}",
                f"{result['cpu_share'] * 100:.1f}%",
                f"{result['rss_mb']:.0f}",
                f"{result['reads_per_shard_s']:.2f}",
                f"{result['cpu_us_per_read']:.0f}",
            ]
        )
        print(f"{shards} shards: {result}", flush=True)
    columns = [
        Column("shards"),
        Column("CPU (of one core)"),
        Column("RSS MB"),
        Column("GetRecords/shard/s"),
        Column("CPU us/GetRecords"),
    ]
    print()
    print(table(columns, rows))


if __name__ == "__main__":
    main()
