"""Put-to-invoke latency of Kinesis records, and what the idle polling interval costs.

A canned Kinesis server (bench/canned_kinesis.py), in a process of its own, lists N shards
and writes records into random ones at a steady rate, each stamped with the wall-clock time
it was written. esm, in a process of its own for each polling interval, reads the stream as
the daemon does (`KinesisStreamAPI` on the lean path over an aiobotocore client, a
`StreamEngine`, batch size 100, no batching window, memory checkpoints, the collector tuned
as `esm run` tunes it) and hands each batch to a function that notes, for every record, how
long after its writing it was invoked. After a warm-up, `--seconds` are timed: the latency's
percentiles, and esm's CPU time (user + system, its own process) per shard and second.

Run: .venv/bin/python bench/latency.py [--intervals 1.0 0.5 0.2] [--shards 100]
     [--puts 20] [--seconds 30] [--client-path]
"""

from __future__ import annotations

import argparse
import base64
from typing import Any

import anyio
import orjson
from canned_kinesis import CannedKinesis
from common import (
    Column,
    FinishLineStore,
    LatencyBackend,
    add_client_path_flag,
    get_records_path,
    in_own_process,
    local_kinesis_api,
    machine,
    make_runner,
    quiet_logs,
    table,
    time_latencies,
)


def _put_time(record: dict[str, Any]) -> float:
    """When the canned stream wrote the record (its data: `{"put": t}`)."""
    return float(orjson.loads(base64.b64decode(record["kinesis"]["data"]))["put"])


async def _measure(
    server: CannedKinesis, shards: int, seconds: float, interval: float, use_lean: bool
) -> dict[str, float]:
    from esm.gc_tuning import tune_collector

    quiet_logs()
    tune_collector()
    async with local_kinesis_api(server.port, lean=use_lean) as api:
        backend = LatencyBackend(_put_time)
        runner, _ = make_runner(
            api, FinishLineStore(shards), 100, backend=backend, poll_interval=interval
        )
        # Warm-up: every shard read, and a few seconds of records delivered.
        window = await time_latencies(
            runner,
            backend,
            warmup=max(3.0, interval * 3),
            seconds=seconds,
            calls=lambda: server.counts().get("GetRecords", 0),
        )
    return {
        "interval": interval,
        "records": len(window.latencies),
        "p50_ms": window.p50_ms,
        "p99_ms": window.p99_ms,
        "cpu_share": window.cpu_share,
        "cpu_ms_per_shard_s": window.cpu_share / shards * 1000,
        "reads_per_shard_s": window.calls / shards / window.wall,
    }


def measure(
    shards: int, puts: float, seconds: float, interval: float, use_lean: bool
) -> dict[str, float]:
    """One esm against its canned stream, each in a process of its own."""
    with CannedKinesis(shards, puts) as server:
        result: dict[str, float] = anyio.run(_measure, server, shards, seconds, interval, use_lean)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--intervals", type=float, nargs="+", default=[1.0, 0.5, 0.2])
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--puts", type=float, default=20.0, help="records written per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    add_client_path_flag(parser)
    args = parser.parse_args()
    print(f"esm latency benchmark: {machine()}")
    path = get_records_path(args)
    print(
        f"{args.shards} shards, {args.puts} records written a second, {args.seconds} s timed "
        f"after a warm-up; GetRecords through {path}"
    )
    rows = []
    for interval in args.intervals:
        result = in_own_process(
            measure, args.shards, args.puts, args.seconds, interval, not args.client_path
        )
        print(f"interval {interval} s: {result}", flush=True)
        rows.append(
            [
                f"{interval:g}",
                f"{result['records']:,}",
                f"{result['p50_ms']:.0f}",
                f"{result['p99_ms']:.0f}",
                f"{result['cpu_share'] * 100:.1f}%",
                f"{result['cpu_ms_per_shard_s']:.2f}",
                f"{result['reads_per_shard_s']:.2f}",
            ]
        )
    columns = [
        Column("interval s"),
        Column("records"),
        Column("p50 ms"),
        Column("p99 ms"),
        Column("CPU (of one core)"),
        Column("CPU ms/shard/s"),
        Column("GetRecords/shard/s"),
    ]
    print()
    print(table(columns, rows))


if __name__ == "__main__":
    main()
