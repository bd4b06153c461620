"""The command backend: runs the function as a local process, one per batch or a worker pool."""

from __future__ import annotations

import collections
import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Final, Literal, get_args

import anyio
import orjson
import structlog
from anyio.abc import ByteReceiveStream, ByteSendStream, Process

from esm.backends._context import (
    DEFAULT_VERSION,
    describe,
    error_payload,
    log_group_name,
    new_log_stream_name,
    parse_answer,
    response_too_large,
    timed_out,
)
from esm.errors import BackendError
from esm.model import MAX_INVOKE_PAYLOAD_BYTES, Invocation, InvokeResult, ResultKind

Mode = Literal["per-batch", "persistent"]
MODES: Final[tuple[str, ...]] = get_args(Mode)

# How long a stopped function may clean up after SIGTERM before its process group is killed.
TERM_GRACE_SECONDS: Final = 0.2
# How long esm keeps reading stdout/stderr once the function has exited: long enough for the
# pipes to deliver what was written, short enough that a descendant which escaped the process
# group and holds a pipe open cannot stall the invocation.
DRAIN_SECONDS: Final = 1.0
# aclose(): workers get this long after EOF on stdin and SIGTERM before they are killed.
CLOSE_GRACE_SECONDS: Final = 5.0
# One stderr line is logged in pieces of at most this size, so a function printing without
# newlines cannot make esm buffer without bound.
MAX_LOG_LINE_BYTES: Final = 64 * 1024
# A persistent worker's answer line carries the answer plus a small envelope.
MAX_ANSWER_LINE_BYTES: Final = MAX_INVOKE_PAYLOAD_BYTES + 64 * 1024

_log = structlog.stdlib.get_logger("esm.function")


class CommandBackend:
    """Invokes a function that is a local command, in any language.

    `per-batch` starts the command for each invocation (event on stdin, answer on stdout);
    `persistent` keeps `workers` processes that exchange one JSON line per invocation.
    docs/backend-command.md describes both protocols. Every process runs in a process group of
    its own, so a timeout or shutdown also stops whatever the function started.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        mode: Mode,
        timeout: float,
        function_name: str,
        workers: int = 1,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        # A command line given as one string is split as a shell would, but never run by one.
        args = shlex.split(argv) if isinstance(argv, str) else [str(arg) for arg in argv]
        if not args or not args[0]:
            raise BackendError(f"function {function_name!r}: command must not be empty")
        if mode not in MODES:
            raise BackendError(
                f"function {function_name!r}: mode must be one of {', '.join(MODES)}, not {mode!r}"
            )
        if timeout <= 0:
            raise BackendError(f"function {function_name!r}: timeout must be positive")
        if workers < 1:
            raise BackendError(f"function {function_name!r}: workers must be at least 1")
        self.argv: tuple[str, ...] = tuple(args)
        self.mode: Mode = mode
        self.timeout = timeout
        self.function_name = function_name
        self.workers = workers
        self.env: dict[str, str] = dict(env or {})
        self.cwd = cwd
        self._closed = False
        # Per-batch processes in flight, so that aclose() can stop them.
        self._running: set[Process] = set()
        self._pool = [_Worker() for _ in range(workers)]
        # Idle workers, most recently used on the right: taking from the right reuses a warm
        # process and starts the others only when invocations overlap.
        self._idle: collections.deque[_Worker] = collections.deque(reversed(self._pool))
        self._free = anyio.Semaphore(workers)
        # Like one Lambda execution environment, the backend names its log stream once.
        self._log_stream_name = new_log_stream_name()

    def __repr__(self) -> str:
        return (
            f"CommandBackend({list(self.argv)!r}, mode={self.mode!r}, "
            f"function_name={self.function_name!r})"
        )

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        started = time.monotonic()
        if self._closed:
            return _system_error("the command backend is closed", started)
        if self.mode == "per-batch":
            result = await self._run_once(invocation, started)
        else:
            result = await self._run_on_worker(invocation, started)
        if self._closed and not result.ok:
            # Shutdown stopped the function: the batch is not at fault and must not use up
            # a retry attempt.
            return _system_error("the command backend was closed during the invocation", started)
        return result

    async def aclose(self) -> None:
        """Stop every process: workers get EOF on stdin and SIGTERM, then their groups are
        killed after `CLOSE_GRACE_SECONDS`; per-batch processes in flight are stopped too."""
        if self._closed:
            return
        self._closed = True
        processes = list(self._running)
        for worker in self._pool:
            if worker.process is not None:
                processes.append(worker.process)
                if not worker.busy and worker.process.stdin is not None:
                    await worker.process.stdin.aclose()
        with anyio.CancelScope(shield=True):
            await _stop_all(processes, CLOSE_GRACE_SECONDS)
            for worker in self._pool:
                # A busy worker is reaped by the invocation using it, when it sees the exit.
                if worker.process is not None and not worker.busy:
                    process, worker.process = worker.process, None
                    await process.aclose()

    # -----------------------------------------------------------------------------------------
    # Shared

    def _environment(self, memory_limit_mb: int, extra: Mapping[str, str]) -> dict[str, str]:
        """esm's environment, the configured variables, then the reserved ones (which, as in
        Lambda, configuration cannot override)."""
        env = {**os.environ, **self.env}
        env.update(
            {
                "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
                "AWS_LAMBDA_FUNCTION_VERSION": DEFAULT_VERSION,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_limit_mb),
                "AWS_LAMBDA_LOG_GROUP_NAME": log_group_name(self.function_name),
                "AWS_LAMBDA_LOG_STREAM_NAME": self._log_stream_name,
            }
        )
        env.update(extra)
        return env

    async def _start(self, env: Mapping[str, str]) -> Process:
        return await anyio.open_process(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.cwd,
            env=env,
            start_new_session=True,
        )

    def _cannot_start(self, exc: OSError, started: float) -> InvokeResult:
        reason = exc.strerror or str(exc) or type(exc).__name__
        if exc.filename is not None and exc.filename == self.cwd:
            detail = f"working directory {self.cwd!r}: {reason}"
        else:
            detail = f"{reason}"
        return _system_error(f"cannot start command {self.argv[0]!r}: {detail}", started)

    def _budget(self, invocation: Invocation) -> float:
        return max(0.0, min(invocation.deadline - time.time(), self.timeout))

    def _timed_out(self, invocation: Invocation, started: float) -> InvokeResult:
        timeout = min(invocation.timeout, self.timeout)
        return timed_out(invocation.request_id, timeout, time.monotonic() - started)

    # -----------------------------------------------------------------------------------------
    # per-batch

    async def _run_once(self, invocation: Invocation, started: float) -> InvokeResult:
        log = _log.bind(function=self.function_name, request_id=invocation.request_id)
        env = self._environment(
            invocation.memory_limit_mb,
            {
                "ESM_REQUEST_ID": invocation.request_id,
                "ESM_DEADLINE_MS": str(int(invocation.deadline * 1000)),
                "ESM_FUNCTION_ARN": invocation.function_arn,
                # TRACEPARENT, TRACESTATE: trace context in the environment, as OpenTelemetry
                # names it for processes, when esm traces.
                **{name.upper(): value for name, value in invocation.trace_headers.items()},
            },
        )
        try:
            process = await self._start(env)
        except OSError as exc:
            return self._cannot_start(exc, started)
        self._running.add(process)
        answer = _Answer()
        stderr = _StderrLines()
        code: int | None = None
        try:
            with anyio.move_on_after(self._budget(invocation)):
                stdin, stdout, stderr_stream = _pipes(process)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_feed, stdin, invocation.payload)
                    tg.start_soon(answer.collect, stdout)
                    tg.start_soon(stderr.pump, stderr_stream, log)
                    code = await process.wait()
                    # The answer is complete when the command exits: anything it left running
                    # in its group is stopped, and the pipes get a moment to drain.
                    _signal_group(process, signal.SIGKILL)
                    tg.cancel_scope.deadline = anyio.current_time() + DRAIN_SECONDS
        finally:
            with anyio.CancelScope(shield=True):
                if code is None:
                    # Timed out or cancelled: the command is still running.
                    await _stop_all([process], TERM_GRACE_SECONDS)
                    await stderr.drain(process, log)
                await process.aclose()
                self._running.discard(process)
                stderr.flush(log)
        duration = time.monotonic() - started
        if code is None:
            return self._timed_out(invocation, started)
        if answer.too_large:
            return response_too_large(duration)
        if code == 0:
            return InvokeResult(
                kind=ResultKind.SUCCESS,
                response=parse_answer(bytes(answer.data)),
                duration=duration,
            )
        return _exited(invocation.request_id, code, stderr.last, duration)

    # -----------------------------------------------------------------------------------------
    # persistent

    async def _run_on_worker(self, invocation: Invocation, started: float) -> InvokeResult:
        worker = await self._acquire(invocation)
        if worker is None:
            return InvokeResult(
                kind=ResultKind.THROTTLE,
                error=f"all {self.workers} workers stayed busy until the invocation's deadline",
                status_code=429,
                duration=time.monotonic() - started,
            )
        if self._closed:
            # It waited for a worker while aclose() ran.
            self._release(worker)
            return _system_error("the command backend is closed", started)
        log = _log.bind(function=self.function_name, request_id=invocation.request_id)
        # Until the worker answers this request cleanly it may still be working on it or be
        # out of step with the protocol, so it is stopped unless `clean` is set.
        worker.clean = False
        try:
            result: InvokeResult | None = None
            with anyio.move_on_after(self._budget(invocation)):
                result = await self._exchange(worker, invocation, log, started)
            return result if result is not None else self._timed_out(invocation, started)
        finally:
            with anyio.CancelScope(shield=True):
                process = worker.process
                if process is not None and (not worker.clean or self._closed):
                    worker.process = None
                    await _stop_all([process], TERM_GRACE_SECONDS)
                    await worker.stderr.drain(process, log)
                    await process.aclose()
                self._release(worker)

    async def _acquire(self, invocation: Invocation) -> _Worker | None:
        """An idle worker, or None when none became idle before the invocation's deadline."""
        try:
            self._free.acquire_nowait()
        except anyio.WouldBlock:
            with anyio.move_on_after(max(0.0, invocation.deadline - time.time())):
                await self._free.acquire()
                return self._take()
            return None
        return self._take()

    def _take(self) -> _Worker:
        worker = self._idle.pop()
        worker.busy = True
        return worker

    def _release(self, worker: _Worker) -> None:
        worker.busy = False
        self._idle.append(worker)
        self._free.release()

    async def _exchange(
        self,
        worker: _Worker,
        invocation: Invocation,
        log: structlog.stdlib.BoundLogger,
        started: float,
    ) -> InvokeResult:
        process = worker.process
        if process is not None and process.returncode is not None:
            # It died while idle; reap it and start a fresh one for this invocation.
            worker.process = None
            await worker.stderr.drain(process, log.bind(pid=process.pid))
            await process.aclose()
            process = None
        if process is None:
            env = self._environment(invocation.memory_limit_mb, {})
            try:
                process = worker.attach(await self._start(env))
            except OSError as exc:
                worker.clean = True
                return self._cannot_start(exc, started)
            if self._closed:
                # aclose() ran while this worker was starting, so it could not stop it.
                return _system_error("the command backend is closed", started)
        log = log.bind(pid=process.pid)
        stdin, stdout, stderr = _pipes(process)
        line: bytes | None = None
        too_large = False
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.stderr.pump, stderr, log)
            try:
                await stdin.send(_request_line(invocation))
                line = await worker.read_line(stdout)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                # The worker is gone: its stdin no longer has a reader.
                line = None
            except _LineTooLong:
                too_large = True
            tg.cancel_scope.cancel()
        if too_large:
            return response_too_large(time.monotonic() - started)
        if line is None:
            return await self._worker_died(worker, process, invocation, log, started)
        return self._classify(worker, line, invocation, started)

    async def _worker_died(
        self,
        worker: _Worker,
        process: Process,
        invocation: Invocation,
        log: structlog.stdlib.BoundLogger,
        started: float,
    ) -> InvokeResult:
        # Closing stdout usually means the process is exiting: let it, to report its own exit
        # status rather than the signal esm would end it with.
        with anyio.move_on_after(DRAIN_SECONDS):
            await process.wait()
        worker.process = None
        code = await _stop_all([process], TERM_GRACE_SECONDS)
        await worker.stderr.drain(process, log)
        await process.aclose()
        # Dead and reaped: the next invocation starts a new worker.
        worker.clean = True
        return _exited(
            invocation.request_id, code, worker.stderr.last, time.monotonic() - started, "worker "
        )

    def _classify(
        self, worker: _Worker, line: bytes, invocation: Invocation, started: float
    ) -> InvokeResult:
        request_id = invocation.request_id
        duration = time.monotonic() - started
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            detail = f"answered a line that is not JSON: {line[:120]!r}"
            return _protocol_error(request_id, detail, duration)
        if not isinstance(message, dict):
            return _protocol_error(request_id, "answered JSON that is not an object", duration)
        answered = message.get("requestId")
        if answered != request_id:
            detail = f"answered requestId {answered!r}, expected {request_id!r}"
            return _protocol_error(request_id, detail, duration)
        worker.clean = True
        error = message.get("error")
        if error is not None:
            return InvokeResult(
                kind=ResultKind.FUNCTION_ERROR,
                response=error,
                error=describe(error) or "the worker answered an error",
                function_error="Unhandled",
                duration=duration,
            )
        return InvokeResult(
            kind=ResultKind.SUCCESS, response=message.get("response"), duration=duration
        )


class _Worker:
    """One slot of the persistent pool: its process (None until started or after it died) and
    what was read from its pipes but not yet used."""

    def __init__(self) -> None:
        self.process: Process | None = None
        self.busy = False
        self.clean = True
        self.stdout = bytearray()
        self.stderr = _StderrLines()

    def attach(self, process: Process) -> Process:
        """Make `process` this slot's worker; nothing read from a previous one carries over."""
        self.process = process
        self.stdout = bytearray()
        self.stderr = _StderrLines()
        return process

    async def read_line(self, stream: ByteReceiveStream) -> bytes | None:
        """The next line of stdout without its newline; None at end of file.

        :raises _LineTooLong: the line is longer than an answer may be.
        """
        searched = 0
        while True:
            end = self.stdout.find(b"\n", searched)
            if end >= 0:
                line = bytes(self.stdout[:end])
                del self.stdout[: end + 1]
                return line
            if len(self.stdout) > MAX_ANSWER_LINE_BYTES:
                raise _LineTooLong
            searched = len(self.stdout)
            try:
                self.stdout += await stream.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                return None


class _LineTooLong(Exception):
    pass


class _Answer:
    """A per-batch command's stdout, up to the largest answer Lambda returns."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.too_large = False

    async def collect(self, stream: ByteReceiveStream) -> None:
        try:
            async for chunk in stream:
                if self.too_large:
                    # Keep reading so that the command does not block on a full pipe.
                    continue
                self.data += chunk
                if len(self.data) > MAX_INVOKE_PAYLOAD_BYTES:
                    self.too_large = True
                    self.data.clear()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass


class _StderrLines:
    """Logs a process's stderr one line at a time, remembering the last line for errors."""

    def __init__(self) -> None:
        self.pending = bytearray()
        self.last: str | None = None

    async def pump(self, stream: ByteReceiveStream, log: structlog.stdlib.BoundLogger) -> None:
        """Log lines until end of file (or until cancelled; a partial line is kept)."""
        try:
            async for chunk in stream:
                self.pending += chunk
                self._emit(log, final=False)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        self.flush(log)

    async def drain(self, process: Process, log: structlog.stdlib.BoundLogger) -> None:
        """Log what a stopped process left on stderr."""
        if process.stderr is not None:
            with anyio.move_on_after(DRAIN_SECONDS):
                await self.pump(process.stderr, log)
        self.flush(log)

    def flush(self, log: structlog.stdlib.BoundLogger) -> None:
        self._emit(log, final=True)

    def _emit(self, log: structlog.stdlib.BoundLogger, *, final: bool) -> None:
        while True:
            end = self.pending.find(b"\n")
            if end < 0:
                if len(self.pending) >= MAX_LOG_LINE_BYTES:
                    end = MAX_LOG_LINE_BYTES
                    raw, rest = self.pending[:end], self.pending[end:]
                elif final and self.pending:
                    raw, rest = self.pending, bytearray()
                else:
                    return
            else:
                raw, rest = self.pending[:end], self.pending[end + 1 :]
            self.pending = rest
            text = raw.decode("utf-8", errors="replace").rstrip("\r")
            if text.strip():
                self.last = text.strip()
            log.info("function log", line=text)


async def _feed(stream: ByteSendStream, payload: bytes) -> None:
    """Write the event and close stdin; a command that exits without reading it is fine."""
    try:
        await stream.send(payload)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
    finally:
        await stream.aclose()


def _request_line(invocation: Invocation) -> bytes:
    # In JSON, line breaks can only be whitespace between tokens (inside strings they are
    # escaped), so blanking them keeps the event intact and the request on one line; \r too,
    # because some line readers (Python's text mode) also end a line there.
    payload = invocation.payload.replace(b"\r", b" ").replace(b"\n", b" ")
    # The event is spliced in as encoded, not decoded and encoded again.
    return b"".join(
        (
            b'{"requestId":',
            orjson.dumps(invocation.request_id),
            b',"deadlineMs":',
            str(int(invocation.deadline * 1000)).encode(),
            b',"functionArn":',
            orjson.dumps(invocation.function_arn),
            b',"event":',
            payload,
            b"}\n",
        )
    )


def _signal_group(process: Process, signum: int) -> None:
    # The process leads its own session, so its group id is its pid.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _pipes(process: Process) -> tuple[ByteSendStream, ByteReceiveStream, ByteReceiveStream]:
    stdin, stdout, stderr = process.stdin, process.stdout, process.stderr
    if stdin is None or stdout is None or stderr is None:
        raise RuntimeError("the process was started without pipes")
    return stdin, stdout, stderr


async def _stop_all(processes: Sequence[Process], grace: float) -> int:
    """SIGTERM each running process's group, SIGKILL every group after `grace` seconds (to
    reach descendants too) and wait for the processes; the last one's exit code."""
    running = [p for p in processes if p.returncode is None]
    for process in running:
        _signal_group(process, signal.SIGTERM)
    if running:
        with anyio.move_on_after(grace):
            for process in running:
                await process.wait()
    code = 0
    for process in processes:
        _signal_group(process, signal.SIGKILL)
        code = await process.wait()
    return code


def _exit_status(code: int) -> str:
    """The exit as Lambda words it (Go's ProcessState): "exit status 3", "signal: killed"."""
    if code >= 0:
        return f"exit status {code}"
    name = signal.strsignal(-code) or f"signal {-code}"
    return f"signal: {name.lower()}"


def _exited(
    request_id: str, code: int, last_line: str | None, duration: float, who: str = ""
) -> InvokeResult:
    status = _exit_status(code)
    message = f"RequestId: {request_id} Error: Runtime exited with error: {status}"
    error = f"{who}{status}" + (f": {last_line}" if last_line else "")
    return InvokeResult(
        kind=ResultKind.FUNCTION_ERROR,
        response=error_payload("Runtime.ExitError", message, request_id),
        error=_shorten(error),
        function_error="Unhandled",
        duration=duration,
    )


def _protocol_error(request_id: str, detail: str, duration: float) -> InvokeResult:
    message = f"the worker {detail}"
    return InvokeResult(
        kind=ResultKind.FUNCTION_ERROR,
        response=error_payload("Runtime.ProtocolError", message, request_id),
        error=f"Runtime.ProtocolError: {message}",
        function_error="Unhandled",
        duration=duration,
    )


def _system_error(message: str, started: float) -> InvokeResult:
    return InvokeResult(
        kind=ResultKind.SYSTEM_ERROR,
        error=message,
        status_code=0,
        duration=time.monotonic() - started,
    )


def _shorten(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def program_problem(
    program: str, *, env: Mapping[str, str] | None = None, cwd: str | None = None
) -> str | None:
    """Why `program` (a command's first word) cannot be started, or None when it can.

    Found as the process start will find it: a name with a slash is a path from `cwd`; a bare
    name is looked up on the PATH of esm's environment with `env` over it, relative entries
    from `cwd` too. A missing `cwd` is the first problem.
    """
    base = os.getcwd() if cwd is None else cwd
    if not os.path.isdir(base):
        return f"working directory {cwd!r} is not a directory"
    if "/" in program:
        candidates = [os.path.join(base, program)]
    else:
        search = {**os.environ, **(env or {})}
        candidates = [os.path.join(base, folder, program) for folder in os.get_exec_path(search)]
    found = [path for path in candidates if os.path.exists(path)]
    runnable = [path for path in found if os.path.isfile(path) and os.access(path, os.X_OK)]
    if runnable:
        return None
    if not found:
        where = "no such file" if "/" in program else "not found on the PATH"
        return f"cannot run {program!r}: {where}"
    # Shown tidied ("dir/./x" as "dir/x"); checked as given, where ".." follows symlinks.
    shown = os.path.normpath(found[0])
    if os.path.isdir(found[0]):
        return f"cannot run {program!r}: {shown} is a directory"
    return f"cannot run {program!r}: {shown} is not executable (chmod +x?)"
