"""Nothing a plugin does ends the daemon: exceptions from a backend, a checkpoint store or a
source are contained to their batch or mapping, classified, backed off, counted and logged,
while the other mappings keep flowing. End to end against moto's server."""

from __future__ import annotations

from typing import Any

import aiohttp
import anyio
import pytest

from esm.checkpoints.memory import MemoryCheckpointStore
from esm.config import parse_config
from esm.daemon import Daemon
from esm.errors import InvocationError
from esm.metrics import Metrics
from esm.model import Checkpoint, Invocation, InvokeResult
from esm.sources.kinesis import KinesisStreamAPI
from esm.testing import RecordingBackend, kinesis_data

from .helpers import create_stream, daemon_config, put_records, run_daemon_until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


class RaisingBackend:
    """A plugin backend with a bug: every invocation raises."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        self.calls += 1
        raise self.error

    async def aclose(self) -> None:
        return None


def _two_mappings(endpoint: str, bad_arn: str, good_arn: str) -> Any:
    text = f"""
aws:
  region: us-east-1
  endpoint_url: {endpoint}
state:
  backend: memory
admin:
  listen: 127.0.0.1:0
delivery:
  backoff_initial_seconds: 0.05
  backoff_max_seconds: 0.2
  shutdown_grace_seconds: 5
polling:
  interval_seconds: 0.2
  shard_discovery_interval_seconds: 0.5
functions:
  bad:
    type: python
    handler: esm.examples.handlers:handle
  good:
    type: python
    handler: esm.examples.handlers:handle
mappings:
  - FunctionName: bad
    EventSourceArn: {bad_arn}
    StartingPosition: TRIM_HORIZON
  - FunctionName: good
    EventSourceArn: {good_arn}
    StartingPosition: TRIM_HORIZON
"""
    return parse_config(text, environ={})


async def test_a_backend_that_raises_on_every_call_leaves_the_daemon_and_other_mappings_running(
    kinesis: Any, moto_endpoint: str, stream_name: str
) -> None:
    bad_arn = await create_stream(kinesis, stream_name, 1)
    good_arn = await create_stream(kinesis, f"{stream_name}-good", 1)
    await put_records(kinesis, stream_name, 3)
    written = await put_records(kinesis, f"{stream_name}-good", 5)
    bad = RaisingBackend(ValueError("Cannot combine AUTHORIZATION header with AUTH argument"))
    good = RecordingBackend()
    metrics = Metrics()
    config = _two_mappings(moto_endpoint, bad_arn, good_arn)
    bad_mapping = config.mappings[0].mapping_name
    daemon = Daemon(config, backends={"bad": bad, "good": good}, metrics=metrics)
    health: list[int] = []
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await tg.start(
                lambda task_status: daemon.run(handle_signals=False, task_status=task_status)
            )
            while bad.calls < 3 or len(good.delivered_records()) < 5:
                await anyio.sleep(0.02)
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{daemon.admin_port}/healthz") as response,
            ):
                health.append(response.status)
            status = daemon.status()
            daemon.request_stop()
    assert health == [200]
    assert [kinesis_data(r) for r in good.delivered_records()] == written
    # The failing batch is retried (a system error: never given up, never dropped).
    assert metrics.contained_errors.labels(bad_mapping, "backend")._value.get() >= 3
    assert metrics.invocations.labels(bad_mapping, "system_error")._value.get() >= 3
    assert metrics.dropped_events.labels(bad_mapping)._value.get() == 0
    [shard] = status["mappings"][0]["shards"].values()
    [in_flight] = shard["in_flight"]
    assert in_flight["system_errors"] >= 2
    assert "ValueError: Cannot combine" in in_flight["last_error"]
    assert shard["checkpoint"] is None, "nothing of the failing batch was settled"


async def test_a_backend_may_classify_what_it_raises(
    kinesis: Any, moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    await put_records(kinesis, stream_name, 2)
    backend = RaisingBackend(InvocationError("handler crashed", kind="function_error"))
    metrics = Metrics()
    config = daemon_config(moto_endpoint, arn, extra_mapping="    MaximumRetryAttempts: 1")
    mapping = config.mappings[0].mapping_name
    dropped = metrics.dropped_events.labels(mapping)
    daemon = Daemon(config, backends={"fn": backend}, metrics=metrics)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await tg.start(
                lambda task_status: daemon.run(handle_signals=False, task_status=task_status)
            )
            while dropped._value.get() < 2:
                await anyio.sleep(0.02)
            daemon.request_stop()
    # A function error counts against MaximumRetryAttempts: 1 + 1 invocations, then dropped.
    assert backend.calls == 2
    assert metrics.invocations.labels(mapping, "function_error")._value.get() == 2


class FlakyStore(MemoryCheckpointStore):
    """A checkpoint store plugin that fails with unexpected errors now and then."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0
        self.saves = 0

    async def load(self, mapping_id: str) -> dict[str, Checkpoint]:
        self.loads += 1
        if self.loads == 1:
            raise RuntimeError("connection pool exhausted")
        return await super().load(mapping_id)

    async def save(self, mapping_id: str, partition: str, checkpoint: Checkpoint) -> None:
        self.saves += 1
        if self.saves % 2:
            raise KeyError("bad row")
        await super().save(mapping_id, partition, checkpoint)


async def test_a_checkpoint_store_that_raises_costs_no_records(
    kinesis: Any, moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    written = await put_records(kinesis, stream_name, 9)
    store = FlakyStore()
    backend = RecordingBackend()
    metrics = Metrics()
    config = daemon_config(moto_endpoint, arn, batch_size=3)
    mapping = config.mappings[0].mapping_name
    await run_daemon_until(
        config,
        backend,
        lambda: len(backend.delivered_records()) >= 9 and store.saves >= 3,
        store=store,
        metrics=metrics,
    )
    assert [kinesis_data(r) for r in backend.delivered_records()] == written
    assert metrics.contained_errors.labels(mapping, "checkpoint_store")._value.get() >= 2


async def test_a_mapping_that_fails_outside_any_batch_is_restarted(
    kinesis: Any, moto_endpoint: str, stream_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    written = await put_records(kinesis, stream_name, 4)
    original = KinesisStreamAPI.list_shards
    calls = {"n": 0}

    async def list_shards_with_a_bug(self: KinesisStreamAPI) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise AttributeError("'NoneType' object has no attribute 'get'")
        return await original(self)

    monkeypatch.setattr(KinesisStreamAPI, "list_shards", list_shards_with_a_bug)
    backend = RecordingBackend()
    metrics = Metrics()
    config = daemon_config(moto_endpoint, arn)
    mapping = config.mappings[0].mapping_name
    await run_daemon_until(
        config, backend, lambda: len(backend.delivered_records()) >= 4, metrics=metrics
    )
    assert [kinesis_data(r) for r in backend.delivered_records()] == written
    assert metrics.contained_errors.labels(mapping, "mapping")._value.get() == 1
