"""SQS wire benchmark: esm reading a queue over HTTP, side by side with a bare aiobotocore loop.

A local server (its own process, 127.0.0.1, a free port) speaks enough of the SQS JSON
protocol (`X-Amz-Target: AmazonSQS.<Operation>`, `application/x-amz-json-1.0`, what botocore
uses for SQS) for one endless standard queue: GetQueueUrl, GetQueueAttributes, ReceiveMessage,
DeleteMessageBatch and ChangeMessageVisibilityBatch. Every ReceiveMessage answers 10 messages
of 1 KB bodies with their system attributes and two message attributes, built once at
startup; each answer gets its own MessageIds and ReceiptHandles by joining the pre-built
pieces around a call counter. Batch calls answer every entry Successful. The server counts
the messages deleted and tells the benchmark (over a pipe) once a run's quota is reached.

In the same run, alternately, each side until the server has seen `--messages` deletes:
- bare: `--concurrency` aiobotocore loops, each calling receive_message (10 messages, no
  wait, every attribute) then delete_message_batch of what came, nothing else: the ceiling
  for any consumer written on aiobotocore;
- esm: the real queue engine over the SQS reader (as the daemon builds it: BatchSize 10, no
  batching window, visibility extension on, ScalingConfig.MaximumConcurrency
  `--concurrency`, so that it runs that many pollers) delivering through a `Deliverer` to a
  no-op function.
The ratio esm/bare of the medians is the number to watch.

Run: .venv/bin/python bench/sqs_wire.py [--messages 20000] [--rounds 5] [--concurrency 5]
     [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing
import multiprocessing.connection
import pstats
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import orjson
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from common import (
    FUNCTION_ARN,
    REGION,
    Column,
    NoopBackend,
    machine,
    median,
    quiet_logs,
    rate,
    table,
)

from esm.aws.lean import LeanJsonCalls
from esm.config import DeliveryConfig, SqsConfig
from esm.engine.batcher import BatchLimits
from esm.engine.driver import Deliverer, FunctionTarget
from esm.engine.queue import QueueEngine, QueueSettings
from esm.engine.retry import Backoff
from esm.engine.scaling import ScalingLimits
from esm.events import md5_of_body, md5_of_message_attributes
from esm.metrics import Metrics
from esm.sources.sqs import SqsReader, SqsSettings

ACCOUNT = "000000000000"
QUEUE = "bench"
QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{QUEUE}"
MAPPING = "bench-sqs"
RECEIVE_MAX = 10
BODY_BYTES = 1024
VISIBILITY_TIMEOUT = 30
# A configured function's defaults (Lambda's): 3 s timeout, 128 MB.
FUNCTION_TIMEOUT = 3.0
FUNCTION_MEMORY_MB = 128
JSON_10 = "application/x-amz-json-1.0"
_COUNTER_SLOT = b"@@@@@@@@"
_COUNTER_FORMAT = b"%08d"
_RECEIVE_ATTRIBUTES: dict[str, Any] = {
    "MessageSystemAttributeNames": ["All"],
    "MessageAttributeNames": ["All"],
}


# -- the server (runs in a child process) -------------------------------------------------


def _body(rng: random.Random, index: int) -> str:
    """A JSON document of BODY_BYTES characters, as a producer would send."""
    document: dict[str, Any] = {
        "type": "order.created",
        "orderId": f"ord-{rng.randrange(10**9):09d}",
        "customer": {"id": f"cust-{rng.randrange(10**6):06d}", "region": "us-east-1"},
        "items": [
            {"sku": f"sku-{rng.randrange(10**5):05d}", "qty": rng.randint(1, 5), "price": 9.99}
            for _ in range(3 + index % 3)
        ],
        "note": "",
    }
    short = BODY_BYTES - len(orjson.dumps(document))
    document["note"] = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(short))
    return orjson.dumps(document).decode()


class CannedQueue:
    """The ReceiveMessage answer as pre-built pieces, the call counter spliced between them,
    and the calls counted."""

    def __init__(self) -> None:
        rng = random.Random(7)
        sent = int(time.time() * 1000) - 60_000
        attributes = {
            "type": {"StringValue": "order.created", "DataType": "String"},
            "priority": {"StringValue": "3", "DataType": "Number"},
        }
        attributes_md5 = md5_of_message_attributes(attributes)
        messages = []
        for index in range(RECEIVE_MAX):
            body = _body(rng, index)
            handle = "AQEB" + "".join(
                rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
                for _ in range(160)
            )
            message = {
                "MessageId": f"{_COUNTER_SLOT.decode()}-5eed-4b1e-9c0d-{index:012d}",
                "ReceiptHandle": f"{handle}{_COUNTER_SLOT.decode()}{index:02d}",
                "MD5OfBody": md5_of_body(body),
                "Body": body,
                "Attributes": {
                    "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                    "ApproximateFirstReceiveTimestamp": str(sent + 50),
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": str(sent),
                },
                "MD5OfMessageAttributes": attributes_md5,
                "MessageAttributes": attributes,
            }
            messages.append(message)
        template = orjson.dumps({"Messages": messages})
        self.pieces = template.split(_COUNTER_SLOT)
        self.body_bytes = len(template)
        # Receive calls since startup, never reset: every MessageId stays unique.
        self.counter = 0
        self.reset()

    def reset(self) -> None:
        self.receives = 0
        self.deletes = 0
        self.delete_calls = 0
        self.visibility_calls = 0
        self.other_calls = 0
        self.cpu_started = time.process_time()

    def stats(self) -> dict[str, float]:
        return {
            "receives": self.receives,
            "deletes": self.deletes,
            "delete_calls": self.delete_calls,
            "visibility_calls": self.visibility_calls,
            "other_calls": self.other_calls,
            "cpu": time.process_time() - self.cpu_started,
        }

    def receive(self) -> bytes:
        self.receives += 1
        self.counter += 1
        return (_COUNTER_FORMAT % self.counter).join(self.pieces)

    def answer(self, operation: str, params: dict[str, Any], base_url: str) -> tuple[int, bytes]:
        if operation == "ReceiveMessage":
            return 200, self.receive()
        if operation in ("DeleteMessageBatch", "ChangeMessageVisibilityBatch"):
            entries = params.get("Entries", [])
            if operation == "DeleteMessageBatch":
                self.delete_calls += 1
                self.deletes += len(entries)
            else:
                self.visibility_calls += 1
            successful = [{"Id": entry["Id"]} for entry in entries]
            return 200, orjson.dumps({"Successful": successful, "Failed": []})
        self.other_calls += 1
        if operation == "GetQueueUrl":
            return 200, orjson.dumps({"QueueUrl": f"{base_url}/{ACCOUNT}/{QUEUE}"})
        if operation == "GetQueueAttributes":
            attributes = {
                "VisibilityTimeout": str(VISIBILITY_TIMEOUT),
                "ApproximateNumberOfMessages": "1000000",
                "ApproximateNumberOfMessagesNotVisible": "0",
                "ApproximateNumberOfMessagesDelayed": "0",
            }
            wanted = params.get("AttributeNames") or ["All"]
            if "All" not in wanted:
                attributes = {k: v for k, v in attributes.items() if k in wanted}
            return 200, orjson.dumps({"Attributes": attributes})
        error = {"__type": "com.amazonaws.sqs#UnsupportedOperation", "message": operation}
        return 400, orjson.dumps(error)


def serve(conn: multiprocessing.connection.Connection) -> None:
    """Serve the canned queue on a free port of 127.0.0.1 until the parent closes `conn`.

    The parent sends ("arm", n): the counters are reset, ("armed",) is sent back, then
    ("done", counters) once n messages were deleted.
    """
    import asyncio

    from aiohttp import web

    canned = CannedQueue()
    quota: list[int] = [0]  # deletes that end the current run; 0 when none is armed
    base_url: list[str] = [""]

    async def handle(request: web.Request) -> web.Response:
        operation = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        raw = await request.read()
        status, body = canned.answer(operation, orjson.loads(raw) if raw else {}, base_url[0])
        if quota[0] and canned.deletes >= quota[0]:
            quota[0] = 0
            conn.send(("done", canned.stats()))
        return web.Response(
            status=status,
            body=body,
            headers={"Content-Type": JSON_10, "x-amzn-RequestId": f"req-{canned.receives}"},
        )

    async def main() -> None:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base_url[0] = f"http://127.0.0.1:{port}"
        conn.send((port, canned.body_bytes))
        loop = asyncio.get_running_loop()
        closed = asyncio.Event()

        def command() -> None:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                loop.remove_reader(conn.fileno())
                closed.set()
                return
            if message[0] == "arm":
                canned.reset()
                quota[0] = int(message[1])
                conn.send(("armed",))

        loop.add_reader(conn.fileno(), command)
        await closed.wait()
        await runner.cleanup()

    asyncio.run(main())


class Server:
    """The parent's end of the pipe to the canned queue's process."""

    def __init__(self, conn: multiprocessing.connection.Connection) -> None:
        self.conn = conn

    async def _reply(self, timeout: float) -> tuple[Any, ...]:
        with anyio.fail_after(timeout):
            while not self.conn.poll():
                await anyio.wait_readable(self.conn.fileno())
        reply: tuple[Any, ...] = self.conn.recv()
        return reply

    async def arm(self, deletes: int) -> None:
        self.conn.send(("arm", deletes))
        reply = await self._reply(10)
        if reply[0] != "armed":
            raise RuntimeError(f"unexpected answer from the server: {reply!r}")

    async def done(self, timeout: float) -> dict[str, float]:
        """Wait until the armed quota of deletes is reached."""
        reply = await self._reply(timeout)
        if reply[0] != "done":
            raise RuntimeError(f"unexpected answer from the server: {reply!r}")
        return dict(reply[1])


# -- the two clients ------------------------------------------------------------------------


def client_config() -> AioConfig:
    """What the daemon configures for its clients (`Daemon.open_client`)."""
    return AioConfig(
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=64,
    )


async def bare_poller(client: Any, queue_url: str, stop: anyio.Event) -> None:
    while not stop.is_set():
        answer = await client.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=RECEIVE_MAX,
            WaitTimeSeconds=0,
            **_RECEIVE_ATTRIBUTES,
        )
        messages = answer.get("Messages", [])
        if messages:
            entries = [
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)
            ]
            await client.delete_message_batch(QueueUrl=queue_url, Entries=entries)


@dataclass
class Run:
    """One side's run, started: `finish` stops it once the server saw the quota of deletes."""

    finish: Callable[[], None]
    note: Callable[[], str]


Side = Callable[[anyio.abc.TaskGroup], Awaitable[Run]]


def bare_side(client: Any, concurrency: int) -> Side:
    async def start(tg: anyio.abc.TaskGroup) -> Run:
        answer = await client.get_queue_url(QueueName=QUEUE, QueueOwnerAWSAccountId=ACCOUNT)
        stop = anyio.Event()
        for _ in range(concurrency):
            tg.start_soon(bare_poller, client, answer["QueueUrl"], stop)
        return Run(stop.set, lambda: f"{concurrency} loops")

    return start


def make_queue_runner(
    client: Any, concurrency: int, backend: NoopBackend | None = None
) -> QueueEngine:
    """The queue mapping the daemon builds (`Daemon._queue_runner`) for BatchSize 10, no
    batching window, ScalingConfig.MaximumConcurrency `concurrency` and the default [sqs] and
    [delivery] settings, invoking a no-op function (or `backend`)."""
    sqs, delivery = SqsConfig(), DeliveryConfig()
    backoff = Backoff(
        initial=delivery.backoff_initial_seconds, maximum=delivery.backoff_max_seconds
    )
    metrics = Metrics()
    reader = SqsReader(
        client,
        SqsSettings(
            queue_arn=QUEUE_ARN,
            region=REGION,
            mapping=MAPPING,
            extend_visibility=sqs.extend_visibility,
            retry_delay=backoff.delay,
        ),
        metrics,
        # The hot calls on the lean path, as the daemon builds the reader (esm/aws/lean.py).
        LeanJsonCalls(client),
    )
    settings = QueueSettings(
        mapping=MAPPING,
        limits=BatchLimits(batch_size=RECEIVE_MAX, window_seconds=0.0),
        scaling=ScalingLimits(maximum=concurrency),
        wait_time_seconds=sqs.wait_time_seconds,
        failure_visibility_seconds=sqs.failure_visibility_timeout_seconds,
        release_on_shutdown=sqs.release_on_shutdown,
        backlog_interval=sqs.backlog_sample_seconds,
        backoff=backoff,
    )
    target = FunctionTarget(
        name="noop", arn=FUNCTION_ARN, timeout=FUNCTION_TIMEOUT, memory_size=FUNCTION_MEMORY_MB
    )
    deliverer = Deliverer(backend or NoopBackend(), target, MAPPING, metrics, backoff=backoff)
    return QueueEngine(reader, settings, deliverer, metrics)


def esm_side(client: Any, concurrency: int) -> Side:
    async def start(tg: anyio.abc.TaskGroup) -> Run:
        runner = make_queue_runner(client, concurrency)
        tg.start_soon(runner.run)
        seen: list[int] = [0, 0]

        def finish() -> None:
            pollers = runner.status()["pollers"]
            seen[:] = [int(pollers["target"]), int(pollers["running"])]
            runner.stop()

        return Run(finish, lambda: f"pollers: target {seen[0]}, running {seen[1]}")

    return start


class Sample:
    """One timed run: wall seconds, this process's CPU seconds and the server's counters."""

    def __init__(self, messages: int, wall: float, cpu: float, server: dict[str, float]) -> None:
        self.messages = messages
        self.wall = wall
        self.cpu = cpu
        self.server = server

    @property
    def rate(self) -> float:
        return rate(self.messages, self.wall)


async def timed(side: Side, server: Server, messages: int, timeout: float) -> tuple[Sample, str]:
    """Run `side` until the server has seen `messages` deletes, then stop it and let it end."""
    await server.arm(messages)
    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as tg:
            cpu, wall = time.process_time(), time.perf_counter()
            run = await side(tg)
            stats = await server.done(timeout)
            sample = Sample(messages, time.perf_counter() - wall, time.process_time() - cpu, stats)
            run.finish()
    return sample, run.note()


def profile_report(profiler: cProfile.Profile, limit: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    out.write("\nesm's own functions, by time spent in themselves:\n")
    stats.sort_stats("tottime").print_stats(r"/esm/", limit)
    stats.sort_stats("cumulative").print_stats(r"/esm/", limit)
    return out.getvalue()


async def main(args: argparse.Namespace, server: Server, port: int, body_bytes: int) -> None:
    quiet_logs()
    print(f"esm SQS wire benchmark: {machine()}")
    print(
        f"ReceiveMessage answers of {RECEIVE_MAX} messages of {BODY_BYTES} B bodies "
        f"({body_bytes / 1e3:.1f} kB of JSON) from 127.0.0.1:{port} (a separate process); "
        f"{args.messages:,} messages deleted per run, {args.concurrency} concurrent pollers "
        f"on each side; median of {args.rounds} rounds, sides alternating"
    )
    print()

    session = get_session()
    endpoint = f"http://127.0.0.1:{port}"
    credentials = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
    config = client_config()
    async with (
        session.create_client(
            "sqs", region_name=REGION, endpoint_url=endpoint, config=config, **credentials
        ) as bare_client,
        session.create_client(
            "sqs", region_name=REGION, endpoint_url=endpoint, config=config, **credentials
        ) as esm_client,
    ):
        sides: dict[str, Side] = {
            "bare aiobotocore loop": bare_side(bare_client, args.concurrency),
            "esm QueueEngine": esm_side(esm_client, args.concurrency),
        }
        # Warm up: connections open, service model and shapes loaded, code paths run once.
        for side in sides.values():
            await timed(side, server, 200 * args.concurrency, timeout=60)

        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            sample, note = await timed(sides["esm QueueEngine"], server, args.messages, 100)
            profiler.disable()
            print(f"profiled esm run ({note}): {sample.rate:,.0f} messages/s (under cProfile)")
            print(profile_report(profiler, args.profile_lines))
            return

        samples: dict[str, list[Sample]] = {name: [] for name in sides}
        notes: dict[str, str] = {}
        for round_number in range(1, args.rounds + 1):
            line = []
            for name, side in sides.items():
                sample, notes[name] = await timed(side, server, args.messages, timeout=100)
                samples[name].append(sample)
                line.append(f"{name}: {sample.rate:,.0f}/s")
            print(f"round {round_number}: " + "; ".join(line), flush=True)

    bare_name = next(iter(sides))
    bare_rate = median([s.rate for s in samples[bare_name]])
    columns = [
        Column("consumer", "<"),
        Column("messages/s"),
        Column("us/message"),
        Column("CPU us/message"),
        Column("server CPU"),
        Column("vs bare"),
        Column("runs (messages/s)", "<"),
    ]
    rows = []
    for name, runs in samples.items():
        messages_per_s = median([s.rate for s in runs])
        cpu_us = median([s.cpu / s.messages * 1e6 for s in runs])
        server_busy = median([s.server["cpu"] / s.wall for s in runs])
        rows.append(
            [
                name,
                f"{messages_per_s:,.0f}",
                f"{1e6 / messages_per_s:.0f}",
                f"{cpu_us:.0f}",
                f"{server_busy:.0%}",
                f"{messages_per_s / bare_rate:.2f}",
                " ".join(f"{s.rate:,.0f}" for s in runs),
            ]
        )
    print()
    print(table(columns, rows))
    print()
    for name, runs in samples.items():
        last = runs[-1].server
        print(
            f"{name} ({notes[name]}), last run up to the quota: {last['receives']:.0f} receives, "
            f"{last['delete_calls']:.0f} delete batches ({last['deletes']:.0f} messages), "
            f"{last['visibility_calls']:.0f} visibility batches, {last['other_calls']:.0f} "
            f"other calls"
        )
    esm_name = list(samples)[1]
    ratios = [e.rate / b.rate for e, b in zip(samples[esm_name], samples[bare_name], strict=True)]
    print(
        f"ratio esm / bare: {median([s.rate for s in samples[esm_name]]) / bare_rate:.2f} "
        f"(per round: {' '.join(f'{r:.2f}' for r in ratios)}; median of the per-round "
        f"ratios {median(ratios):.2f})"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20_000, help="messages deleted per run")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each side, alternating")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=5,
        help="concurrent pollers on each side (esm: ScalingConfig.MaximumConcurrency)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile one esm run instead (cProfile)"
    )
    parser.add_argument("--profile-lines", type=int, default=25)
    args = parser.parse_args()
    if args.concurrency < 2:
        # Lambda's (and esm's) floor for an SQS mapping's MaximumConcurrency.
        parser.error("--concurrency must be at least 2")
    return args


def run() -> None:
    args = parse_args()
    parent, child = multiprocessing.get_context("spawn").Pipe()
    server = multiprocessing.get_context("spawn").Process(
        target=serve, args=(child,), name="canned-sqs", daemon=True
    )
    server.start()
    child.close()
    try:
        if not parent.poll(60):
            raise SystemExit("the canned SQS server did not start")
        port, body_bytes = parent.recv()
        anyio.run(main, args, Server(parent), port, body_bytes, backend="asyncio")
    finally:
        parent.close()
        server.join(10)
        if server.is_alive():
            server.terminate()
            server.join(5)


if __name__ == "__main__":
    run()
