"""Tests for the command backend: per-batch processes and persistent workers, run for real."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from structlog.testing import capture_logs

from esm.backends.command import CommandBackend, Mode
from esm.errors import BackendError
from esm.model import Invocation, InvokeResult, ResultKind
from esm.protocols import FunctionBackend

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
BATCH = [sys.executable, str(FIXTURES / "command_batch.py")]
WORKER = [sys.executable, str(FIXTURES / "command_worker.py")]
ARN = "arn:aws:lambda:us-east-1:000000000000:function:orders"
RECORDS = [{"eventID": f"shardId-000000000000:{n}"} for n in range(3)]


def invocation(timeout: float = 10.0, **event: Any) -> Invocation:
    return Invocation(
        payload=orjson.dumps({"Records": RECORDS, **event}),
        request_id=str(uuid.uuid4()),
        function_name="orders",
        function_arn=ARN,
        timeout=timeout,
        deadline=time.time() + timeout,
        memory_limit_mb=256,
    )


BackendMaker = Callable[..., CommandBackend]


@pytest.fixture
async def make_backend() -> AsyncIterator[BackendMaker]:
    """Backends that are closed (and their processes reaped) when the test ends."""
    made: list[CommandBackend] = []

    def make(
        mode: Mode = "per-batch", argv: list[str] | None = None, **kwargs: Any
    ) -> CommandBackend:
        if argv is None:
            argv = BATCH if mode == "per-batch" else WORKER
        kwargs.setdefault("timeout", 10.0)
        backend = CommandBackend(argv, mode=mode, function_name="orders", **kwargs)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.aclose()


def gone(pid: int) -> bool:
    """The process no longer runs (a zombie waiting for its new parent to reap it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


async def wait_gone(pid: int) -> bool:
    with anyio.move_on_after(3):
        while not gone(pid):
            await anyio.sleep(0.02)
    return gone(pid)


def pid_in(path: Path) -> int | None:
    text = path.read_text() if path.exists() else ""
    return int(text) if text else None


async def read_pid(path: Path) -> int:
    """The pid a handler wrote to `path`, once it has."""
    with anyio.fail_after(5):
        while (pid := pid_in(path)) is None:
            await anyio.sleep(0.01)
    return pid


def assert_timed_out(result: InvokeResult, timeout: float) -> None:
    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.error == f"Task timed out after {timeout:.2f} seconds"
    assert result.function_error == "Unhandled"
    assert result.response["errorType"] == "Sandbox.Timedout"
    assert result.duration >= timeout


# ---------------------------------------------------------------------------------------------
# Construction


def test_is_a_function_backend() -> None:
    backend = CommandBackend(BATCH, mode="per-batch", timeout=1, function_name="orders")
    assert isinstance(backend, FunctionBackend)


def test_a_command_line_string_is_split_like_a_shell_would() -> None:
    backend = CommandBackend(
        "python3 'my handler.py' --flag", mode="per-batch", timeout=1, function_name="orders"
    )
    assert backend.argv == ("python3", "my handler.py", "--flag")


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"argv": []}, "command must not be empty"),
        ({"mode": "forever"}, "mode must be one of per-batch, persistent"),
        ({"timeout": 0}, "timeout must be positive"),
        ({"workers": 0}, "workers must be at least 1"),
    ],
)
def test_invalid_settings_are_refused(kwargs: dict[str, Any], problem: str) -> None:
    settings: dict[str, Any] = {"argv": BATCH, "mode": "per-batch", "timeout": 1, **kwargs}
    with pytest.raises(BackendError, match=problem):
        CommandBackend(settings.pop("argv"), function_name="orders", **settings)


# ---------------------------------------------------------------------------------------------
# per-batch


async def test_per_batch_success(make_backend: BackendMaker) -> None:
    result = await make_backend().invoke(invocation())
    assert result.kind is ResultKind.SUCCESS
    assert result.response == {"count": 3}
    assert result.duration > 0


async def test_per_batch_partial_failure_answer_is_passed_through(
    make_backend: BackendMaker,
) -> None:
    result = await make_backend().invoke(invocation(action="partial"))
    assert result.kind is ResultKind.SUCCESS
    assert result.response == {"batchItemFailures": [{"itemIdentifier": "x"}]}


@pytest.mark.parametrize(
    ("action", "response"), [("text", "plain text, not JSON"), ("empty", None)]
)
async def test_per_batch_answer_that_is_not_json(
    make_backend: BackendMaker, action: str, response: Any
) -> None:
    result = await make_backend().invoke(invocation(action=action))
    assert result.kind is ResultKind.SUCCESS
    assert result.response == response


async def test_per_batch_command_need_not_read_its_event(make_backend: BackendMaker) -> None:
    # Larger than a pipe's buffer, so writing it fails once the command has exited.
    big = invocation(blob="x" * 1_000_000)
    result = await make_backend(argv=[sys.executable, "-c", "print(1)"]).invoke(big)
    assert result.kind is ResultKind.SUCCESS
    assert result.response == 1


async def test_per_batch_answer_over_6_mb_is_too_large(make_backend: BackendMaker) -> None:
    argv = [sys.executable, "-c", "import sys; sys.stdout.write('x' * 7_000_000)"]
    result = await make_backend(argv=argv).invoke(invocation())
    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.response["errorType"] == "Function.ResponseSizeTooLarge"


async def test_per_batch_non_zero_exit_is_a_function_error(make_backend: BackendMaker) -> None:
    call = invocation(action="exit", code=3)
    result = await make_backend().invoke(call)
    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.function_error == "Unhandled"
    assert result.error == "exit status 3: ValueError: record 2 is malformed"
    assert result.response["errorType"] == "Runtime.ExitError"
    assert result.response["errorMessage"] == (
        f"RequestId: {call.request_id} Error: Runtime exited with error: exit status 3"
    )
    assert result.duration > 0


async def test_per_batch_timeout_kills_the_whole_process_group(
    make_backend: BackendMaker, tmp_path: Path
) -> None:
    pidfile = tmp_path / "grandchild"
    # The handler and its grandchild ignore SIGTERM: only the group's SIGKILL stops them.
    backend = make_backend(timeout=0.5, env={"IGNORE_SIGTERM": "1"})
    result = await backend.invoke(invocation(action="hang", pidfile=str(pidfile)))
    assert_timed_out(result, 0.5)
    assert await wait_gone(await read_pid(pidfile))


async def test_per_batch_leftover_processes_are_stopped_when_the_command_exits(
    make_backend: BackendMaker, tmp_path: Path
) -> None:
    pidfile = tmp_path / "grandchild"
    started = time.monotonic()
    result = await make_backend().invoke(invocation(action="background", pidfile=str(pidfile)))
    # Answered when the handler exited, although its grandchild still held stdout open.
    assert time.monotonic() - started < 5
    assert result.kind is ResultKind.SUCCESS
    assert result.response == {"grandchild": await read_pid(pidfile)}
    assert await wait_gone(result.response["grandchild"])


async def test_per_batch_cancellation_kills_the_process_group(
    make_backend: BackendMaker, tmp_path: Path
) -> None:
    pidfile = tmp_path / "grandchild"
    backend = make_backend()
    with anyio.move_on_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(backend.invoke, invocation(action="hang", pidfile=str(pidfile)))
            pid = await read_pid(pidfile)
            tg.cancel_scope.cancel()
    assert await wait_gone(pid)


async def test_per_batch_stderr_lines_are_logged_not_answered(make_backend: BackendMaker) -> None:
    call = invocation(action="stderr")
    with capture_logs() as logs:
        result = await make_backend().invoke(call)
    assert result.response == "logged"
    lines = [entry for entry in logs if entry["event"] == "function log"]
    assert [entry["line"] for entry in lines] == [
        "first line",
        "second line",
        "no newline at the end",
    ]
    for entry in lines:
        assert entry["function"] == "orders"
        assert entry["request_id"] == call.request_id
        assert entry["log_level"] == "info"


async def test_per_batch_lambda_context_in_the_environment(
    make_backend: BackendMaker, tmp_path: Path
) -> None:
    call = invocation(action="env")
    backend = make_backend(
        env={"MY_SETTING": "on", "AWS_LAMBDA_FUNCTION_NAME": "not-allowed"}, cwd=str(tmp_path)
    )
    result = await backend.invoke(call)
    assert result.kind is ResultKind.SUCCESS
    env = result.response["env"]
    assert result.response["cwd"] == str(tmp_path)
    assert env["MY_SETTING"] == "on"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "orders"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/orders"
    assert re.fullmatch(
        r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", env["AWS_LAMBDA_LOG_STREAM_NAME"]
    )
    assert env["ESM_REQUEST_ID"] == call.request_id
    assert env["ESM_DEADLINE_MS"] == str(int(call.deadline * 1000))
    assert env["ESM_FUNCTION_ARN"] == ARN
    assert "TRACEPARENT" not in env


async def test_per_batch_trace_context_in_the_environment(make_backend: BackendMaker) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    call = dataclasses.replace(
        invocation(action="env"), trace_headers={"traceparent": traceparent, "tracestate": "v=1"}
    )
    result = await make_backend().invoke(call)
    env = result.response["env"]
    assert (env["TRACEPARENT"], env["TRACESTATE"]) == (traceparent, "v=1")


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["/nonexistent/handler"], "No such file or directory"),
        ([str(FIXTURES / "command_batch.py")], "Permission denied"),
    ],
    ids=["not-found", "not-executable"],
)
@pytest.mark.parametrize("mode", ["per-batch", "persistent"])
async def test_a_command_that_cannot_start_is_a_system_error(
    make_backend: BackendMaker, argv: list[str], reason: str, mode: Mode
) -> None:
    result = await make_backend(mode, argv=argv).invoke(invocation())
    assert result.kind is ResultKind.SYSTEM_ERROR
    assert result.error == f"cannot start command {argv[0]!r}: {reason}"
    assert result.duration > 0


async def test_a_missing_working_directory_is_named(make_backend: BackendMaker) -> None:
    result = await make_backend(cwd="/nonexistent/dir").invoke(invocation())
    assert result.kind is ResultKind.SYSTEM_ERROR
    assert result.error is not None
    assert "working directory '/nonexistent/dir'" in result.error


# ---------------------------------------------------------------------------------------------
# persistent


async def test_persistent_success_reuses_the_worker(make_backend: BackendMaker) -> None:
    backend = make_backend("persistent")
    first = await backend.invoke(invocation())
    second = await backend.invoke(invocation())
    assert first.kind is ResultKind.SUCCESS
    assert first.response["count"] == 3
    assert first.duration > 0
    assert second.response == first.response


async def test_persistent_request_line(make_backend: BackendMaker) -> None:
    call = invocation(action="request")
    result = await make_backend("persistent").invoke(call)
    assert result.response == {
        "requestId": call.request_id,
        "deadlineMs": int(call.deadline * 1000),
        "functionArn": ARN,
    }


async def test_persistent_event_with_line_breaks_stays_one_line(
    make_backend: BackendMaker,
) -> None:
    call = invocation()
    pretty = orjson.dumps(orjson.loads(call.payload), option=orjson.OPT_INDENT_2)
    assert b"\n" in pretty
    result = await make_backend("persistent").invoke(replace(call, payload=pretty))
    assert result.kind is ResultKind.SUCCESS
    assert result.response["count"] == 3


async def test_persistent_partial_failure_answer_is_passed_through(
    make_backend: BackendMaker,
) -> None:
    result = await make_backend("persistent").invoke(invocation(action="partial"))
    assert result.kind is ResultKind.SUCCESS
    assert result.response == {"batchItemFailures": [{"itemIdentifier": "x"}]}


async def test_persistent_error_answer_keeps_the_worker(make_backend: BackendMaker) -> None:
    backend = make_backend("persistent")
    before = await backend.invoke(invocation())
    result = await backend.invoke(invocation(action="error"))
    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.function_error == "Unhandled"
    assert result.error == "ValueError: record 2 is malformed"
    assert result.response == {"errorMessage": "record 2 is malformed", "errorType": "ValueError"}
    after = await backend.invoke(invocation())
    assert after.response["pid"] == before.response["pid"]


async def test_persistent_worker_crash_then_the_next_invocation_restarts_it(
    make_backend: BackendMaker,
) -> None:
    backend = make_backend("persistent")
    before = await backend.invoke(invocation())
    crashed = await backend.invoke(invocation(action="crash"))
    assert crashed.kind is ResultKind.FUNCTION_ERROR
    assert crashed.error == "worker exit status 7: Fatal: giving up on this event"
    assert crashed.response["errorType"] == "Runtime.ExitError"
    assert gone(before.response["pid"])
    after = await backend.invoke(invocation())
    assert after.kind is ResultKind.SUCCESS
    assert after.response["pid"] != before.response["pid"]


async def test_persistent_timeout_kills_and_restarts_the_worker(
    make_backend: BackendMaker,
) -> None:
    backend = make_backend("persistent", timeout=0.5)
    before = await backend.invoke(invocation())
    result = await backend.invoke(invocation(action="hang"))
    assert_timed_out(result, 0.5)
    assert await wait_gone(before.response["pid"])
    after = await backend.invoke(invocation())
    assert after.kind is ResultKind.SUCCESS
    assert after.response["pid"] != before.response["pid"]


@pytest.mark.parametrize(
    ("action", "problem"),
    [
        ("garbage", "answered a line that is not JSON"),
        ("wrong-id", "answered requestId 'someone-else', expected"),
    ],
)
async def test_persistent_protocol_violation_restarts_the_worker(
    make_backend: BackendMaker, action: str, problem: str
) -> None:
    backend = make_backend("persistent")
    before = await backend.invoke(invocation())
    result = await backend.invoke(invocation(action=action))
    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.error is not None
    assert result.error.startswith(f"Runtime.ProtocolError: the worker {problem}")
    assert result.response["errorType"] == "Runtime.ProtocolError"
    after = await backend.invoke(invocation())
    assert after.kind is ResultKind.SUCCESS
    assert after.response["pid"] != before.response["pid"]


async def test_persistent_workers_run_invocations_in_parallel(
    make_backend: BackendMaker, tmp_path: Path
) -> None:
    backend = make_backend("persistent", workers=2)
    results: list[InvokeResult] = []

    async def run() -> None:
        results.append(await backend.invoke(invocation(action="rendezvous", folder=str(tmp_path))))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            tg.start_soon(run)
    # Each worker waited for the other to arrive: they ran at the same time.
    assert [r.response["met"] for r in results] == [True, True]
    assert results[0].response["pid"] != results[1].response["pid"]


async def test_persistent_busy_pool_is_a_throttle(make_backend: BackendMaker) -> None:
    backend = make_backend("persistent", timeout=1.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(backend.invoke, invocation(action="hang"))
        await anyio.sleep(0.05)
        result = await backend.invoke(invocation(timeout=0.2))
    assert result.kind is ResultKind.THROTTLE
    assert result.error == "all 1 workers stayed busy until the invocation's deadline"


async def test_persistent_stderr_is_logged_with_the_request(make_backend: BackendMaker) -> None:
    backend = make_backend("persistent")
    call = invocation(action="crash")
    with capture_logs() as logs:
        await backend.invoke(call)
    lines = [entry for entry in logs if entry["event"] == "function log"]
    assert [entry["line"] for entry in lines][-1] == "Fatal: giving up on this event"
    assert {entry["request_id"] for entry in lines} == {call.request_id}
    assert {entry["function"] for entry in lines} == {"orders"}


async def test_persistent_lambda_context_in_the_environment(make_backend: BackendMaker) -> None:
    backend = make_backend("persistent", env={"MY_SETTING": "on"})
    env = (await backend.invoke(invocation(action="env"))).response
    assert env["MY_SETTING"] == "on"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "orders"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"


async def test_aclose_stops_every_worker(make_backend: BackendMaker, tmp_path: Path) -> None:
    backend = make_backend("persistent", workers=2)
    results = []

    async def run() -> None:
        results.append(await backend.invoke(invocation(action="rendezvous", folder=str(tmp_path))))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        tg.start_soon(run)
    with anyio.fail_after(10):
        await backend.aclose()
    for result in results:
        assert gone(result.response["pid"])
    closed = await backend.invoke(invocation())
    assert closed.kind is ResultKind.SYSTEM_ERROR
    assert closed.error == "the command backend is closed"


async def test_aclose_during_an_invocation_is_not_the_function_s_fault(
    make_backend: BackendMaker,
) -> None:
    backend = make_backend("persistent")
    result: InvokeResult | None = None

    async def run() -> None:
        nonlocal result
        result = await backend.invoke(invocation(action="hang"))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await anyio.sleep(0.3)
            await backend.aclose()
    assert result is not None
    assert result.kind is ResultKind.SYSTEM_ERROR
    assert result.error == "the command backend was closed during the invocation"
