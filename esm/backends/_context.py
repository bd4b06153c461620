"""What Lambda's runtime puts around a handler: the context object and its error answers."""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any, Final

import orjson

from esm.model import MAX_INVOKE_PAYLOAD_BYTES, InvokeResult, ResultKind

DEFAULT_VERSION: Final = "$LATEST"


class CognitoIdentity:
    """`context.identity`: the runtime always provides one, with both fields None outside of
    mobile SDK invocations, so handlers may read its attributes without a None check."""

    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self) -> None:
        self.cognito_identity_id: str | None = None
        self.cognito_identity_pool_id: str | None = None

    def __repr__(self) -> str:
        return (
            f"CognitoIdentity([cognito_identity_id={self.cognito_identity_id},"
            f"cognito_identity_pool_id={self.cognito_identity_pool_id}])"
        )


class LambdaContext:
    """The `context` argument of a handler, with the attributes of Lambda's Python runtime.

    As in that runtime, `memory_limit_in_mb` is a str (it comes from an environment variable
    there), `function_version` is "$LATEST" and `client_context` is None. Beyond it,
    `traceparent` and `tracestate` are the invocation's W3C trace context when esm traces
    (None otherwise), for a handler to continue the trace.
    """

    def __init__(
        self,
        *,
        aws_request_id: str,
        function_name: str,
        invoked_function_arn: str,
        memory_limit_in_mb: int,
        deadline_ms: int,
        log_stream_name: str,
        function_version: str = DEFAULT_VERSION,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> None:
        self.aws_request_id = aws_request_id
        self.function_name = function_name
        self.function_version = function_version
        self.invoked_function_arn = invoked_function_arn
        self.memory_limit_in_mb = str(memory_limit_in_mb)
        self.log_group_name = log_group_name(function_name)
        self.log_stream_name = log_stream_name
        self.identity = CognitoIdentity()
        self.client_context: Any = None
        self.traceparent = traceparent
        self.tracestate = tracestate
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the invocation times out, never negative."""
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def log(self, message: str) -> None:
        """Write `message` to the function's log (stdout here, as in the runtime)."""
        sys.stdout.write(str(message))

    def __repr__(self) -> str:
        return (
            f"LambdaContext([aws_request_id={self.aws_request_id},"
            f"log_group_name={self.log_group_name},"
            f"log_stream_name={self.log_stream_name},"
            f"function_name={self.function_name},"
            f"memory_limit_in_mb={self.memory_limit_in_mb},"
            f"function_version={self.function_version},"
            f"invoked_function_arn={self.invoked_function_arn},"
            f"client_context={self.client_context},"
            f"identity={self.identity}])"
        )


def log_group_name(function_name: str) -> str:
    return f"/aws/lambda/{function_name}"


def new_log_stream_name(version: str = DEFAULT_VERSION, now: float | None = None) -> str:
    """A log stream name as Lambda gives each execution environment: `2024/05/01/[$LATEST]<hex>`."""
    day = time.strftime("%Y/%m/%d", time.gmtime(time.time() if now is None else now))
    return f"{day}/[{version}]{uuid.uuid4().hex}"


def parse_answer(body: bytes) -> Any:
    """A function's answer as the pipeline reads it: JSON when it parses, else the text, and
    None when empty (Lambda treats an empty answer as a null one)."""
    if not body.strip():
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", errors="replace")


def describe(response: Any) -> str | None:
    """A one-line summary of an error answer: "Type: message" for Lambda-shaped payloads."""
    if isinstance(response, dict):
        kind, message = response.get("errorType"), response.get("errorMessage")
        if message is None:
            message = response.get("message")
        if kind and message is not None:
            return _one_line(f"{kind}: {message}")
        if kind or message is not None:
            return _one_line(str(kind or message))
        return None
    if isinstance(response, str) and response.strip():
        return _one_line(response)
    return None


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def timed_out(request_id: str, timeout: float, duration: float) -> InvokeResult:
    """The result of an invocation that outlived its timeout, worded as Lambda words it."""
    message = f"Task timed out after {timeout:.2f} seconds"
    return InvokeResult(
        kind=ResultKind.FUNCTION_ERROR,
        response={
            "errorType": "Sandbox.Timedout",
            "errorMessage": f"RequestId: {request_id} Error: {message}",
        },
        error=message,
        function_error="Unhandled",
        duration=duration,
    )


def response_too_large(duration: float, status_code: int = 200) -> InvokeResult:
    """The result when the function answers more than Lambda lets a synchronous call return."""
    message = (
        "Response payload size exceeded maximum allowed payload size "
        f"({MAX_INVOKE_PAYLOAD_BYTES} bytes)."
    )
    return InvokeResult(
        kind=ResultKind.FUNCTION_ERROR,
        response={"errorType": "Function.ResponseSizeTooLarge", "errorMessage": message},
        error=f"Function.ResponseSizeTooLarge: {message}",
        status_code=status_code,
        function_error="Unhandled",
        duration=duration,
    )


def error_payload(
    error_type: str, message: str, request_id: str, stack_trace: list[str] | None = None
) -> dict[str, Any]:
    """Lambda's error answer for a failed handler (the body of a function error)."""
    return {
        "errorMessage": message,
        "errorType": error_type,
        "requestId": request_id,
        "stackTrace": stack_trace or [],
    }
