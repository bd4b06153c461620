"""The in-memory SQS: visibility, receipt handles, redrive, FIFO groups, long polling, batches."""

from __future__ import annotations

import time
from typing import Any

import anyio
import orjson
import pytest

from esm.events import md5_of_body, md5_of_message_attributes
from esm.testing import FakeClientError, FakeSqsClient

pytestmark = pytest.mark.anyio

ALL = {"MessageSystemAttributeNames": ["All"], "MessageAttributeNames": ["All"]}


class Clock:
    """A clock tests move by hand."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.value = start

    def __call__(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sqs(clock: Clock) -> FakeSqsClient:
    return FakeSqsClient(region="us-east-2", now=clock)


async def _queue(sqs: FakeSqsClient, name: str, **attributes: Any) -> str:
    answer = await sqs.create_queue(
        QueueName=name, Attributes={k: str(v) for k, v in attributes.items()}
    )
    return str(answer["QueueUrl"])


async def _receive(sqs: FakeSqsClient, url: str, **kwargs: Any) -> list[dict[str, Any]]:
    answer = await sqs.receive_message(QueueUrl=url, **{"MaxNumberOfMessages": 10, **ALL, **kwargs})
    # Plain dicts: the tests look at fields beyond what esm's typed answer names.
    return [dict(message) for message in answer.get("Messages", [])]


async def _arn(sqs: FakeSqsClient, url: str) -> str:
    answer = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(answer["Attributes"]["QueueArn"])


def _code(error: pytest.ExceptionInfo[FakeClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


# -- queues ---------------------------------------------------------------------------------


async def test_create_get_url_and_attributes(sqs: FakeSqsClient) -> None:
    url = await _queue(sqs, "orders", VisibilityTimeout=45)
    assert url == "https://sqs.us-east-2.amazonaws.com/123456789012/orders"
    assert (await sqs.get_queue_url(QueueName="orders"))["QueueUrl"] == url
    # Creating it again with the same attributes gives the same queue.
    assert await _queue(sqs, "orders", VisibilityTimeout=45) == url
    await sqs.send_message(QueueUrl=url, MessageBody="a")
    await sqs.send_message(QueueUrl=url, MessageBody="b")
    await sqs.receive_message(QueueUrl=url)
    attributes = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))[
        "Attributes"
    ]
    assert attributes["QueueArn"] == "arn:aws:sqs:us-east-2:123456789012:orders"
    assert attributes["ApproximateNumberOfMessages"] == "1"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"
    assert attributes["VisibilityTimeout"] == "45"
    assert "FifoQueue" not in attributes
    some = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
    assert some == {"Attributes": {"VisibilityTimeout": "45"}}


async def test_unknown_queue_fails_like_sqs(sqs: FakeSqsClient) -> None:
    with pytest.raises(FakeClientError) as error:
        await sqs.get_queue_url(QueueName="missing")
    assert _code(error) == "AWS.SimpleQueueService.NonExistentQueue"
    with pytest.raises(FakeClientError):
        await sqs.receive_message(QueueUrl="https://sqs.us-east-2.amazonaws.com/1/missing")


async def test_queue_attributes_are_validated(sqs: FakeSqsClient) -> None:
    with pytest.raises(FakeClientError) as error:
        await _queue(sqs, "standard", FifoQueue="true")
    assert _code(error) == "InvalidParameterValue"
    with pytest.raises(FakeClientError):
        await _queue(sqs, "slow", VisibilityTimeout=43_201)
    policy = {"deadLetterTargetArn": "arn:aws:sqs:us-east-2:123456789012:nope"}
    with pytest.raises(FakeClientError) as error:
        await _queue(
            sqs, "src", RedrivePolicy=orjson.dumps({**policy, "maxReceiveCount": 3}).decode()
        )
    assert "does not exist" in str(error.value)
    await _queue(sqs, "taken", VisibilityTimeout=10)
    with pytest.raises(FakeClientError) as error:
        await _queue(sqs, "taken", VisibilityTimeout=20)
    assert _code(error) == "QueueAlreadyExists"


# -- standard queues ------------------------------------------------------------------------


async def test_received_message_has_botocore_shape_and_clock_timestamps(
    sqs: FakeSqsClient, clock: Clock
) -> None:
    url = await _queue(sqs, "shapes")
    attributes: dict[str, dict[str, Any]] = {
        "name": {"DataType": "String", "StringValue": "v"},
        "count": {"DataType": "Number", "StringValue": "12"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
    }
    sent = await sqs.send_message(
        QueueUrl=url,
        MessageBody="hello",
        MessageAttributes=attributes,
        MessageSystemAttributes={
            "AWSTraceHeader": {"DataType": "String", "StringValue": "Root=1-abc"}
        },
    )
    assert sent["MD5OfMessageBody"] == md5_of_body("hello")
    assert sent["MD5OfMessageAttributes"] == md5_of_message_attributes(attributes)
    assert "SequenceNumber" not in sent
    clock.advance(1.5)
    [message] = await _receive(sqs, url)
    assert message == {
        "MessageId": sent["MessageId"],
        "ReceiptHandle": message["ReceiptHandle"],
        "MD5OfBody": md5_of_body("hello"),
        "Body": "hello",
        "Attributes": {
            "ApproximateReceiveCount": "1",
            "AWSTraceHeader": "Root=1-abc",
            "SentTimestamp": "1700000000000",
            "SenderId": sqs.sender_id,
            "ApproximateFirstReceiveTimestamp": "1700000001500",
        },
        "MD5OfMessageAttributes": sent["MD5OfMessageAttributes"],
        "MessageAttributes": attributes,
    }


async def test_only_requested_attributes_are_returned_and_the_digest_covers_them(
    sqs: FakeSqsClient,
) -> None:
    url = await _queue(sqs, "filtered")
    await sqs.send_message(
        QueueUrl=url,
        MessageBody="x",
        MessageAttributes={
            "app.kind": {"DataType": "String", "StringValue": "k"},
            "app.size": {"DataType": "Number", "StringValue": "3"},
            "other": {"DataType": "String", "StringValue": "o"},
        },
    )
    answer = await sqs.receive_message(
        QueueUrl=url,
        MessageSystemAttributeNames=["SentTimestamp"],
        MessageAttributeNames=["app.*"],
        VisibilityTimeout=0,
    )
    [message] = answer["Messages"]
    assert list(message["Attributes"]) == ["SentTimestamp"]
    assert list(message["MessageAttributes"]) == ["app.kind", "app.size"]
    assert message["MD5OfMessageAttributes"] == md5_of_message_attributes(
        message["MessageAttributes"]
    )
    [bare] = (await sqs.receive_message(QueueUrl=url))["Messages"]
    assert "Attributes" not in bare
    assert "MessageAttributes" not in bare
    assert "MD5OfMessageAttributes" not in bare


async def test_a_received_message_is_hidden_for_the_visibility_timeout(
    sqs: FakeSqsClient, clock: Clock
) -> None:
    url = await _queue(sqs, "hidden", VisibilityTimeout=30)
    await sqs.send_message(QueueUrl=url, MessageBody="m")
    first = await _receive(sqs, url)
    assert len(first) == 1
    # An empty answer has no "Messages" key, as SQS answers.
    assert await sqs.receive_message(QueueUrl=url) == {}
    assert [m["State"] for m in sqs.messages(url)] == ["in_flight"]
    clock.advance(29.9)
    assert await _receive(sqs, url) == []
    clock.advance(0.1)
    assert [m["State"] for m in sqs.messages(url)] == ["visible"]
    second = await _receive(sqs, url)
    assert second[0]["Attributes"]["ApproximateReceiveCount"] == "2"
    # The first receive time stays; every receive issues a new handle.
    assert (
        second[0]["Attributes"]["ApproximateFirstReceiveTimestamp"]
        == first[0]["Attributes"]["ApproximateFirstReceiveTimestamp"]
    )
    assert second[0]["ReceiptHandle"] != first[0]["ReceiptHandle"]
    assert sqs.receive_counts(url) == {first[0]["MessageId"]: 2}


async def test_receive_visibility_timeout_overrides_the_queue_default(
    sqs: FakeSqsClient, clock: Clock
) -> None:
    url = await _queue(sqs, "override", VisibilityTimeout=30)
    await sqs.send_message(QueueUrl=url, MessageBody="m")
    await _receive(sqs, url, VisibilityTimeout=5)
    clock.advance(5)
    assert len(await _receive(sqs, url, VisibilityTimeout=0)) == 1
    # Visibility 0: visible again at once.
    assert len(await _receive(sqs, url)) == 1


async def test_delayed_messages_appear_after_their_delay(sqs: FakeSqsClient, clock: Clock) -> None:
    url = await _queue(sqs, "delayed")
    await sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=10)
    assert [m["State"] for m in sqs.messages(url)] == ["delayed"]
    assert await _receive(sqs, url) == []
    clock.advance(10)
    assert [m["Body"] for m in await _receive(sqs, url)] == ["later"]


async def test_receive_returns_at_most_max_number_of_messages(sqs: FakeSqsClient) -> None:
    url = await _queue(sqs, "many")
    for n in range(15):
        await sqs.send_message(QueueUrl=url, MessageBody=str(n))
    assert len(await _receive(sqs, url)) == 10
    answer = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=3)
    assert [m["Body"] for m in answer["Messages"]] == ["10", "11", "12"]
    with pytest.raises(FakeClientError) as error:
        await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=11)
    assert _code(error) == "InvalidParameterValue"


# -- receipt handles ------------------------------------------------------------------------


async def test_stale_receipt_handles_are_refused(sqs: FakeSqsClient, clock: Clock) -> None:
    url = await _queue(sqs, "stale", VisibilityTimeout=10)
    await sqs.send_message(QueueUrl=url, MessageBody="m")
    [old] = await _receive(sqs, url)
    clock.advance(10)
    [new] = await _receive(sqs, url)
    for call in (
        sqs.delete_message(QueueUrl=url, ReceiptHandle=old["ReceiptHandle"]),
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=old["ReceiptHandle"], VisibilityTimeout=60
        ),
    ):
        with pytest.raises(FakeClientError) as error:
            await call
        assert _code(error) == "ReceiptHandleIsInvalid"
    assert sqs.deleted(url) == []
    await sqs.delete_message(QueueUrl=url, ReceiptHandle=new["ReceiptHandle"])
    assert sqs.deleted(url) == [new["MessageId"]]
    assert sqs.messages(url) == []
    # Deleting a deleted message again succeeds, as on SQS.
    await sqs.delete_message(QueueUrl=url, ReceiptHandle=new["ReceiptHandle"])
    assert sqs.deleted(url) == [new["MessageId"]]


async def test_stale_deletes_can_succeed_without_deleting(clock: Clock) -> None:
    sqs = FakeSqsClient(now=clock, stale_deletes_succeed=True)
    url = await _queue(sqs, "lenient", VisibilityTimeout=10)
    await sqs.send_message(QueueUrl=url, MessageBody="m")
    [old] = await _receive(sqs, url)
    clock.advance(10)
    await _receive(sqs, url)
    answer = await sqs.delete_message_batch(
        QueueUrl=url, Entries=[{"Id": "0", "ReceiptHandle": old["ReceiptHandle"]}]
    )
    assert answer == {"Successful": [{"Id": "0"}], "Failed": []}
    assert len(sqs.messages(url)) == 1
    with pytest.raises(FakeClientError):
        await sqs.delete_message(QueueUrl=url, ReceiptHandle="AQEBnot-a-handle")


async def test_change_visibility_needs_a_message_in_flight(
    sqs: FakeSqsClient, clock: Clock
) -> None:
    url = await _queue(sqs, "inflight", VisibilityTimeout=10)
    await sqs.send_message(QueueUrl=url, MessageBody="m")
    [message] = await _receive(sqs, url)
    await sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=100
    )
    clock.advance(99)
    assert await _receive(sqs, url) == []
    clock.advance(1)
    with pytest.raises(FakeClientError) as error:
        await sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=5
        )
    assert _code(error) == "MessageNotInflight"
    # The latest handle still deletes the message after its timeout ran out.
    await sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert sqs.messages(url) == []


# -- batches --------------------------------------------------------------------------------


async def test_delete_batch_reports_each_entry(sqs: FakeSqsClient, clock: Clock) -> None:
    url = await _queue(sqs, "batch", VisibilityTimeout=10)
    for body in "abc":
        await sqs.send_message(QueueUrl=url, MessageBody=body)
    first = await _receive(sqs, url)
    clock.advance(10)
    second = await _receive(sqs, url, MaxNumberOfMessages=1)
    answer = await sqs.delete_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "stale", "ReceiptHandle": first[0]["ReceiptHandle"]},
            {"Id": "fresh", "ReceiptHandle": second[0]["ReceiptHandle"]},
            {"Id": "junk", "ReceiptHandle": "AQEBjunk"},
        ],
    )
    assert answer["Successful"] == [{"Id": "fresh"}]
    assert [(f["Id"], f["Code"], f["SenderFault"]) for f in answer["Failed"]] == [
        ("stale", "ReceiptHandleIsInvalid", True),
        ("junk", "ReceiptHandleIsInvalid", True),
    ]
    assert sqs.deleted(url) == [second[0]["MessageId"]]


async def test_change_visibility_batch_reports_each_entry(sqs: FakeSqsClient, clock: Clock) -> None:
    url = await _queue(sqs, "cmv", VisibilityTimeout=30)
    for body in "ab":
        await sqs.send_message(QueueUrl=url, MessageBody=body)
    a, b = await _receive(sqs, url)
    answer = await sqs.change_message_visibility_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "a", "ReceiptHandle": a["ReceiptHandle"], "VisibilityTimeout": 0},
            {"Id": "b", "ReceiptHandle": b["ReceiptHandle"], "VisibilityTimeout": 99_999},
            {"Id": "c", "ReceiptHandle": "AQEBjunk", "VisibilityTimeout": 5},
        ],
    )
    assert answer["Successful"] == [{"Id": "a"}]
    assert [(f["Id"], f["Code"]) for f in answer["Failed"]] == [
        ("b", "InvalidParameterValue"),
        ("c", "ReceiptHandleIsInvalid"),
    ]
    assert [m["Body"] for m in await _receive(sqs, url)] == ["a"]


async def test_send_batch_reports_each_entry(sqs: FakeSqsClient) -> None:
    url = await _queue(sqs, "sendbatch")
    answer = await sqs.send_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "ok", "MessageBody": "fine"},
            {
                "Id": "bad",
                "MessageBody": "x",
                "MessageAttributes": {"n": {"DataType": "Number", "StringValue": "abc"}},
            },
            {"Id": "late", "MessageBody": "later", "DelaySeconds": 901},
        ],
    )
    [ok] = answer["Successful"]
    assert ok["Id"] == "ok"
    assert ok["MD5OfMessageBody"] == md5_of_body("fine")
    assert [(f["Id"], f["Code"], f["SenderFault"]) for f in answer["Failed"]] == [
        ("bad", "InvalidParameterValue", True),
        ("late", "InvalidParameterValue", True),
    ]
    assert [m["Body"] for m in sqs.messages(url)] == ["fine"]


@pytest.mark.parametrize(
    ("entries", "code"),
    [
        ([], "AWS.SimpleQueueService.EmptyBatchRequest"),
        (
            [{"Id": str(n), "ReceiptHandle": "h"} for n in range(11)],
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
        ),
        (
            [{"Id": "x", "ReceiptHandle": "h1"}, {"Id": "x", "ReceiptHandle": "h2"}],
            "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
        ),
    ],
)
async def test_malformed_batches_fail_as_a_whole(
    sqs: FakeSqsClient, entries: list[dict[str, str]], code: str
) -> None:
    url = await _queue(sqs, "malformed")
    with pytest.raises(FakeClientError) as error:
        await sqs.delete_message_batch(QueueUrl=url, Entries=entries)
    assert _code(error) == code


async def test_injected_failures(sqs: FakeSqsClient) -> None:
    url = await _queue(sqs, "flaky")
    for body in "ab":
        await sqs.send_message(QueueUrl=url, MessageBody=body)
    sqs.fail_next("ReceiveMessage", "OverLimit", times=2)
    for _ in range(2):
        with pytest.raises(FakeClientError) as error:
            await _receive(sqs, url)
        assert _code(error) == "OverLimit"
    a, b = await _receive(sqs, url)
    sqs.fail_next_entries("DeleteMessageBatch", "InternalError")
    answer = await sqs.delete_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "a", "ReceiptHandle": a["ReceiptHandle"]},
            {"Id": "b", "ReceiptHandle": b["ReceiptHandle"]},
        ],
    )
    assert answer["Successful"] == [{"Id": "b"}]
    assert [(f["Id"], f["Code"], f["SenderFault"]) for f in answer["Failed"]] == [
        ("a", "InternalError", False)
    ]
    assert [c[0] for c in sqs.calls].count("ReceiveMessage") == 3


# -- dead-letter queues ---------------------------------------------------------------------


async def test_redrive_moves_a_message_after_max_receive_count(
    sqs: FakeSqsClient, clock: Clock
) -> None:
    dlq = await _queue(sqs, "dead")
    policy = {"deadLetterTargetArn": await _arn(sqs, dlq), "maxReceiveCount": 2}
    url = await _queue(
        sqs, "work", VisibilityTimeout=10, RedrivePolicy=orjson.dumps(policy).decode()
    )
    await sqs.send_message(QueueUrl=url, MessageBody="poison")
    for count in ("1", "2"):
        [received] = await _receive(sqs, url)
        assert received["Attributes"]["ApproximateReceiveCount"] == count
        clock.advance(10)
    # Two receives used up: the next receive moves the message instead of returning it.
    assert await _receive(sqs, url) == []
    assert sqs.messages(url) == []
    [moved] = await _receive(sqs, dlq)
    assert moved["Body"] == "poison"
    assert moved["Attributes"]["DeadLetterQueueSourceArn"] == await _arn(sqs, url)
    # SQS keeps counting receives across the move.
    assert moved["Attributes"]["ApproximateReceiveCount"] == "3"


async def test_fifo_redrive_lets_the_group_move_on(sqs: FakeSqsClient, clock: Clock) -> None:
    dlq = await _queue(sqs, "dead.fifo")
    policy = {"deadLetterTargetArn": await _arn(sqs, dlq), "maxReceiveCount": 1}
    url = await _queue(
        sqs,
        "work.fifo",
        VisibilityTimeout=10,
        ContentBasedDeduplication="true",
        RedrivePolicy=orjson.dumps(policy).decode(),
    )
    for body in ("first", "second"):
        await sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId="g")
    assert [m["Body"] for m in await _receive(sqs, url, MaxNumberOfMessages=1)] == ["first"]
    clock.advance(10)
    assert [m["Body"] for m in await _receive(sqs, url)] == ["second"]
    assert [m["Body"] for m in sqs.messages(dlq)] == ["first"]


# -- FIFO queues ----------------------------------------------------------------------------


async def test_fifo_groups_stay_in_order_and_block_while_in_flight(
    sqs: FakeSqsClient, clock: Clock
) -> None:
    url = await _queue(sqs, "orders.fifo", VisibilityTimeout=30, ContentBasedDeduplication=True)
    for body, group in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("a3", "a"), ("b2", "b")]:
        await sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId=group)

    async def bodies(limit: int) -> list[str]:
        return [m["Body"] for m in await _receive(sqs, url, MaxNumberOfMessages=limit)]

    assert await bodies(1) == ["a1"]
    # Group a is blocked while a1 is in flight; group b is not.
    assert await bodies(1) == ["b1"]
    assert await bodies(10) == []
    [a1] = [m for m in sqs.messages(url) if m["Body"] == "a1"]
    await sqs.delete_message(QueueUrl=url, ReceiptHandle=a1["ReceiptHandle"])
    # One receive may hold several messages of a group, in order.
    assert await bodies(10) == ["a2", "a3"]
    clock.advance(30)
    # b1 timed out: it comes back before b2, and a2, a3 are back too, in order.
    assert await bodies(10) == ["a2", "b1", "a3", "b2"]


async def test_fifo_attributes_and_sequence_numbers(sqs: FakeSqsClient) -> None:
    url = await _queue(sqs, "seq.fifo")
    sent = [
        await sqs.send_message(
            QueueUrl=url, MessageBody=f"m{n}", MessageGroupId="g", MessageDeduplicationId=f"d{n}"
        )
        for n in range(3)
    ]
    numbers = [int(s["SequenceNumber"]) for s in sent]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == 3
    received = await _receive(sqs, url)
    attributes = received[0]["Attributes"]
    assert list(attributes) == [
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SequenceNumber",
        "MessageGroupId",
        "SenderId",
        "MessageDeduplicationId",
        "ApproximateFirstReceiveTimestamp",
    ]
    assert attributes["SequenceNumber"] == sent[0]["SequenceNumber"]
    assert attributes["MessageGroupId"] == "g"
    assert attributes["MessageDeduplicationId"] == "d0"


async def test_fifo_deduplication_within_five_minutes(sqs: FakeSqsClient, clock: Clock) -> None:
    url = await _queue(sqs, "dedup.fifo", ContentBasedDeduplication=True)
    one = await sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
    two = await sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
    assert one["MessageId"] == two["MessageId"]
    assert len(sqs.messages(url)) == 1
    clock.advance(300)
    three = await sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
    assert three["MessageId"] != one["MessageId"]
    assert len(sqs.messages(url)) == 2


async def test_fifo_send_validation(sqs: FakeSqsClient) -> None:
    url = await _queue(sqs, "strict.fifo")
    with pytest.raises(FakeClientError) as error:
        await sqs.send_message(QueueUrl=url, MessageBody="x", MessageDeduplicationId="d")
    assert _code(error) == "MissingParameter"
    with pytest.raises(FakeClientError) as error:
        await sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g")
    assert _code(error) == "InvalidParameterValue"
    standard = await _queue(sqs, "plain")
    with pytest.raises(FakeClientError):
        await sqs.send_message(QueueUrl=standard, MessageBody="x", MessageDeduplicationId="d")


async def test_fifo_receive_attempt_id_returns_the_same_messages(sqs: FakeSqsClient) -> None:
    url = await _queue(sqs, "attempt.fifo", ContentBasedDeduplication=True)
    for body in ("a", "b"):
        await sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId=body)
    first = await _receive(sqs, url, ReceiveRequestAttemptId="try-1")
    again = await _receive(sqs, url, ReceiveRequestAttemptId="try-1")
    assert [(m["MessageId"], m["ReceiptHandle"]) for m in again] == [
        (m["MessageId"], m["ReceiptHandle"]) for m in first
    ]
    assert sqs.receive_counts(url) == {m["MessageId"]: 1 for m in first}
    await sqs.delete_message(QueueUrl=url, ReceiptHandle=first[0]["ReceiptHandle"])
    # A message of that receive was deleted: the attempt cannot be answered again.
    assert await _receive(sqs, url, ReceiveRequestAttemptId="try-1") == []


# -- long polling ---------------------------------------------------------------------------


async def test_long_poll_wakes_on_send() -> None:
    sqs = FakeSqsClient()
    url = await _queue(sqs, "wake")
    got: list[dict[str, Any]] = []

    async def poll() -> None:
        got.extend(await _receive(sqs, url, WaitTimeSeconds=10))

    started = time.monotonic()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(poll)
            await anyio.sleep(0.1)
            assert got == []
            await sqs.send_message(QueueUrl=url, MessageBody="now")
    assert [m["Body"] for m in got] == ["now"]
    assert time.monotonic() - started < 2


async def test_long_poll_wakes_when_a_message_becomes_visible(clock: Clock) -> None:
    sqs = FakeSqsClient(now=clock, poll_interval=0.01)
    url = await _queue(sqs, "timeout", VisibilityTimeout=30)
    await sqs.send_message(QueueUrl=url, MessageBody="m")
    await _receive(sqs, url)
    got: list[dict[str, Any]] = []

    async def poll() -> None:
        got.extend(await _receive(sqs, url, WaitTimeSeconds=10))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(poll)
            await anyio.sleep(0.05)
            clock.advance(30)
    assert [m["Attributes"]["ApproximateReceiveCount"] for m in got] == ["2"]


async def test_long_poll_ends_empty_after_the_wait() -> None:
    sqs = FakeSqsClient()
    url = await _queue(sqs, "quiet")
    started = time.monotonic()
    with anyio.fail_after(5):
        assert await sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1) == {}
    assert 0.9 <= time.monotonic() - started < 3
    with pytest.raises(FakeClientError):
        await sqs.receive_message(QueueUrl=url, WaitTimeSeconds=21)
