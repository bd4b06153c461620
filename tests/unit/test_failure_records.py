"""On-failure records of given-up stream batches, field by field, and how storing them fails."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from esm.aws.s3 import PutObjectOutput, S3Client
from esm.aws.sns import PublishOutput, SnsClient
from esm.aws.sqs import GetQueueUrlResult, SendMessageOutput, SqsSendClient
from esm.destinations import create_destination, parse_arn
from esm.destinations.s3 import S3Destination
from esm.destinations.sns import MAX_SNS_MESSAGE_BYTES, SnsDestination
from esm.destinations.sqs import SqsDestination
from esm.errors import (
    AccessDenied,
    ConfigError,
    ResourceNotFound,
    ServiceUnreachable,
    SourceError,
    ThroughputExceeded,
    TransientSourceError,
)
from esm.events import (
    encode_event,
    iso_utc,
    s3_failure_key,
    s3_failure_object,
    stream_failure_record,
)
from esm.model import InvokeResult, Record, ResultKind
from esm.protocols import Destination
from esm.sources.kinesis import KinesisRecordFactory
from esm.testing import function_error, throttle

KINESIS_ARN = "arn:aws:kinesis:us-east-2:123456789012:stream/mystream"
DDB_ARN = "arn:aws:dynamodb:us-east-2:123456789012:table/orders/stream/2019-11-14T00:04:06.388"
FUNCTION_ARN = "arn:aws:lambda:us-east-2:123456789012:function:myfunction"
REQUEST_ID = "c9b8fa9f-5a7f-4a1e-af9c-0c604cde93a5"
FIRST_SEQ = "49601189658422359378836298521827638475320189012309704722"
LAST_SEQ = "49601189658422359378836298522902373528957594348623495186"
# 2019-11-14T00:38:04.835Z, 2019-11-14T00:38:05.580Z and 2019-11-14T00:38:06.021Z.
FIRST_ARRIVAL = 1573691884.835
LAST_ARRIVAL = 1573691885.580
NOW = 1573691886.021


def _record(sequence: str, arrival: float, key: str = "k") -> Record:
    return Record(
        sequence=sequence,
        order=int(sequence),
        key=key,
        arrival=arrival,
        size=10,
        entry={"sequence": sequence},
    )


def _batch(count: int = 500) -> list[Record]:
    middle = [_record(str(int(FIRST_SEQ) + n), FIRST_ARRIVAL + 0.5) for n in range(1, count - 1)]
    return [_record(FIRST_SEQ, FIRST_ARRIVAL), *middle, _record(LAST_SEQ, LAST_ARRIVAL)]


def _kinesis_failure(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "source": "kinesis",
        "records": _batch(),
        "shard_id": "shardId-000000000001",
        "stream_arn": KINESIS_ARN,
        "function_arn": FUNCTION_ARN,
        "condition": "RetryAttemptsExhausted",
        "invoke_count": 1,
        "last_result": function_error(),
        "request_id": REQUEST_ID,
        "now": NOW,
    }
    arguments.update(overrides)
    return stream_failure_record(**arguments)


# --------------------------------------------------------------------------- the record


def test_kinesis_record_is_the_documented_example_exactly() -> None:
    assert _kinesis_failure() == {
        "requestContext": {
            "requestId": REQUEST_ID,
            "functionArn": FUNCTION_ARN,
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 1,
        },
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "version": "1.0",
        "timestamp": "2019-11-14T00:38:06.021Z",
        "KinesisBatchInfo": {
            "shardId": "shardId-000000000001",
            "startSequenceNumber": FIRST_SEQ,
            "endSequenceNumber": LAST_SEQ,
            "approximateArrivalOfFirstRecord": "2019-11-14T00:38:04.835Z",
            "approximateArrivalOfLastRecord": "2019-11-14T00:38:05.580Z",
            "batchSize": 500,
            "streamArn": KINESIS_ARN,
        },
    }


def test_keys_come_in_lambdas_order() -> None:
    record = _kinesis_failure()
    assert list(record) == [
        "requestContext",
        "responseContext",
        "version",
        "timestamp",
        "KinesisBatchInfo",
    ]
    assert list(record["requestContext"]) == [
        "requestId",
        "functionArn",
        "condition",
        "approximateInvokeCount",
    ]
    assert list(record["KinesisBatchInfo"]) == [
        "shardId",
        "startSequenceNumber",
        "endSequenceNumber",
        "approximateArrivalOfFirstRecord",
        "approximateArrivalOfLastRecord",
        "batchSize",
        "streamArn",
    ]


def test_dynamodb_record_has_second_precision_arrivals_under_ddb_stream_batch_info() -> None:
    shard = "shardId-00000001573689847184-864758bb"
    record = _kinesis_failure(
        source="dynamodb",
        records=[_record("100", 1573691599.0), _record("200", 1573691603.999)],
        shard_id=shard,
        stream_arn=DDB_ARN,
        invoke_count=4,
    )
    assert "KinesisBatchInfo" not in record
    assert record["DDBStreamBatchInfo"] == {
        "shardId": shard,
        "startSequenceNumber": "100",
        "endSequenceNumber": "200",
        "approximateArrivalOfFirstRecord": "2019-11-14T00:33:19Z",
        # Truncated, not rounded: the record arrived during second :23.
        "approximateArrivalOfLastRecord": "2019-11-14T00:33:23Z",
        "batchSize": 2,
        "streamArn": DDB_ARN,
    }
    assert record["requestContext"]["approximateInvokeCount"] == 4
    # The record's own timestamp keeps its milliseconds whatever the source.
    assert record["timestamp"] == "2019-11-14T00:38:06.021Z"


def test_record_age_exceeded_before_any_invocation_has_no_response_context() -> None:
    record = _kinesis_failure(condition="RecordAgeExceeded", invoke_count=1, last_result=None)
    assert "responseContext" not in record
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert list(record) == ["requestContext", "version", "timestamp", "KinesisBatchInfo"]


def test_record_age_exceeded_after_function_errors_still_has_no_response_context() -> None:
    failed = InvokeResult(
        kind=ResultKind.FUNCTION_ERROR, status_code=200, function_error="Unhandled"
    )
    record = _kinesis_failure(condition="RecordAgeExceeded", invoke_count=5, last_result=failed)
    assert "responseContext" not in record
    assert record["requestContext"]["approximateInvokeCount"] == 5


@pytest.mark.parametrize(
    "result",
    [
        throttle(),
        InvokeResult(kind=ResultKind.SYSTEM_ERROR, error="connection refused", status_code=0),
    ],
    ids=["throttle", "system-error"],
)
def test_no_response_context_when_the_function_never_answered(result: InvokeResult) -> None:
    record = _kinesis_failure(condition="RecordAgeExceeded", last_result=result)
    assert "responseContext" not in record


def test_partial_failure_give_up_has_a_null_function_error() -> None:
    answer = {"batchItemFailures": [{"itemIdentifier": LAST_SEQ}]}
    result = InvokeResult(kind=ResultKind.SUCCESS, response=answer, executed_version="7")
    record = _kinesis_failure(last_result=result, invoke_count=3)
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "7",
        "functionError": None,
    }
    assert b'"functionError":null' in orjson.dumps(record)


def test_function_error_values_pass_through() -> None:
    handled = InvokeResult(
        kind=ResultKind.FUNCTION_ERROR, status_code=200, function_error="Handled"
    )
    assert _kinesis_failure(last_result=handled)["responseContext"]["functionError"] == "Handled"
    # A 5xx answer from an HTTP function carries no X-Amz-Function-Error of its own.
    bare = InvokeResult(kind=ResultKind.FUNCTION_ERROR, status_code=502)
    context = _kinesis_failure(last_result=bare)["responseContext"]
    assert context == {
        "statusCode": 502,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }


def test_batch_of_one_starts_and_ends_at_the_same_record() -> None:
    record = _kinesis_failure(records=[_record(FIRST_SEQ, FIRST_ARRIVAL)])
    info = record["KinesisBatchInfo"]
    assert info["batchSize"] == 1
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == FIRST_SEQ
    assert info["approximateArrivalOfFirstRecord"] == info["approximateArrivalOfLastRecord"]


def test_an_empty_batch_has_no_failure_record() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        _kinesis_failure(records=[])


@pytest.mark.parametrize(
    ("epoch", "millis", "expected"),
    [
        (1573691884.835, True, "2019-11-14T00:38:04.835Z"),
        (1573691884.0, True, "2019-11-14T00:38:04.000Z"),
        (1573691884.9996, True, "2019-11-14T00:38:05.000Z"),
        (1573691884.835, False, "2019-11-14T00:38:04Z"),
        (1573691884.9996, False, "2019-11-14T00:38:04Z"),
        (0.0, True, "1970-01-01T00:00:00.000Z"),
    ],
)
def test_iso_utc(epoch: float, millis: bool, expected: str) -> None:
    assert iso_utc(epoch, millis=millis) == expected


# --------------------------------------------------------------------------- S3 object and key

S3_KEY = re.compile(
    r"aws/lambda/(?P<esm>[0-9a-f-]{36})/(?P<shard>[^/]+)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/"
    r"(?P=y)-(?P=m)-(?P=d)T\d{2}\.\d{2}\.\d{2}-"
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)


def test_s3_key_has_lambdas_layout() -> None:
    mapping = str(uuid.uuid4())
    key = s3_failure_key(mapping, "shardId-000000000001", NOW)
    match = S3_KEY.fullmatch(key)
    assert match is not None, key
    assert match["esm"] == mapping
    assert match["shard"] == "shardId-000000000001"
    assert key.startswith(
        f"aws/lambda/{mapping}/shardId-000000000001/2019/11/14/2019-11-14T00.38.06-"
    )


def test_s3_keys_of_the_same_second_differ() -> None:
    mapping = str(uuid.uuid4())
    assert s3_failure_key(mapping, "s", NOW) != s3_failure_key(mapping, "s", NOW)


def test_s3_key_date_is_utc_and_zero_padded() -> None:
    moment = datetime(2024, 2, 3, 4, 5, 6, 999000, tzinfo=UTC).timestamp()
    key = s3_failure_key("m", "shardId-00000001573689847184-864758bb", moment)
    assert key.startswith(
        "aws/lambda/m/shardId-00000001573689847184-864758bb/2024/02/03/2024-02-03T04.05.06-"
    )


def test_s3_object_is_the_record_plus_the_event_as_a_json_string() -> None:
    factory = KinesisRecordFactory(
        stream_arn=KINESIS_ARN,
        region="us-east-2",
        identity_arn="arn:aws:iam::123456789012:role/r",
    )
    records = [
        factory.create("shardId-000000000001", FIRST_SEQ, "k1", "aMOpbGxv", FIRST_ARRIVAL),
        factory.create("shardId-000000000001", LAST_SEQ, "k2", "d29ybGQ=", LAST_ARRIVAL),
    ]
    payload = encode_event(records)
    record = _kinesis_failure(records=records)
    stored = orjson.loads(s3_failure_object(record, payload))
    assert isinstance(stored["payload"], str)
    assert orjson.loads(stored["payload"]) == orjson.loads(payload)
    assert {k: v for k, v in stored.items() if k != "payload"} == record
    assert list(stored)[-1] == "payload"
    # The event is escaped inside the document, not nested as an object.
    assert b'"payload":"{\\"Records\\":[' in s3_failure_object(record, payload)


def test_s3_object_keeps_non_ascii_event_text() -> None:
    payload = orjson.dumps({"Records": [{"body": "h\u00e9llo \u2603"}]})
    stored = orjson.loads(s3_failure_object({"version": "1.0"}, payload))
    assert orjson.loads(stored["payload"]) == {"Records": [{"body": "h\u00e9llo \u2603"}]}


# --------------------------------------------------------------------------- storing failures


def _client_error(code: str, status: int, operation: str = "SendMessage") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


def test_parse_arn() -> None:
    assert parse_arn("arn:aws:sqs:us-east-1:123456789012:dlq") == (
        "sqs",
        "us-east-1",
        "123456789012",
        "dlq",
    )
    assert parse_arn("arn:aws:s3:::my-bucket") == ("s3", "", "", "my-bucket")
    with pytest.raises(ConfigError, match="not an ARN"):
        parse_arn("my-bucket")


class _Clients:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, service: str) -> object:
        self.asked.append(service)
        return object()


@pytest.mark.parametrize(
    ("arn", "kind", "service"),
    [
        ("arn:aws:sqs:us-east-1:123456789012:dlq", SqsDestination, "sqs"),
        ("arn:aws:sns:us-east-1:123456789012:failures", SnsDestination, "sns"),
        ("arn:aws:s3:::failure-bucket", S3Destination, "s3"),
    ],
)
def test_create_destination_picks_by_service(arn: str, kind: type, service: str) -> None:
    clients = _Clients()
    destination = create_destination(arn, clients=clients, mapping_uuid="m")
    assert isinstance(destination, kind)
    assert clients.asked == [service]


def test_create_destination_refuses_other_services() -> None:
    with pytest.raises(ConfigError, match="SQS queue, SNS topic or S3 bucket"):
        create_destination(
            "arn:aws:lambda:us-east-1:123456789012:function:f", clients=_Clients(), mapping_uuid="m"
        )


class _FakeSqs:
    """Answers GetQueueUrl and SendMessage; SendMessage fails with the queued errors first."""

    def __init__(self, errors: list[Exception] | None = None) -> None:
        self.errors = errors or []
        self.url_requests: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []

    async def get_queue_url(
        self, *, QueueName: str, QueueOwnerAWSAccountId: str | None = None
    ) -> GetQueueUrlResult:
        request = {"QueueName": QueueName}
        if QueueOwnerAWSAccountId is not None:
            request["QueueOwnerAWSAccountId"] = QueueOwnerAWSAccountId
        self.url_requests.append(request)
        return {"QueueUrl": f"https://sqs.example/{QueueName}"}

    async def send_message(self, *, QueueUrl: str, MessageBody: str) -> SendMessageOutput:
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append({"QueueUrl": QueueUrl, "MessageBody": MessageBody})
        return {"MessageId": "1"}


@pytest.mark.anyio
async def test_sqs_resolves_the_queue_url_once() -> None:
    client = _FakeSqs()
    destination = SqsDestination(client, "arn:aws:sqs:us-east-1:123456789012:dlq")
    await destination.send({"version": "1.0"}, b"{}", "shard")
    await destination.send({"version": "1.0"}, b"{}", "shard")
    assert client.url_requests == [{"QueueName": "dlq", "QueueOwnerAWSAccountId": "123456789012"}]
    assert [m["QueueUrl"] for m in client.sent] == ["https://sqs.example/dlq"] * 2
    assert orjson.loads(client.sent[0]["MessageBody"]) == {"version": "1.0"}


@pytest.mark.anyio
async def test_sqs_asks_for_the_url_again_after_the_queue_vanished() -> None:
    client = _FakeSqs([_client_error("AWS.SimpleQueueService.NonExistentQueue", 400)])
    destination = SqsDestination(client, "arn:aws:sqs:us-east-1:123456789012:dlq")
    with pytest.raises(ResourceNotFound, match="arn:aws:sqs:us-east-1:123456789012:dlq"):
        await destination.send({"version": "1.0"}, b"{}", "shard")
    await destination.send({"version": "1.0"}, b"{}", "shard")
    assert len(client.url_requests) == 2
    assert len(client.sent) == 1


class _FakeSns:
    def __init__(self, errors: list[Exception] | None = None) -> None:
        self.errors = errors or []
        self.published: list[dict[str, Any]] = []

    async def publish(self, *, TopicArn: str, Message: str) -> PublishOutput:
        if self.errors:
            raise self.errors.pop(0)
        self.published.append({"TopicArn": TopicArn, "Message": Message})
        return {"MessageId": "1"}


class _FakeS3:
    def __init__(self, errors: list[Exception] | None = None) -> None:
        self.errors = errors or []
        self.keys: list[str] = []

    async def put_object(
        self, *, Bucket: str, Key: str, Body: bytes, ContentType: str
    ) -> PutObjectOutput:
        if self.errors:
            raise self.errors.pop(0)
        self.keys.append(Key)
        return {"ETag": "1"}


# The fakes are the narrow clients the destinations take: mypy checks them against the shapes.
_SQS: SqsSendClient = _FakeSqs()
_SNS: SnsClient = _FakeSns()
_S3: S3Client = _FakeS3()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "kind", "retriable"),
    [
        (_client_error("ThrottlingException", 400), ThroughputExceeded, True),
        (_client_error("InternalError", 500), TransientSourceError, True),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), ServiceUnreachable, True),
        (_client_error("AccessDenied", 403), AccessDenied, False),
        (RuntimeError("a client bug"), TransientSourceError, True),
    ],
)
async def test_every_destination_translates_its_client_errors(
    error: Exception, kind: type[SourceError], retriable: bool
) -> None:
    destinations: list[Destination] = [
        SqsDestination(_FakeSqs([error]), "arn:aws:sqs:us-east-1:123456789012:dlq"),
        SnsDestination(_FakeSns([error]), "arn:aws:sns:us-east-1:123456789012:failures"),
        S3Destination(_FakeS3([error]), "arn:aws:s3:::failures", "m"),
    ]
    for destination in destinations:
        with pytest.raises(kind) as caught:
            await destination.send({"version": "1.0"}, b"{}", "shard")
        assert type(caught.value) is kind
        assert caught.value.retriable is retriable
        assert caught.value.__cause__ is error
        assert str(caught.value).startswith("on-failure destination arn:aws:")


@pytest.mark.anyio
async def test_sns_refuses_a_record_over_256_kb_without_publishing() -> None:
    client = _FakeSns()
    topic = "arn:aws:sns:us-east-1:123456789012:failures"
    destination = SnsDestination(client, topic)
    huge = {"requestContext": {"requestId": "x" * MAX_SNS_MESSAGE_BYTES}}
    with pytest.raises(SourceError, match="over SNS's limit of 262144 bytes") as caught:
        await destination.send(huge, b"{}", "shardId-000000000001")
    assert not caught.value.retriable
    assert topic in str(caught.value)
    assert client.published == []
    await destination.send({"version": "1.0"}, b"{}", "shardId-000000000001")
    assert client.published == [{"TopicArn": topic, "Message": '{"version":"1.0"}'}]


def test_constructors_refuse_arns_of_other_services() -> None:
    with pytest.raises(ConfigError):
        SqsDestination(_FakeSqs(), "arn:aws:sns:us-east-1:123456789012:t")
    with pytest.raises(ConfigError):
        SnsDestination(_FakeSns(), "arn:aws:sqs:us-east-1:123456789012:q")
    with pytest.raises(ConfigError):
        S3Destination(object(), "arn:aws:s3:::bucket/prefix", "m")  # type: ignore[arg-type]
