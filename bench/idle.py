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
import multiprocessing
import multiprocessing.connection
import resource
import time
from typing import Any

import anyio
import orjson
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from common import (
    IDENTITY_ARN,
    REGION,
    STREAM,
    STREAM_ARN,
    Column,
    FinishLineStore,
    machine,
    make_runner,
    quiet_logs,
    table,
)

JSON_11 = "application/x-amz-json-1.1"


def _shard_id(n: int) -> str:
    return f"shardId-{n:012d}"


def serve(shards: int, conn: multiprocessing.connection.Connection) -> None:
    """The canned stream on a free port of 127.0.0.1; sends the call counts when asked."""
    import asyncio

    from aiohttp import web

    calls: dict[str, int] = {}
    listing = orjson.dumps(
        {
            "Shards": [
                {
                    "ShardId": _shard_id(n),
                    "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "1"},
                    "SequenceNumberRange": {"StartingSequenceNumber": "1"},
                }
                for n in range(shards)
            ]
        }
    )

    async def handle(request: web.Request) -> web.Response:
        operation = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        calls[operation] = calls.get(operation, 0) + 1
        raw = await request.read()
        params = orjson.loads(raw) if raw else {}
        if operation == "ListShards":
            body = listing
        elif operation == "GetShardIterator":
            body = orjson.dumps({"ShardIterator": f"it-{params['ShardId']}"})
        elif operation == "GetRecords":
            body = orjson.dumps(
                {
                    "Records": [],
                    "NextShardIterator": params["ShardIterator"],
                    "MillisBehindLatest": 0,
                }
            )
        else:
            return web.Response(status=400, body=b'{"__type":"UnknownOperationException"}')
        return web.Response(body=body, headers={"Content-Type": JSON_11})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        conn.send(runner.addresses[0][1])
        loop = asyncio.get_running_loop()
        asked = asyncio.Event()
        loop.add_reader(conn.fileno(), asked.set)
        while True:
            await asked.wait()
            asked.clear()
            if conn.recv() == "stop":
                break
            conn.send(dict(calls))
        await runner.cleanup()

    asyncio.run(main())


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(
    port: int, shards: int, seconds: float, interval: float, use_lean: bool, server: Any
) -> dict[str, float]:
    from esm.aws.lean import LeanJsonCalls
    from esm.gc_tuning import freeze_startup_heap, tune_collector
    from esm.sources.kinesis import KinesisRecordFactory, KinesisStreamAPI, enable_wire_records

    quiet_logs()
    tune_collector()
    config = AioConfig(
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=64,
    )
    async with get_session().create_client(
        "kinesis",
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{port}",
        config=config,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    ) as client:
        enable_wire_records(client)
        factory = KinesisRecordFactory(
            stream_arn=STREAM_ARN, region=REGION, identity_arn=IDENTITY_ARN
        )
        lean = None if not use_lean else LeanJsonCalls(client)
        api = KinesisStreamAPI(
            client, stream_name=STREAM, stream_arn=STREAM_ARN, records=factory, lean=lean
        )
        runner, _ = make_runner(api, FinishLineStore(shards), 100, poll_interval=interval)

        def ask() -> dict[str, int]:
            server.send("counts")
            answer: dict[str, int] = server.recv()
            return answer

        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            # Warm-up: every shard has read at least once.
            with anyio.fail_after(120):
                while ask().get("GetRecords", 0) < shards:
                    await anyio.sleep(0.5)
            await anyio.sleep(interval * 2)
            freeze_startup_heap()
            before, cpu, wall = ask(), _cpu(), time.monotonic()
            await anyio.sleep(seconds)
            after, cpu, wall = ask(), _cpu() - cpu, time.monotonic() - wall
            rss = _rss_mb()
            runner.stop()
            tg.cancel_scope.cancel()
        if lean is not None:
            await lean.aclose()
    reads = after.get("GetRecords", 0) - before.get("GetRecords", 0)
    return {
        "shards": shards,
        "cpu_share": cpu / wall,
        "rss_mb": rss,
        "reads_per_shard_s": reads / shards / wall,
        "cpu_us_per_read": cpu / reads * 1e6 if reads else 0.0,
    }


def _client(shards: int, seconds: float, interval: float, use_lean: bool, out: Any) -> None:
    """One esm, in a process of its own so that its memory is its own."""
    parent, child = multiprocessing.get_context("spawn").Pipe()
    server = multiprocessing.get_context("spawn").Process(
        target=serve, args=(shards, child), name="canned-kinesis", daemon=True
    )
    server.start()
    child.close()
    try:
        if not parent.poll(60):
            raise SystemExit("the canned Kinesis server did not start")
        port = parent.recv()
        out.send(anyio.run(_measure, port, shards, seconds, interval, use_lean, parent))
    finally:
        parent.send("stop")
        server.join(10)
        if server.is_alive():
            server.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--shards", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=1.0, help="idle polling interval")
    parser.add_argument(
        "--client-path",
        action="store_true",
        help="GetRecords through aiobotocore's client instead of the lean path esm ships",
    )
    args = parser.parse_args()
    print(f"esm idle benchmark: {machine()}")
    path = "aiobotocore's client" if args.client_path else "the lean path (esm/aws/lean.py)"
    print(
        f"idle polling interval {args.interval} s; {args.seconds} s timed after a warm-up; "
        f"GetRecords through {path}"
    )
    rows = []
    for shards in args.shards:
        mine, theirs = multiprocessing.get_context("spawn").Pipe()
        process = multiprocessing.get_context("spawn").Process(
            target=_client,
            args=(shards, args.seconds, args.interval, not args.client_path, theirs),
        )
        process.start()
        theirs.close()
        result = mine.recv()
        process.join(30)
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
