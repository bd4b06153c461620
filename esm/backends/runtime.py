"""The runtime backend: esm serves Lambda's Runtime API and unmodified runtimes pull their work."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import secrets
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final, Self

import anyio
import orjson
from aiohttp import web
from structlog.stdlib import BoundLogger

from esm.backends._context import (
    DEFAULT_VERSION,
    describe,
    log_group_name,
    parse_answer,
    response_too_large,
    timed_out,
)
from esm.errors import BackendError
from esm.log import get_logger
from esm.model import MAX_INVOKE_PAYLOAD_BYTES, Invocation, InvokeResult, ResultKind
from esm.trace_context import xray_header

API_VERSION: Final = "2018-06-01"
DEFAULT_PORT: Final = 9001
ERROR_TYPE_HEADER: Final = "Lambda-Runtime-Function-Error-Type"
# Request ids answered or given up on are remembered this long (in number of invocations), so
# that a second or late answer is told why it is refused rather than that the id is unknown.
FINISHED_MEMORY: Final = 10_000
# On shutdown, how long aiohttp may wait for requests still being handled; pending
# long polls are answered at once, so this only bounds a slow answer upload.
SHUTDOWN_GRACE_SECONDS: Final = 2.0

_PREFIX: Final = f"/{API_VERSION}/runtime"


@dataclasses.dataclass(eq=False)
class _Pending:
    """One invocation between `invoke` and its answer."""

    invocation: Invocation
    deadline_ms: int
    trace_id: str
    answer: asyncio.Future[InvokeResult]
    taken: bool = False
    """A runtime client received it (GET next answered)."""


class RuntimeApiBackend:
    """Invokes a function whose runtime (a Lambda base image, `awslambdaric`, any custom
    runtime) polls esm's Runtime API at `AWS_LAMBDA_RUNTIME_API=host:port`.

    Each invocation is queued and handed to exactly one runtime client waiting in
    `GET /runtime/invocation/next`, so the function's concurrency is the number of clients
    polling. docs/backend-runtime.md describes the protocol and how each outcome is classified.
    Needs an asyncio event loop (the server is aiohttp's).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        function_name: str,
        timeout: float,
        memory_size: int = 128,
    ) -> None:
        if timeout <= 0:
            raise BackendError(f"function {function_name!r}: timeout must be positive")
        if not 0 <= port <= 65535:
            raise BackendError(f"function {function_name!r}: port {port} is out of range")
        if memory_size <= 0:
            raise BackendError(f"function {function_name!r}: memory_size must be positive")
        self.host = host
        self.port = port
        self.function_name = function_name
        self.timeout = timeout
        self.memory_size = memory_size
        self.last_init_error: Any = None
        """The body of the last `POST /runtime/init/error`, for diagnostics."""
        self._log = get_logger(function=function_name)
        self._queue: collections.deque[_Pending] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[_Pending | None]] = collections.deque()
        self._running: dict[str, _Pending] = {}
        self._finished: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._runner: web.AppRunner | None = None
        self._start_lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"RuntimeApiBackend({self.address!r}, function_name={self.function_name!r})"

    @property
    def address(self) -> str:
        """The value runtime clients need in `AWS_LAMBDA_RUNTIME_API` (the bound port once
        started, so port 0 works)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def waiting_clients(self) -> int:
        """Runtime clients polling for work now: the free concurrency."""
        return sum(1 for waiter in self._waiters if not waiter.done())

    @property
    def running(self) -> int:
        """Invocations a runtime client has taken and not yet answered."""
        return len(self._running)

    def runtime_environment(self) -> dict[str, str]:
        """The environment variables Lambda gives a runtime, for starting a client beside esm."""
        return {
            "AWS_LAMBDA_RUNTIME_API": self.address,
            "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": DEFAULT_VERSION,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_size),
            "AWS_LAMBDA_LOG_GROUP_NAME": log_group_name(self.function_name),
        }

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on `host:port`. Idempotent; `invoke` calls it when it was not called.

        :raises BackendError: the address cannot be listened on, or the backend is closed.
        """
        async with self._start_lock:
            if self._closed:
                raise BackendError(f"function {self.function_name!r}: the backend is closed")
            if self._runner is not None:
                return
            app = web.Application(client_max_size=MAX_INVOKE_PAYLOAD_BYTES + 1)
            app.router.add_get(f"{_PREFIX}/invocation/next", self._next)
            app.router.add_post(f"{_PREFIX}/invocation/{{request_id}}/response", self._response)
            app.router.add_post(f"{_PREFIX}/invocation/{{request_id}}/error", self._error)
            app.router.add_post(f"{_PREFIX}/init/error", self._init_error)
            # Cancelling the handler of a client that hung up removes it from the waiting
            # clients, so no invocation is handed to a connection nobody reads.
            runner = web.AppRunner(
                app,
                handler_cancellation=True,
                shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
                access_log=None,
            )
            await runner.setup()
            try:
                site = web.TCPSite(runner, self.host, self.port)
                await site.start()
            except OSError as exc:
                await runner.cleanup()
                raise BackendError(
                    f"function {self.function_name!r}: cannot listen on {self.address}: {exc}"
                ) from exc
            self.port = int(runner.addresses[0][1])
            self._runner = runner
            self._log.info("runtime API listening", address=self.address)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop serving: queued and running invocations end as system errors, and clients
        still polling are answered 500 (the Runtime API's "exit now")."""
        async with self._start_lock:
            self._closed = True
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._waiters.clear()
            for pending in [*self._queue, *self._running.values()]:
                _resolve(pending, _system_error("the runtime backend is closed"))
            runner, self._runner = self._runner, None
            if runner is not None:
                await runner.cleanup()

    # -- FunctionBackend ---------------------------------------------------------------------

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        started = time.monotonic()
        if self._closed:
            return _system_error("the runtime backend is closed")
        try:
            await self.start()
        except BackendError as exc:
            return _system_error(str(exc))
        now = time.time()
        budget = min(invocation.deadline - now, self.timeout)
        pending = _Pending(
            invocation=invocation,
            deadline_ms=int((now + max(budget, 0.0)) * 1000),
            trace_id=_trace_id(invocation, now),
            answer=asyncio.get_running_loop().create_future(),
        )
        log = self._log.bind(request_id=invocation.request_id)
        self._queue.append(pending)
        self._dispatch()
        result: InvokeResult | None = None
        try:
            with anyio.move_on_after(max(budget, 0.0)):
                # Shielded so that a timeout leaves the future pending rather than cancelled:
                # it is resolved below, in one place, whatever ended the wait.
                result = await asyncio.shield(pending.answer)
        finally:
            if result is None:
                self._abandon(pending)
        duration = time.monotonic() - started
        if result is not None:
            return dataclasses.replace(result, duration=duration)
        if pending.taken:
            limit = min(invocation.timeout, self.timeout)
            log.warning("invocation timed out", timeout=limit)
            return timed_out(invocation.request_id, limit, duration)
        return self._not_taken(log, budget, duration)

    def _not_taken(self, log: BoundLogger, budget: float, duration: float) -> InvokeResult:
        """No runtime client took the invocation before its deadline."""
        if self._running:
            # Clients exist but were all busy: more invocations than clients, a throttle.
            message = (
                f"all {len(self._running)} runtime clients stayed busy for {budget:.2f} seconds"
            )
            log.warning("invocation throttled", reason=message)
            return InvokeResult(
                kind=ResultKind.THROTTLE, error=message, status_code=429, duration=duration
            )
        message = f"no runtime client is connected to AWS_LAMBDA_RUNTIME_API={self.address}"
        init_error = describe(self.last_init_error)
        if init_error:
            message += f" (last init error: {init_error})"
        log.warning("invocation not taken", reason=message)
        return dataclasses.replace(_system_error(message), duration=duration)

    # -- the queue ---------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Hand queued invocations to waiting clients, oldest first, one client each."""
        while self._queue and self._waiters:
            waiter = self._waiters.popleft()
            if waiter.done():
                continue
            waiter.set_result(self._queue.popleft())

    def _requeue(self, pending: _Pending) -> None:
        """Put back an invocation that was handed to a client that is gone before it got it."""
        if pending.answer.done():
            return
        pending.taken = False
        self._running.pop(pending.invocation.request_id, None)
        self._queue.appendleft(pending)
        self._dispatch()

    def _abandon(self, pending: _Pending) -> None:
        request_id = pending.invocation.request_id
        with contextlib.suppress(ValueError):
            self._queue.remove(pending)
        if self._running.get(request_id) is pending:
            del self._running[request_id]
        self._remember(request_id, "timed out")
        if not pending.answer.done():
            pending.answer.cancel()

    def _remember(self, request_id: str, how: str) -> None:
        self._finished[request_id] = how
        self._finished.move_to_end(request_id)
        while len(self._finished) > FINISHED_MEMORY:
            self._finished.popitem(last=False)

    def _settle(self, pending: _Pending, result: InvokeResult) -> None:
        request_id = pending.invocation.request_id
        self._running.pop(request_id, None)
        self._remember(request_id, "already answered")
        _resolve(pending, result)

    # -- the Runtime API ---------------------------------------------------------------------

    async def _next(self, request: web.Request) -> web.StreamResponse:
        while True:
            if self._closed:
                return _api_error(500, "Runtime.ShuttingDown", "esm is shutting down")
            pending = await self._take()
            if pending is None:
                continue
            if pending.answer.done():
                # Given up on (deadline) between being handed over and this handler resuming.
                continue
            return await self._deliver(request, pending)

    async def _take(self) -> _Pending | None:
        while self._queue:
            pending = self._queue.popleft()
            if not pending.answer.done():
                return pending
        waiter: asyncio.Future[_Pending | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # The client hung up: forget it, and put back what it was just given, if anything.
            if waiter.done() and not waiter.cancelled():
                handed = waiter.result()
                if handed is not None:
                    self._requeue(handed)
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    async def _deliver(self, request: web.Request, pending: _Pending) -> web.StreamResponse:
        invocation = pending.invocation
        pending.taken = True
        self._running[invocation.request_id] = pending
        headers = {
            "Content-Type": "application/json",
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(pending.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": invocation.function_arn,
            "Lambda-Runtime-Trace-Id": pending.trace_id,
            # The same span in W3C form (with its tracestate), for runtimes that read it.
            **invocation.trace_headers,
        }
        response = web.Response(body=invocation.payload, headers=headers)
        try:
            # Sent here rather than after returning, so that a client gone before it received
            # the event gives the invocation back to the queue instead of letting it time out.
            await response.prepare(request)
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            self._requeue(pending)
            raise
        self._log.debug("invocation taken", request_id=invocation.request_id)
        return response

    def _answerable(self, request_id: str) -> _Pending | web.Response:
        pending = self._running.get(request_id)
        if pending is not None and not pending.answer.done():
            return pending
        how = self._finished.get(request_id)
        if how is None:
            return _api_error(400, "InvalidRequestID", "Invalid request ID")
        self._log.warning("answer refused", request_id=request_id, reason=how)
        return _api_error(
            403, "InvalidStateTransition", f"Invocation {request_id} has {how}; answer refused"
        )

    async def _read_answer(
        self, request: web.Request, request_id: str
    ) -> tuple[_Pending, bytes | None] | web.Response:
        found = self._answerable(request_id)
        if isinstance(found, web.Response):
            return found
        body = await _read_limited(request)
        # The invocation may have timed out, or been answered, while the body was uploading.
        again = self._answerable(request_id)
        if again is not found:
            return again if isinstance(again, web.Response) else _conflict(request_id)
        return found, body

    async def _response(self, request: web.Request) -> web.StreamResponse:
        request_id = request.match_info["request_id"]
        read = await self._read_answer(request, request_id)
        if isinstance(read, web.Response):
            return read
        pending, body = read
        if body is None:
            self._log.warning("response too large", request_id=request_id)
            self._settle(pending, response_too_large(0.0))
            return _api_error(
                413,
                "RequestEntityTooLarge",
                f"Exceeded maximum allowed payload size ({MAX_INVOKE_PAYLOAD_BYTES} bytes).",
            )
        self._settle(pending, InvokeResult(kind=ResultKind.SUCCESS, response=parse_answer(body)))
        return _accepted()

    async def _error(self, request: web.Request) -> web.StreamResponse:
        request_id = request.match_info["request_id"]
        read = await self._read_answer(request, request_id)
        if isinstance(read, web.Response):
            return read
        pending, body = read
        if body is None:
            self._settle(pending, response_too_large(0.0))
            return _api_error(
                413,
                "RequestEntityTooLarge",
                f"Exceeded maximum allowed payload size ({MAX_INVOKE_PAYLOAD_BYTES} bytes).",
            )
        response = parse_answer(body)
        error_type = request.headers.get(ERROR_TYPE_HEADER)
        error = describe(response) or error_type or "function error (Unhandled)"
        self._log.info(
            "invocation failed", request_id=request_id, error_type=error_type, error=error
        )
        self._settle(
            pending,
            InvokeResult(
                kind=ResultKind.FUNCTION_ERROR,
                response=response,
                error=error,
                # What Lambda's Invoke answers in X-Amz-Function-Error for an error the
                # runtime reports, whatever category the runtime gives it.
                function_error="Unhandled",
            ),
        )
        return _accepted()

    async def _init_error(self, request: web.Request) -> web.StreamResponse:
        body = await _read_limited(request)
        self.last_init_error = parse_answer(body) if body is not None else None
        error = describe(self.last_init_error) or request.headers.get(ERROR_TYPE_HEADER)
        # The client exits after this; queued invocations wait for one that starts cleanly.
        self._log.error(
            "runtime client failed to initialize",
            error_type=request.headers.get(ERROR_TYPE_HEADER),
            error=error,
        )
        return _accepted()


def _resolve(pending: _Pending, result: InvokeResult) -> None:
    if not pending.answer.done():
        pending.answer.set_result(result)


def _system_error(message: str) -> InvokeResult:
    return InvokeResult(kind=ResultKind.SYSTEM_ERROR, error=message, status_code=0)


def _trace_id(invocation: Invocation, now: float) -> str:
    """The invocation's X-Ray trace header, as Lambda sends one: the span of the invocation
    when esm traces (X-Ray ids are W3C's), so a function's X-Ray or OpenTelemetry SDK
    continues the trace; else a new one, not sampled (no daemon receives it)."""
    traceparent = invocation.trace_headers.get("traceparent")
    if traceparent is not None and (header := xray_header(traceparent)) is not None:
        return header
    return f"Root=1-{int(now):08x}-{secrets.token_hex(12)};Parent={secrets.token_hex(8)};Sampled=0"


def _json(status: int, body: Mapping[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _accepted() -> web.Response:
    return _json(202, {"status": "OK"})


def _api_error(status: int, error_type: str, message: str) -> web.Response:
    return _json(status, {"errorMessage": message, "errorType": error_type})


def _conflict(request_id: str) -> web.Response:
    return _api_error(
        403, "InvalidStateTransition", f"Invocation {request_id} has already been answered"
    )


async def _read_limited(request: web.Request) -> bytes | None:
    """The request body, or None when it is larger than a synchronous invocation may return."""
    length = request.content_length
    if length is not None and length > MAX_INVOKE_PAYLOAD_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > MAX_INVOKE_PAYLOAD_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
