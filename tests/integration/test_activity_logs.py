"""What `esm run` says while batches flow: one debug line per invoked batch, and at info level
a line per mapping every summary interval with its records, batches, errors and lag."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from esm.testing import RecordingBackend, function_error

from .helpers import create_stream, daemon_config, put_records, run_daemon_until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
def esm_debug() -> Iterator[None]:
    logger = logging.getLogger("esm")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield
    logger.setLevel(level)


async def test_each_batch_is_a_debug_line_and_each_interval_a_summary(
    moto_endpoint: str, kinesis: Any, stream_name: str, esm_debug: None
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    base = daemon_config(moto_endpoint, arn, batch_size=10)
    config = base.model_copy(
        update={"log": base.log.model_copy(update={"summary_interval_seconds": 0.3})}
    )
    # The first invocation fails; its retry and the rest succeed.
    backend = RecordingBackend(lambda event, n: function_error("boom") if n == 1 else None)
    await put_records(kinesis, stream_name, 25)
    with capture_logs() as logs:

        def summarized() -> bool:
            lines = [line for line in logs if line["event"] == "activity"]
            return int(sum(line["records"] for line in lines)) >= 35

        await run_daemon_until(config, backend, summarized)

    batches = [line for line in logs if line["event"] == "batch invoked"]
    assert len(batches) == len(backend.events)
    first, *rest = batches
    assert first["log_level"] == "debug"
    assert first["shard"] == "shardId-000000000000"
    assert (first["size"], first["result"], first["error"]) == (10, "function_error", "boom")
    assert isinstance(first["duration_ms"], float)
    assert [b["result"] for b in rest] == ["success"] * len(rest)
    assert sum(b["size"] for b in rest) == 25

    activity = [line for line in logs if line["event"] == "activity"]
    assert all(line["log_level"] == "info" for line in activity)
    assert {line["mapping"] for line in activity} == {config.mappings[0].mapping_name}
    # Each line counts what happened since the one before: together, everything.
    assert sum(line["records"] for line in activity) == 35  # 10 failed once, then 25
    assert sum(line["batches"] for line in activity) == len(backend.events)
    assert sum(line["errors"] for line in activity) == 1
    assert all(line["interval_seconds"] == 0.3 for line in activity)
    assert any("iterator_age_seconds" in line for line in activity)


async def test_no_summary_when_turned_off(
    moto_endpoint: str, kinesis: Any, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    base = daemon_config(moto_endpoint, arn, batch_size=10)
    config = base.model_copy(
        update={"log": base.log.model_copy(update={"summary_interval_seconds": 0})}
    )
    backend = RecordingBackend()
    await put_records(kinesis, stream_name, 5, prefix=uuid.uuid4().hex[:6])
    with capture_logs() as logs:
        await run_daemon_until(config, backend, lambda: len(backend.delivered_records()) == 5)
    assert not [line for line in logs if line["event"] == "activity"]
