"""The in-process Python backend: runs a Lambda-style `handler(event, context)` inside esm."""

from __future__ import annotations

import dataclasses
import decimal
import importlib
import inspect
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
import anyio.to_thread
import orjson

from esm.backends._context import (
    LambdaContext,
    error_payload,
    new_log_stream_name,
    parse_answer,
    timed_out,
)
from esm.errors import BackendError
from esm.model import Invocation, InvokeResult, ResultKind

# Sync handlers share this many worker threads per backend (anyio's own default).
DEFAULT_MAX_THREADS: Final = 40

_DUMPS_OPTIONS: Final = (
    orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


class PythonBackend:
    """Invokes a Python handler in this process, with Lambda's event, context and errors.

    Sync handlers run in worker threads (at most `max_threads` at once); async handlers run on
    esm's event loop and must not block it. An invocation that outlives its timeout is a
    function error; a sync handler's thread cannot be stopped, so it is abandoned and runs on
    until the handler returns.
    """

    def __init__(
        self,
        handler: str | Callable[..., Any],
        *,
        timeout: float,
        function_name: str,
        memory_size: int = 128,
        max_threads: int = DEFAULT_MAX_THREADS,
    ) -> None:
        if timeout <= 0:
            raise BackendError(f"function {function_name!r}: timeout must be positive")
        if isinstance(handler, str):
            self.handler_name = handler
            self.handler: Callable[..., Any] = load_handler(handler)
        elif callable(handler):
            self.handler_name = getattr(handler, "__qualname__", repr(handler))
            self.handler = handler
        else:
            raise BackendError(
                f"function {function_name!r}: handler must be 'package.module:function' or a "
                f"callable, not {type(handler).__name__}"
            )
        self.timeout = timeout
        self.function_name = function_name
        self.memory_size = memory_size
        self._is_async = _is_coroutine_function(self.handler)
        self._limiter = anyio.CapacityLimiter(max_threads)
        # One backend is one execution environment: Lambda names its log stream once.
        self._log_stream_name = new_log_stream_name()

    def __repr__(self) -> str:
        return f"PythonBackend({self.handler_name!r}, function_name={self.function_name!r})"

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        started = time.monotonic()
        # Name and memory are the environment's (environment variables in Lambda's runtime);
        # request id, ARN and deadline come with each invocation.
        context = LambdaContext(
            aws_request_id=invocation.request_id,
            function_name=self.function_name,
            invoked_function_arn=invocation.function_arn,
            memory_limit_in_mb=self.memory_size,
            deadline_ms=int(invocation.deadline * 1000),
            log_stream_name=self._log_stream_name,
            # While the handler runs, the engine makes this invocation's span the current
            # one, so a handler using OpenTelemetry in this process makes child spans.
            traceparent=invocation.trace_headers.get("traceparent"),
            tracestate=invocation.trace_headers.get("tracestate"),
        )
        budget = min(invocation.deadline - time.time(), self.timeout)
        result: InvokeResult | None = None
        with anyio.move_on_after(max(budget, 0.0)):
            if self._is_async:
                step = self._start(invocation.payload, context)
            else:
                step = await anyio.to_thread.run_sync(
                    self._start,
                    invocation.payload,
                    context,
                    abandon_on_cancel=True,
                    limiter=self._limiter,
                )
            if isinstance(step, InvokeResult):
                result = step
            else:
                result = await _finish(step, invocation.request_id)
        duration = time.monotonic() - started
        if result is None:
            return timed_out(invocation.request_id, min(invocation.timeout, self.timeout), duration)
        return dataclasses.replace(result, duration=duration)

    def _start(self, payload: bytes, context: LambdaContext) -> InvokeResult | Awaitable[Any]:
        """Decode the event and call the handler: its result, or the awaitable it returned."""
        request_id = context.aws_request_id
        try:
            # A fresh object per call, so a handler that mutates its event cannot change
            # what a retry of the same batch receives.
            event = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            return _failed(
                "Runtime.UnmarshalError", f"Unable to unmarshal input: {exc}", request_id
            )
        try:
            value = self.handler(event, context)
        except Exception as exc:  # noqa: BLE001 - the handler is the user's code
            return _raised(exc, request_id)
        except SystemExit as exc:
            return _exited(exc, request_id)
        if inspect.isawaitable(value):
            # An async handler, or a sync wrapper (a decorator) around one.
            return value
        return _marshal(value, request_id)

    async def aclose(self) -> None:
        """Nothing to release: worker threads belong to anyio's pool, and an abandoned one
        ends when its handler returns."""


def load_handler(spec: str) -> Callable[..., Any]:
    """Import the handler named by `spec`: "package.module:function", or Lambda's own
    "module.function" form. The working directory is importable, as Lambda's task root is.

    :raises BackendError: the module cannot be imported or has no such callable.
    """
    module_name, sep, attr_path = spec.partition(":")
    if not sep:
        module_name, _, attr_path = spec.rpartition(".")
    module_name = module_name.strip().replace("/", ".")
    attr_path = attr_path.strip()
    if not module_name or not attr_path:
        raise BackendError(
            f"handler {spec!r}: expected 'package.module:function' (or 'module.function')"
        )
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        # Importing runs the module's code, which can raise anything.
        raise BackendError(
            f"handler {spec!r}: unable to import module {module_name!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for name in attr_path.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise BackendError(
                f"handler {spec!r}: module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if not callable(target):
        raise BackendError(
            f"handler {spec!r}: {attr_path!r} is a {type(target).__name__}, not a callable"
        )
    return target  # type: ignore[no-any-return]


def _is_coroutine_function(handler: Callable[..., Any]) -> bool:
    call = getattr(handler, "__call__", None)  # noqa: B004 - an instance with async __call__
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


async def _finish(awaitable: Awaitable[Any], request_id: str) -> InvokeResult:
    try:
        value = await awaitable
    except Exception as exc:  # noqa: BLE001 - the handler is the user's code
        return _raised(exc, request_id)
    except SystemExit as exc:
        return _exited(exc, request_id)
    return _marshal(value, request_id)


def _marshal(value: Any, request_id: str) -> InvokeResult:
    """The handler's return value as the caller receives it: through JSON, as in Lambda."""
    if isinstance(value, bytes | bytearray | memoryview):
        # The runtime passes bytes through unencoded.
        return InvokeResult(kind=ResultKind.SUCCESS, response=parse_answer(bytes(value)))
    try:
        encoded = orjson.dumps(value, default=_encode_default, option=_DUMPS_OPTIONS)
    except orjson.JSONEncodeError as exc:
        reason = exc.__cause__ or exc
        return _failed("Runtime.MarshalError", f"Unable to marshal response: {reason}", request_id)
    return InvokeResult(kind=ResultKind.SUCCESS, response=orjson.loads(encoded))


def _encode_default(value: Any) -> Any:
    # Lambda's encoder writes Decimals (what boto3 reads DynamoDB numbers as) as numbers and
    # nothing else beyond plain JSON types; datetimes and dataclasses fail there, so here too.
    if isinstance(value, decimal.Decimal) and value.is_finite():
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _failed(error_type: str, message: str, request_id: str) -> InvokeResult:
    return InvokeResult(
        kind=ResultKind.FUNCTION_ERROR,
        response=error_payload(error_type, message, request_id),
        error=f"{error_type}: {message}",
        function_error="Unhandled",
    )


def _raised(exc: Exception, request_id: str) -> InvokeResult:
    # The first frame is ours (where the exception was caught): the trace starts below it,
    # as Lambda's starts below its bootstrap.
    tb = exc.__traceback__
    stack = traceback.format_list(traceback.extract_tb(tb.tb_next if tb else None))
    error_type, message = type(exc).__name__, str(exc)
    one_line = " ".join(message.split())
    return InvokeResult(
        kind=ResultKind.FUNCTION_ERROR,
        response=error_payload(error_type, message, request_id, stack),
        error=f"{error_type}: {one_line}" if one_line else error_type,
        function_error="Unhandled",
    )


def _exited(exc: SystemExit, request_id: str) -> InvokeResult:
    # In Lambda sys.exit() ends the runtime process; here it must not end esm.
    message = f"RequestId: {request_id} Error: Runtime exited with error: exit status {exc.code}"
    return _failed("Runtime.ExitError", message, request_id)
