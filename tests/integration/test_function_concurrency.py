"""A function's max_concurrency holds across every mapping that invokes it."""

from __future__ import annotations

from typing import Any

import pytest

from esm.config import parse_config
from esm.metrics import Metrics
from esm.testing import RecordingBackend

from .helpers import create_stream, put_records, run_daemon_until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_two_mappings_sharing_a_function_limited_to_one_never_overlap(
    kinesis: Any, moto_endpoint: str, stream_name: str
) -> None:
    first = await create_stream(kinesis, stream_name, 2)
    second = await create_stream(kinesis, stream_name + "-b", 2)
    await put_records(kinesis, stream_name, 40)
    await put_records(kinesis, stream_name + "-b", 40)
    config = parse_config(
        f"""
aws: {{region: us-east-1, endpoint_url: "{moto_endpoint}"}}
state: {{backend: memory}}
admin: {{listen: "127.0.0.1:0"}}
polling: {{interval_seconds: 0.2}}
functions:
  fn: {{type: python, handler: "esm.examples.handlers:handle", max_concurrency: 1}}
mappings:
  - {{FunctionName: fn, EventSourceArn: "{first}", StartingPosition: TRIM_HORIZON, BatchSize: 5}}
  - {{FunctionName: fn, EventSourceArn: "{second}", StartingPosition: TRIM_HORIZON, BatchSize: 5}}
""",
        environ={},
    )
    backend = RecordingBackend(delay=0.02)
    metrics = Metrics()
    await run_daemon_until(
        config, backend, lambda: len(backend.delivered_records()) >= 80, metrics=metrics
    )
    # Four shards could run four batches at once; the function's limit allows one.
    assert backend.max_concurrent == 1
    assert len(backend.delivered_records()) == 80
    assert metrics.function_concurrent_invocations.labels("fn")._value.get() == 0
