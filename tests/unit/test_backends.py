"""Tests for the HTTP and Python function backends: every answer classified like Lambda's."""

from __future__ import annotations

import email.utils
import re
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from aiohttp import web
from anyio.abc import SocketStream
from multidict import CIMultiDictProxy

from esm import __version__
from esm.backends._context import LambdaContext, new_log_stream_name
from esm.backends.http import HttpBackend, extra_header_name, parse_retry_after
from esm.backends.python import PythonBackend, load_handler
from esm.errors import BackendError
from esm.examples import handlers
from esm.model import MAX_INVOKE_PAYLOAD_BYTES, Invocation, InvokeResult, ResultKind
from esm.protocols import FunctionBackend

pytestmark = pytest.mark.anyio

ARN = "arn:aws:lambda:us-east-1:000000000000:function:orders"
RECORDS = [{"eventID": "shardId-000000000000:1", "kinesis": {"data": "aGVsbG8="}}] * 3
PAYLOAD = orjson.dumps({"Records": RECORDS})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_invocation(
    timeout: float = 5.0,
    payload: bytes = PAYLOAD,
    extra: Mapping[str, str] | None = None,
    deadline: float | None = None,
) -> Invocation:
    return Invocation(
        payload=payload,
        request_id=str(uuid.uuid4()),
        function_name="orders",
        function_arn=ARN,
        timeout=timeout,
        deadline=time.time() + timeout if deadline is None else deadline,
        memory_limit_mb=256,
        extra=extra if extra is not None else {"mapping": "orders-stream", "shard": "shard-0"},
    )


# ---------------------------------------------------------------------------------------------
# HTTP backend, against a real local server


@dataclass
class Seen:
    path: str
    method: str
    headers: CIMultiDictProxy[str]
    body: bytes
    peer: Any


@dataclass
class FunctionApp:
    """A local app that answers each path in one of the ways a function can answer."""

    base: str = ""
    seen: list[Seen] = field(default_factory=list)
    release: anyio.Event = field(default_factory=anyio.Event)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        body = await request.read()
        self.seen.append(Seen(request.path, request.method, request.headers, body, peer))
        name = request.match_info["name"]
        if name == "ok":
            return web.json_response({"batchItemFailures": [{"itemIdentifier": "7"}]})
        if name == "empty":
            return web.Response(status=200)
        if name == "text":
            return web.Response(text="all good", content_type="text/plain")
        if name == "function-error":
            return web.json_response(
                {"errorMessage": "bad record", "errorType": "ValueError"},
                headers={"X-Amz-Function-Error": "Handled"},
            )
        if name == "version":
            return web.json_response(None, headers={"X-Amz-Executed-Version": "7"})
        if name == "bad-request":
            return web.json_response({"message": "missing field"}, status=400)
        if name == "crash":
            return web.Response(status=500, text="Traceback: boom")
        if name == "throttle":
            return web.json_response({"message": "busy"}, status=429, headers={"Retry-After": "7"})
        if name == "throttle-bare":
            return web.Response(status=429)
        if name == "unavailable":
            later = datetime.now(UTC) + timedelta(seconds=30)
            date = email.utils.format_datetime(later, usegmt=True)
            return web.Response(status=503, headers={"Retry-After": date})
        if name == "slow":
            with anyio.move_on_after(10):
                await self.release.wait()
            return web.json_response({})
        if name == "huge":
            return web.Response(body=b"x" * (MAX_INVOKE_PAYLOAD_BYTES + 1))
        raise web.HTTPNotFound()


@pytest.fixture
async def app(anyio_backend: str) -> AsyncIterator[FunctionApp]:
    function_app = FunctionApp()
    web_app = web.Application()
    web_app.router.add_post("/{name}", function_app.handle)
    runner = web.AppRunner(web_app, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    function_app.base = f"http://{host}:{port}"
    try:
        yield function_app
    finally:
        function_app.release.set()
        await runner.cleanup()


@pytest.fixture
def http_backend() -> Iterator[Callable[..., HttpBackend]]:
    created: list[HttpBackend] = []

    def create(url: str, **kwargs: Any) -> HttpBackend:
        kwargs.setdefault("timeout", 5.0)
        kwargs.setdefault("function_name", "orders")
        backend = HttpBackend(url, **kwargs)
        created.append(backend)
        return backend

    yield create
    for backend in created:
        # Every test closes what it opens; this only catches a test that forgot.
        assert backend._session is None or backend._session.closed


async def test_http_success_posts_the_event_with_lambda_headers(
    app: FunctionApp, http_backend: Callable[..., HttpBackend]
) -> None:
    backend = http_backend(
        app.url("/ok"),
        headers={"Authorization": "Bearer token", "Lambda-Runtime-Aws-Request-Id": "spoofed"},
    )
    invocation = make_invocation(extra={"mapping": "orders-stream", "shard_id": "shard-0"})
    try:
        result = await backend.invoke(invocation)
    finally:
        await backend.aclose()

    assert result.kind is ResultKind.SUCCESS
    assert result.ok
    assert result.response == {"batchItemFailures": [{"itemIdentifier": "7"}]}
    assert result.status_code == 200
    assert result.error is None
    assert result.function_error is None
    assert result.retry_after is None
    assert result.executed_version == "$LATEST"
    assert result.duration > 0

    [seen] = app.seen
    assert seen.method == "POST"
    assert seen.path == "/ok"
    assert seen.body == PAYLOAD
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Lambda-Runtime-Aws-Request-Id"] == invocation.request_id
    assert seen.headers["Lambda-Runtime-Deadline-Ms"] == str(int(invocation.deadline * 1000))
    assert seen.headers["Lambda-Runtime-Invoked-Function-Arn"] == ARN
    assert seen.headers["X-Esm-Mapping"] == "orders-stream"
    assert seen.headers["X-Esm-Shard-Id"] == "shard-0"
    assert seen.headers["Authorization"] == "Bearer token"
    assert seen.headers["User-Agent"] == f"esm/{__version__}"
    assert seen.headers.getall("Lambda-Runtime-Aws-Request-Id") == [invocation.request_id]


@pytest.mark.parametrize(
    ("path", "kind", "status", "response", "function_error", "error"),
    [
        ("/empty", ResultKind.SUCCESS, 200, None, None, None),
        ("/text", ResultKind.SUCCESS, 200, "all good", None, None),
        (
            "/function-error",
            ResultKind.FUNCTION_ERROR,
            200,
            {"errorMessage": "bad record", "errorType": "ValueError"},
            "Handled",
            "ValueError: bad record",
        ),
        (
            "/bad-request",
            ResultKind.FUNCTION_ERROR,
            400,
            {"message": "missing field"},
            "Unhandled",
            "HTTP 400 Bad Request: missing field",
        ),
        (
            "/crash",
            ResultKind.FUNCTION_ERROR,
            500,
            "Traceback: boom",
            "Unhandled",
            "HTTP 500 Internal Server Error: Traceback: boom",
        ),
        (
            "/throttle",
            ResultKind.THROTTLE,
            429,
            {"message": "busy"},
            None,
            "HTTP 429 Too Many Requests",
        ),
        ("/throttle-bare", ResultKind.THROTTLE, 429, None, None, "HTTP 429 Too Many Requests"),
        ("/missing", ResultKind.FUNCTION_ERROR, 404, "404: Not Found", "Unhandled", None),
    ],
)
async def test_http_answers_are_classified(
    app: FunctionApp,
    http_backend: Callable[..., HttpBackend],
    path: str,
    kind: ResultKind,
    status: int,
    response: Any,
    function_error: str | None,
    error: str | None,
) -> None:
    backend = http_backend(app.url(path))
    try:
        result = await backend.invoke(make_invocation())
    finally:
        await backend.aclose()

    assert result.kind is kind
    assert result.status_code == status
    assert result.response == response
    assert result.function_error == function_error
    if error is not None:
        assert result.error == error
    elif kind is ResultKind.SUCCESS:
        assert result.error is None
    else:
        assert result.error
    assert result.duration > 0


async def test_http_throttle_retry_after_seconds(
    app: FunctionApp, http_backend: Callable[..., HttpBackend]
) -> None:
    backend = http_backend(app.url("/throttle"))
    try:
        with_header = await backend.invoke(make_invocation())
        backend.url = backend.url.with_path("/throttle-bare")
        without = await backend.invoke(make_invocation())
    finally:
        await backend.aclose()
    assert with_header.kind is ResultKind.THROTTLE
    assert with_header.retry_after == 7.0
    assert without.kind is ResultKind.THROTTLE
    assert without.retry_after is None


async def test_http_503_is_a_throttle_with_an_http_date(
    app: FunctionApp, http_backend: Callable[..., HttpBackend]
) -> None:
    backend = http_backend(app.url("/unavailable"))
    try:
        result = await backend.invoke(make_invocation())
    finally:
        await backend.aclose()
    assert result.kind is ResultKind.THROTTLE
    assert result.status_code == 503
    assert result.function_error is None
    assert result.response is None
    assert result.error == "HTTP 503 Service Unavailable"
    # HTTP dates have one-second resolution.
    assert result.retry_after is not None
    assert 28.0 <= result.retry_after <= 30.0


async def test_http_executed_version_header(
    app: FunctionApp, http_backend: Callable[..., HttpBackend]
) -> None:
    backend = http_backend(app.url("/version"))
    try:
        result = await backend.invoke(make_invocation())
    finally:
        await backend.aclose()
    assert result.kind is ResultKind.SUCCESS
    assert result.executed_version == "7"
    assert result.response is None


async def test_http_timeout_is_a_function_error(
    app: FunctionApp, http_backend: Callable[..., HttpBackend]
) -> None:
    backend = http_backend(app.url("/slow"))
    invocation = make_invocation(timeout=0.3)
    try:
        result = await backend.invoke(invocation)
    finally:
        await backend.aclose()
    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.error == "Task timed out after 0.30 seconds"
    assert result.function_error == "Unhandled"
    assert result.status_code == 200
    message = f"RequestId: {invocation.request_id} Error: Task timed out after 0.30 seconds"
    assert result.response == {"errorType": "Sandbox.Timedout", "errorMessage": message}
    assert 0.25 <= result.duration < 2.0
    assert [s.path for s in app.seen] == ["/slow"]


async def test_http_cancellation_propagates(
    app: FunctionApp, http_backend: Callable[..., HttpBackend]
) -> None:
    backend = http_backend(app.url("/slow"))
    result: InvokeResult | None = None
    try:
        with anyio.move_on_after(0.2) as scope:
            result = await backend.invoke(make_invocation(timeout=5.0))
    finally:
        await backend.aclose()
    assert scope.cancelled_caught
    assert result is None


async def test_http_past_deadline_times_out_without_a_request(
    app: FunctionApp, http_backend: Callable[..., HttpBackend]
) -> None:
    backend = http_backend(app.url("/ok"))
    try:
        result = await backend.invoke(make_invocation(timeout=1.0, deadline=time.time() - 1))
    finally:
        await backend.aclose()
    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.error == "Task timed out after 1.00 seconds"
    assert app.seen == []


async def test_http_refused_connection_is_a_system_error(
    http_backend: Callable[..., HttpBackend],
) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens on the port any more
    backend = http_backend(f"http://127.0.0.1:{port}/")
    try:
        result = await backend.invoke(make_invocation())
    finally:
        await backend.aclose()
    assert result.kind is ResultKind.SYSTEM_ERROR
    assert result.status_code == 0
    assert result.response is None
    assert result.function_error is None
    assert result.error is not None
    assert result.error.startswith(f"cannot reach http://127.0.0.1:{port}/")
    assert result.duration > 0


async def test_http_connection_closed_before_an_answer_is_a_system_error(
    http_backend: Callable[..., HttpBackend],
) -> None:
    async def hang_up(stream: SocketStream) -> None:
        await stream.receive()
        await stream.aclose()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    backend = http_backend(f"http://127.0.0.1:{port}/")
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, hang_up)
        try:
            result = await backend.invoke(make_invocation())
        finally:
            await backend.aclose()
            tg.cancel_scope.cancel()
    await listener.aclose()
    assert result.kind is ResultKind.SYSTEM_ERROR
    assert result.status_code == 0
    assert result.error is not None
    assert "cannot reach" in result.error


async def test_http_response_larger_than_lambda_allows(
    app: FunctionApp, http_backend: Callable[..., HttpBackend]
) -> None:
    backend = http_backend(app.url("/huge"))
    try:
        result = await backend.invoke(make_invocation())
    finally:
        await backend.aclose()
    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.function_error == "Unhandled"
    assert result.response["errorType"] == "Function.ResponseSizeTooLarge"


async def test_http_connection_is_kept_alive(
    app: FunctionApp, http_backend: Callable[..., HttpBackend]
) -> None:
    backend = http_backend(app.url("/ok"))
    try:
        first = await backend.invoke(make_invocation())
        second = await backend.invoke(make_invocation())
    finally:
        await backend.aclose()
    assert first.ok
    assert second.ok
    assert app.seen[0].peer == app.seen[1].peer


async def test_http_closed_backend_answers_a_system_error(
    app: FunctionApp, http_backend: Callable[..., HttpBackend]
) -> None:
    backend = http_backend(app.url("/ok"))
    assert isinstance(backend, FunctionBackend)
    await backend.aclose()
    await backend.aclose()
    result = await backend.invoke(make_invocation())
    assert result.kind is ResultKind.SYSTEM_ERROR
    assert app.seen == []


@pytest.mark.parametrize("url", ["ftp://example.com/", "not a url", "http://", "/relative"])
def test_http_rejects_bad_urls(url: str) -> None:
    with pytest.raises(BackendError, match="url"):
        HttpBackend(url, timeout=3, function_name="orders")


def test_http_rejects_non_positive_timeout() -> None:
    with pytest.raises(BackendError, match="timeout"):
        HttpBackend("http://127.0.0.1:8080/", timeout=0, function_name="orders")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("120", 120.0), (" 1.5 ", 1.5), ("0", 0.0), ("-3", None), ("soon", None)],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    value = "Wed, 21 Oct 2015 07:28:00 GMT"
    when = datetime(2015, 10, 21, 7, 28, tzinfo=UTC).timestamp()
    assert parse_retry_after(value, now=when - 10) == 10.0
    assert parse_retry_after(value, now=when + 10) == 0.0  # already passed: retry now
    assert parse_retry_after(value) == 0.0


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("mapping", "X-Esm-Mapping"),
        ("shard", "X-Esm-Shard"),
        ("batch_size", "X-Esm-Batch-Size"),
        ("event-source", "X-Esm-Event-Source"),
    ],
)
def test_extra_header_names(name: str, header: str) -> None:
    assert extra_header_name(name) == header


# ---------------------------------------------------------------------------------------------
# Python backend


def python_backend(handler: str | Callable[..., Any], **kwargs: Any) -> PythonBackend:
    kwargs.setdefault("timeout", 5.0)
    kwargs.setdefault("function_name", "orders")
    return PythonBackend(handler, **kwargs)


@pytest.mark.parametrize(
    "spec",
    [
        "esm.examples.handlers:handle",
        "esm.examples.handlers.handle",  # Lambda's own form
        "esm/examples/handlers.handle",
        "esm.examples.handlers:handle_async",
    ],
)
async def test_python_example_handlers_succeed(spec: str) -> None:
    handlers.reset()
    backend = python_backend(spec)
    assert isinstance(backend, FunctionBackend)
    result = await backend.invoke(make_invocation())
    await backend.aclose()
    assert result.kind is ResultKind.SUCCESS
    assert result.response == {"batchItemFailures": []}
    assert result.status_code == 200
    assert result.error is None
    assert result.function_error is None
    assert result.retry_after is None
    assert result.duration > 0
    assert handlers.stats() == {"invocations": 1, "records": len(RECORDS)}


async def test_python_none_return_is_success() -> None:
    result = await python_backend(lambda event, context: None).invoke(make_invocation())
    assert result.kind is ResultKind.SUCCESS
    assert result.response is None


async def test_python_exception_is_an_unhandled_function_error() -> None:
    invocation = make_invocation()
    result = await python_backend("esm.examples.handlers:fail").invoke(invocation)
    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.function_error == "Unhandled"
    assert result.status_code == 200
    assert result.error == "RuntimeError: example failure on a batch of 3 records"
    assert result.duration > 0
    payload = result.response
    assert set(payload) == {"errorMessage", "errorType", "requestId", "stackTrace"}
    assert payload["errorType"] == "RuntimeError"
    assert payload["errorMessage"] == "example failure on a batch of 3 records"
    assert payload["requestId"] == invocation.request_id
    trace = payload["stackTrace"]
    assert all(isinstance(line, str) for line in trace)
    assert "handlers.py" in trace[0]
    assert "raise RuntimeError" in trace[-1]
    assert not any("esm/backends" in line for line in trace)
    orjson.dumps(payload)  # the error payload itself is JSON


async def test_python_async_exception_has_the_same_shape() -> None:
    async def handler(event: Any, context: Any) -> None:
        await anyio.sleep(0.001)
        raise KeyError("sequenceNumber")

    invocation = make_invocation()
    result = await python_backend(handler).invoke(invocation)
    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.function_error == "Unhandled"
    assert result.error == "KeyError: 'sequenceNumber'"
    assert result.response["errorType"] == "KeyError"
    assert result.response["requestId"] == invocation.request_id
    assert "raise KeyError" in result.response["stackTrace"][-1]


async def test_python_sys_exit_does_not_end_esm() -> None:
    def handler(event: Any, context: Any) -> None:
        sys.exit(3)

    result = await python_backend(handler).invoke(make_invocation())
    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.response["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in result.response["errorMessage"]


async def test_python_sync_timeout_abandons_the_thread() -> None:
    release = threading.Event()

    def handler(event: Any, context: Any) -> dict[str, Any]:
        release.wait(10)
        return {}

    invocation = make_invocation(timeout=0.2)
    try:
        result = await python_backend(handler, timeout=0.2).invoke(invocation)
    finally:
        release.set()
    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.error == "Task timed out after 0.20 seconds"
    assert result.function_error == "Unhandled"
    assert result.response["errorType"] == "Sandbox.Timedout"
    assert invocation.request_id in result.response["errorMessage"]
    assert 0.15 <= result.duration < 2.0


async def test_python_async_timeout() -> None:
    async def handler(event: Any, context: Any) -> dict[str, Any]:
        await anyio.sleep(10)
        return {}

    result = await python_backend(handler, timeout=0.2).invoke(make_invocation(timeout=0.2))
    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.error == "Task timed out after 0.20 seconds"
    assert 0.15 <= result.duration < 2.0


@pytest.mark.parametrize("is_async", [False, True])
async def test_python_cancellation_propagates(is_async: bool) -> None:
    release = threading.Event()

    def sync_handler(event: Any, context: Any) -> None:
        release.wait(10)

    async def async_handler(event: Any, context: Any) -> None:
        await anyio.sleep(10)

    backend = python_backend(async_handler if is_async else sync_handler)
    result: InvokeResult | None = None
    try:
        with anyio.move_on_after(0.2) as scope:
            result = await backend.invoke(make_invocation(timeout=5.0))
    finally:
        release.set()
    assert scope.cancelled_caught
    assert result is None


async def test_python_past_deadline_times_out_without_running() -> None:
    calls: list[Any] = []
    backend = python_backend(lambda event, context: calls.append(event), timeout=1.0)
    result = await backend.invoke(make_invocation(timeout=1.0, deadline=time.time() - 1))
    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.error == "Task timed out after 1.00 seconds"
    assert calls == []


class Unserializable:
    pass


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ({"x": Unserializable()}, "Unserializable"),
        ({"at": datetime(2024, 1, 1, tzinfo=UTC)}, "datetime"),
        ({1, 2}, "set"),
    ],
)
async def test_python_unserializable_return_is_a_marshal_error(value: Any, type_name: str) -> None:
    invocation = make_invocation()
    result = await python_backend(lambda event, context: value).invoke(invocation)
    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.function_error == "Unhandled"
    assert result.response["errorType"] == "Runtime.MarshalError"
    assert result.response["errorMessage"].startswith("Unable to marshal response: ")
    assert type_name in result.response["errorMessage"]
    assert result.response["requestId"] == invocation.request_id
    assert result.error is not None
    assert result.error.startswith("Runtime.MarshalError: ")


@pytest.mark.parametrize(
    ("value", "response"),
    [
        ({"n": Decimal("12"), "f": Decimal("1.5")}, {"n": 12, "f": 1.5}),
        ({1: "a", "b": (1, 2)}, {"1": "a", "b": [1, 2]}),
        (b'{"batchItemFailures": []}', {"batchItemFailures": []}),
        (b"plain", "plain"),
        ("text", "text"),
    ],
)
async def test_python_return_goes_through_json(value: Any, response: Any) -> None:
    result = await python_backend(lambda event, context: value).invoke(make_invocation())
    assert result.kind is ResultKind.SUCCESS
    assert result.response == response


async def test_python_response_is_a_copy() -> None:
    answer: dict[str, Any] = {"batchItemFailures": []}
    result = await python_backend(lambda event, context: answer).invoke(make_invocation())
    answer["batchItemFailures"].append({"itemIdentifier": "late"})
    assert result.response == {"batchItemFailures": []}


@pytest.mark.parametrize("is_async", [False, True])
async def test_python_event_mutation_does_not_leak_into_a_retry(is_async: bool) -> None:
    seen: list[int] = []

    def mutate(event: dict[str, Any]) -> None:
        seen.append(len(event["Records"]))
        event["Records"][0]["kinesis"]["data"] = "changed"
        event["Records"].clear()

    async def async_handler(event: dict[str, Any], context: Any) -> None:
        mutate(event)

    def sync_handler(event: dict[str, Any], context: Any) -> None:
        mutate(event)

    backend = python_backend(async_handler if is_async else sync_handler)
    invocation = make_invocation()
    assert (await backend.invoke(invocation)).ok
    assert (await backend.invoke(invocation)).ok
    assert seen == [3, 3]
    assert invocation.payload == PAYLOAD


async def test_python_context_attributes() -> None:
    contexts: list[Any] = []

    def handler(event: Any, context: Any) -> int:
        contexts.append(context)
        return int(context.get_remaining_time_in_millis())

    backend = python_backend(handler, timeout=3.0, function_name="orders", memory_size=512)
    invocation = make_invocation(timeout=3.0)
    result = await backend.invoke(invocation)
    assert result.ok
    assert 2000 < result.response <= 3000

    [context] = contexts
    assert isinstance(context, LambdaContext)
    assert context.aws_request_id == invocation.request_id
    assert context.function_name == "orders"
    assert context.function_version == "$LATEST"
    assert context.invoked_function_arn == ARN
    assert context.memory_limit_in_mb == "512"  # a str, as in Lambda's Python runtime
    assert context.log_group_name == "/aws/lambda/orders"
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", context.log_stream_name)
    assert context.identity.cognito_identity_id is None
    assert context.identity.cognito_identity_pool_id is None
    assert context.client_context is None
    assert "aws_request_id=" in repr(context)

    await backend.invoke(make_invocation())
    assert contexts[1].log_stream_name == context.log_stream_name  # one per environment
    assert contexts[1].aws_request_id != context.aws_request_id


def test_context_remaining_time_never_negative() -> None:
    context = LambdaContext(
        aws_request_id="r",
        function_name="orders",
        invoked_function_arn=ARN,
        memory_limit_in_mb=128,
        deadline_ms=int((time.time() - 5) * 1000),
        log_stream_name=new_log_stream_name(),
    )
    assert context.get_remaining_time_in_millis() == 0


async def test_python_sync_handlers_run_in_threads_and_async_on_the_loop() -> None:
    loop_thread = threading.get_ident()

    async def async_handler(event: Any, context: Any) -> int:
        return threading.get_ident()

    sync_result = await python_backend(lambda e, c: threading.get_ident()).invoke(make_invocation())
    async_result = await python_backend(async_handler).invoke(make_invocation())
    assert sync_result.response != loop_thread
    assert async_result.response == loop_thread


async def test_python_async_handler_behind_a_sync_decorator_is_awaited() -> None:
    async def handler(event: Any, context: Any) -> dict[str, int]:
        await anyio.sleep(0.001)
        return {"records": len(event["Records"])}

    def decorated(event: Any, context: Any) -> Awaitable[dict[str, int]]:
        return handler(event, context)

    class AsyncCallable:
        async def __call__(self, event: Any, context: Any) -> dict[str, int]:
            return await handler(event, context)

    for wrapped in (decorated, AsyncCallable()):
        result = await python_backend(wrapped).invoke(make_invocation())
        assert result.kind is ResultKind.SUCCESS
        assert result.response == {"records": 3}


async def test_python_sync_handlers_share_a_bounded_thread_pool() -> None:
    lock = threading.Lock()
    running = 0
    peak = 0

    def handler(event: Any, context: Any) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    backend = python_backend(handler, max_threads=2)
    results: list[InvokeResult] = []

    async def one() -> None:
        results.append(await backend.invoke(make_invocation()))

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(one)
    assert [r.kind for r in results] == [ResultKind.SUCCESS] * 6
    assert peak == 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "expected 'package.module:function'"),
        ("handle", "expected 'package.module:function'"),
        ("esm.examples.handlers:", "expected 'package.module:function'"),
        ("esm_no_such_module_x:handle", "unable to import module 'esm_no_such_module_x'"),
        ("esm.examples.handlers:missing", "has no attribute 'missing'"),
        ("esm.examples.handlers:logger.nope", "has no attribute 'logger.nope'"),
        ("esm.examples.handlers:_records", "is a int, not a callable"),
    ],
)
def test_python_bad_handlers_raise_backend_error(spec: str, message: str) -> None:
    with pytest.raises(BackendError, match=re.escape(message)):
        python_backend(spec)


def test_python_handler_must_be_callable() -> None:
    with pytest.raises(BackendError, match="handler must be"):
        python_backend(42)  # type: ignore[arg-type]


def test_python_handler_module_that_fails_to_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "esm_test_broken_module.py").write_text("raise ValueError('no config')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    with pytest.raises(BackendError, match="ValueError: no config"):
        load_handler("esm_test_broken_module:handle")


def test_python_handler_is_imported_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = "esm_test_task_root_app"
    (tmp_path / module).mkdir()
    (tmp_path / module / "__init__.py").write_text("")
    (tmp_path / module / "handlers.py").write_text(
        textwrap.dedent(
            """
            def handle(event, context):
                return {"count": len(event["Records"])}
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    for name in (module, f"{module}.handlers"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    handler = load_handler(f"{module}.handlers:handle")
    assert sys.path[0] == str(tmp_path)
    assert handler({"Records": [1, 2]}, None) == {"count": 2}
    for name in (module, f"{module}.handlers"):
        sys.modules.pop(name, None)
