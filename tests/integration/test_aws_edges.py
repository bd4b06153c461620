"""Behaviour recorded from real AWS at the edges of the retry rules, end to end through the
daemon against moto's server: record age that splits a batch, retry counting after a partial
failure, answer forms, and the SQS record's md5OfMessageAttributes."""

from __future__ import annotations

import base64
import uuid
from collections import Counter
from typing import Any

import orjson
import pytest

from esm.metrics import Metrics
from esm.testing import RecordingBackend

from .helpers import age_records, create_stream, daemon_config, put_records, run_daemon_until
from .test_dynamodb_streams import create_table
from .test_sqs import sqs_config

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def _queue(sqs: Any, prefix: str = "dlq") -> tuple[str, str]:
    url = (await sqs.create_queue(QueueName=f"{prefix}-{uuid.uuid4().hex[:10]}"))["QueueUrl"]
    attributes = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return url, attributes["Attributes"]["QueueArn"]


async def _failure_records(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every failure record in the destination queue (the daemon has stopped by now)."""
    bodies: list[dict[str, Any]] = []
    while True:
        answer = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = answer.get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(orjson.loads(message["Body"]))
            await sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def _destination(arn: str, **more: Any) -> str:
    lines = [f"    DestinationConfig: {{OnFailure: {{Destination: '{arn}'}}}}"]
    lines += [f"    {key}: {value}" for key, value in more.items()]
    return "\n".join(lines)


def _kinesis_data(record: dict[str, Any]) -> bytes:
    return base64.b64decode(record["kinesis"]["data"])


async def test_only_the_expired_records_of_a_batch_are_given_up(
    kinesis: Any, sqs: Any, moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    old = await put_records(kinesis, stream_name, 4, prefix="old")
    age_records(stream_name, 300)
    fresh = await put_records(kinesis, stream_name, 3, prefix="fresh")
    url, queue_arn = await _queue(sqs)
    backend = RecordingBackend()
    metrics = Metrics()
    config = daemon_config(
        moto_endpoint, arn, extra_mapping=_destination(queue_arn, MaximumRecordAgeInSeconds=60)
    )
    mapping = config.mappings[0].mapping_name
    given_up = metrics.on_failure_delivered_events.labels(mapping)
    await run_daemon_until(
        config,
        backend,
        lambda: given_up._value.get() >= 4 and len(backend.delivered_records()) >= 3,
        metrics=metrics,
    )
    # The fresh records of the same read are invoked as usual, once.
    assert [_kinesis_data(r) for r in backend.delivered_records()] == fresh
    [failure] = await _failure_records(sqs, url)
    assert failure["requestContext"]["condition"] == "RecordAgeExceeded"
    # AWS counts 1 for records that expired before they were ever invoked.
    assert failure["requestContext"]["approximateInvokeCount"] == 1
    assert "responseContext" not in failure
    assert list(failure) == ["requestContext", "version", "timestamp", "KinesisBatchInfo"]
    info = failure["KinesisBatchInfo"]
    assert info["batchSize"] == len(old)
    delivered_sequences = [r["kinesis"]["sequenceNumber"] for r in backend.delivered_records()]
    assert int(info["endSequenceNumber"]) < int(delivered_sequences[0])
    assert metrics.dropped_events.labels(mapping)._value.get() == 0


def _fail_the_last_record(last: Any) -> Any:
    """A function that reports the record `last(record)` says is the sixth one as failed,
    whenever it is in the batch."""

    def script(event: dict[str, Any], call: int) -> Any:
        failed = [r for r in event["Records"] if last(r)]
        if not failed:
            return {"batchItemFailures": []}
        return {"batchItemFailures": [{"itemIdentifier": _sequence(failed[0])}]}

    return script


def _sequence(record: dict[str, Any]) -> str:
    if "kinesis" in record:
        return str(record["kinesis"]["sequenceNumber"])
    return str(record["dynamodb"]["SequenceNumber"])


async def _six_records_kinesis(kinesis: Any, stream_name: str) -> tuple[str, Any, Any]:
    """A stream of 6 records: its ARN, what identifies a record, and the last one's identity."""
    arn = await create_stream(kinesis, stream_name, 1)
    written = await put_records(kinesis, stream_name, 6)
    return arn, _kinesis_data, written[-1]


async def _six_records_dynamodb(dynamodb: Any) -> tuple[str, Any, Any]:
    """A table stream of 6 inserts: its ARN, what identifies a record, the last one's key."""
    table = f"t-{uuid.uuid4().hex[:12]}"
    stream_arn = await create_table(dynamodb, table)
    for n in range(6):
        await dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{n}"}, "sk": {"N": "1"}})

    def key(record: dict[str, Any]) -> str:
        return str(record["dynamodb"]["Keys"]["pk"]["S"])

    return stream_arn, key, "k5"


@pytest.mark.parametrize("source", ["kinesis", "dynamodb"])
async def test_a_record_that_keeps_failing_after_a_partial_failure(
    source: str, kinesis: Any, dynamodb: Any, sqs: Any, moto_endpoint: str, stream_name: str
) -> None:
    """Recorded from AWS: 6 records, BatchSize 3, the last record always reported failed,
    MaximumRetryAttempts 3: records 0-4 once each, the last 5 times (once in its batch, then
    alone 1 + 3 times), and one failure record for it alone."""
    if source == "kinesis":
        arn, identity, last = await _six_records_kinesis(kinesis, stream_name)
    else:
        arn, identity, last = await _six_records_dynamodb(dynamodb)
    url, queue_arn = await _queue(sqs)
    backend = RecordingBackend(_fail_the_last_record(lambda r: identity(r) == last))
    metrics = Metrics()
    config = daemon_config(
        moto_endpoint,
        arn,
        batch_size=3,
        extra_mapping=_destination(
            queue_arn, MaximumRetryAttempts=3, FunctionResponseTypes="[ReportBatchItemFailures]"
        ),
    )
    given_up = metrics.on_failure_delivered_events.labels(config.mappings[0].mapping_name)
    await run_daemon_until(config, backend, lambda: given_up._value.get() >= 1, metrics=metrics)

    deliveries = Counter(identity(r) for r in backend.delivered_records())
    order = list(dict.fromkeys(identity(r) for r in backend.delivered_records()))
    assert len(order) == 6
    assert [deliveries[k] for k in order] == [1, 1, 1, 1, 1, 5]
    assert [len(e["Records"]) for e in backend.events] == [3, 3, 1, 1, 1, 1]
    [failure] = await _failure_records(sqs, url)
    context = failure["requestContext"]
    assert context["condition"] == "RetryAttemptsExhausted"
    assert context["approximateInvokeCount"] == 4
    assert failure["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": None,
    }
    info = failure["KinesisBatchInfo" if source == "kinesis" else "DDBStreamBatchInfo"]
    assert info["batchSize"] == 1
    last_sequence = _sequence(backend.events[-1]["Records"][0])
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == last_sequence


async def test_an_empty_list_answer_is_a_complete_success(
    kinesis: Any, moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    written = await put_records(kinesis, stream_name, 6)
    backend = RecordingBackend(lambda event, call: [])
    metrics = Metrics()
    config = daemon_config(
        moto_endpoint,
        arn,
        batch_size=3,
        extra_mapping="    FunctionResponseTypes: [ReportBatchItemFailures]\n"
        "    MaximumRetryAttempts: 2",
    )
    mapping = config.mappings[0].mapping_name
    daemon = await run_daemon_until(
        config, backend, lambda: len(backend.delivered_records()) >= 6, metrics=metrics
    )
    assert [_kinesis_data(r) for r in backend.delivered_records()] == written
    assert metrics.failed_invoke_events.labels(mapping)._value.get() == 0
    [shard] = daemon.status()["mappings"][0]["shards"].values()
    assert shard["checkpoint"] == _sequence(backend.events[-1]["Records"][-1])


async def test_sqs_records_without_attributes_carry_a_null_md5_of_message_attributes(
    sqs: Any, moto_endpoint: str
) -> None:
    url, queue_arn = await _queue(sqs, "src")
    await sqs.send_message(QueueUrl=url, MessageBody="plain")
    await sqs.send_message(
        QueueUrl=url,
        MessageBody="with attributes",
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "x"}},
    )
    backend = RecordingBackend()
    config = sqs_config(moto_endpoint, queue_arn)
    await run_daemon_until(config, backend, lambda: len(backend.delivered_records()) >= 2)
    by_body = {r["body"]: r for r in backend.delivered_records()}
    plain = by_body["plain"]
    assert "md5OfMessageAttributes" in plain
    assert plain["md5OfMessageAttributes"] is None
    keys = list(plain)
    assert keys.index("md5OfMessageAttributes") == keys.index("md5OfBody") - 1
    rich = by_body["with attributes"]
    assert isinstance(rich["md5OfMessageAttributes"], str)
    assert len(rich["md5OfMessageAttributes"]) == 32
