"""The SQS reader against the stateful fake SQS client: each QueueReader call as SQS calls."""

from __future__ import annotations

import anyio
import pytest

from esm.errors import SourceError, TransientSourceError
from esm.metrics import Metrics
from esm.sources.sqs import SqsReader, SqsSettings
from esm.testing import FakeSqsClient

pytestmark = pytest.mark.anyio

ARN = "arn:aws:sqs:us-east-1:123456789012:work"


async def open_reader(
    client: FakeSqsClient, *, metrics: Metrics | None = None, **attributes: str
) -> tuple[SqsReader, str]:
    url = str((await client.create_queue(QueueName="work", Attributes=attributes))["QueueUrl"])
    reader = SqsReader(
        client, SqsSettings(queue_arn=ARN, region="us-east-1", mapping="m"), metrics or Metrics()
    )
    await reader.open()
    return reader, url


async def send(client: FakeSqsClient, url: str, count: int) -> None:
    for n in range(count):
        await client.send_message(QueueUrl=url, MessageBody=f"m{n}")


async def test_open_finds_the_queue_and_reads_its_visibility_and_backlog() -> None:
    client = FakeSqsClient()
    url = str(
        (await client.create_queue(QueueName="work", Attributes={"VisibilityTimeout": "45"}))[
            "QueueUrl"
        ]
    )
    await send(client, url, 3)
    reader = SqsReader(client, SqsSettings(queue_arn=ARN, region="us-east-1"), Metrics())
    backlog = await reader.open()
    assert reader.queue_url == url
    assert reader.visibility_timeout == 45
    assert backlog == {"visible": 3, "in_flight": 0, "delayed": 0}
    assert reader.status() == {
        "queue_url": url,
        "fifo": False,
        "visibility_timeout_seconds": 45,
    }


async def test_a_failed_call_is_translated_into_a_source_error() -> None:
    client = FakeSqsClient()
    await client.create_queue(QueueName="work")
    client.fail_next("GetQueueUrl", "ServiceUnavailable")
    reader = SqsReader(client, SqsSettings(queue_arn=ARN, region="us-east-1"), Metrics())
    with pytest.raises(TransientSourceError):
        await reader.open()

    metrics = Metrics()
    client = FakeSqsClient()
    reader, _ = await open_reader(client, metrics=metrics)
    client.fail_next("ReceiveMessage", "AccessDenied")
    with pytest.raises(SourceError):
        await reader.receive(10, 0)
    assert metrics.queue_errors.labels("m", "receive")._value.get() == 1


async def test_receive_builds_records_with_receipt_handles_in_order() -> None:
    client = FakeSqsClient()
    reader, url = await open_reader(client)
    await send(client, url, 3)
    records = await reader.receive(10, 0)
    assert [r.entry["body"] for r in records] == ["m0", "m1", "m2"]
    assert [r.order for r in records] == [1, 2, 3]
    assert all(r.entry["receiptHandle"] for r in records)
    assert records[0].entry["attributes"]["ApproximateReceiveCount"] == "1"


async def test_ack_deletes_ten_at_a_time_and_retries_entries_failing_on_the_service_side() -> None:
    client = FakeSqsClient()
    reader, url = await open_reader(client)
    await send(client, url, 15)
    records = await reader.receive(10, 0) + await reader.receive(10, 0)
    client.fail_next_entries("DeleteMessageBatch", "InternalError", count=2)
    assert await reader.ack(records) == 15
    assert len(client.deleted(url)) == 15
    calls = [c for c, _, _ in client.calls if c == "DeleteMessageBatch"]
    assert len(calls) == 3, "two chunks, one retry of the failed entries"


async def test_an_entry_refused_as_the_senders_fault_is_not_retried() -> None:
    client = FakeSqsClient()
    metrics = Metrics()
    reader, url = await open_reader(client, metrics=metrics, VisibilityTimeout="0")
    await send(client, url, 1)
    (stale,) = await reader.receive(10, 0)
    await reader.receive(10, 0)  # received again: the first receipt handle is stale now
    assert await reader.ack([stale]) == 0
    assert client.deleted(url) == []
    assert metrics.queue_errors.labels("m", "delete")._value.get() == 1


async def test_nack_gives_the_failure_visibility_or_leaves_the_queues() -> None:
    client = FakeSqsClient()
    reader, url = await open_reader(client)
    await send(client, url, 2)
    first, second = await reader.receive(10, 0)
    await reader.nack([first], 0)
    await reader.nack([second], None)
    states = {m["Body"]: m["State"] for m in client.messages(url)}
    assert states == {"m0": "visible", "m1": "in_flight"}
    calls = [c for c, _, _ in client.calls if c == "ChangeMessageVisibilityBatch"]
    assert len(calls) == 1, "None makes no call"


async def test_release_makes_messages_visible_at_once() -> None:
    client = FakeSqsClient()
    reader, url = await open_reader(client)
    await send(client, url, 2)
    await reader.release(await reader.receive(10, 0))
    assert [m["State"] for m in client.messages(url)] == ["visible", "visible"]


async def test_keep_invisible_extends_every_half_visibility_timeout() -> None:
    client = FakeSqsClient()
    reader, url = await open_reader(client, VisibilityTimeout="2")
    await send(client, url, 1)
    records = await reader.receive(10, 0)
    with anyio.move_on_after(1.5):
        await reader.keep_invisible(records, held_for=0.5)
    calls = [t for c, _, t in client.calls if c == "ChangeMessageVisibilityBatch"]
    # Half the timeout (1 s) after the receive, less the half second already held: at 0.5 s,
    # then at 1.5 s (cut off here).
    assert len(calls) == 1
    (message,) = client.messages(url)
    assert message["State"] == "in_flight"
