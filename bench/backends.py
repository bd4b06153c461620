"""Backend benchmark: what each function backend adds to an invocation, with a no-op function.

One realistic event (a Kinesis event of 100 records of 1 KB data, built once with
`KinesisRecordFactory` and encoded with `encode_event`) is sent over and over to a function
that does nothing, through each backend:

- `http`: `HttpBackend` POSTing to a local aiohttp server in a process of its own
  (127.0.0.1, a free port) that reads the body and answers `{}` at once;
- `python`: `PythonBackend` with a sync handler that returns None (run in a worker thread,
  the event decoded by orjson, as the backend always does);
- `command`: `CommandBackend` in persistent mode, 1 worker: a small Python script that reads
  each request line and answers `{"requestId": ..., "response": null}` at once (it takes the
  request id from the head of the line and never decodes the event);
- `runtime`: `RuntimeApiBackend` serving the Runtime API to real awslambdaric client processes
  running a no-op handler (awslambdaric decodes the event before calling it);
- `none`: the in-process no-op backend of the other benchmarks, called directly: the floor
  of the benchmark's own loop.

Each row gets a fresh backend (the command worker and the runtime clients are started for
it; the HTTP server is shared by the http rows), a warm-up of `--warmup` invocations (at most
2 s), then `--repeat` timed runs of `--invocations` invocations, each stopped after
`--seconds` if it has not finished. One invocation is in flight at a time, then
`--concurrency` for http and runtime (runtime with `--runtime-clients` clients). Every
invocation is timed around `backend.invoke`, so its latency is what the backend adds to a
function that takes no time. Besides this process's CPU time, the CPU time of its children
(the function's processes: server, worker, runtime clients) is read from /proc. Every process
the benchmark starts is stopped at the end.

Run: .venv/bin/python bench/backends.py [--invocations 2000] [--repeat 3] [--seconds 3]
     [--warmup 200] [--concurrency 4] [--runtime-clients 2] [--records 100]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio
import orjson
from anyio.abc import Process
from common import (
    FUNCTION_ARN,
    IDENTITY_ARN,
    RECORD_BYTES,
    REGION,
    STREAM_ARN,
    Column,
    NoopBackend,
    machine,
    quiet_logs,
    table,
)

from esm.backends.command import CommandBackend
from esm.backends.http import HttpBackend
from esm.backends.python import PythonBackend
from esm.backends.runtime import RuntimeApiBackend
from esm.events import encode_event
from esm.model import Invocation
from esm.protocols import FunctionBackend
from esm.sources.kinesis import KinesisRecordFactory

FUNCTION = "noop"
# Generous: a no-op answers in milliseconds; the bound only keeps a stuck run from hanging.
FUNCTION_TIMEOUT = 10.0
SHARD_ID = "shardId-000000000000"
SEQUENCE_BASE = 49_600_000_000_000_000_000_000_000_000_000_000_000_000_000_000
STARTUP_SECONDS = 30.0
STOP_GRACE_SECONDS = 3.0
WARMUP_SECONDS = 2.0

# The persistent worker (the command backend's protocol: one JSON line in, one out). esm
# writes the request id first; the fallback decodes the line for any other writer.
WORKER_SCRIPT = """\
import json
import sys

PREFIX = b'{"requestId":'


def main() -> None:
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        if line.startswith(PREFIX):
            request_id = line[len(PREFIX) : line.index(b",", len(PREFIX))]
        else:
            request_id = json.dumps(json.loads(line)["requestId"]).encode()
        out.write(b'{"requestId":' + request_id + b',"response":null}\\n')
        out.flush()


main()
"""

RUNTIME_HANDLER = """\
def handler(event, context):
    return None
"""


def noop_handler(event: Any, context: Any) -> None:
    """The python backend's function."""
    return None


# -- the event ------------------------------------------------------------------------------


def build_event(records: int) -> bytes:
    """A Kinesis event of `records` records of RECORD_BYTES of data, as esm encodes it."""
    factory = KinesisRecordFactory(stream_arn=STREAM_ARN, region=REGION, identity_arn=IDENTITY_ARN)
    now = time.time()
    batch = [
        factory.create(
            SHARD_ID,
            str(SEQUENCE_BASE + n),
            f"customer-{n % 97}",
            base64.b64encode(os.urandom(RECORD_BYTES)).decode("ascii"),
            now,
        )
        for n in range(records)
    ]
    return encode_event(batch)


def make_invocation(payload: bytes) -> Invocation:
    """An invocation as the Deliverer builds one."""
    return Invocation(
        payload=payload,
        request_id=str(uuid.uuid4()),
        function_name=FUNCTION,
        function_arn=FUNCTION_ARN,
        timeout=FUNCTION_TIMEOUT,
        deadline=time.time() + FUNCTION_TIMEOUT,
    )


def decode_cost(payload: bytes, decode: Callable[[bytes], Any], seconds: float = 0.3) -> float:
    """Microseconds `decode` takes on `payload`, the best of several rounds."""
    best = math.inf
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        for _ in range(10):
            decode(payload)
        best = min(best, (time.perf_counter() - started) / 10)
    return best * 1e6


# -- the HTTP function (runs in a child process) --------------------------------------------


def serve(conn: multiprocessing.connection.Connection) -> None:
    """Answer every POST with `{}` on a free port of 127.0.0.1 until the parent closes `conn`."""
    import asyncio

    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"{}", content_type="application/json")

    async def main() -> None:
        app = web.Application(client_max_size=8 << 20)
        app.router.add_post("/", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        conn.send(runner.addresses[0][1])
        closed = asyncio.Event()
        asyncio.get_running_loop().add_reader(conn.fileno(), closed.set)
        await closed.wait()
        await runner.cleanup()

    asyncio.run(main())


class HttpFunction:
    """The HTTP function's process, started once for every http row."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.parent, child = context.Pipe()
        self.process = context.Process(target=serve, args=(child,), name="noop-http", daemon=True)
        self.process.start()
        child.close()
        if not self.parent.poll(STARTUP_SECONDS):
            self.close()
            raise SystemExit("the HTTP function did not start")
        self.port: int = self.parent.recv()

    def close(self) -> None:
        self.parent.close()
        self.process.join(STOP_GRACE_SECONDS)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(STOP_GRACE_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


# -- the backends, each with what it needs running ------------------------------------------


@contextlib.asynccontextmanager
async def none_backend() -> AsyncIterator[FunctionBackend]:
    yield NoopBackend()


@contextlib.asynccontextmanager
async def http_backend(port: int) -> AsyncIterator[FunctionBackend]:
    backend = HttpBackend(
        f"http://127.0.0.1:{port}/", timeout=FUNCTION_TIMEOUT, function_name=FUNCTION
    )
    try:
        yield backend
    finally:
        await backend.aclose()


@contextlib.asynccontextmanager
async def python_backend() -> AsyncIterator[FunctionBackend]:
    backend = PythonBackend(noop_handler, timeout=FUNCTION_TIMEOUT, function_name=FUNCTION)
    try:
        yield backend
    finally:
        await backend.aclose()


@contextlib.asynccontextmanager
async def command_backend(folder: Path) -> AsyncIterator[FunctionBackend]:
    backend = CommandBackend(
        [sys.executable, str(folder / "noop_worker.py")],
        mode="persistent",
        timeout=FUNCTION_TIMEOUT,
        function_name=FUNCTION,
        workers=1,
    )
    try:
        yield backend
    finally:
        # Stops the worker: EOF on its stdin, then SIGTERM, then SIGKILL.
        await backend.aclose()


async def _stop(processes: list[Process]) -> None:
    with anyio.CancelScope(shield=True):
        with anyio.move_on_after(STOP_GRACE_SECONDS):
            for process in processes:
                await process.wait()
        for process in processes:
            if process.returncode is None:
                process.kill()
            await process.wait()
            await process.aclose()


@contextlib.asynccontextmanager
async def runtime_backend(folder: Path, clients: int) -> AsyncIterator[FunctionBackend]:
    backend = RuntimeApiBackend(port=0, function_name=FUNCTION, timeout=FUNCTION_TIMEOUT)
    await backend.start()
    processes: list[Process] = []
    logs: list[TextIO] = []
    try:
        env = {**os.environ, **backend.runtime_environment(), "PYTHONPATH": str(folder)}
        for index in range(clients):
            log = (folder / f"runtime-{backend.port}-{index}.log").open("w")
            logs.append(log)
            processes.append(
                await anyio.open_process(
                    [sys.executable, "-m", "awslambdaric", "noop_handler.handler"],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            )
        with anyio.fail_after(STARTUP_SECONDS):
            while backend.waiting_clients < clients:
                if any(p.returncode is not None for p in processes):
                    tail = (folder / f"runtime-{backend.port}-0.log").read_text()[-2000:]
                    raise RuntimeError(f"a runtime client exited; its log ends:\n{tail}")
                await anyio.sleep(0.02)
        yield backend
    finally:
        # Pollers are answered 500 ("exit now"); whatever is still running is then killed.
        await backend.aclose()
        await _stop(processes)
        for client_log in logs:
            client_log.close()


# -- measuring -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One timed run of a row."""

    latencies: list[float]
    wall: float
    cpu: float
    """This process's CPU seconds (esm, and the python backend's handler threads)."""
    helper_cpu: float | None
    """CPU seconds of this process's children (the function's processes); None off Linux."""

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall


@dataclass(frozen=True)
class Row:
    backend: str
    in_flight: int
    clients: int | None
    runs: list[Run]

    @property
    def invocations(self) -> int:
        return sum(len(r.latencies) for r in self.runs)

    @property
    def batches_per_second(self) -> float:
        """The median run's."""
        return statistics.median(r.rate for r in self.runs)

    def percentile(self, fraction: float) -> float:
        """Nearest-rank percentile of every run's latencies, in microseconds."""
        ordered = sorted(x for r in self.runs for x in r.latencies)
        rank = max(1, math.ceil(fraction * len(ordered)))
        return ordered[rank - 1] * 1e6

    @property
    def cpu_per_invocation(self) -> float:
        return sum(r.cpu for r in self.runs) / self.invocations * 1e6

    @property
    def helper_cpu_per_invocation(self) -> float | None:
        helper = [r.helper_cpu for r in self.runs]
        if any(h is None for h in helper):
            return None
        return sum(h for h in helper if h is not None) / self.invocations * 1e6


def micros(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def children_cpu() -> float | None:
    """CPU seconds used so far by the live children of this process (from /proc)."""
    me = os.getpid()
    total = 0
    try:
        stats = list(Path("/proc").glob("[0-9]*/stat"))
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    if not stats:
        return None
    for stat in stats:
        try:
            text = stat.read_text()
        except OSError:
            continue  # ended meanwhile
        # After "(comm)": state, ppid, ... utime and stime are the 12th and 13th fields.
        fields = text.rpartition(")")[2].split()
        if int(fields[1]) == me:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


async def drive(
    backend: FunctionBackend, payload: bytes, count: int, in_flight: int, seconds: float
) -> Run:
    """Send up to `count` invocations, `in_flight` at a time, for at most `seconds`."""
    latencies: list[float] = []
    remaining = count
    stop_at = time.perf_counter() + seconds

    async def lane() -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < stop_at:
            remaining -= 1
            invocation = make_invocation(payload)
            started = time.perf_counter()
            result = await backend.invoke(invocation)
            latencies.append(time.perf_counter() - started)
            if not result.ok:
                raise RuntimeError(f"{result.kind.value}: {result.error}")

    helper = children_cpu()
    cpu, wall = time.process_time(), time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(in_flight):
            tg.start_soon(lane)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    helper_after = children_cpu()
    helper_cpu = None if helper is None or helper_after is None else helper_after - helper
    return Run(latencies, wall, cpu, helper_cpu)


async def measure(
    name: str,
    backend_cm: AbstractAsyncContextManager[FunctionBackend],
    payload: bytes,
    args: argparse.Namespace,
    in_flight: int = 1,
    clients: int | None = None,
) -> Row:
    bound = STARTUP_SECONDS + WARMUP_SECONDS + args.seconds * args.repeat + FUNCTION_TIMEOUT
    with anyio.fail_after(bound):
        async with backend_cm as backend:
            await drive(backend, payload, args.warmup, in_flight, WARMUP_SECONDS)
            runs = [
                await drive(backend, payload, args.invocations, in_flight, args.seconds)
                for _ in range(args.repeat)
            ]
    row = Row(name, in_flight, clients, runs)
    print(
        f"{name:8} x{in_flight}: {row.invocations:,} invocations, "
        f"{row.batches_per_second:,.0f}/s (runs {' '.join(f'{r.rate:,.0f}' for r in runs)}), "
        f"p50 {micros(row.percentile(0.5))} us, p99 {micros(row.percentile(0.99))} us",
        flush=True,
    )
    return row


async def main(args: argparse.Namespace, port: int, folder: Path) -> None:
    quiet_logs()
    payload = build_event(args.records)
    print(
        f"{machine()}\nevent: {args.records} Kinesis records of {RECORD_BYTES} B data, "
        f"{len(payload):,} bytes of JSON; decoding it takes "
        f"{decode_cost(payload, orjson.loads):,.0f} us (orjson), "
        f"{decode_cost(payload, json.loads):,.0f} us (json)",
        flush=True,
    )
    c = args.concurrency
    clients = args.runtime_clients
    rows = [
        await measure("none", none_backend(), payload, args),
        await measure("http", http_backend(port), payload, args),
        await measure("python", python_backend(), payload, args),
        await measure("command", command_backend(folder), payload, args, clients=1),
        await measure("runtime", runtime_backend(folder, 1), payload, args, clients=1),
        await measure("http", http_backend(port), payload, args, in_flight=c),
        await measure(
            "runtime", runtime_backend(folder, clients), payload, args, c, clients=clients
        ),
    ]
    columns = [
        Column("backend", "<"),
        Column("in flight"),
        Column("clients"),
        Column("invocations"),
        Column("batches/s"),
        Column("p50 (us)"),
        Column("p99 (us)"),
        Column("esm CPU us/inv"),
        Column("function CPU us/inv"),
        Column("runs (batches/s)", "<"),
    ]
    lines = []
    for row in rows:
        helper = row.helper_cpu_per_invocation
        lines.append(
            [
                row.backend,
                str(row.in_flight),
                "-" if row.clients is None else str(row.clients),
                f"{row.invocations:,}",
                f"{row.batches_per_second:,.0f}",
                micros(row.percentile(0.5)),
                micros(row.percentile(0.99)),
                f"{row.cpu_per_invocation:,.0f}",
                "-" if helper is None else f"{helper:,.0f}",
                " ".join(f"{r.rate:,.0f}" for r in row.runs),
            ]
        )
    print()
    print(table(columns, lines))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--invocations", type=int, default=2_000, help="timed, per row")
    parser.add_argument("--warmup", type=int, default=200, help="untimed, per row")
    parser.add_argument("--seconds", type=float, default=3.0, help="time bound of each run")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per row")
    parser.add_argument("--concurrency", type=int, default=4, help="in flight, concurrent rows")
    parser.add_argument("--runtime-clients", type=int, default=2, help="concurrent runtime row")
    parser.add_argument("--records", type=int, default=100, help="records in the event")
    args = parser.parse_args()
    if min(args.invocations, args.repeat, args.concurrency, args.runtime_clients, args.records) < 1:
        parser.error(
            "--invocations, --repeat, --concurrency, --runtime-clients, --records must be >= 1"
        )
    return args


def run() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="esm-bench-backends-") as name:
        folder = Path(name)
        (folder / "noop_worker.py").write_text(WORKER_SCRIPT)
        (folder / "noop_handler.py").write_text(RUNTIME_HANDLER)
        server = HttpFunction()
        try:
            anyio.run(main, args, server.port, folder, backend="asyncio")
        finally:
            server.close()


if __name__ == "__main__":
    run()
