"""The lean GetRecords path against the client's own path, field by field, on moto's server;
its errors, retries and signature against a local server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiohttp import web
from botocore.exceptions import ClientError, EndpointConnectionError

from esm.aws.errors import translate_error
from esm.aws.kinesis import enable_wire_records
from esm.aws.lean import LeanJsonCalls
from esm.aws.wire import WIRE_FORM
from esm.errors import ExpiredIterator, ServiceUnreachable, SourceError

from .helpers import create_stream, put_records

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def _iterator(kinesis: Any, stream: str) -> str:
    shard = (await kinesis.list_shards(StreamName=stream))["Shards"][0]["ShardId"]
    answer = await kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )
    return str(answer["ShardIterator"])


async def test_get_records_answers_what_the_client_answers_in_wire_form(
    kinesis: Any, moto_endpoint: str, stream_name: str
) -> None:
    await create_stream(kinesis, stream_name, 1)
    await put_records(kinesis, stream_name, 25)
    async with get_session().create_client(
        "kinesis", region_name="us-east-1", endpoint_url=moto_endpoint
    ) as client:
        enable_wire_records(client)
        calls: list[tuple[str, str, str]] = []
        lean = LeanJsonCalls(
            client, observe=lambda s, op, outcome, t: calls.append((s, op, outcome))
        )
        try:
            iterator = await _iterator(client, stream_name)
            slow = await client.get_records(ShardIterator=iterator, Limit=10)
            fast = await lean.call("GetRecords", {"ShardIterator": iterator, "Limit": 10})
        finally:
            await lean.aclose()
    assert slow.pop(WIRE_FORM) is True
    slow.pop("ResponseMetadata")
    assert len(fast["Records"]) == 10
    assert fast["Records"] == slow["Records"]
    assert set(fast) == set(slow)
    assert fast["MillisBehindLatest"] == slow["MillisBehindLatest"]
    assert calls == [("kinesis", "GetRecords", "ok")]


async def test_an_error_answer_raises_what_the_client_raises(
    kinesis: Any, moto_endpoint: str, stream_name: str
) -> None:
    await create_stream(kinesis, stream_name, 1)
    async with get_session().create_client(
        "kinesis", region_name="us-east-1", endpoint_url=moto_endpoint
    ) as client:
        lean = LeanJsonCalls(client)
        bogus = {"ShardIterator": "not-an-iterator-" + uuid.uuid4().hex, "Limit": 10}
        try:
            with pytest.raises(ClientError) as slow:
                await client.get_records(**bogus)
            with pytest.raises(ClientError) as fast:
                await lean.call("GetRecords", bogus)
        finally:
            await lean.aclose()
    assert fast.value.response["Error"]["Code"] == slow.value.response["Error"]["Code"]
    assert (
        fast.value.response["ResponseMetadata"]["HTTPStatusCode"]
        == slow.value.response["ResponseMetadata"]["HTTPStatusCode"]
    )
    assert type(translate_error(fast.value, "GetRecords")) is type(
        translate_error(slow.value, "GetRecords")
    )


@pytest.fixture
async def canned() -> AsyncIterator[dict[str, Any]]:
    """A local server answering from `answers` in turn, recording each request's headers."""
    state: dict[str, Any] = {"answers": [], "requests": []}

    async def handle(request: web.Request) -> web.Response:
        state["requests"].append((dict(request.headers), await request.read()))
        status, body = state["answers"].pop(0)
        return web.Response(status=status, body=body, content_type="application/x-amz-json-1.1")

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state["url"] = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()


def _expired() -> bytes:
    return orjson.dumps(
        {
            "__type": "com.amazonaws.kinesis.v20131202#ExpiredIteratorException",
            "message": "Iterator expired",
        }
    )


async def test_a_5xx_is_retried_once_and_errors_are_the_client_s(canned: dict[str, Any]) -> None:
    async with get_session().create_client(
        "kinesis",
        region_name="eu-west-1",
        endpoint_url=canned["url"],
        aws_access_key_id="AKIDLEAN",
        aws_secret_access_key="secret",
    ) as client:
        lean = LeanJsonCalls(client)
        try:
            canned["answers"] += [(500, b"{}"), (200, b'{"Records":[],"MillisBehindLatest":0}')]
            answer = await lean.call("GetRecords", {"ShardIterator": "i", "Limit": 1})
            assert answer == {"Records": [], "MillisBehindLatest": 0}
            canned["answers"] += [(400, _expired())]
            with pytest.raises(ClientError) as raised:
                await lean.call("GetRecords", {"ShardIterator": "i", "Limit": 1})
            canned["answers"] += [(503, b""), (503, b"")]
            with pytest.raises(ClientError) as unavailable:
                await lean.call("GetRecords", {"ShardIterator": "i", "Limit": 1})
        finally:
            await lean.aclose()
    assert isinstance(translate_error(raised.value, "GetRecords"), ExpiredIterator)
    assert raised.value.response["Error"] == {
        "Code": "ExpiredIteratorException",
        "Message": "Iterator expired",
    }
    headers, body = canned["requests"][0]
    assert headers["X-Amz-Target"] == "Kinesis_20131202.GetRecords"
    assert headers["Content-Type"] == "application/x-amz-json-1.1"
    # Signed as botocore's SigV4Auth signs, with the client's own credentials and region, and
    # sent with the client's own user agent.
    assert headers["User-Agent"].startswith("aiobotocore/")
    assert "aiohttp" not in headers["User-Agent"]
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDLEAN/")
    assert "/eu-west-1/kinesis/aws4_request" in headers["Authorization"]
    assert orjson.loads(body) == {"ShardIterator": "i", "Limit": 1}
    assert len(canned["requests"]) == 5, "one retry after a 5xx, none after the 400"
    assert unavailable.value.response["Error"] == {"Code": "503", "Message": "Service Unavailable"}
    assert translate_error(unavailable.value, "GetRecords").retriable


async def test_no_server_at_all_is_a_connection_error() -> None:
    from tests.conftest import free_port

    async with get_session().create_client(
        "kinesis",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        aws_access_key_id="a",
        aws_secret_access_key="b",
        config=AioConfig(connect_timeout=1),
    ) as client:
        lean = LeanJsonCalls(client)
        try:
            with pytest.raises(EndpointConnectionError) as raised:
                await lean.call("GetRecords", {"ShardIterator": "i", "Limit": 1})
        finally:
            await lean.aclose()
    translated = translate_error(raised.value, "GetRecords")
    assert isinstance(translated, ServiceUnreachable)
    assert isinstance(translated, SourceError)


async def test_sqs_calls_answer_in_the_client_s_shapes_and_raise_its_errors(
    sqs: Any, moto_endpoint: str
) -> None:
    url = (await sqs.create_queue(QueueName=f"lean-{uuid.uuid4().hex[:8]}"))["QueueUrl"]
    for n in range(4):
        await sqs.send_message(
            QueueUrl=url,
            MessageBody=f"m{n}",
            MessageAttributes={
                "blob": {"DataType": "Binary", "BinaryValue": bytes([n, 255])},
                "kind": {"DataType": "String", "StringValue": "order"},
            },
        )
    receive = {
        "QueueUrl": url,
        "MaxNumberOfMessages": 2,
        "WaitTimeSeconds": 0,
        "VisibilityTimeout": 0,
        "MessageSystemAttributeNames": ["All"],
        "MessageAttributeNames": ["All"],
    }
    async with get_session().create_client(
        "sqs", region_name="us-east-1", endpoint_url=moto_endpoint
    ) as client:
        lean = LeanJsonCalls(client)
        slow = await client.receive_message(**receive)
        fast = await lean.call("ReceiveMessage", receive, shaped=True)
        for answer in (slow, fast):
            for message in answer["Messages"]:
                # Receive counts and receipt handles differ from one receive to the next.
                message.pop("ReceiptHandle")
                message["Attributes"].pop("ApproximateReceiveCount")
                message["Attributes"].pop("ApproximateFirstReceiveTimestamp")
        assert fast["Messages"] == slow["Messages"]
        assert isinstance(fast["Messages"][0]["MessageAttributes"]["blob"]["BinaryValue"], bytes)

        taken = await client.receive_message(QueueUrl=url, MaxNumberOfMessages=2)
        entries = [
            {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
            for n, m in enumerate(taken["Messages"])
        ]
        visibility = [dict(e, VisibilityTimeout=0) for e in entries]
        changed = await lean.call(
            "ChangeMessageVisibilityBatch", {"QueueUrl": url, "Entries": visibility}, shaped=True
        )
        assert sorted(e["Id"] for e in changed["Successful"]) == ["0", "1"]
        deleted = await lean.call(
            "DeleteMessageBatch", {"QueueUrl": url, "Entries": entries}, shaped=True
        )
        assert sorted(e["Id"] for e in deleted["Successful"]) == ["0", "1"]

        gone = dict(receive, QueueUrl=url + "-gone")
        with pytest.raises(ClientError) as slow_error:
            await client.receive_message(**gone)
        with pytest.raises(ClientError) as fast_error:
            await lean.call("ReceiveMessage", gone, shaped=True)
    assert type(fast_error.value) is type(slow_error.value)
    assert fast_error.value.response["Error"] == slow_error.value.response["Error"]


async def test_dynamodb_streams_get_records_answers_what_the_client_answers(
    dynamodb: Any, moto_endpoint: str
) -> None:
    from esm.aws.dynamodb_streams import enable_wire_records as enable_streams_wire

    from .test_dynamodb_streams import create_table, insert_modify_remove

    table = f"t-{uuid.uuid4().hex[:10]}"
    arn = await create_table(dynamodb, table)
    await insert_modify_remove(dynamodb, table)
    async with get_session().create_client(
        "dynamodbstreams", region_name="us-east-1", endpoint_url=moto_endpoint
    ) as client:
        enable_streams_wire(client)
        lean = LeanJsonCalls(client)
        shard = (await client.describe_stream(StreamArn=arn))["StreamDescription"]["Shards"][0]
        iterator = (
            await client.get_shard_iterator(
                StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )
        )["ShardIterator"]
        slow = await client.get_records(ShardIterator=iterator, Limit=100)
        fast = await lean.call("GetRecords", {"ShardIterator": iterator, "Limit": 100})
    assert slow.pop(WIRE_FORM) is True
    slow.pop("ResponseMetadata")
    assert [r["eventName"] for r in fast["Records"]] == ["INSERT", "MODIFY", "REMOVE"]
    assert fast["Records"] == slow["Records"]
    assert set(fast) == set(slow)


async def test_the_stream_api_reads_the_same_records_on_both_paths(
    kinesis: Any, moto_endpoint: str, stream_name: str
) -> None:
    """`KinesisStreamAPI.get_records` on the lean path (sized without encoding, when the body
    has no escapes) against the client's path, record by record."""
    from esm.sources.kinesis import KinesisRecordFactory, KinesisStreamAPI

    arn = await create_stream(kinesis, stream_name, 1)
    keys = ["plain", 'a "quoted" key', "back\\slash", "ключ", "tab\tkey"]
    await kinesis.put_records(
        StreamName=stream_name,
        Records=[
            {"Data": f"payload {n} é".encode(), "PartitionKey": k} for n, k in enumerate(keys)
        ],
    )
    await put_records(kinesis, stream_name, 20)

    def factory() -> KinesisRecordFactory:
        return KinesisRecordFactory(stream_arn=arn, region="us-east-1", identity_arn="arn:role")

    async with get_session().create_client(
        "kinesis", region_name="us-east-1", endpoint_url=moto_endpoint
    ) as client:
        lean = LeanJsonCalls(client)
        fast_api = KinesisStreamAPI(
            client, stream_name=stream_name, stream_arn=arn, records=factory(), lean=lean
        )
        slow_api = KinesisStreamAPI(
            client, stream_name=stream_name, stream_arn=arn, records=factory()
        )
        try:
            shard = (await slow_api.list_shards())[0].shard_id
            iterator = await _iterator(client, stream_name)
            # A page whose body has escapes, then one whose body has none.
            pages = []
            for limit in (5, 100):
                fast = await fast_api.get_records(shard, iterator, limit)
                slow = await slow_api.get_records(shard, iterator, limit)
                pages.append((fast, slow))
                assert fast.next_iterator is not None
                iterator = fast.next_iterator
        finally:
            await lean.aclose()
    assert [len(fast.records) for fast, _ in pages] == [5, 20]
    assert [r.key for r in pages[0][0].records] == keys
    for quick, reference in (
        pair for fast, slow in pages for pair in zip(fast.records, slow.records, strict=True)
    ):
        assert orjson.dumps(quick.entry) == orjson.dumps(reference.entry)
        assert quick.size == reference.size == len(orjson.dumps(reference.entry)) + 1
        assert (quick.sequence, quick.key, quick.arrival) == (
            reference.sequence,
            reference.key,
            reference.arrival,
        )


async def test_the_daemon_invokes_and_gives_up_alike_on_both_paths(
    kinesis: Any, sqs: Any, moto_endpoint: str, stream_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole daemon, once with GetRecords on the lean path (as it runs) and once through
    the client: the same events, invocation by invocation, and the same failure record."""
    from esm.metrics import Metrics
    from esm.model import InvokeResult, ResultKind
    from esm.testing import RecordingBackend

    from .helpers import daemon_config, run_daemon_until
    from .test_aws_edges import _destination, _failure_records, _queue

    arn = await create_stream(kinesis, stream_name, 1)
    keys = ["plain", 'a "quoted" key', "ключ", "k3", "k4", "k5", "k6", "k7"]
    data = [b"r0", b"r1", b"poison", "r3 é".encode(), b"r4", b"r5", b"r6", b"r7"]
    await kinesis.put_records(
        StreamName=stream_name,
        Records=[{"Data": d, "PartitionKey": k} for d, k in zip(data, keys, strict=True)],
    )

    def poisoned(event: dict[str, Any]) -> bool:
        return any(_data(r) == b"poison" for r in event["Records"])

    def script(event: dict[str, Any], call: int) -> Any:
        if poisoned(event):
            return InvokeResult(
                kind=ResultKind.FUNCTION_ERROR, error="boom", function_error="Unhandled"
            )
        return None

    async def run(lean: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        if not lean:
            # The mapping's calls go through its client, as with a test's fake client.
            monkeypatch.setattr(
                "esm.sources.plugins._lean_calls",
                lambda client, context: unpatched.append(client),
            )
        url, queue_arn = await _queue(sqs)
        backend = RecordingBackend(script)
        metrics = Metrics()
        config = daemon_config(
            moto_endpoint,
            arn,
            batch_size=4,
            extra_mapping=_destination(
                queue_arn, MaximumRetryAttempts=0, BisectBatchOnFunctionError="true"
            ),
        )
        given_up = metrics.on_failure_delivered_events.labels(config.mappings[0].mapping_name)

        def done() -> bool:
            invoked = sum(len(e["Records"]) for e in backend.events if not poisoned(e))
            return given_up._value.get() >= 1 and invoked >= 7

        await run_daemon_until(config, backend, done, metrics=metrics)
        monkeypatch.undo()
        return backend.events, await _failure_records(sqs, url)

    unpatched: list[Any] = []
    lean_events, lean_failures = await run(lean=True)
    client_events, client_failures = await run(lean=False)
    assert unpatched, "the second run read through the client"
    assert [len(e["Records"]) for e in lean_events] == [4, 2, 2, 1, 1, 4]
    assert lean_events == client_events
    [lean_failure], [client_failure] = lean_failures, client_failures
    for failure in (lean_failure, client_failure):
        # What differs from run to run by nature: when, and the invocation's request id.
        assert failure.pop("timestamp")
        assert failure["requestContext"].pop("requestId")
    assert lean_failure == client_failure
    assert lean_failure["KinesisBatchInfo"]["batchSize"] == 1


def _data(record: dict[str, Any]) -> bytes:
    import base64

    return base64.b64decode(record["kinesis"]["data"])
