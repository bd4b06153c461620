"""The pieces of `esm redrive`: reading failure records back, where they are read from,
fetching a batch's range, and what the loop does with each record."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from esm.model import InvokeResult, Record, ResultKind
from esm.redrive.failure_record import NotAFailureRecord, parse_failure_record
from esm.redrive.fetch import fetch_range
from esm.redrive.inbox import InboxItem, parse_inbox_address
from esm.redrive.redrive import Redriver, RedriveTarget, Skip
from esm.redrive.report import Outcome
from esm.testing.streams import FakeStream

STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"


def _record(start: str = "3", end: str = "5", size: int = 3, **more: Any) -> dict[str, Any]:
    return {
        "requestContext": {
            "requestId": "c9b8fa9f-5a7f-4a1e-af9c-0c604cde93a5",
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:fn",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 1,
        },
        "version": "1.0",
        "timestamp": "2019-11-14T00:38:06.021Z",
        "KinesisBatchInfo": {
            "shardId": "shardId-000000000000",
            "startSequenceNumber": start,
            "endSequenceNumber": end,
            "approximateArrivalOfFirstRecord": "2019-11-14T00:38:04.835Z",
            "approximateArrivalOfLastRecord": "2019-11-14T00:38:05.580Z",
            "batchSize": size,
            "streamArn": STREAM,
        },
        **more,
    }


# -- failure records --------------------------------------------------------------------


def test_a_kinesis_failure_record_is_read_field_by_field() -> None:
    record = parse_failure_record(orjson.dumps(_record()))
    assert (record.source, record.shard_id, record.batch_size) == (
        "kinesis",
        "shardId-000000000000",
        3,
    )
    assert (record.start_sequence, record.end_sequence) == ("3", "5")
    assert record.stream_arn == STREAM
    assert record.function_arn == "arn:aws:lambda:us-east-1:123456789012:function:fn"
    assert record.condition == "RetryAttemptsExhausted"
    assert record.payload is None


def test_a_dynamodb_record_an_s3_payload_and_an_sns_envelope_are_read() -> None:
    ddb = _record()
    ddb["DDBStreamBatchInfo"] = ddb.pop("KinesisBatchInfo")
    assert parse_failure_record(orjson.dumps(ddb)).source == "dynamodb"
    stored = parse_failure_record(orjson.dumps(_record(payload='{"Records":[]}')))
    assert stored.payload == b'{"Records":[]}'
    envelope = {"Type": "Notification", "Message": orjson.dumps(_record()).decode()}
    assert parse_failure_record(orjson.dumps(envelope)).batch_size == 3


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{nope", "not JSON"),
        (b"[1]", "not a JSON object"),
        (orjson.dumps({"Records": []}), "neither KinesisBatchInfo nor DDBStreamBatchInfo"),
        (orjson.dumps(_record(size=0)), "batchSize 0 is not a positive number"),
        (orjson.dumps(_record(start="x")), "startSequenceNumber 'x' is not a sequence number"),
        (orjson.dumps(_record(start="9")), "endSequenceNumber 5 comes before 9"),
        (orjson.dumps(_record(payload=1)), "its payload is not a JSON string"),
    ],
)
def test_what_is_not_a_failure_record_says_why(body: bytes, reason: str) -> None:
    with pytest.raises(NotAFailureRecord) as raised:
        parse_failure_record(body)
    assert reason in str(raised.value)


# -- --from -----------------------------------------------------------------------------


def test_from_names_a_queue_by_arn_or_url_or_a_bucket_and_prefix() -> None:
    queue = parse_inbox_address("arn:aws:sqs:eu-west-1:123456789012:orders-failures")
    assert (queue.kind, queue.name, queue.region, queue.account) == (
        "sqs",
        "orders-failures",
        "eu-west-1",
        "123456789012",
    )
    url = parse_inbox_address("https://sqs.eu-west-1.amazonaws.com/123456789012/dlq")
    assert (url.kind, url.name, url.queue_url) == (
        "sqs",
        "dlq",
        "https://sqs.eu-west-1.amazonaws.com/123456789012/dlq",
    )
    bucket = parse_inbox_address("arn:aws:s3:::failures/aws/lambda/")
    assert (bucket.kind, bucket.name, bucket.prefix) == ("s3", "failures", "aws/lambda/")
    assert parse_inbox_address("s3://failures").prefix == ""
    for wrong in ("orders", "arn:aws:sns:us-east-1:123456789012:t", "s3://UPPER"):
        with pytest.raises(ValueError, match="neither an SQS queue"):
            parse_inbox_address(wrong)
    with pytest.raises(ValueError, match="not FIFO"):
        parse_inbox_address("arn:aws:sqs:us-east-1:123456789012:q.fifo")


# -- fetching a range -------------------------------------------------------------------


def _stream(count: int) -> FakeStream:
    stream = FakeStream(STREAM)
    stream.add_shard("shardId-000000000000")
    for n in range(count):
        stream.put("shardId-000000000000", key=f"k{n % 2}")
    return stream


def _no_wait(retry: int) -> float:
    return 0.0


@pytest.mark.anyio
async def test_a_range_is_read_from_its_first_sequence_to_its_last() -> None:
    fetched = await fetch_range(
        _stream(9), "shardId-000000000000", "3", "6", limit=2, retry_delay=_no_wait
    )
    assert [r.sequence for r in fetched.records] == ["3", "4", "5", "6"]
    assert fetched.expired is None


@pytest.mark.anyio
async def test_a_range_whose_shard_is_gone_has_expired() -> None:
    fetched = await fetch_range(
        _stream(3), "shardId-000000000009", "1", "3", limit=10, retry_delay=_no_wait
    )
    assert fetched.records == []
    assert fetched.expired == "no shard shardId-000000000009"


@pytest.mark.anyio
async def test_a_range_past_the_end_of_the_stream_reports_its_first_record_missing() -> None:
    fetched = await fetch_range(
        _stream(3), "shardId-000000000000", "7", "9", limit=10, retry_delay=_no_wait
    )
    assert fetched.records == []
    assert fetched.expired == "the batch's first record is no longer in the stream"


# -- the loop ---------------------------------------------------------------------------


@dataclass
class _Inbox:
    items_: list[InboxItem]
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    finished: bool = False
    fail_removal: bool = False

    async def items(self) -> AsyncIterator[InboxItem]:
        for item in self.items_:
            yield item

    async def remove(self, item: InboxItem) -> None:
        if self.fail_removal:
            from esm.errors import SourceError

            raise SourceError("DeleteMessage: access denied")
        self.removed.append(item.name)

    async def keep(self, item: InboxItem) -> None:
        self.kept.append(item.name)

    async def finish(self) -> None:
        self.finished = True


@dataclass
class _Targets:
    target: RedriveTarget | Skip

    async def for_record(self, record: Any) -> RedriveTarget | Skip:
        return self.target


def _target(
    answer: InvokeResult, calls: list[bytes], *, item_failures: bool = False
) -> RedriveTarget:
    async def invoke(payload: bytes, labels: dict[str, str], records: int) -> InvokeResult:
        calls.append(payload)
        return answer

    def select(records: Sequence[Record], first_found: bool) -> list[Record]:
        return [r for r in records if r.key == "k0"]

    return RedriveTarget(
        mapping="orders",
        api=_stream(9),
        invoke=invoke,
        select=select,
        report_item_failures=item_failures,
        records_limit=100,
        retry_delay=_no_wait,
    )


def _item(body: dict[str, Any] | bytes, name: str = "m1") -> InboxItem:
    return InboxItem(name, body if isinstance(body, bytes) else orjson.dumps(body), name)


OK = InvokeResult(ResultKind.SUCCESS, response=None)


@pytest.mark.anyio
async def test_the_selected_records_are_invoked_and_the_record_is_removed() -> None:
    calls: list[bytes] = []
    inbox = _Inbox([_item(_record(start="3", end="7", size=3))])
    report = await Redriver(_Targets(_target(OK, calls))).run(inbox, "q")
    [item] = report.items
    assert (item.outcome, item.records, item.expired_records) == (Outcome.REDRIVEN, 3, 0)
    # The mapping's selection (its filter, its lane) decides which records were the batch.
    assert [e["seq"] for e in orjson.loads(calls[0])["Records"]] == [3, 5, 7]
    assert (inbox.removed, inbox.kept, inbox.finished) == (["m1"], [], True)


@pytest.mark.anyio
async def test_fewer_records_than_the_batch_had_are_redriven_and_counted_as_expired() -> None:
    calls: list[bytes] = []
    inbox = _Inbox([_item(_record(start="3", end="5", size=4))])
    report = await Redriver(_Targets(_target(OK, calls))).run(inbox, "q")
    [item] = report.items
    assert (item.outcome, item.records, item.expired_records) == (Outcome.REDRIVEN, 2, 2)
    assert "2 expired from the stream" in item.line()


@pytest.mark.anyio
async def test_batch_item_failures_in_the_answer_keep_the_record() -> None:
    calls: list[bytes] = []
    answer = InvokeResult(
        ResultKind.SUCCESS, response={"batchItemFailures": [{"itemIdentifier": "5"}]}
    )
    inbox = _Inbox([_item(_record(start="3", end="5", size=2))])
    report = await Redriver(_Targets(_target(answer, calls, item_failures=True))).run(inbox, "q")
    [item] = report.items
    assert (item.outcome, item.error) == (Outcome.FAILED_AGAIN, "batch item failure from 5")
    assert (inbox.removed, inbox.kept) == ([], ["m1"])
    assert report.summary() == (
        "redrive from q: 1 failure record(s): 1 failed again; 0 record(s) invoked successfully"
    )


@pytest.mark.anyio
async def test_an_s3_payload_is_sent_as_it_was() -> None:
    calls: list[bytes] = []
    payload = orjson.dumps(
        {"Records": [{"kinesis": {"sequenceNumber": "3"}}, {"kinesis": {"sequenceNumber": "4"}}]}
    )
    body = _record(start="3", end="4", size=2, payload=payload.decode())
    inbox = _Inbox([_item(body)])
    report = await Redriver(_Targets(_target(OK, calls))).run(inbox, "s3://b/")
    assert calls == [payload]
    assert report.items[0].records == 2
    assert inbox.removed == ["m1"]


@pytest.mark.anyio
async def test_a_dry_run_keeps_everything_and_skips_and_unreadables_stay() -> None:
    calls: list[bytes] = []
    inbox = _Inbox([_item(_record()), _item(b"junk", "m2")])
    report = await Redriver(_Targets(_target(OK, calls)), dry_run=True).run(inbox, "q")
    assert [i.outcome for i in report.items] == [Outcome.WOULD_REDRIVE, Outcome.UNREADABLE]
    assert calls == []
    assert inbox.removed == []
    assert inbox.kept == ["m1", "m2"]
    assert not report.clean
    skip = Skip(Outcome.SKIPPED, None, "not mapping other's")
    skipped = await Redriver(_Targets(skip)).run(_Inbox([_item(_record())]), "q")
    assert skipped.clean
    assert skipped.items[0].error == "not mapping other's"


@pytest.mark.anyio
async def test_a_record_that_cannot_be_deleted_is_reported_as_redriven_with_the_reason() -> None:
    calls: list[bytes] = []
    inbox = _Inbox([_item(_record())], fail_removal=True)
    report = await Redriver(_Targets(_target(OK, calls))).run(inbox, "q")
    [item] = report.items
    assert item.outcome is Outcome.REDRIVEN
    assert item.error == "its failure record was not deleted: DeleteMessage: access denied"


def test_the_command_says_in_one_line_what_is_wrong_with_from_or_mapping(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from esm.cli import main

    config = tmp_path / "esm.yaml"
    config.write_text(
        "functions:\n  fn:\n    type: python\n    handler: esm.examples.handlers:handle\n"
        f"mappings:\n  - FunctionName: fn\n    EventSourceArn: {STREAM}\n"
        "    StartingPosition: LATEST\n  - FunctionName: fn\n    name: jobs\n"
        "    EventSourceArn: arn:aws:sqs:us-east-1:123456789012:jobs\n"
    )
    assert main(["redrive", "--from", "orders", "-c", str(config)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("esm redrive: 'orders' is neither an SQS queue")
    assert "\n" not in err
    queue = "arn:aws:sqs:us-east-1:123456789012:dlq"
    assert main(["redrive", "--from", queue, "-c", str(config), "--mapping", "nope"]) == 1
    assert capsys.readouterr().err.strip() == (
        "esm redrive: no mapping nope in the configuration (mappings: fn-orders, jobs)"
    )
    assert main(["redrive", "--from", queue, "-c", str(config), "--mapping", "jobs"]) == 1
    assert "reads a queue" in capsys.readouterr().err
