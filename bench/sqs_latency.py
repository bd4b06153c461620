"""Send-to-invoke latency of SQS messages with long polling.

A canned queue, in a process of its own (127.0.0.1, a free port), speaks enough of the SQS
JSON protocol for esm's queue mapping (bench/sqs_wire.py's canned answers for everything but
ReceiveMessage) and sends itself messages at random moments, `--rate` a second on average,
each carrying in its body the wall-clock time it was sent. ReceiveMessage long-polls as SQS
does: it answers at once when messages are waiting, else holds the call until one is sent or
`WaitTimeSeconds` passes. esm, in this process, runs the queue mapping as the daemon builds
it (bench/sqs_wire.py's `make_queue_runner`: the default `[sqs]` settings, so long polling
of 20 s, BatchSize 10, no batching window, MaximumConcurrency 5, the hot calls on the lean
path) and hands each batch to a function that notes, per message, the time from its sending
to the invocation. After a warm-up, `--seconds` are timed.

Run: .venv/bin/python bench/sqs_latency.py [--rate 20] [--seconds 20]
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import multiprocessing.connection
import random
import time
from typing import Any

import anyio
import orjson
from aiobotocore.session import get_session
from common import (
    REGION,
    Column,
    LatencyBackend,
    machine,
    quiet_logs,
    table,
    time_latencies,
)
from local_server import start_local_server
from sqs_wire import JSON_10, CannedQueue, client_config, make_queue_runner

from esm.events import md5_of_body


def serve(conn: multiprocessing.connection.Connection, rate: float) -> None:
    """The long-polling canned queue; sends its port, stops when `conn` closes."""
    import asyncio

    from aiohttp import web

    canned = CannedQueue()
    waiting: list[dict[str, Any]] = []
    arrived = asyncio.Event()
    ids = itertools.count()
    base_url: list[str] = [""]

    def message(sent: float) -> dict[str, Any]:
        n = next(ids)
        body = orjson.dumps({"sent": sent}).decode()
        millis = str(int(sent * 1000))
        return {
            "MessageId": f"00000000-0000-4000-8000-{n:012d}",
            "ReceiptHandle": f"AQEB-handle-{n}",
            "MD5OfBody": md5_of_body(body),
            "Body": body,
            "Attributes": {
                "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                "ApproximateFirstReceiveTimestamp": millis,
                "ApproximateReceiveCount": "1",
                "SentTimestamp": millis,
            },
        }

    async def receive(params: dict[str, Any]) -> bytes:
        deadline = time.monotonic() + float(params.get("WaitTimeSeconds", 0))
        while not waiting and time.monotonic() < deadline:
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        count = int(params.get("MaxNumberOfMessages", 1))
        taken = waiting[:count]
        del waiting[:count]
        return orjson.dumps({"Messages": taken} if taken else {})

    async def handle(request: web.Request) -> web.Response:
        operation = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        raw = await request.read()
        params = orjson.loads(raw) if raw else {}
        if operation == "ReceiveMessage":
            status, body = 200, await receive(params)
        else:
            status, body = canned.answer(operation, params, base_url[0])
        return web.Response(status=status, body=body, headers={"Content-Type": JSON_10})

    async def send() -> None:
        while True:
            await asyncio.sleep(random.expovariate(rate))
            waiting.append(message(time.time()))
            arrived.set()

    async def main() -> None:
        runner, port = await start_local_server(handle)
        base_url[0] = f"http://127.0.0.1:{port}"
        conn.send(port)
        sender = asyncio.create_task(send())
        closed = asyncio.Event()
        asyncio.get_running_loop().add_reader(conn.fileno(), closed.set)
        await closed.wait()
        sender.cancel()
        await runner.cleanup()

    asyncio.run(main())


async def measure(port: int, seconds: float) -> dict[str, float]:
    from esm.gc_tuning import tune_collector

    quiet_logs()
    tune_collector()
    async with get_session().create_client(
        "sqs",
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{port}",
        config=client_config(),
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    ) as client:
        backend = LatencyBackend(lambda record: float(orjson.loads(record["body"])["sent"]))
        runner = make_queue_runner(client, 5, backend)
        window = await time_latencies(runner, backend, warmup=3.0, seconds=seconds)
    return {
        "messages": len(window.latencies),
        "p50_ms": window.p50_ms,
        "p99_ms": window.p99_ms,
        "cpu_share": window.cpu_share,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=20.0, help="messages sent per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    print(f"esm SQS latency benchmark: {machine()}")
    print(f"{args.rate} messages sent a second, {args.seconds} s timed after a warm-up")
    parent, child = multiprocessing.get_context("spawn").Pipe()
    server = multiprocessing.get_context("spawn").Process(
        target=serve, args=(child, args.rate), name="canned-sqs", daemon=True
    )
    server.start()
    child.close()
    try:
        if not parent.poll(60):
            raise SystemExit("the canned queue did not start")
        result = anyio.run(measure, parent.recv(), args.seconds)
    finally:
        parent.close()
        server.join(10)
        if server.is_alive():
            server.terminate()
    print(result)
    columns = [Column("messages"), Column("p50 ms"), Column("p99 ms"), Column("CPU (of one core)")]
    row = [
        f"{result['messages']:,}",
        f"{result['p50_ms']:.1f}",
        f"{result['p99_ms']:.1f}",
        f"{result['cpu_share'] * 100:.1f}%",
    ]
    print()
    print(table(columns, [row]))


if __name__ == "__main__":
    main()
