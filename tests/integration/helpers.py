"""Helpers for integration tests: streams on moto, and running a daemon until a condition."""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Callable
from typing import Any

import anyio

from esm.config import EsmConfig, parse_config
from esm.daemon import Daemon
from esm.metrics import Metrics
from esm.protocols import CheckpointStore
from esm.testing import RecordingBackend, kinesis_data


async def create_stream(kinesis: Any, name: str, shards: int) -> str:
    await kinesis.create_stream(StreamName=name, ShardCount=shards)
    summary = await kinesis.describe_stream_summary(StreamName=name)
    return str(summary["StreamDescriptionSummary"]["StreamARN"])


async def put_records(kinesis: Any, name: str, count: int, *, prefix: str = "r") -> list[bytes]:
    """Write `count` records with varied partition keys; returns the data written, in order."""
    written = []
    for start in range(0, count, 500):
        entries = []
        for n in range(start, min(count, start + 500)):
            data = f"{prefix}{n}".encode()
            written.append(data)
            entries.append({"Data": data, "PartitionKey": f"key-{n}"})
        answer = await kinesis.put_records(StreamName=name, Records=entries)
        assert answer.get("FailedRecordCount", 0) == 0
    return written


def put_into_shard(stream_name: str, shard_id: str, count: int, *, prefix: str) -> None:
    """Write records into one shard directly through moto's in-process backend.

    moto routes writes to the first shard whose hash range matches, closed parents included,
    so after a split it never writes to the children; real Kinesis routes them to the open
    child. The test server runs in this process, so its backend can be reached directly.
    """
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.kinesis.models import kinesis_backends

    stream = kinesis_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].describe_stream(
        stream_arn=None, stream_name=stream_name
    )
    shard = stream.shards[shard_id]
    for n in range(count):
        data = base64.b64encode(f"{prefix}{n}".encode()).decode()
        # No explicit hash key, as PutRecord without one (moto annotates it as str).
        shard.put_record(f"key-{n}", data, None)  # type: ignore[arg-type]


def daemon_config(
    endpoint: str,
    stream_arn: str,
    *,
    batch_size: int = 100,
    state: str = "backend: memory",
    extra_mapping: str = "",
) -> EsmConfig:
    text = f"""
aws:
  region: us-east-1
  endpoint_url: {endpoint}
state:
  {state}
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
  fn:
    type: python
    handler: esm.examples.handlers:handle
mappings:
  - FunctionName: fn
    EventSourceArn: {stream_arn}
    StartingPosition: TRIM_HORIZON
    BatchSize: {batch_size}
{extra_mapping}
"""
    return parse_config(text, environ={})


async def run_daemon_until(
    config: EsmConfig,
    backend: RecordingBackend,
    done: Callable[[], bool],
    *,
    store: CheckpointStore | None = None,
    metrics: Metrics | None = None,
    limit_seconds: float = 60,
) -> Daemon:
    """Run a daemon with `backend` as its function until `done()`, then stop it gracefully."""
    daemon = Daemon(config, backends={"fn": backend}, store=store, metrics=metrics)
    with anyio.fail_after(limit_seconds):
        async with anyio.create_task_group() as tg:
            await tg.start(
                lambda task_status: daemon.run(handle_signals=False, task_status=task_status)
            )
            while not done():
                await anyio.sleep(0.02)
            daemon.request_stop()
    return daemon


def data_by_shard(backend: RecordingBackend) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for record in backend.delivered_records():
        out.setdefault(record["eventID"].split(":")[0], []).append(kinesis_data(record))
    return out


async def read_back(kinesis: Any, name: str) -> dict[str, list[bytes]]:
    """What each shard of the stream holds, in order: the truth deliveries are checked against."""
    shards = (await kinesis.list_shards(StreamName=name))["Shards"]
    out: dict[str, list[bytes]] = {}
    for shard in shards:
        shard_id = shard["ShardId"]
        iterator = (
            await kinesis.get_shard_iterator(
                StreamName=name, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
            )
        )["ShardIterator"]
        records: list[bytes] = []
        while True:
            page = await kinesis.get_records(ShardIterator=iterator, Limit=10000)
            records.extend(r["Data"] for r in page["Records"])
            if not page["Records"]:
                break
            iterator = page["NextShardIterator"]
        if records:
            out[shard_id] = records
    return out


def age_records(stream_name: str, seconds: float) -> None:
    """Make every record of the stream look `seconds` older, through moto's in-process
    backend: records written by a test are always new, and MaximumRecordAgeInSeconds is
    at least 60."""
    from datetime import timedelta

    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.kinesis.models import kinesis_backends

    stream = kinesis_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].describe_stream(
        stream_arn=None, stream_name=stream_name
    )
    for shard in stream.shards.values():
        for record in shard.records.values():
            # Older moto keeps the arrival time twice (epoch seconds and a datetime), newer
            # moto once, as a datetime; its annotations match neither.
            aged: Any = record
            if hasattr(aged, "created_at_datetime"):
                aged.created_at_datetime -= timedelta(seconds=seconds)
                aged.created_at -= seconds
            else:
                aged.created_at -= timedelta(seconds=seconds)


ADMIN_TOKEN = "operations-admin-token-0123"
"""The admin token of `operations_config`."""


def operations_config(
    endpoint: str, mappings: str, *, state: str = "backend: memory", admin: str = "127.0.0.1:0"
) -> str:
    """A configuration text for operating a running esm: admin writes on with ADMIN_TOKEN,
    quick polling, and SQS without long polling (moto's server answers one request at a
    time); `mappings` is the YAML list's items."""
    return f"""
aws:
  region: us-east-1
  endpoint_url: {endpoint}
state:
  {state}
admin:
  listen: {admin}
  token: {ADMIN_TOKEN}
delivery:
  backoff_initial_seconds: 0.05
  backoff_max_seconds: 0.2
  shutdown_grace_seconds: 5
polling:
  interval_seconds: 0.2
  shard_discovery_interval_seconds: 0.5
sqs:
  wait_time_seconds: 0
functions:
  fn:
    type: python
    handler: esm.examples.handlers:handle
mappings:
{mappings}
"""


def stream_mapping(arn: str, *, name: str = "orders", batch_size: int = 10) -> str:
    return (
        f"  - FunctionName: fn\n    EventSourceArn: {arn}\n    name: {name}\n"
        f"    StartingPosition: TRIM_HORIZON\n    BatchSize: {batch_size}\n"
    )


def queue_mapping(arn: str, *, name: str = "jobs") -> str:
    return f"  - FunctionName: fn\n    EventSourceArn: {arn}\n    name: {name}\n"


async def run_esm(*argv: str, token: str | None = ADMIN_TOKEN) -> tuple[int, str, str]:
    """`esm ARGV...` as a process: its exit status, stdout and stderr (stripped)."""
    env = {k: v for k, v in os.environ.items() if k not in ("ESM_ADMIN_TOKEN", "ESM_ADMIN_URL")}
    if token is not None:
        env["ESM_ADMIN_TOKEN"] = token
    done = await anyio.run_process([sys.executable, "-m", "esm", *argv], check=False, env=env)
    return done.returncode, done.stdout.decode().strip(), done.stderr.decode().strip()


async def wait_for(condition: Callable[[], bool], seconds: float = 30) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.05)


def stream_data(backend: RecordingBackend) -> list[bytes]:
    """The data of the stream records `backend` was given, in order."""
    return [kinesis_data(r) for r in backend.delivered_records() if "kinesis" in r]
