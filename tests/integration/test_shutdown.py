"""The daemon against moto's server when a function never answers: shutdown ends with the
grace period, and each abandoned batch is logged; the read-freshness gauges while it runs."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from esm.config import EsmConfig, parse_config
from esm.daemon import Daemon
from esm.metrics import Metrics
from esm.testing import RecordingBackend

from .helpers import create_stream

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

# Never answers within a test: the batch it is given stays in flight.
HANGING = 3600.0
ABANDONED = "batch abandoned at shutdown, it will be delivered again"
GRACE_OVER = "shutdown grace period ran out, batches still in flight were abandoned"


def config_for(endpoint: str, arn: str, mapping: str = "") -> EsmConfig:
    text = f"""
aws:
  region: us-east-1
  endpoint_url: {endpoint}
state:
  backend: memory
admin:
  listen: 127.0.0.1:0
delivery:
  shutdown_grace_seconds: 0.5
polling:
  interval_seconds: 0.2
  shard_discovery_interval_seconds: 0.5
sqs:
  wait_time_seconds: 0
functions:
  fn:
    type: python
    handler: esm.examples.handlers:handle
    timeout: 900
mappings:
  - FunctionName: fn
    EventSourceArn: {arn}
{mapping}
"""
    return parse_config(text, environ={})


async def run_then_stop(daemon: Daemon, in_flight: Any, while_running: Any = None) -> None:
    """Run the daemon until a batch is in flight, ask it to stop, and let it end by itself."""
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(
                lambda task_status: daemon.run(handle_signals=False, task_status=task_status)
            )
            while not in_flight():
                await anyio.sleep(0.02)
            if while_running is not None:
                while_running()
            daemon.request_stop()


async def test_kinesis_batch_abandoned_at_the_end_of_the_grace_period_is_logged(
    kinesis: Any, moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    answer = await kinesis.put_records(
        StreamName=stream_name,
        Records=[{"Data": f"r{n}".encode(), "PartitionKey": "key"} for n in range(5)],
    )
    sequences = [r["SequenceNumber"] for r in answer["Records"]]
    shard = answer["Records"][0]["ShardId"]
    config = config_for(moto_endpoint, arn, "    StartingPosition: TRIM_HORIZON")
    mapping = config.mappings[0].mapping_name
    backend = RecordingBackend(delay=HANGING)
    metrics = Metrics()
    daemon = Daemon(config, backends={"fn": backend}, metrics=metrics)
    freshness: list[float | None] = []

    def scrape() -> None:
        freshness.append(
            metrics.registry.get_sample_value(
                "esm_source_seconds_since_last_read", {"mapping": mapping, "shard": shard}
            )
        )

    with capture_logs() as logs:
        # Returns although the function never answers: the grace period bounds the wait.
        await run_then_stop(daemon, lambda: backend.events, scrape)

    assert freshness[0] is not None, "the shard's reader exports its read clock"
    (line,) = [line for line in logs if line["event"] == ABANDONED]
    assert line["log_level"] == "warning"
    assert line["mapping"] == mapping
    assert line["shard"] == shard
    assert (line["first_sequence"], line["last_sequence"]) == (sequences[0], sequences[-1])
    assert line["records"] == 5
    assert any(line["event"] == GRACE_OVER for line in logs)
    assert (
        metrics.registry.get_sample_value(
            "esm_source_seconds_since_last_read", {"mapping": mapping, "shard": shard}
        )
        is None
    ), "a stopped reader's series is gone"


async def test_sqs_batch_abandoned_at_the_end_of_the_grace_period_is_logged(
    sqs: Any, moto_endpoint: str
) -> None:
    url = (await sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:12]}"))["QueueUrl"]
    arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"][
        "QueueArn"
    ]
    sent = []
    for n in range(3):
        sent.append((await sqs.send_message(QueueUrl=url, MessageBody=f"m{n}"))["MessageId"])
    config = config_for(moto_endpoint, arn, "    ScalingConfig: {MaximumConcurrency: 2}")
    mapping = config.mappings[0].mapping_name
    backend = RecordingBackend(delay=HANGING)
    metrics = Metrics()
    daemon = Daemon(config, backends={"fn": backend}, metrics=metrics)
    delivered = metrics.batches_in_flight.labels(mapping)
    freshness: list[float | None] = []

    def scrape() -> None:
        freshness.append(
            metrics.registry.get_sample_value(
                "esm_queue_seconds_since_last_receive", {"mapping": mapping}
            )
        )

    with capture_logs() as logs:
        await run_then_stop(
            daemon,
            lambda: (
                sum(len(e["Records"]) for e in backend.events) >= 3
                and delivered._value.get() == len(backend.events)
            ),
            scrape,
        )

    assert freshness[0] is not None, "the mapping exports its receive clock"
    lines = [line for line in logs if line["event"] == ABANDONED]
    assert lines, "the batches in flight were logged"
    assert all(line["mapping"] == mapping and line["log_level"] == "warning" for line in lines)
    assert sorted(i for line in lines for i in line["message_ids"]) == sorted(sent)
    assert any(line["event"] == GRACE_OVER for line in logs)
