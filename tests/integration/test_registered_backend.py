"""A backend registered by a test, not by esm: validated by the configuration and built and
run by the daemon, which know it only through the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from esm import registry
from esm.config import parse_config
from esm.daemon import Daemon

from ..unit.test_registry import COUNTING, CountingBackend
from .helpers import create_stream, put_records

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_the_daemon_builds_and_runs_a_test_registered_backend(
    kinesis: Any, moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    await put_records(kinesis, stream_name, 12)
    built: list[CountingBackend] = []

    async def create(context: registry.BackendContext, settings: Any) -> CountingBackend:
        backend = CountingBackend(settings.step)
        built.append(backend)
        return backend

    plugin: registry.Plugin[registry.BackendFactory] = registry.Plugin(
        COUNTING.name, COUNTING.settings, create
    )
    with registry.FUNCTION_BACKENDS.registered(plugin):
        config = parse_config(
            f"""
aws: {{region: us-east-1, endpoint_url: "{moto_endpoint}"}}
state: {{backend: memory}}
admin: {{enabled: false}}
polling: {{interval_seconds: 0.2}}
functions:
  counter: {{type: test-counting, step: 2}}
mappings:
  - {{FunctionName: counter, EventSourceArn: "{arn}", StartingPosition: TRIM_HORIZON,
      BatchSize: 5}}
""",
            environ={},
        )
        daemon = Daemon(config)
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                await tg.start(
                    lambda task_status: daemon.run(handle_signals=False, task_status=task_status)
                )
                while not built or built[0].count < 3 * 2:  # 12 records in batches of 5
                    await anyio.sleep(0.05)
                daemon.request_stop()
    [shard] = daemon.status()["mappings"][0]["shards"].values()
    assert shard["records_delivered"] == 12


async def test_the_example_plugin_runs_through_its_entry_point(
    kinesis: Any, moto_endpoint: str, stream_name: str, tmp_path: Path
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    await put_records(kinesis, stream_name, 7)
    out = tmp_path / "events.jsonl"
    config = parse_config(
        f"""
aws: {{region: us-east-1, endpoint_url: "{moto_endpoint}"}}
state: {{backend: memory}}
admin: {{enabled: false}}
polling: {{interval_seconds: 0.2}}
functions:
  archive: {{type: example-jsonl, path: "{out}"}}
mappings:
  - {{FunctionName: archive, EventSourceArn: "{arn}", StartingPosition: TRIM_HORIZON}}
""",
        environ={},
    )
    daemon = Daemon(config)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(
                lambda task_status: daemon.run(handle_signals=False, task_status=task_status)
            )
            while not out.exists() or not out.read_bytes().endswith(b"\n"):
                await anyio.sleep(0.05)
            daemon.request_stop()
    events = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert sum(len(event["Records"]) for event in events) == 7
