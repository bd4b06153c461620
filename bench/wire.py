"""Wire benchmark: esm reading Kinesis over HTTP, side by side with a bare aiobotocore loop.

A local server (its own process, 127.0.0.1, a free port) speaks enough of the Kinesis JSON
protocol for one shard: ListShards, GetShardIterator and GetRecords. Every GetRecords answer
holds 10,000 records of 1 KB, built once at startup; each answer gets its own, increasing,
sequence numbers by joining the pre-built pieces around a call counter. An iterator stands
for the pages left to read, so each run reads exactly `--pages` pages and the shard then ends
(no NextShardIterator), which is how both sides know they are done.

In the same run, alternately:
- hooked bare loop: an aiobotocore client with esm's orjson `before-parse` hook (the wire
  form, `enable_wire_records`) calling get_records until the shard ends, doing nothing with
  the records: the fair baseline, the same client and parser esm reads with;
- plain bare loop: the same loop on a plain aiobotocore client (botocore's parser);
- orjson only: orjson parsing the same page body, in memory, no network: the ceiling of
  any consumer written in Python;
- esm: the real `KinesisStreamAPI` over an aiobotocore client, a `StreamEngine`, a
  no-op function and memory checkpoints, timed until every record is delivered and the
  shard's final checkpoint is saved.
The ratio esm / hooked bare loop of the medians is the number to watch.

esm pauses at least 0.2 s between GetRecords calls on a busy shard (Kinesis allows 5 calls
per second per shard), which caps one shard at 50,000 records/s with 10,000-record pages: about
what the bare loop reads. So that the ratio measures esm rather than that cap, this benchmark
sets the busy poll interval (`StreamSettings.busy_poll_interval`, 0.2 s as shipped) to 0
unless `--poll-floor` says otherwise.

Run: .venv/bin/python bench/wire.py [--pages 15] [--rounds 5] [--poll-floor 0.2] [--profile]
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import functools
import gc
import io
import multiprocessing
import multiprocessing.connection
import os
import pstats
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import orjson
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from common import (
    IDENTITY_ARN,
    RECORD_BYTES,
    REGION,
    STREAM,
    STREAM_ARN,
    Column,
    FinishLineStore,
    delivered,
    machine,
    make_runner,
    median,
    quiet_logs,
    rate,
    run_to_end,
    set_poll_floor,
    table,
)

from esm.aws.lean import LeanJsonCalls
from esm.sources.kinesis import KinesisRecordFactory, KinesisStreamAPI, enable_wire_records

PAGE_RECORDS = 10_000
SHARD_ID = "shardId-000000000000"
JSON_11 = "application/x-amz-json-1.1"
# Sequence numbers: 56 digits like real ones, a call counter in the middle, the index last.
_SEQ_PREFIX = "4960" + "0" * 39
_COUNTER_SLOT = b"@@@@@@@@"
_COUNTER_FORMAT = b"%08d"


# -- the server (runs in a child process) -------------------------------------------------


class CannedKinesis:
    """The GetRecords answer as pre-built pieces, and the call counter spliced between them."""

    def __init__(self, pages: int) -> None:
        self.pages = pages
        self.calls = 0
        arrival = round(time.time() - 60.0, 3)
        records = []
        for i in range(PAGE_RECORDS):
            data = base64.b64encode(os.urandom(RECORD_BYTES)).decode("ascii")
            records.append(
                b'{"SequenceNumber":"%s%s%05d","ApproximateArrivalTimestamp":%s,'
                b'"Data":"%s","PartitionKey":"pk-%d"}'
                % (
                    _SEQ_PREFIX.encode(),
                    _COUNTER_SLOT,
                    i,
                    repr(arrival).encode(),
                    data.encode(),
                    i,
                )
            )
        template = b'{"Records":[' + b",".join(records) + b"]"
        self.pieces = template.split(_COUNTER_SLOT)
        self.body_bytes = len(template)

    def get_records(self, iterator: str) -> bytes:
        left = int(iterator.rsplit("-", 1)[1])
        self.calls += 1
        records = (_COUNTER_FORMAT % self.calls).join(self.pieces)
        if left > 1:
            tail = b',"NextShardIterator":"pages-%d","MillisBehindLatest":1000}' % (left - 1)
        else:
            # The shard is closed and read to its end.
            tail = b',"MillisBehindLatest":0}'
        return b"".join((records, tail))

    def answer(self, operation: str, params: dict[str, Any]) -> tuple[int, bytes]:
        if operation == "GetRecords":
            return 200, self.get_records(str(params["ShardIterator"]))
        if operation == "GetShardIterator":
            return 200, orjson.dumps({"ShardIterator": f"pages-{self.pages}"})
        if operation == "ListShards":
            shard = {
                "ShardId": SHARD_ID,
                "HashKeyRange": {
                    "StartingHashKey": "0",
                    "EndingHashKey": str(2**128 - 1),
                },
                "SequenceNumberRange": {"StartingSequenceNumber": _SEQ_PREFIX + "0" * 13},
            }
            return 200, orjson.dumps({"Shards": [shard]})
        error = {"__type": "UnknownOperationException", "message": operation}
        return 400, orjson.dumps(error)


def serve(pages: int, conn: multiprocessing.connection.Connection) -> None:
    """Serve the canned Kinesis on a free port of 127.0.0.1 until the parent closes `conn`."""
    import asyncio

    from aiohttp import web

    canned = CannedKinesis(pages)

    async def handle(request: web.Request) -> web.Response:
        operation = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        raw = await request.read()
        status, body = canned.answer(operation, orjson.loads(raw) if raw else {})
        return web.Response(
            status=status,
            body=body,
            headers={"Content-Type": JSON_11, "x-amzn-RequestId": f"req-{canned.calls}"},
        )

    async def main() -> None:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        conn.send((port, canned.body_bytes))
        loop = asyncio.get_running_loop()
        closed = asyncio.Event()
        loop.add_reader(conn.fileno(), closed.set)
        await closed.wait()
        await runner.cleanup()

    asyncio.run(main())


# -- the two clients ------------------------------------------------------------------------


def client_config() -> AioConfig:
    """What the daemon configures for its Kinesis client."""
    return AioConfig(
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=64,
    )


async def bare_loop(client: Any) -> int:
    """Read the shard to its end, doing nothing with the records; returns how many came."""
    answer = await client.get_shard_iterator(
        StreamName=STREAM, ShardId=SHARD_ID, ShardIteratorType="TRIM_HORIZON"
    )
    iterator = answer["ShardIterator"]
    count = 0
    while iterator:
        page = await client.get_records(ShardIterator=iterator, Limit=PAGE_RECORDS)
        count += len(page["Records"])
        iterator = page.get("NextShardIterator")
    return count


async def orjson_only(body: bytes, pages: int) -> int:
    """The ceiling of any consumer in Python: orjson parsing the pages, nothing else."""
    count = 0
    for _ in range(pages):
        count += len(orjson.loads(body)["Records"])
    await anyio.lowlevel.checkpoint()
    return count


async def esm_run(client: Any, batch_size: int) -> int:
    """esm's whole path from GetRecords to checkpoint; returns the records delivered."""
    factory = KinesisRecordFactory(stream_arn=STREAM_ARN, region=REGION, identity_arn=IDENTITY_ARN)
    # GetRecords on the lean path, as the daemon reads (esm/aws/lean.py).
    lean = LeanJsonCalls(client)
    api = KinesisStreamAPI(
        client, stream_name=STREAM, stream_arn=STREAM_ARN, records=factory, lean=lean
    )
    store = FinishLineStore(1)
    runner, _ = make_runner(api, store, batch_size, records_limit=PAGE_RECORDS)
    try:
        await run_to_end(runner, store, timeout=110)
    finally:
        await lean.aclose()
    return delivered(runner)


class Sample:
    """One timed run: wall seconds and this process's CPU seconds (the server is elsewhere)."""

    def __init__(self, records: int, wall: float, cpu: float) -> None:
        self.records = records
        self.wall = wall
        self.cpu = cpu

    @property
    def rate(self) -> float:
        return rate(self.records, self.wall)


async def timed(run: Callable[[], Awaitable[int]], expected: int) -> Sample:
    cpu, wall = time.process_time(), time.perf_counter()
    records = await run()
    sample = Sample(records, time.perf_counter() - wall, time.process_time() - cpu)
    if records != expected:
        raise RuntimeError(f"read {records} records, expected {expected}")
    return sample


def profile_report(profiler: cProfile.Profile, limit: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)
    return out.getvalue()


async def main(args: argparse.Namespace, port: int, body_bytes: int) -> None:
    quiet_logs()
    if args.gc == "tuned":
        # As `esm run` sets the collector (esm/gc_tuning.py); every side runs under it.
        from esm.gc_tuning import tune_collector

        tune_collector()
    elif args.gc == "off":
        gc.disable()
    shipped = set_poll_floor(None)
    floor = set_poll_floor(args.poll_floor)
    expected = args.pages * PAGE_RECORDS
    print(f"esm wire benchmark: {machine()}")
    print(
        f"GetRecords answers of {PAGE_RECORDS:,} records of {RECORD_BYTES} B "
        f"({body_bytes / 1e6:.1f} MB of JSON) from 127.0.0.1:{port} (a separate process); "
        f"{args.pages} pages = {expected:,} records per run; median of {args.rounds} rounds, "
        f"sides alternating"
    )
    floor_note = (
        "as shipped" if floor == shipped else f"set for this benchmark; esm ships {shipped} s"
    )
    print(
        f"esm's minimum pause between GetRecords calls on a busy shard "
        f"(StreamSettings.busy_poll_interval): {floor} s ({floor_note})"
    )
    print()

    session = get_session()
    endpoint = f"http://127.0.0.1:{port}"
    credentials = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
    config = client_config()
    async with (
        session.create_client(
            "kinesis", region_name=REGION, endpoint_url=endpoint, config=config, **credentials
        ) as bare_client,
        session.create_client(
            "kinesis", region_name=REGION, endpoint_url=endpoint, config=config, **credentials
        ) as hooked_client,
        session.create_client(
            "kinesis", region_name=REGION, endpoint_url=endpoint, config=config, **credentials
        ) as esm_client,
    ):
        # esm's client reads GetRecords in wire form, as the daemon sets it up; so does the
        # hooked bare loop's, the fair baseline: the same parser, nothing else.
        enable_wire_records(esm_client)
        enable_wire_records(hooked_client)
        # Warm up: connections open, service model and shapes loaded, on every client.
        for client in (hooked_client, bare_client, esm_client):
            await client.list_shards(StreamName=STREAM)
            await client.get_records(ShardIterator="pages-1", Limit=PAGE_RECORDS)
        page_body = CannedKinesis(1).get_records("pages-1")
        if args.gc == "tuned":
            from esm.gc_tuning import freeze_startup_heap

            freeze_startup_heap()

        sides: dict[str, Callable[[], Awaitable[int]]] = {
            "hooked bare loop": lambda: bare_loop(hooked_client),
            "plain bare loop": lambda: bare_loop(bare_client),
            "orjson only (ceiling)": lambda: orjson_only(page_body, args.pages),
        }
        for size in args.batch_sizes:
            sides[f"esm, BatchSize {size}"] = functools.partial(esm_run, esm_client, size)

        if args.profile:
            profiler = cProfile.Profile()
            size = args.batch_sizes[0]
            profiler.enable()
            sample = await timed(lambda: esm_run(esm_client, size), expected)
            profiler.disable()
            print(f"profiled esm run, BatchSize {size}: {sample.rate:,.0f} records/s")
            print(profile_report(profiler, args.profile_lines))
            return

        samples: dict[str, list[Sample]] = {name: [] for name in sides}
        for round_number in range(1, args.rounds + 1):
            line = []
            for name, run in sides.items():
                sample = await timed(run, expected)
                samples[name].append(sample)
                line.append(f"{name}: {sample.rate:,.0f}/s")
            print(f"round {round_number}: " + "; ".join(line), flush=True)

    bare_name = next(iter(sides))
    bare_rate = median([s.rate for s in samples[bare_name]])
    columns = [
        Column("consumer", "<"),
        Column("records/s"),
        Column("us/record"),
        Column("CPU us/record"),
        Column("vs hooked"),
        Column("runs (records/s)", "<"),
    ]
    rows = []
    for name, runs in samples.items():
        records_per_s = median([s.rate for s in runs])
        cpu_us = median([s.cpu / s.records * 1e6 for s in runs])
        rows.append(
            [
                name,
                f"{records_per_s:,.0f}",
                f"{1e6 / records_per_s:.1f}",
                f"{cpu_us:.1f}",
                f"{records_per_s / bare_rate:.2f}",
                " ".join(f"{s.rate / 1000:.1f}k" for s in runs),
            ]
        )
    print()
    print(table(columns, rows))
    print()
    for name in list(samples)[3:]:
        ratios = [e.rate / b.rate for e, b in zip(samples[name], samples[bare_name], strict=True)]
        print(
            f"ratio {name} / hooked bare loop: "
            f"{median([s.rate for s in samples[name]]) / bare_rate:.2f} "
            f"(per round: {' '.join(f'{r:.2f}' for r in ratios)}); target >= 0.8"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pages", type=int, default=15, help="GetRecords pages per run")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each side, alternating")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[10_000, 100])
    parser.add_argument(
        "--poll-floor",
        type=float,
        default=0.0,
        help="esm's minimum pause between GetRecords calls on a busy shard, seconds "
        "(default 0: the bare loop has none; esm ships 0.2, Kinesis's 5 calls/s per shard)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile one esm run instead (cProfile)"
    )
    parser.add_argument("--profile-lines", type=int, default=30)
    parser.add_argument(
        "--gc",
        choices=["tuned", "default", "off"],
        default="tuned",
        help="the collector: as esm run tunes it (default; esm/gc_tuning.py), CPython's "
        "defaults, or off (the ceiling of any tuning)",
    )
    return parser.parse_args()


def run() -> None:
    args = parse_args()
    parent, child = multiprocessing.get_context("spawn").Pipe()
    server = multiprocessing.get_context("spawn").Process(
        target=serve, args=(args.pages, child), name="canned-kinesis", daemon=True
    )
    server.start()
    child.close()
    try:
        if not parent.poll(60):
            raise SystemExit("the canned Kinesis server did not start")
        port, body_bytes = parent.recv()
        anyio.run(main, args, port, body_bytes, backend="asyncio")
    finally:
        parent.close()
        server.join(10)
        if server.is_alive():
            server.terminate()
            server.join(5)


if __name__ == "__main__":
    run()
