"""`esm run` as a process: an HTTP function, SIGTERM mid-stream, restart, nothing lost."""

from __future__ import annotations

import base64
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
from aiohttp import web

from tests.conftest import free_port
from tests.integration.helpers import create_stream, put_records, read_back

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


class FunctionServer:
    """An HTTP function that records the events it receives and answers slowly enough
    that a stop lands while records are still waiting."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        event = orjson.loads(await request.read())
        self.events.append(event)
        self.headers.append(dict(request.headers))
        await anyio.sleep(0.05)
        return web.json_response({"batchItemFailures": []})

    def records(self) -> list[dict[str, Any]]:
        return [r for e in self.events for r in e["Records"]]


def write_config(path: Path, endpoint: str, arn: str, function_url: str, admin_port: int) -> None:
    path.write_text(
        f"""
aws:
  region: us-east-1
  endpoint_url: {endpoint}
state:
  backend: sqlite
  path: {path.parent / "state.db"}
admin:
  listen: 127.0.0.1:{admin_port}
log:
  format: json
  level: info
delivery:
  shutdown_grace_seconds: 10
polling:
  interval_seconds: 0.2
functions:
  orders:
    type: http
    url: {function_url}
    timeout: 5
mappings:
  - FunctionName: orders
    EventSourceArn: {arn}
    StartingPosition: TRIM_HORIZON
    BatchSize: 20
"""
    )


async def wait_for(condition: Any, seconds: float) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.05)


async def start(command: list[str], log: Path) -> anyio.abc.Process:
    """Start esm with its output in `log`: a pipe nobody reads would fill and block it."""
    with log.open("wb") as out:
        return await anyio.open_process(command, stdout=out, stderr=out)


async def stop(process: anyio.abc.Process) -> int:
    process.send_signal(signal.SIGTERM)
    with anyio.fail_after(20):
        return await process.wait()


def kill(*processes: anyio.abc.Process | None) -> None:
    """Leave no esm behind when a test fails half way."""
    for process in processes:
        if process is not None and process.returncode is None:
            process.kill()


async def test_sigterm_mid_stream_then_restart_delivers_everything_in_order(
    kinesis: Any, moto_endpoint: str, stream_name: str, tmp_path: Path
) -> None:
    arn = await create_stream(kinesis, stream_name, 2)
    await put_records(kinesis, stream_name, 1000)
    expected = await read_back(kinesis, stream_name)

    function = FunctionServer()
    app = web.Application()
    app.router.add_post("/", function.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    admin_port = free_port()
    config = tmp_path / "esm.yaml"
    write_config(config, moto_endpoint, arn, f"http://127.0.0.1:{port}/", admin_port)
    command = [sys.executable, "-m", "esm", "run", "-c", str(config)]
    first = second = None
    try:
        first = await start(command, tmp_path / "run1.log")
        await wait_for(lambda: len(function.records()) >= 200, 30)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{admin_port}/readyz") as answer:
                assert answer.status == 200
            async with http.get(f"http://127.0.0.1:{admin_port}/metrics") as answer:
                metrics = await answer.text()
                assert "esm_invoked_events_total" in metrics
                assert "esm_iterator_age_seconds" in metrics
        assert await stop(first) == 0
        after_first = len(function.records())
        assert after_first < 1000, "the stop came mid-stream"

        second = await start(command, tmp_path / "run2.log")
        await wait_for(
            lambda: len({r["eventID"] for r in function.records()}) >= 1000,
            60,
        )
        assert await stop(second) == 0
    finally:
        kill(first, second)
        await runner.cleanup()

    # At least once, and in order per shard: dropping repeats leaves exactly each shard's
    # records in the order the shard holds them.
    seen: set[str] = set()
    by_shard: dict[str, list[bytes]] = {}
    for record in function.records():
        # eventID is shardId:sequenceNumber, unique across the stream.
        if record["eventID"] in seen:
            continue
        seen.add(record["eventID"])
        shard = record["eventID"].split(":")[0]
        by_shard.setdefault(shard, []).append(base64.b64decode(record["kinesis"]["data"]))
    assert by_shard == expected
    # Repeats are limited to what was in flight at the stop: at most one batch per shard.
    assert len(function.records()) - 1000 <= 20 * len(expected)
    assert all(h.get("Lambda-Runtime-Aws-Request-Id") for h in function.headers)
