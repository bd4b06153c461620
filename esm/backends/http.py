"""The HTTP function backend: POST each event to a URL and classify the answer as Lambda would."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import aiohttp
import anyio
from multidict import CIMultiDict
from yarl import URL

from esm import __version__
from esm.backends._context import (
    DEFAULT_VERSION,
    describe,
    parse_answer,
    response_too_large,
    timed_out,
)
from esm.errors import BackendError
from esm.model import MAX_INVOKE_PAYLOAD_BYTES, Invocation, InvokeResult, ResultKind

THROTTLE_STATUSES: Final = frozenset({429, 503})
# Reaching a local app takes milliseconds; one that cannot be reached in this time is down,
# which is a system error, not a function that is slow to answer.
CONNECT_TIMEOUT_SECONDS: Final = 5.0
# Idle pooled connections are closed before a typical server's own keep-alive limit would
# close them under us (a request on a connection the server just closed fails).
KEEPALIVE_SECONDS: Final = 4.0

_NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})
_NAME_PARTS = re.compile(r"[^A-Za-z0-9]+")


class HttpBackend:
    """Invokes a function served over HTTP, typically an app container in the same pod.

    Each invocation is one POST of the event JSON to `url` on a pooled keep-alive connection;
    docs/backends.md describes the request headers and how each answer is classified.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        headers: Mapping[str, str] = _NO_HEADERS,
        function_name: str,
    ) -> None:
        try:
            parsed = URL(url)
        except (TypeError, ValueError) as exc:
            raise BackendError(f"function {function_name!r}: invalid url {url!r}: {exc}") from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise BackendError(
                f"function {function_name!r}: url {url!r} must be an absolute http:// or "
                "https:// URL"
            )
        if timeout <= 0:
            raise BackendError(f"function {function_name!r}: timeout must be positive")
        self.url = parsed
        self.timeout = timeout
        self.function_name = function_name
        self._headers = CIMultiDict(headers)
        self._headers.setdefault("User-Agent", f"esm/{__version__}")
        self._headers["Content-Type"] = "application/json"
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"HttpBackend({str(self.url)!r}, function_name={self.function_name!r})"

    def _open_session(self) -> aiohttp.ClientSession:
        # Created on first use so that it belongs to the running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_SECONDS),
                # The invocation deadline bounds each request; aiohttp's own total timeout
                # (5 minutes by default) would cut off functions allowed up to 15.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_SECONDS),
                headers=self._headers,
            )
        return self._session

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        started = time.monotonic()
        if self._closed:
            return InvokeResult(
                kind=ResultKind.SYSTEM_ERROR,
                error="the HTTP backend is closed",
                status_code=0,
                duration=time.monotonic() - started,
            )
        budget = min(invocation.deadline - time.time(), self.timeout)
        result: InvokeResult | None = None
        with anyio.move_on_after(max(budget, 0.0)):
            try:
                result = await self._post(self._open_session(), invocation, started)
            except (aiohttp.ClientError, OSError) as exc:
                # No answer at all (refused, DNS, reset, connect timeout): the app is not
                # reachable, which is not the function failing on this batch.
                result = InvokeResult(
                    kind=ResultKind.SYSTEM_ERROR,
                    error=_transport_error(exc, self.url),
                    status_code=0,
                    duration=time.monotonic() - started,
                )
        if result is None:
            return timed_out(
                invocation.request_id,
                min(invocation.timeout, self.timeout),
                time.monotonic() - started,
            )
        return result

    async def _post(
        self, session: aiohttp.ClientSession, invocation: Invocation, started: float
    ) -> InvokeResult:
        headers = {
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(int(invocation.deadline * 1000)),
            "Lambda-Runtime-Invoked-Function-Arn": invocation.function_arn,
        }
        for name, value in invocation.extra.items():
            headers[extra_header_name(name)] = _header_value(value)
        async with session.post(
            self.url, data=invocation.payload, headers=headers, allow_redirects=False
        ) as response:
            body = await _read_limited(response)
            if body is None:
                return response_too_large(time.monotonic() - started, response.status)
            return classify(
                response.status,
                response.reason,
                response.headers,
                body,
                duration=time.monotonic() - started,
            )

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def classify(
    status: int,
    reason: str | None,
    headers: Mapping[str, str],
    body: bytes,
    *,
    duration: float = 0.0,
    now: float | None = None,
) -> InvokeResult:
    """The outcome an HTTP answer stands for (see docs/backends.md for the table)."""
    response = parse_answer(body)
    version = headers.get("X-Amz-Executed-Version") or DEFAULT_VERSION
    status_line = f"HTTP {status} {reason or ''}".rstrip()
    if 200 <= status < 300:
        function_error = headers.get("X-Amz-Function-Error")
        if function_error is None:
            return InvokeResult(
                kind=ResultKind.SUCCESS,
                response=response,
                status_code=status,
                executed_version=version,
                duration=duration,
            )
        return InvokeResult(
            kind=ResultKind.FUNCTION_ERROR,
            response=response,
            error=describe(response) or f"function error ({function_error})",
            status_code=status,
            function_error=function_error,
            executed_version=version,
            duration=duration,
        )
    if status in THROTTLE_STATUSES:
        return InvokeResult(
            kind=ResultKind.THROTTLE,
            response=response,
            error=status_line,
            status_code=status,
            executed_version=version,
            retry_after=parse_retry_after(headers.get("Retry-After"), now),
            duration=duration,
        )
    detail = describe(response)
    return InvokeResult(
        kind=ResultKind.FUNCTION_ERROR,
        response=response,
        error=f"{status_line}: {detail}" if detail else status_line,
        status_code=status,
        function_error="Unhandled",
        executed_version=version,
        duration=duration,
    )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: delta seconds or an HTTP date (RFC 9110)."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def extra_header_name(name: str) -> str:
    """The request header carrying an invocation label: "mapping" -> "X-Esm-Mapping"."""
    parts = [part.capitalize() for part in _NAME_PARTS.split(name) if part]
    return "-".join(["X", "Esm", *parts])


def _header_value(value: str) -> str:
    # Labels come from configuration and stream metadata; a line break would end the header.
    return " ".join(str(value).splitlines())


async def _read_limited(response: aiohttp.ClientResponse) -> bytes | None:
    """The response body, or None when it is larger than a synchronous invocation may return."""
    length = response.content_length
    if length is not None and length > MAX_INVOKE_PAYLOAD_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > MAX_INVOKE_PAYLOAD_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _transport_error(exc: BaseException, url: URL) -> str:
    detail = str(exc) or type(exc).__name__
    return f"cannot reach {url}: {type(exc).__name__}: {detail}"
