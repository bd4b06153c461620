"""The Lambda function backend: run each batch with Lambda's Invoke API and classify the answer."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Final

import anyio

from esm.aws.errors import Refusal, aws_call, refusal
from esm.aws.lambda_ import InvokeInput, InvokeOutput, LambdaClient, PayloadStream
from esm.backends._context import (
    DEFAULT_VERSION,
    describe,
    parse_answer,
    response_too_large,
    timed_out,
)
from esm.backends.http import parse_retry_after
from esm.errors import (
    BackendError,
    EsmError,
    NoCredentials,
    ReadTimedOut,
    ServiceUnreachable,
    ThroughputExceeded,
)
from esm.model import MAX_INVOKE_PAYLOAD_BYTES, Invocation, InvokeResult, ResultKind

# Lambda enforces the function's own timeout and answers with its own "Task timed out" error;
# waiting a little longer than the timeout lets that answer (with the function's request id
# and executed version) arrive before esm gives up. It stays well under the pipeline's own
# margin (esm.engine.driver) so that this backend, not the pipeline, reports the timeout.
TIMEOUT_MARGIN_SECONDS: Final = 1.0

# Lambda rejected this request because of its payload, before the function ran. Sending the
# same bytes again cannot succeed, so these fail like a function error: the retry policy
# (retry attempts, bisecting, the on-failure destination) decides what becomes of the batch,
# as it does for an event that esm itself finds too large to send.
PAYLOAD_REJECTED_CODES: Final = frozenset(
    {
        "RequestTooLargeException",
        "SerializedRequestEntityTooLargeException",
        "InvalidRequestContentException",
        "UnsupportedMediaTypeException",
    }
)
# Problems of configuration or permissions rather than of the platform; named in the error
# so that the operator knows what to fix. Like every other service error they are system
# errors: retried with backoff and never counted against the function.
_HINTS: Final[Mapping[str, str]] = {
    "ResourceNotFoundException": "check the function name and qualifier",
    "AccessDeniedException": "the credentials need lambda:InvokeFunction on the function",
    "UnrecognizedClientException": "check the AWS credentials",
    "InvalidSignatureException": "check the AWS credentials",
    "ExpiredTokenException": "the AWS credentials have expired",
}

_READ_CHUNK_BYTES: Final = 64 * 1024


class LambdaBackend:
    """Invokes a function deployed to AWS Lambda (or to anything serving the Invoke API, such
    as LocalStack) with a synchronous RequestResponse invocation per batch.

    `function_name` is a name, a `name:alias` or `name:version`, or a full or partial ARN;
    `qualifier` selects a version or alias when the name does not. The client belongs to the
    caller, which closes it: `aclose` only stops this backend from invoking.
    docs/backend-lambda.md describes how each answer is classified.
    """

    def __init__(
        self,
        client: LambdaClient,
        *,
        function_name: str,
        qualifier: str | None = None,
        timeout: float,
    ) -> None:
        if not function_name or function_name != function_name.strip():
            raise BackendError(f"function name {function_name!r} is empty or has spaces")
        if timeout <= 0:
            raise BackendError(f"function {function_name!r}: timeout must be positive")
        if qualifier is not None:
            named = name_qualifier(function_name)
            if not qualifier:
                raise BackendError(f"function {function_name!r}: qualifier must not be empty")
            if named is not None and named != qualifier:
                # Lambda would refuse every invocation; say so at startup instead.
                raise BackendError(
                    f"function {function_name!r} names qualifier {named!r}, which "
                    f"contradicts qualifier {qualifier!r}"
                )
        self.client = client
        self.function_name = function_name
        self.qualifier = qualifier
        self.timeout = timeout
        self._closed = False

    def __repr__(self) -> str:
        return f"LambdaBackend(function_name={self.target!r})"

    @property
    def target(self) -> str:
        """The function as logs name it: `name:qualifier` when a qualifier is set."""
        if self.qualifier is None or name_qualifier(self.function_name) is not None:
            return self.function_name
        return f"{self.function_name}:{self.qualifier}"

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        started = time.monotonic()
        if self._closed:
            return _system_error("the Lambda backend is closed", time.monotonic() - started)
        timeout = min(invocation.timeout, self.timeout)
        budget = max(min(invocation.deadline - time.time(), self.timeout), 0.0)
        result: InvokeResult | None = None
        with anyio.move_on_after(budget + TIMEOUT_MARGIN_SECONDS):
            result = await self._invoke(invocation, started)
        if result is None:
            return timed_out(invocation.request_id, timeout, time.monotonic() - started)
        return result

    async def _invoke(self, invocation: Invocation, started: float) -> InvokeResult:
        request: InvokeInput = {
            "FunctionName": self.function_name,
            "InvocationType": "RequestResponse",
            "Payload": invocation.payload,
        }
        if self.qualifier is not None:
            request["Qualifier"] = self.qualifier
        try:
            with aws_call("Invoke"):
                answer = await self.client.invoke(**request)
                body = await _read_payload(answer.get("Payload"))
        except EsmError as error:
            # The backend promises an InvokeResult for every outcome: no client failure may
            # take the shard's runner down with it.
            return classify_failure(error, self.target, duration=time.monotonic() - started)
        if body is None:
            return response_too_large(time.monotonic() - started, _status(answer))
        return classify_answer(answer, body, duration=time.monotonic() - started)

    async def aclose(self) -> None:
        self._closed = True


def classify_answer(answer: InvokeOutput, body: bytes, *, duration: float = 0.0) -> InvokeResult:
    """The outcome of an Invoke call that Lambda answered (its status is 2xx)."""
    response = parse_answer(body)
    status = _status(answer)
    version = str(answer.get("ExecutedVersion") or DEFAULT_VERSION)
    function_error = answer.get("FunctionError")
    if function_error is None:
        return InvokeResult(
            kind=ResultKind.SUCCESS,
            response=response,
            status_code=status,
            executed_version=version,
            duration=duration,
        )
    function_error = str(function_error)
    return InvokeResult(
        kind=ResultKind.FUNCTION_ERROR,
        response=response,
        error=describe(response) or f"function error ({function_error})",
        status_code=status,
        function_error=function_error,
        executed_version=version,
        duration=duration,
    )


def classify_failure(
    error: EsmError, target: str, *, duration: float = 0.0, now: float | None = None
) -> InvokeResult:
    """The outcome of an Invoke call that failed, as `esm.aws.errors.aws_call` translated it
    (see docs/backend-lambda.md): a refusal by Lambda, or no answer at all."""
    refused = refusal(error)
    if refused is not None:
        return classify_refusal(error, refused, target, duration=duration, now=now)
    cause = error.__cause__ or error
    if isinstance(error, ReadTimedOut):
        # The client gave up before the function's timeout: its read timeout is shorter
        # than the function may run, which is not the function failing on this batch.
        return _system_error(
            f"no answer from {target} within the Lambda client's read timeout, "
            f"which must exceed the function timeout: {cause}",
            duration,
        )
    if isinstance(error, ServiceUnreachable | NoCredentials):
        # No answer at all (refused, DNS, reset, connect timeout, credentials): the
        # function never ran, so this is retried without counting against it.
        return _system_error(f"cannot invoke {target}: {_detail(cause)}", duration)
    return _system_error(f"invoking {target} failed: {_detail(cause)}", duration)


def classify_refusal(
    error: EsmError,
    refused: Refusal,
    target: str,
    *,
    duration: float = 0.0,
    now: float | None = None,
) -> InvokeResult:
    """The outcome of an Invoke call that Lambda refused: the translated error says whether it
    was a throttle, the refusal's code whether the payload was rejected."""
    code, status, message = refused.code, refused.status, refused.message
    description = f"{target}: {code or 'error'} (HTTP {status})"
    if message:
        description += f": {' '.join(message.split())}"
    if isinstance(error, ThroughputExceeded):
        # The function had no capacity left: retried after Retry-After when one is sent.
        return InvokeResult(
            kind=ResultKind.THROTTLE,
            error=description,
            status_code=status,
            retry_after=_retry_after(refused, now),
            duration=duration,
        )
    if code in PAYLOAD_REJECTED_CODES or status == 413:
        return InvokeResult(
            kind=ResultKind.FUNCTION_ERROR,
            response={"errorType": code or "RequestTooLargeException", "errorMessage": message},
            error=description,
            status_code=status,
            function_error="Unhandled",
            duration=duration,
        )
    hint = _HINTS.get(code)
    return InvokeResult(
        kind=ResultKind.SYSTEM_ERROR,
        error=f"{description} ({hint})" if hint else description,
        status_code=status,
        duration=duration,
    )


def name_qualifier(function_name: str) -> str | None:
    """The version or alias a FunctionName carries itself, if any.

    >>> name_qualifier("orders:live"), name_qualifier("123456789012:function:orders")
    ('live', None)
    """
    parts = function_name.split(":")
    if parts[0] == "arn":
        # arn:aws:lambda:region:account:function:name[:qualifier]
        return parts[7] if len(parts) == 8 else None
    if len(parts) >= 3 and parts[1] == "function":
        # account:function:name[:qualifier]
        return parts[3] if len(parts) == 4 else None
    return parts[1] if len(parts) == 2 else None


async def _read_payload(payload: PayloadStream | bytes | None) -> bytes | None:
    """The answer's body (a streaming body, or bytes from stand-in clients), or None when it
    is larger than a synchronous invocation may return."""
    if payload is None:
        return b""
    if isinstance(payload, bytes | bytearray):
        data = bytes(payload)
        return None if len(data) > MAX_INVOKE_PAYLOAD_BYTES else data
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := await payload.read(_READ_CHUNK_BYTES):
            size += len(chunk)
            if size > MAX_INVOKE_PAYLOAD_BYTES:
                return None
            chunks.append(chunk)
    finally:
        # Releases the connection to the pool, or drops it when the body was left unread.
        close = getattr(payload, "close", None)
        if close is not None:
            closed = close()
            if closed is not None:
                await closed
    return b"".join(chunks)


def _retry_after(refused: Refusal, now: float | None) -> float | None:
    headers = refused.headers
    value = headers.get("retry-after") or headers.get("Retry-After")
    if value is None:
        # botocore parses the header into the error's modeled retryAfterSeconds member.
        value = refused.response.get("retryAfterSeconds")
    return parse_retry_after(str(value), now) if value is not None else None


def _status(answer: InvokeOutput) -> int:
    status = answer.get("StatusCode")
    if status is None:
        status = answer.get("ResponseMetadata", {}).get("HTTPStatusCode", 200)
    return int(status)


def _system_error(error: str, duration: float) -> InvokeResult:
    return InvokeResult(kind=ResultKind.SYSTEM_ERROR, error=error, status_code=0, duration=duration)


def _detail(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
