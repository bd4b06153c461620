"""Tests for the runtime backend: esm's Runtime API, driven by awslambdaric and by plain HTTP."""

from __future__ import annotations

import dataclasses
import io
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import aiohttp
import anyio
import orjson
import pytest
import structlog
from anyio.abc import Process

from esm.backends.runtime import RuntimeApiBackend
from esm.errors import BackendError
from esm.model import MAX_INVOKE_PAYLOAD_BYTES, Invocation, InvokeResult, ResultKind
from esm.protocols import FunctionBackend

pytestmark = pytest.mark.anyio

ARN = "arn:aws:lambda:us-east-1:000000000000:function:orders"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
API = "/2018-06-01/runtime"

Spawn = Callable[..., Awaitable[Process]]


def make_invocation(event: Any = None, timeout: float = 5.0) -> Invocation:
    return Invocation(
        payload=orjson.dumps(event if event is not None else {"Records": [{"eventID": "1"}]}),
        request_id=str(uuid.uuid4()),
        function_name="orders",
        function_arn=ARN,
        timeout=timeout,
        deadline=time.time() + timeout,
        memory_limit_mb=256,
    )


@pytest.fixture
async def backend() -> AsyncIterator[RuntimeApiBackend]:
    runtime = RuntimeApiBackend(port=0, function_name="orders", timeout=5.0, memory_size=256)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.aclose()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def url(backend: RuntimeApiBackend, path: str) -> str:
    return f"http://{backend.address}{API}{path}"


async def wait_for(condition: Callable[[], bool], seconds: float = 15.0) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.01)


@pytest.fixture
async def spawn(backend: RuntimeApiBackend, tmp_path: Path) -> AsyncIterator[Spawn]:
    """Starts awslambdaric runtime clients against `backend`; every one is killed at the end."""
    pytest.importorskip("awslambdaric")
    started: list[tuple[Process, IO[bytes]]] = []

    async def start(handler: str = "runtime_handlers.handler") -> Process:
        log = (tmp_path / f"client-{len(started)}.log").open("wb")
        env = {**os.environ, **backend.runtime_environment(), "PYTHONPATH": str(FIXTURES)}
        process = await anyio.open_process(
            [sys.executable, "-m", "awslambdaric", handler],
            env=env,
            stdin=None,
            stdout=log,
            stderr=log,
        )
        started.append((process, log))
        return process

    try:
        yield start
    finally:
        with anyio.fail_after(10, shield=True):
            for process, log in started:
                if process.returncode is None:
                    process.kill()
                await process.wait()
                await process.aclose()
                log.close()


async def invoke_soon(
    backend: RuntimeApiBackend, invocation: Invocation, results: list[InvokeResult]
) -> None:
    results.append(await backend.invoke(invocation))


# ---------------------------------------------------------------------------------------------
# With the real runtime interface client


async def test_runtime_client_receives_the_event_and_its_answer_is_parsed(
    backend: RuntimeApiBackend, spawn: Spawn
) -> None:
    await spawn()
    invocation = make_invocation({"action": "echo", "n": 1})

    result = await backend.invoke(invocation)

    assert result.kind is ResultKind.SUCCESS, result
    answer = result.response
    assert answer["event"] == {"action": "echo", "n": 1}
    assert answer["aws_request_id"] == invocation.request_id
    assert answer["invoked_function_arn"] == ARN
    assert answer["function_name"] == "orders"
    assert answer["memory_limit_in_mb"] == "256"
    assert 0 < answer["remaining_ms"] <= 5000
    assert answer["trace_id"].startswith("Root=1-")
    assert result.duration > 0
    assert backend.running == 0


async def test_raised_exception_is_a_function_error_with_lambdas_error_payload(
    backend: RuntimeApiBackend, spawn: Spawn
) -> None:
    await spawn()

    result = await backend.invoke(make_invocation({"action": "raise", "message": "no sku"}))

    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.function_error == "Unhandled"
    assert result.error == "RecordRejected: no sku"
    assert result.response["errorType"] == "RecordRejected"
    assert result.response["errorMessage"] == "no sku"
    assert any("runtime_handlers.py" in line for line in result.response["stackTrace"])


async def test_two_runtime_clients_run_two_invocations_at_once(
    backend: RuntimeApiBackend, spawn: Spawn
) -> None:
    await spawn()
    await spawn()
    await wait_for(lambda: backend.waiting_clients == 2)
    results: list[InvokeResult] = []

    async with anyio.create_task_group() as tg:
        for _ in range(2):
            tg.start_soon(invoke_soon, backend, make_invocation({"action": "sleep"}), results)

    first, second = (result.response for result in results)
    assert all(result.kind is ResultKind.SUCCESS for result in results)
    assert first["pid"] != second["pid"]
    # Each ran while the other was running.
    assert first["started"] < second["ended"]
    assert second["started"] < first["ended"]


async def test_runtime_client_killed_mid_invocation_is_a_timeout(
    backend: RuntimeApiBackend, spawn: Spawn
) -> None:
    client = await spawn()
    results: list[InvokeResult] = []
    invocation = make_invocation({"action": "hang"}, timeout=2.0)

    with structlog.testing.capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(invoke_soon, backend, invocation, results)
            await wait_for(lambda: backend.running == 1)
            client.kill()

    [result] = results
    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.error == "Task timed out after 2.00 seconds"
    assert result.response["errorType"] == "Sandbox.Timedout"
    assert result.duration >= 1.9
    assert backend.running == 0
    [line] = [line for line in logs if line["event"] == "invocation timed out"]
    assert line["function"] == "orders"
    assert line["request_id"] == invocation.request_id


async def test_init_error_is_logged_and_invocations_wait_for_a_client_that_starts(
    backend: RuntimeApiBackend, spawn: Spawn
) -> None:
    with structlog.testing.capture_logs() as logs:
        broken = await spawn("runtime_handlers.no_such_handler")
        with anyio.fail_after(15):
            await broken.wait()
    assert backend.last_init_error["errorType"] == "Runtime.HandlerNotFound"
    [line] = [line for line in logs if line["event"] == "runtime client failed to initialize"]
    assert line["function"] == "orders"
    assert "Runtime.HandlerNotFound" in line["error"]

    # Nobody polls: the invocation is not the function's failure.
    result = await backend.invoke(make_invocation({"action": "echo"}, timeout=0.3))
    assert result.kind is ResultKind.SYSTEM_ERROR
    assert result.error is not None
    assert "no runtime client is connected" in result.error
    assert "Runtime.HandlerNotFound" in result.error

    # An invocation queued before a good client starts is taken once it polls.
    results: list[InvokeResult] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(invoke_soon, backend, make_invocation({"action": "echo"}), results)
        await spawn()
    [result] = results
    assert result.kind is ResultKind.SUCCESS


# ---------------------------------------------------------------------------------------------
# The protocol, over plain HTTP


async def next_invocation(
    session: aiohttp.ClientSession, backend: RuntimeApiBackend
) -> tuple[int, dict[str, str], bytes]:
    async with session.get(url(backend, "/invocation/next")) as response:
        return response.status, dict(response.headers), await response.read()


async def post(
    session: aiohttp.ClientSession,
    backend: RuntimeApiBackend,
    path: str,
    body: bytes | IO[bytes],
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    async with session.post(url(backend, path), data=body, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def test_next_answers_the_event_with_the_runtime_headers(
    backend: RuntimeApiBackend, session: aiohttp.ClientSession
) -> None:
    invocation = make_invocation()
    results: list[InvokeResult] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(invoke_soon, backend, invocation, results)
        status, headers, body = await next_invocation(session, backend)
        assert status == 200
        assert body == invocation.payload
        assert headers["Content-Type"] == "application/json"
        assert headers["Lambda-Runtime-Aws-Request-Id"] == invocation.request_id
        assert headers["Lambda-Runtime-Invoked-Function-Arn"] == ARN
        deadline_ms = int(headers["Lambda-Runtime-Deadline-Ms"])
        assert time.time() * 1000 < deadline_ms <= invocation.deadline * 1000 + 1
        assert headers["Lambda-Runtime-Trace-Id"].startswith("Root=1-")
        # Lambda sends these only for invocations from the mobile SDKs.
        assert "Lambda-Runtime-Client-Context" not in headers
        assert "Lambda-Runtime-Cognito-Identity" not in headers
        assert backend.running == 1

        status, answer = await post(
            session,
            backend,
            f"/invocation/{invocation.request_id}/response",
            b'{"batchItemFailures": []}',
        )
        assert (status, answer) == (202, {"status": "OK"})

    [result] = results
    assert result.kind is ResultKind.SUCCESS
    assert result.response == {"batchItemFailures": []}


async def test_a_traced_invocation_hands_its_span_to_the_runtime_in_both_forms(
    backend: RuntimeApiBackend, session: aiohttp.ClientSession
) -> None:
    traceparent = "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"
    invocation = dataclasses.replace(
        make_invocation(), trace_headers={"traceparent": traceparent, "tracestate": "v=1"}
    )
    results: list[InvokeResult] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(invoke_soon, backend, invocation, results)
        _, headers, _ = await next_invocation(session, backend)
        # X-Ray's form, which runtimes put in _X_AMZN_TRACE_ID, names the same span.
        assert headers["Lambda-Runtime-Trace-Id"] == (
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
        )
        assert (headers["traceparent"], headers["tracestate"]) == (traceparent, "v=1")
        await post(session, backend, f"/invocation/{invocation.request_id}/response", b"{}")
    assert results[0].ok


async def test_error_answer_is_a_function_error_named_by_its_body_or_header(
    backend: RuntimeApiBackend, session: aiohttp.ClientSession
) -> None:
    results: list[InvokeResult] = []
    async with anyio.create_task_group() as tg:
        for _ in range(2):
            tg.start_soon(invoke_soon, backend, make_invocation(), results)
        _, first, _ = await next_invocation(session, backend)
        _, second, _ = await next_invocation(session, backend)
        error = {"errorType": "KeyError", "errorMessage": "'sku'"}
        status, _ = await post(
            session,
            backend,
            f"/invocation/{first['Lambda-Runtime-Aws-Request-Id']}/error",
            orjson.dumps(error),
            {"Lambda-Runtime-Function-Error-Type": "Runtime.Unknown"},
        )
        assert status == 202
        status, _ = await post(
            session,
            backend,
            f"/invocation/{second['Lambda-Runtime-Aws-Request-Id']}/error",
            b"",
            {"Lambda-Runtime-Function-Error-Type": "Runtime.ExitError"},
        )
        assert status == 202

    by_error = {result.error: result for result in results}
    assert set(by_error) == {"KeyError: 'sku'", "Runtime.ExitError"}
    assert by_error["KeyError: 'sku'"].response == error
    assert by_error["Runtime.ExitError"].response is None
    assert all(r.kind is ResultKind.FUNCTION_ERROR for r in results)
    assert all(r.function_error == "Unhandled" for r in results)


async def test_answer_for_an_unknown_request_id_is_400(
    backend: RuntimeApiBackend, session: aiohttp.ClientSession
) -> None:
    for kind in ("response", "error"):
        status, answer = await post(session, backend, f"/invocation/nope/{kind}", b"{}")
        assert status == 400
        assert answer["errorType"] == "InvalidRequestID"


async def test_second_answer_for_the_same_invocation_is_403(
    backend: RuntimeApiBackend, session: aiohttp.ClientSession
) -> None:
    invocation = make_invocation()
    results: list[InvokeResult] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(invoke_soon, backend, invocation, results)
        await next_invocation(session, backend)
        path = f"/invocation/{invocation.request_id}"
        assert (await post(session, backend, f"{path}/response", b"1"))[0] == 202
        for kind in ("response", "error"):
            status, answer = await post(session, backend, f"{path}/{kind}", b"2")
            assert status == 403
            assert answer["errorType"] == "InvalidStateTransition"
    [result] = results
    assert result.response == 1


async def test_late_answer_after_the_timeout_is_refused(
    backend: RuntimeApiBackend, session: aiohttp.ClientSession
) -> None:
    invocation = make_invocation(timeout=0.3)
    results: list[InvokeResult] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(invoke_soon, backend, invocation, results)
        await next_invocation(session, backend)
    [result] = results
    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.error == "Task timed out after 0.30 seconds"

    status, answer = await post(
        session, backend, f"/invocation/{invocation.request_id}/response", b"{}"
    )
    assert status == 403
    assert "timed out" in answer["errorMessage"]


async def test_no_runtime_client_is_a_system_error(backend: RuntimeApiBackend) -> None:
    result = await backend.invoke(make_invocation(timeout=0.2))

    assert result.kind is ResultKind.SYSTEM_ERROR
    assert result.error == (
        f"no runtime client is connected to AWS_LAMBDA_RUNTIME_API={backend.address}"
    )


async def test_all_runtime_clients_busy_is_a_throttle(
    backend: RuntimeApiBackend, session: aiohttp.ClientSession
) -> None:
    busy = make_invocation()
    results: list[InvokeResult] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(invoke_soon, backend, busy, results)
        await next_invocation(session, backend)
        throttled = await backend.invoke(make_invocation(timeout=0.2))
        await post(session, backend, f"/invocation/{busy.request_id}/response", b"{}")

    assert throttled.kind is ResultKind.THROTTLE
    assert throttled.error == "all 1 runtime clients stayed busy for 0.20 seconds"
    assert results[0].ok


async def test_each_invocation_goes_to_exactly_one_waiting_client(
    backend: RuntimeApiBackend, session: aiohttp.ClientSession
) -> None:
    polls: list[dict[str, str]] = []

    async def poll() -> None:
        polls.append((await next_invocation(session, backend))[1])

    invocations = [make_invocation() for _ in range(3)]
    results: list[InvokeResult] = []
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(poll)
        await wait_for(lambda: backend.waiting_clients == 3)
        for invocation in invocations[:2]:
            tg.start_soon(invoke_soon, backend, invocation, results)
        await wait_for(lambda: len(polls) == 2)
        await anyio.sleep(0.1)
        assert len(polls) == 2
        assert backend.waiting_clients == 1
        tg.start_soon(invoke_soon, backend, invocations[2], results)
        await wait_for(lambda: len(polls) == 3)
        for headers in polls:
            request_id = headers["Lambda-Runtime-Aws-Request-Id"]
            await post(session, backend, f"/invocation/{request_id}/response", b"{}")

    ids = sorted(headers["Lambda-Runtime-Aws-Request-Id"] for headers in polls)
    assert ids == sorted(invocation.request_id for invocation in invocations)
    assert [result.kind for result in results] == [ResultKind.SUCCESS] * 3


async def test_client_that_hangs_up_while_polling_gets_no_invocation(
    backend: RuntimeApiBackend,
) -> None:
    async with aiohttp.ClientSession() as gone:
        with anyio.move_on_after(0.3):
            await next_invocation(gone, backend)
    await wait_for(lambda: backend.waiting_clients == 0, seconds=5)

    result = await backend.invoke(make_invocation(timeout=0.2))

    assert result.kind is ResultKind.SYSTEM_ERROR


async def test_oversized_answer_is_413_and_a_function_error(
    backend: RuntimeApiBackend, session: aiohttp.ClientSession
) -> None:
    invocation = make_invocation()
    results: list[InvokeResult] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(invoke_soon, backend, invocation, results)
        await next_invocation(session, backend)
        status, answer = await post(
            session,
            backend,
            f"/invocation/{invocation.request_id}/response",
            io.BytesIO(b"x" * (MAX_INVOKE_PAYLOAD_BYTES + 1)),
        )
    assert status == 413
    assert answer["errorType"] == "RequestEntityTooLarge"
    [result] = results
    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.response["errorType"] == "Function.ResponseSizeTooLarge"


async def test_init_error_is_accepted_and_kept(
    backend: RuntimeApiBackend, session: aiohttp.ClientSession
) -> None:
    error = {"errorType": "Runtime.ImportModuleError", "errorMessage": "No module named 'x'"}
    status, answer = await post(
        session,
        backend,
        "/init/error",
        orjson.dumps(error),
        {"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"},
    )
    assert (status, answer) == (202, {"status": "OK"})
    assert backend.last_init_error == error


async def test_invoke_starts_the_server_when_start_was_not_called() -> None:
    runtime = RuntimeApiBackend(port=0, function_name="orders", timeout=5.0)
    assert isinstance(runtime, FunctionBackend)
    invocation = make_invocation()
    results: list[InvokeResult] = []
    try:
        async with anyio.create_task_group() as tg, aiohttp.ClientSession() as session:
            tg.start_soon(invoke_soon, runtime, invocation, results)
            await wait_for(lambda: runtime.port != 0)
            await next_invocation(session, runtime)
            await post(session, runtime, f"/invocation/{invocation.request_id}/response", b"7")
    finally:
        await runtime.aclose()
    assert results[0].response == 7


async def test_close_ends_polls_and_invocations_and_later_invokes() -> None:
    async with RuntimeApiBackend(port=0, function_name="orders", timeout=5.0) as runtime:
        statuses: list[int] = []
        results: list[InvokeResult] = []

        async def poll(session: aiohttp.ClientSession) -> None:
            statuses.append((await next_invocation(session, runtime))[0])

        async with anyio.create_task_group() as tg, aiohttp.ClientSession() as session:
            tg.start_soon(poll, session)
            tg.start_soon(invoke_soon, runtime, make_invocation(), results)
            await wait_for(lambda: runtime.running == 1)
            tg.start_soon(poll, session)
            await wait_for(lambda: runtime.waiting_clients == 1)
            await runtime.aclose()

    assert statuses == [200, 500]
    [result] = results
    assert result.kind is ResultKind.SYSTEM_ERROR
    after = await runtime.invoke(make_invocation())
    assert after.kind is ResultKind.SYSTEM_ERROR
    assert after.error == "the runtime backend is closed"


async def test_address_in_use_is_a_backend_error(backend: RuntimeApiBackend) -> None:
    other = RuntimeApiBackend(port=backend.port, function_name="orders", timeout=1.0)
    with pytest.raises(BackendError, match="cannot listen on"):
        await other.start()
    result = await other.invoke(make_invocation(timeout=0.2))
    assert result.kind is ResultKind.SYSTEM_ERROR
    await other.aclose()


def test_invalid_settings_are_backend_errors() -> None:
    with pytest.raises(BackendError, match="timeout must be positive"):
        RuntimeApiBackend(port=9001, function_name="orders", timeout=0)
    with pytest.raises(BackendError, match="out of range"):
        RuntimeApiBackend(port=70000, function_name="orders", timeout=1)


def test_runtime_environment_names_the_api_and_the_function() -> None:
    runtime = RuntimeApiBackend(port=9001, function_name="orders", timeout=30, memory_size=512)
    env = runtime.runtime_environment()
    assert env["AWS_LAMBDA_RUNTIME_API"] == "127.0.0.1:9001"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "orders"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
