"""Pieces shared by the benchmarks: a no-op function, a store that signals the end, the runner.

The benchmarks run as scripts (`python bench/engine.py`), so this module is imported by its
bare name from the scripts' own directory.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from esm.checkpoints.memory import MemoryCheckpointStore
from esm.engine import stream_model
from esm.engine.batcher import BatchLimits
from esm.engine.driver import Deliverer, FunctionTarget
from esm.engine.retry import Backoff
from esm.engine.stream_model import StreamSettings
from esm.engine.streams import StreamEngine
from esm.log import configure_logging
from esm.metrics import Metrics
from esm.model import Checkpoint, Invocation, InvokeResult, IteratorType, ResultKind, StartPosition
from esm.protocols import StreamAPI

STREAM = "bench"
REGION = "us-east-1"
STREAM_ARN = f"arn:aws:kinesis:{REGION}:000000000000:stream/{STREAM}"
IDENTITY_ARN = "arn:aws:iam::000000000000:role/esm-bench"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:000000000000:function:noop"
MAPPING = "bench"
RECORD_BYTES = 1024

_SUCCESS = InvokeResult(kind=ResultKind.SUCCESS)


class NoopBackend:
    """A function that succeeds at once without looking at the event."""

    def __init__(self) -> None:
        self.invocations = 0

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        self.invocations += 1
        return _SUCCESS

    async def aclose(self) -> None:
        pass


class LatencyBackend(NoopBackend):
    """A function that notes, for each record of the event, the seconds from the moment
    `sent_at` reads from the record (its sending, in epoch seconds) to this call."""

    def __init__(self, sent_at: Callable[[dict[str, Any]], float]) -> None:
        super().__init__()
        self._sent_at = sent_at
        self.latencies: list[float] = []

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        now = time.time()
        for record in orjson.loads(invocation.payload)["Records"]:
            self.latencies.append(now - self._sent_at(record))
        return await super().invoke(invocation)


@dataclass(frozen=True)
class LatencyWindow:
    """What a latency benchmark timed: the latencies (sorted), the CPU and wall seconds,
    and the calls a server counted in between."""

    latencies: list[float]
    cpu: float
    wall: float
    calls: int

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000

    @property
    def p99_ms(self) -> float:
        return self.latencies[int(len(self.latencies) * 0.99)] * 1000

    @property
    def cpu_share(self) -> float:
        return self.cpu / self.wall


async def time_latencies(
    runner: Any,
    backend: LatencyBackend,
    *,
    warmup: float,
    seconds: float,
    calls: Callable[[], int] = lambda: 0,
) -> LatencyWindow:
    """Run `runner` for `warmup` seconds, then time `seconds` more: `backend`'s latencies of
    that window, this process's CPU in it and the difference in `calls()` over it.

    :raises SystemExit: nothing reached the function in the window.
    """
    from esm.gc_tuning import freeze_startup_heap

    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.run)
        await anyio.sleep(warmup)
        freeze_startup_heap()
        backend.latencies.clear()
        before, cpu, wall = calls(), process_cpu_seconds(), time.monotonic()
        await anyio.sleep(seconds)
        cpu, wall = process_cpu_seconds() - cpu, time.monotonic() - wall
        window = LatencyWindow(sorted(backend.latencies), cpu, wall, calls() - before)
        runner.stop()
        tg.cancel_scope.cancel()
    if not window.latencies:
        raise SystemExit(f"nothing reached the function in {seconds} s")
    return window


class FinishLineStore(MemoryCheckpointStore):
    """A memory checkpoint store that sets `done` once `shards` shards saved a finished checkpoint.

    A shard's final checkpoint is saved after its last batch is delivered, so `done` marks the
    moment every record of every shard went through the whole pipeline.
    """

    def __init__(self, shards: int) -> None:
        super().__init__()
        self.remaining = shards
        self.done = anyio.Event()
        self.finished_at = 0.0

    async def save(self, mapping_id: str, partition: str, checkpoint: Checkpoint) -> None:
        await super().save(mapping_id, partition, checkpoint)
        if checkpoint.finished:
            self.remaining -= 1
            if self.remaining == 0:
                self.finished_at = time.perf_counter()
                self.done.set()


def quiet_logs() -> None:
    """esm's own logging setup, at warning level, so that only trouble is printed (stderr)."""
    configure_logging(format="console", level="warning")


_poll_floor = stream_model.MIN_POLL_INTERVAL_SECONDS


def set_poll_floor(seconds: float | None) -> float:
    """Set the pause between GetRecords calls on a busy shard for the runners this process
    makes (esm ships 0.2 s, Kinesis's 5 calls per second); returns the value in effect."""
    global _poll_floor
    if seconds is not None:
        _poll_floor = seconds
    return _poll_floor


def make_runner(
    api: StreamAPI,
    store: FinishLineStore,
    batch_size: int,
    records_limit: int = 10_000,
    *,
    parallelization: int = 1,
    backend: NoopBackend | None = None,
    poll_interval: float = 0.0,
) -> tuple[StreamEngine, NoopBackend]:
    """The runner a daemon would build for one Kinesis mapping, with a no-op function
    (or `backend`)."""
    metrics = Metrics()
    settings = StreamSettings(
        mapping_id=MAPPING,
        starting_position=StartPosition(IteratorType.TRIM_HORIZON),
        limits=BatchLimits(batch_size=batch_size, window_seconds=0.0),
        poll_interval=poll_interval,
        records_limit=records_limit,
        discovery_interval=60.0,
        read_backoff=Backoff(initial=0.05, maximum=0.5),
        parallelization=parallelization,
        busy_poll_interval=_poll_floor,
    )
    backend = backend or NoopBackend()
    target = FunctionTarget(name="noop", arn=FUNCTION_ARN, timeout=30)
    deliverer = Deliverer(backend, target, MAPPING, metrics)
    return StreamEngine(api, settings, deliverer, store, metrics), backend


async def run_to_end(runner: StreamEngine, store: FinishLineStore, timeout: float) -> float:
    """Run `runner` until every shard is finished; returns the seconds that took.

    :raises TimeoutError: the shards did not finish within `timeout` seconds.
    """
    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as tg:
            started = time.perf_counter()
            tg.start_soon(runner.run)
            await store.done.wait()
            runner.stop()
    return store.finished_at - started


def delivered(runner: StreamEngine) -> int:
    return sum(s.records_delivered for s in runner.shards.values())


def median(values: list[float]) -> float:
    return statistics.median(values)


@dataclass(frozen=True)
class Column:
    title: str
    align: str = ">"


def table(columns: list[Column], rows: list[list[str]]) -> str:
    """A Markdown table, padded so that it also reads well in a terminal."""
    widths = [max([len(c.title), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]

    def line(cells: list[str]) -> str:
        padded = (
            f"{cell:{col.align}{width}}"
            for cell, col, width in zip(cells, columns, widths, strict=True)
        )
        return "| " + " | ".join(padded) + " |"

    rule = "|".join(
        "-" * (width + 1) + ":" if col.align == ">" else "-" * (width + 2)
        for col, width in zip(columns, widths, strict=True)
    )
    return "\n".join([line([c.title for c in columns]), f"|{rule}|", *(line(r) for r in rows)])


def machine() -> str:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for text in f:
                if text.startswith("model name"):
                    cpu = text.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores, {platform.machine()}, {cpu}, "
        f"Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}"
    )


def rate(records: int, seconds: float) -> float:
    return records / seconds if seconds > 0 else float("inf")


def process_cpu_seconds() -> float:
    """CPU time (user and system) this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@asynccontextmanager
async def local_kinesis_api(port: int, *, lean: bool) -> AsyncIterator[Any]:
    """`KinesisStreamAPI` for the stream `STREAM` at 127.0.0.1:`port`, as the daemon builds
    it: an aiobotocore client in wire form, GetRecords on the lean path (`lean`) or through
    the client."""
    from esm.aws.lean import LeanJsonCalls
    from esm.sources.kinesis import KinesisRecordFactory, KinesisStreamAPI, enable_wire_records

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
        yield KinesisStreamAPI(
            client,
            stream_name=STREAM,
            stream_arn=STREAM_ARN,
            records=factory,
            lean=LeanJsonCalls(client) if lean else None,
        )


def _run_and_send(work: Callable[..., Any], args: tuple[Any, ...], out: Any) -> None:
    out.send(work(*args))


def in_own_process(work: Callable[..., Any], *args: Any) -> Any:
    """`work(*args)`'s result, run in a fresh process (spawned), so that its CPU time and
    memory are its own; `work` must be importable by name (a module-level function)."""
    mine, theirs = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=_run_and_send, args=(work, args, theirs)
    )
    process.start()
    theirs.close()
    try:
        return mine.recv()
    finally:
        process.join(30)


def add_client_path_flag(parser: argparse.ArgumentParser) -> None:
    """`--client-path`: GetRecords through the client instead of the lean path."""
    parser.add_argument(
        "--client-path",
        action="store_true",
        help="GetRecords through aiobotocore's client instead of the lean path esm ships",
    )


def get_records_path(args: argparse.Namespace) -> str:
    """The GetRecords path `--client-path` chose, for the benchmark's heading."""
    return "aiobotocore's client" if args.client_path else "the lean path (esm/aws/lean.py)"
