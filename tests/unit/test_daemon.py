"""The daemon's start-up and shutdown, with fake AWS clients and a recording function: what it
opens, in which order it closes it, and how shutdown winds mappings down."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from esm.checkpoints.memory import MemoryCheckpointStore
from esm.config import EsmConfig, parse_config
from esm.daemon import Daemon
from esm.errors import BackendError
from esm.model import Checkpoint
from esm.testing import FakeKinesisClient, FakeSqsClient, RecordingBackend

pytestmark = pytest.mark.anyio

ACCOUNT = "123456789012"
STREAM = "orders"
QUEUE = "payments"
STREAM_ARN = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/{STREAM}"
QUEUE_ARN = f"arn:aws:sqs:us-east-1:{ACCOUNT}:{QUEUE}"
GRACE_OVER = "shutdown grace period ran out, batches still in flight were abandoned"


def config(*, grace: float = 2.0, handler: str = "") -> EsmConfig:
    function = (
        f"    type: python\n    handler: {handler}\n"
        if handler
        else "    type: http\n    url: http://127.0.0.1:9/\n"
    )
    text = f"""
aws:
  region: us-east-1
state:
  backend: memory
admin:
  enabled: false
delivery:
  shutdown_grace_seconds: {grace}
polling:
  interval_seconds: 0.2
  shard_discovery_interval_seconds: 0.2
sqs:
  wait_time_seconds: 0
functions:
  fn:
{function}    timeout: 900
mappings:
  - FunctionName: fn
    EventSourceArn: {STREAM_ARN}
    StartingPosition: TRIM_HORIZON
  - FunctionName: fn
    EventSourceArn: {QUEUE_ARN}
"""
    return parse_config(text, environ={})


class FakeAws:
    """Opens fake clients by service and remembers what was opened and closed, in order."""

    def __init__(self) -> None:
        self.kinesis = FakeKinesisClient()
        self.sqs = FakeSqsClient(account=ACCOUNT)
        self.journal: list[str] = []

    @contextlib.asynccontextmanager
    async def open(self, service: str, region: str) -> AsyncIterator[Any]:
        clients: dict[str, Any] = {"kinesis": self.kinesis, "sqs": self.sqs}
        self.journal.append(f"open {service} {region}")
        try:
            yield clients[service]
        finally:
            self.journal.append(f"close {service} {region}")


class JournalStore(MemoryCheckpointStore):
    """A memory store that notes its saves and its closing in the fakes' journal."""

    def __init__(self, journal: list[str]) -> None:
        super().__init__()
        self.journal = journal

    async def save(self, mapping_id: str, partition: str, checkpoint: Checkpoint) -> None:
        await super().save(mapping_id, partition, checkpoint)
        self.journal.append(f"save {partition}")

    async def aclose(self) -> None:
        self.journal.append("close store")
        await super().aclose()


async def prepared() -> FakeAws:
    aws = FakeAws()
    aws.kinesis.create_stream(STREAM, 2)
    for n in range(20):
        aws.kinesis.put_record(STREAM, f"k{n}".encode(), f"key{n}")
    await aws.sqs.create_queue(QueueName=QUEUE)
    for n in range(5):
        await aws.sqs.send_message(QueueUrl=await queue_url(aws), MessageBody=f"m{n}")
    return aws


async def queue_url(aws: FakeAws) -> str:
    return str((await aws.sqs.get_queue_url(QueueName=QUEUE))["QueueUrl"])


def records_of(backend: RecordingBackend, source: str) -> list[dict[str, Any]]:
    return [r for r in backend.delivered_records() if r["eventSource"] == source]


async def run_until(daemon: Daemon, done: Any, timeout: float = 20) -> None:
    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as tg:
            await tg.start(
                lambda task_status: daemon.run(handle_signals=False, task_status=task_status)
            )
            assert daemon.ready()
            while not done():
                await anyio.sleep(0.02)
            daemon.request_stop()
            assert not daemon.ready(), "a daemon that is stopping is no longer ready"


async def test_start_up_delivers_from_every_source_and_shutdown_closes_what_it_opened() -> None:
    aws = await prepared()
    backend = RecordingBackend()
    daemon = Daemon(config(), backends={"fn": backend}, clients=aws.open)

    await run_until(
        daemon,
        lambda: (
            len(records_of(backend, "aws:kinesis")) == 20
            and len(records_of(backend, "aws:sqs")) == 5
        ),
    )

    # One client per (service, region), opened once and closed once, in reverse order.
    assert aws.journal == [
        "open kinesis us-east-1",
        "open sqs us-east-1",
        "close sqs us-east-1",
        "close kinesis us-east-1",
    ]
    # A backend the caller passed in is the caller's to close.
    assert not backend.closed
    status = daemon.status()
    assert status["stopping"] is True
    assert [m["event_source_arn"] for m in status["mappings"]] == [STREAM_ARN, QUEUE_ARN]


async def test_the_last_checkpoints_are_written_before_the_clients_close() -> None:
    aws = await prepared()
    store = JournalStore(aws.journal)
    backend = RecordingBackend(delay=0.3)
    daemon = Daemon(config(), backends={"fn": backend}, clients=aws.open, store=store)

    # Stop while batches are in flight: they finish within the grace and are checkpointed.
    await run_until(daemon, lambda: bool(records_of(backend, "aws:kinesis")))

    saves = [n for n, line in enumerate(aws.journal) if line.startswith("save ")]
    closes = [n for n, line in enumerate(aws.journal) if line.startswith("close ")]
    assert saves, "the in-flight batches were checkpointed at shutdown"
    assert max(saves) < min(closes)
    # The store was the caller's: the daemon did not close it.
    assert "close store" not in aws.journal
    checkpoints = await store.load(daemon.config.mappings[0].mapping_id)
    assert checkpoints, "the stream mapping's progress survives the shutdown"


async def test_a_batch_past_the_grace_period_is_abandoned_and_shutdown_still_returns() -> None:
    aws = await prepared()
    backend = RecordingBackend(delay=3600)
    daemon = Daemon(config(grace=0.3), backends={"fn": backend}, clients=aws.open)

    with capture_logs() as logs:
        await run_until(daemon, lambda: backend.concurrent >= 2)

    events = [line["event"] for line in logs]
    assert GRACE_OVER in events
    assert "batch abandoned at shutdown, it will be delivered again" in events
    assert aws.journal[-2:] == ["close sqs us-east-1", "close kinesis us-east-1"]


async def test_a_stop_requested_before_start_up_ends_the_run_without_delivering() -> None:
    aws = await prepared()
    backend = RecordingBackend()
    daemon = Daemon(config(), backends={"fn": backend}, clients=aws.open)
    daemon.request_stop()

    with anyio.fail_after(10):
        await daemon.run(handle_signals=False)

    assert not daemon.ready()
    assert all(line.startswith(("open", "close")) for line in aws.journal)


async def test_a_setting_that_fails_at_start_up_fails_before_any_task_or_client() -> None:
    aws = await prepared()
    daemon = Daemon(config(handler="no_such_module_here:handle"), clients=aws.open)

    with pytest.raises(BackendError, match="no_such_module_here"):
        await daemon.run(handle_signals=False)

    assert aws.journal == []
    assert not daemon.ready()
