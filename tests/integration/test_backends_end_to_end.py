"""Every kind of function backend, configured by type, delivering a stream end to end."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from aiohttp import web

from esm.config import parse_config
from esm.daemon import Daemon

from ..conftest import free_port
from .helpers import create_stream, put_records

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

FIXTURES = Path(__file__).parent.parent / "fixtures"


@asynccontextmanager
async def lambda_api() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A local server speaking the Lambda Invoke API, answering every invocation."""
    received: list[bytes] = []

    async def invoke(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.json_response({"batchItemFailures": []}, headers={"X-Amz-Executed-Version": "3"})

    app = web.Application()
    app.router.add_post("/2015-03-31/functions/{name}/invocations", invoke)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        await runner.cleanup()


@asynccontextmanager
async def runtime_client(port: int) -> AsyncIterator[None]:
    """awslambdaric running a handler against esm's Runtime API on `port`."""
    pytest.importorskip("awslambdaric")
    env = {
        **os.environ,
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
        "PYTHONPATH": str(FIXTURES),
    }
    process = await anyio.open_process(
        [sys.executable, "-m", "awslambdaric", "runtime_handlers.handler"],
        env=env,
        stdout=None,
        stderr=None,
    )
    try:
        yield
    finally:
        process.kill()
        await process.wait()


def function_yaml(kind: str, port: int) -> str:
    if kind == "command per-batch":
        script = FIXTURES / "command_batch.py"
        return f"{{type: command, command: ['{sys.executable}', '{script}'], timeout: 10}}"
    if kind == "command persistent":
        return (
            f"{{type: command, command: ['{sys.executable}', '{FIXTURES / 'command_worker.py'}'],"
            " mode: persistent, workers: 2, timeout: 10}"
        )
    if kind == "lambda":
        return "{type: lambda, function_name: orders, qualifier: live, timeout: 10}"
    if kind == "runtime":
        return f"{{type: runtime, listen: '127.0.0.1:{port}', timeout: 10}}"
    if kind == "plugin":
        return "{type: example-echo}"
    if kind == "weighted":
        return "{type: weighted, targets: [{function: a, weight: 1}, {function: b, weight: 3}]}"
    return "{type: python, handler: 'esm.examples.handlers:handle'}"


KINDS = [
    "python",
    "command per-batch",
    "command persistent",
    "lambda",
    "runtime",
    "plugin",
    "weighted",
]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stream_reaches_every_kind_of_backend(
    kind: str, kinesis: Any, moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    await put_records(kinesis, stream_name, 20)
    port = free_port()
    async with lambda_api() as (lambda_url, received):
        config = parse_config(
            f"""
aws:
  region: us-east-1
  endpoint_url: {moto_endpoint}
  endpoints: {{lambda: "{lambda_url}"}}
state: {{backend: memory}}
admin: {{enabled: false}}
polling: {{interval_seconds: 0.2}}
functions:
  fn: {function_yaml(kind, port)}
  a: {{type: python, handler: "esm.examples.handlers:handle"}}
  b: {{type: python, handler: "esm.examples.handlers:handle"}}
mappings:
  - {{FunctionName: fn, EventSourceArn: "{arn}", StartingPosition: TRIM_HORIZON, BatchSize: 10}}
""",
            environ={},
        )
        daemon = Daemon(config)
        mapping = config.mappings[0].mapping_name
        successes = daemon.metrics.invocations.labels(mapping, "success")
        async with runtime_client(port) if kind == "runtime" else _nothing():
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    await tg.start(
                        lambda task_status: daemon.run(
                            handle_signals=False, task_status=task_status
                        )
                    )
                    while successes._value.get() < 2:
                        await anyio.sleep(0.05)
                    daemon.request_stop()
        [shard] = daemon.status()["mappings"][0]["shards"].values()
        assert shard["records_delivered"] == 20
        if kind == "lambda":
            events = [orjson.loads(body) for body in received]
            assert sum(len(e["Records"]) for e in events) == 20
        if kind == "weighted":
            choices = daemon.metrics.weighted_choices
            assert (
                choices.labels("fn", "a")._value.get() + choices.labels("fn", "b")._value.get() == 2
            )


@asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield
