"""Tests for the Lambda backend, against a local server speaking Lambda's Invoke API."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiohttp import web
from botocore.exceptions import ClientError, NoCredentialsError

from esm.aws.errors import aws_call
from esm.aws.lambda_ import InvokeOutput, LambdaClient
from esm.backends.lambda_ import (
    TIMEOUT_MARGIN_SECONDS,
    LambdaBackend,
    classify_failure,
    name_qualifier,
)
from esm.errors import BackendError, ThroughputExceeded
from esm.events import create_record, kinesis_entry, stream_failure_record
from esm.model import MAX_INVOKE_PAYLOAD_BYTES, Invocation, InvokeResult, ResultKind
from esm.protocols import FunctionBackend
from tests.conftest import free_port

pytestmark = pytest.mark.anyio

ACCOUNT = "123456789012"
ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:orders"
STREAM_ARN = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/orders"
PAYLOAD = orjson.dumps({"Records": [{"eventID": "shardId-000000000000:1", "n": "é"}]})
ERROR_PAYLOAD = {
    "errorMessage": "bad record",
    "errorType": "ValueError",
    "requestId": "5f5b8c1e",
    "stackTrace": ['  File "/var/task/app.py", line 3, in handler\n'],
}


def make_invocation(timeout: float = 5.0, payload: bytes = PAYLOAD) -> Invocation:
    return Invocation(
        payload=payload,
        request_id=str(uuid.uuid4()),
        function_name="orders",
        function_arn=ARN,
        timeout=timeout,
        deadline=time.time() + timeout,
    )


@dataclass
class Seen:
    function: str
    qualifier: str | None
    invocation_type: str | None
    body: bytes


def _error(status: int, code: str, body: dict[str, Any], **headers: str) -> web.Response:
    # Lambda names the error in x-amzn-ErrorType, with a suffix botocore strips.
    return web.json_response(
        body,
        status=status,
        headers={"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/", **headers},
    )


@dataclass
class FakeLambda:
    """A local server answering Invoke the ways Lambda does, chosen by the function name."""

    endpoint: str = ""
    seen: list[Seen] = field(default_factory=list)
    release: anyio.Event = field(default_factory=anyio.Event)

    async def invoke(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.seen.append(
            Seen(
                name,
                request.query.get("Qualifier"),
                request.headers.get("X-Amz-Invocation-Type"),
                await request.read(),
            )
        )
        short = name.split(":function:")[-1].split(":")[0]
        version = {"X-Amz-Executed-Version": "7" if request.query.get("Qualifier") else "$LATEST"}
        if short == "orders":
            return web.json_response({"batchItemFailures": []}, headers=version)
        if short == "empty":
            return web.Response(status=200, headers=version)
        if short == "text":
            return web.Response(text="done", content_type="text/plain", headers=version)
        if short in ("crash", "handled"):
            kind = "Unhandled" if short == "crash" else "Handled"
            return web.json_response(
                ERROR_PAYLOAD, headers={**version, "X-Amz-Function-Error": kind}
            )
        if short == "busy":
            return _error(
                429,
                "TooManyRequestsException",
                {"Type": "User", "message": "Rate Exceeded.", "Reason": "CallerRateLimitExceeded"},
                **{"Retry-After": "3"},
            )
        if short == "busy-bare":
            return _error(
                429, "TooManyRequestsException", {"Type": "User", "message": "Rate Exceeded."}
            )
        if short == "broken":
            return _error(500, "ServiceException", {"Type": "Service", "Message": "internal"})
        if short == "vpc":
            return _error(
                502, "EC2ThrottledException", {"Type": "Service", "Message": "EC2 throttled"}
            )
        if short == "big":
            return _error(
                413,
                "RequestTooLargeException",
                {"Type": "User", "message": "Request must be smaller than 6291456 bytes"},
            )
        if short == "denied":
            return _error(
                403,
                "AccessDeniedException",
                {"Message": "not authorized to perform: lambda:InvokeFunction"},
            )
        if short == "huge":
            return web.Response(body=b"x" * (MAX_INVOKE_PAYLOAD_BYTES + 1), headers=version)
        if short == "slow":
            with anyio.move_on_after(10):
                await self.release.wait()
            return web.json_response({}, headers=version)
        return _error(
            404,
            "ResourceNotFoundException",
            {"Type": "User", "Message": f"Function not found: {ARN.replace('orders', short)}"},
        )


@pytest.fixture
async def fake_lambda() -> AsyncIterator[FakeLambda]:
    server = FakeLambda()
    app = web.Application()
    app.router.add_post("/2015-03-31/functions/{name}/invocations", server.invoke)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.endpoint = f"http://{host}:{port}"
    try:
        yield server
    finally:
        server.release.set()
        await runner.cleanup()


@pytest.fixture
async def lambda_client(fake_lambda: FakeLambda) -> AsyncIterator[Any]:
    async with lambda_client_for(fake_lambda.endpoint) as client:
        yield client


def lambda_client_for(endpoint: str) -> Any:
    return get_session().create_client(
        "lambda",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="x",
        aws_secret_access_key="x",
        # One attempt: botocore's own retries would hide what each answer is classified as.
        config=AioConfig(
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=2,
            read_timeout=30,
        ),
    )


@pytest.fixture
def backend(lambda_client: Any) -> Callable[..., LambdaBackend]:
    def create(function_name: str = "orders", **kwargs: Any) -> LambdaBackend:
        kwargs.setdefault("timeout", 5.0)
        return LambdaBackend(lambda_client, function_name=function_name, **kwargs)

    return create


async def invoke(backend: LambdaBackend, invocation: Invocation | None = None) -> InvokeResult:
    try:
        return await backend.invoke(invocation or make_invocation())
    finally:
        await backend.aclose()


# ---------------------------------------------------------------------------------------------
# Success


async def test_success_sends_the_exact_event_and_parses_the_answer(
    fake_lambda: FakeLambda, backend: Callable[..., LambdaBackend]
) -> None:
    lambda_backend = backend()
    assert isinstance(lambda_backend, FunctionBackend)

    result = await invoke(lambda_backend)

    assert result.kind is ResultKind.SUCCESS
    assert result.ok
    assert result.response == {"batchItemFailures": []}
    assert result.status_code == 200
    assert result.executed_version == "$LATEST"
    assert result.function_error is None
    assert result.error is None
    assert result.retry_after is None
    assert result.duration > 0
    [seen] = fake_lambda.seen
    assert seen == Seen("orders", None, "RequestResponse", PAYLOAD)


async def test_qualifier_is_sent_and_the_executed_version_kept(
    fake_lambda: FakeLambda, backend: Callable[..., LambdaBackend]
) -> None:
    result = await invoke(backend(ARN, qualifier="live"))

    assert result.kind is ResultKind.SUCCESS
    assert result.executed_version == "7"
    [seen] = fake_lambda.seen
    assert seen.function == ARN
    assert seen.qualifier == "live"
    assert seen.body == PAYLOAD


async def test_alias_in_the_function_name_is_sent_as_is(
    fake_lambda: FakeLambda, backend: Callable[..., LambdaBackend]
) -> None:
    result = await invoke(backend(f"{ACCOUNT}:function:orders:live"))

    assert result.kind is ResultKind.SUCCESS
    [seen] = fake_lambda.seen
    assert seen.function == f"{ACCOUNT}:function:orders:live"
    assert seen.qualifier is None


@pytest.mark.parametrize(("name", "expected"), [("empty", None), ("text", "done")])
async def test_empty_answer_is_null_and_text_is_kept(
    backend: Callable[..., LambdaBackend], name: str, expected: Any
) -> None:
    result = await invoke(backend(name))

    assert result.kind is ResultKind.SUCCESS
    assert result.response == expected
    assert result.status_code == 200


# ---------------------------------------------------------------------------------------------
# Function errors


@pytest.mark.parametrize(("name", "kind"), [("crash", "Unhandled"), ("handled", "Handled")])
async def test_function_error_keeps_lambdas_fields(
    backend: Callable[..., LambdaBackend], name: str, kind: str
) -> None:
    result = await invoke(backend(name, qualifier="7"))

    assert result.kind is ResultKind.FUNCTION_ERROR
    assert not result.ok
    assert result.function_error == kind
    assert result.response == ERROR_PAYLOAD
    assert result.error == "ValueError: bad record"
    assert result.status_code == 200
    assert result.executed_version == "7"
    assert result.retry_after is None
    assert result.duration > 0


async def test_failure_record_describes_the_function_error(
    backend: Callable[..., LambdaBackend],
) -> None:
    result = await invoke(backend("crash", qualifier="7"))
    entry = kinesis_entry(
        shard_id="shardId-000000000000",
        sequence_number="1",
        partition_key="k",
        data_b64="aGVsbG8=",
        arrival=1_700_000_000.0,
        stream_arn=STREAM_ARN,
        region="us-east-1",
        identity_arn=f"arn:aws:iam::{ACCOUNT}:role/esm",
    )
    record = create_record(sequence="1", order=1, key="k", arrival=1_700_000_000.0, entry=entry)

    failure = stream_failure_record(
        source="kinesis",
        records=[record],
        shard_id="shardId-000000000000",
        stream_arn=STREAM_ARN,
        function_arn=ARN,
        condition="RetryAttemptsExhausted",
        invoke_count=3,
        last_result=result,
        request_id="req-1",
        now=1_700_000_100.0,
    )

    assert failure["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "7",
        "functionError": "Unhandled",
    }


async def test_slow_answer_times_out_as_lambda_words_it(
    fake_lambda: FakeLambda, backend: Callable[..., LambdaBackend]
) -> None:
    invocation = make_invocation(timeout=0.2)
    started = time.monotonic()
    with anyio.fail_after(5):
        result = await invoke(backend("slow", timeout=0.2), invocation)
    elapsed = time.monotonic() - started

    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.function_error == "Unhandled"
    assert result.error == "Task timed out after 0.20 seconds"
    assert result.response == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {invocation.request_id} Error: Task timed out after "
        "0.20 seconds",
    }
    assert 0.2 + TIMEOUT_MARGIN_SECONDS <= elapsed < 0.2 + TIMEOUT_MARGIN_SECONDS + 2
    assert result.duration >= 0.2 + TIMEOUT_MARGIN_SECONDS
    assert [seen.function for seen in fake_lambda.seen] == ["slow"]


async def test_request_too_large_fails_like_the_batch_did(
    backend: Callable[..., LambdaBackend],
) -> None:
    result = await invoke(backend("big"))

    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.status_code == 413
    assert result.function_error == "Unhandled"
    assert result.response == {
        "errorType": "RequestTooLargeException",
        "errorMessage": "Request must be smaller than 6291456 bytes",
    }
    assert result.error == (
        "big: RequestTooLargeException (HTTP 413): Request must be smaller than 6291456 bytes"
    )


async def test_oversized_answer_is_a_function_error(
    backend: Callable[..., LambdaBackend],
) -> None:
    result = await invoke(backend("huge"))

    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.function_error == "Unhandled"
    assert result.status_code == 200
    assert result.error is not None
    assert result.error.startswith("Function.ResponseSizeTooLarge: ")


# ---------------------------------------------------------------------------------------------
# Throttles and system errors


async def test_throttle_keeps_retry_after(
    fake_lambda: FakeLambda, backend: Callable[..., LambdaBackend]
) -> None:
    result = await invoke(backend("busy"))

    assert result.kind is ResultKind.THROTTLE
    assert result.status_code == 429
    assert result.retry_after == 3.0
    assert result.error == "busy: TooManyRequestsException (HTTP 429): Rate Exceeded."
    assert result.function_error is None
    assert result.response is None
    assert result.duration > 0
    assert fake_lambda.seen == [Seen("busy", None, "RequestResponse", PAYLOAD)]


async def test_throttle_without_retry_after(backend: Callable[..., LambdaBackend]) -> None:
    result = await invoke(backend("busy-bare"))

    assert result.kind is ResultKind.THROTTLE
    assert result.status_code == 429
    assert result.retry_after is None


@pytest.mark.parametrize(
    ("name", "status", "error"),
    [
        ("broken", 500, "broken: ServiceException (HTTP 500): internal"),
        ("vpc", 502, "vpc: EC2ThrottledException (HTTP 502): EC2 throttled"),
        (
            "missing",
            404,
            "missing:live: ResourceNotFoundException (HTTP 404): Function not found: "
            f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:missing "
            "(check the function name and qualifier)",
        ),
        (
            "denied",
            403,
            "denied: AccessDeniedException (HTTP 403): not authorized to perform: "
            "lambda:InvokeFunction (the credentials need lambda:InvokeFunction on the function)",
        ),
    ],
)
async def test_service_errors_are_system_errors(
    fake_lambda: FakeLambda,
    backend: Callable[..., LambdaBackend],
    name: str,
    status: int,
    error: str,
) -> None:
    qualifier = "live" if name == "missing" else None
    result = await invoke(backend(name, qualifier=qualifier))

    assert result.kind is ResultKind.SYSTEM_ERROR
    assert result.status_code == status
    assert result.error == error
    assert result.function_error is None
    assert result.response is None
    assert result.retry_after is None
    assert result.duration > 0
    assert fake_lambda.seen == [Seen(name, qualifier, "RequestResponse", PAYLOAD)]


async def test_refused_connection_is_a_system_error() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    async with lambda_client_for(endpoint) as client:
        lambda_backend = LambdaBackend(client, function_name="orders", timeout=5.0)
        with anyio.fail_after(10):
            result = await invoke(lambda_backend)

    assert result.kind is ResultKind.SYSTEM_ERROR
    assert result.status_code == 0
    assert result.error is not None
    assert result.error.startswith("cannot invoke orders: EndpointConnectionError")
    assert result.duration > 0


async def test_closed_backend_does_not_invoke(
    fake_lambda: FakeLambda, backend: Callable[..., LambdaBackend]
) -> None:
    lambda_backend = backend()
    await lambda_backend.aclose()

    result = await lambda_backend.invoke(make_invocation())

    assert result.kind is ResultKind.SYSTEM_ERROR
    assert result.error == "the Lambda backend is closed"
    assert fake_lambda.seen == []


class _BrokenClient:
    """Fails every Invoke with `error`."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error or RuntimeError("client bug")

    async def invoke(
        self,
        *,
        FunctionName: str,
        InvocationType: str,
        Payload: bytes,
        Qualifier: str | None = None,
    ) -> InvokeOutput:
        raise self.error


# A stand-in client is the typed client itself: mypy checks it against Invoke's shapes.
_CLIENT: LambdaClient = _BrokenClient()


async def test_unexpected_client_failure_is_a_system_error() -> None:
    result = await invoke(LambdaBackend(_BrokenClient(), function_name="orders", timeout=1.0))

    assert result.kind is ResultKind.SYSTEM_ERROR
    assert result.error == "invoking orders failed: RuntimeError: client bug"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ClientError({"Error": {"Code": "ThrottlingException"}}, "Invoke"), ResultKind.THROTTLE),
        (
            ClientError(
                {"Error": {"Code": "Whatever"}, "ResponseMetadata": {"HTTPStatusCode": 429}},
                "Invoke",
            ),
            ResultKind.THROTTLE,
        ),
        (
            ClientError({"Error": {"Code": "RequestTooLargeException"}}, "Invoke"),
            ResultKind.FUNCTION_ERROR,
        ),
        (
            ClientError({"Error": {"Code": "AccessDeniedException"}}, "Invoke"),
            ResultKind.SYSTEM_ERROR,
        ),
        (NoCredentialsError(), ResultKind.SYSTEM_ERROR),
    ],
)
async def test_client_errors_are_classified_by_the_aws_translator(
    error: Exception, kind: ResultKind
) -> None:
    lambda_backend = LambdaBackend(_BrokenClient(error), function_name="orders", timeout=1.0)

    result = await invoke(lambda_backend)

    assert result.kind is kind


def test_retry_after_falls_back_to_the_modeled_member() -> None:
    exc = ClientError(
        {
            "Error": {"Code": "TooManyRequestsException", "Message": "Rate Exceeded."},
            "ResponseMetadata": {"HTTPStatusCode": 429, "HTTPHeaders": {}},
            "retryAfterSeconds": "12",
        },
        "Invoke",
    )
    with pytest.raises(ThroughputExceeded) as caught, aws_call("Invoke"):
        raise exc

    result = classify_failure(caught.value, "orders")

    assert result.kind is ResultKind.THROTTLE
    assert result.retry_after == 12.0


# ---------------------------------------------------------------------------------------------
# Construction


@pytest.mark.parametrize(
    ("name", "qualifier"),
    [
        ("orders", None),
        ("orders:live", "live"),
        (f"{ACCOUNT}:function:orders", None),
        (f"{ACCOUNT}:function:orders:7", "7"),
        (ARN, None),
        (f"{ARN}:$LATEST", "$LATEST"),
    ],
)
def test_name_qualifier(name: str, qualifier: str | None) -> None:
    assert name_qualifier(name) == qualifier


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"function_name": "", "timeout": 1.0}, "empty"),
        ({"function_name": "orders", "timeout": 0.0}, "timeout must be positive"),
        ({"function_name": "orders", "qualifier": "", "timeout": 1.0}, "must not be empty"),
        (
            {"function_name": "orders:live", "qualifier": "7", "timeout": 1.0},
            "contradicts qualifier '7'",
        ),
    ],
)
def test_invalid_configuration_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(BackendError, match=message):
        LambdaBackend(_BrokenClient(), **kwargs)


def test_repr_names_the_target() -> None:
    lambda_backend = LambdaBackend(
        _BrokenClient(), function_name="orders", qualifier="live", timeout=1.0
    )
    assert repr(lambda_backend) == "LambdaBackend(function_name='orders:live')"
