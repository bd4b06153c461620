"""The HTTP function backend: POST each event to a URL and classify the answer as Lambda would."""

from __future__ import annotations

import email.utils
import os
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, NoReturn

import aiohttp
import anyio
import structlog
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
from esm.redact import redact

THROTTLE_STATUSES: Final = frozenset({429, 503})
# Reaching a local app takes milliseconds; one that cannot be reached in this time is down,
# which is a system error, not a function that is slow to answer.
CONNECT_TIMEOUT_SECONDS: Final = 5.0
# Idle pooled connections are closed before a typical server's own keep-alive limit would
# close them under us (a request on a connection the server just closed fails).
KEEPALIVE_SECONDS: Final = 4.0
# aiohttp's own default; an invocation waiting for a free connection spends its timeout.
DEFAULT_MAX_CONNECTIONS: Final = 100
# How often a header file is checked for a new version. Kubernetes takes up to a minute to
# publish a rotated secret to the pod, so a few more seconds do not matter.
SECRET_CHECK_SECONDS: Final = 5.0

_NO_HEADERS: Final[Mapping[str, str | HeaderSource]] = MappingProxyType({})
_NAME_PARTS = re.compile(r"[^A-Za-z0-9]+")

log = structlog.get_logger("esm.backends.http")


@dataclass(frozen=True, slots=True)
class HeaderSource:
    """Where a header's value comes from when it must not be written in the configuration.

    Exactly one of `env` (an environment variable, read once when the backend is created) and
    `file` (a file such as a mounted Kubernetes secret, re-read when it changes) is set; the
    value sent is `prefix` (e.g. "Bearer ") followed by the variable's or file's content.
    """

    env: str | None = None
    file: str | None = None
    prefix: str = ""

    def __post_init__(self) -> None:
        if (self.env is None) == (self.file is None):
            raise ValueError("a HeaderSource takes exactly one of env= and file=")


class HttpBackend:
    """Invokes a function served over HTTP, typically an app container in the same pod.

    Each invocation is one POST of the event JSON to `url` on a pooled keep-alive connection;
    docs/backends.md describes the request headers and how each answer is classified.

    `max_connections` bounds the pool (requests beyond it wait for a free connection, inside
    their timeout). For https:// URLs the server is verified against `ca_bundle` (a PEM file;
    the system's CAs when None) unless `verify_tls` is False, and `client_cert` / `client_key`
    (PEM files; the key may be inside the certificate file) authenticate esm for mutual TLS.
    A header value is either the text to send or a `HeaderSource`; header values are secrets
    and never appear in reprs, errors or logs.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        headers: Mapping[str, str | HeaderSource] = _NO_HEADERS,
        function_name: str,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        ca_bundle: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        verify_tls: bool = True,
        secret_check_interval: float = SECRET_CHECK_SECONDS,
    ) -> None:
        try:
            parsed = URL(url)
        except (TypeError, ValueError) as exc:
            raise BackendError(
                redact(f"function {function_name!r}: invalid url {url!r}: {exc}")
            ) from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise BackendError(
                f"function {function_name!r}: url {redact(url)!r} must be an absolute http:// "
                "or https:// URL"
            )
        if (parsed.user is not None or parsed.password is not None) and any(
            name.lower() == "authorization" for name in headers
        ):
            # aiohttp would refuse every request (ValueError): say it once, here.
            raise BackendError(
                f"function {function_name!r}: the url has credentials and an Authorization "
                "header is set: give only one of them"
            )
        if timeout <= 0:
            raise BackendError(f"function {function_name!r}: timeout must be positive")
        if isinstance(max_connections, bool) or max_connections < 1:
            raise BackendError(f"function {function_name!r}: max_connections must be at least 1")
        tls_options = {
            "ca_bundle": ca_bundle,
            "client_cert": client_cert,
            "client_key": client_key,
        }
        tls_set = [name for name, value in tls_options.items() if value is not None]
        if not verify_tls:
            tls_set.append("verify_tls")
        if parsed.scheme != "https" and tls_set:
            # Sending over plain HTTP what was meant to be verified or authenticated is
            # worse than not starting.
            raise BackendError(
                f"function {function_name!r}: {', '.join(tls_set)}: TLS settings apply only "
                "to https:// urls"
            )
        self.url = parsed
        self.timeout = timeout
        self.function_name = function_name
        self.max_connections = max_connections
        self._ssl: ssl.SSLContext | None = None
        if parsed.scheme == "https":
            self._ssl = _tls_context(
                function_name,
                ca_bundle=ca_bundle,
                client_cert=client_cert,
                client_key=client_key,
                verify=verify_tls,
            )
        self._headers: CIMultiDict[str] = CIMultiDict()
        self._file_headers: list[_FileHeader] = []
        for name, value in headers.items():
            if isinstance(value, HeaderSource) and value.file is not None:
                self._file_headers.append(
                    _FileHeader(
                        name, value.file, value.prefix, function_name, secret_check_interval
                    )
                )
            else:
                self._headers[name] = _static_header(function_name, name, value)
        self._headers.setdefault("User-Agent", f"esm/{__version__}")
        self._headers["Content-Type"] = "application/json"
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"HttpBackend({redact(str(self.url))!r}, function_name={self.function_name!r})"

    def _open_session(self) -> aiohttp.ClientSession:
        # Created on first use so that it belongs to the running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.max_connections,
                    keepalive_timeout=KEEPALIVE_SECONDS,
                    ssl=True if self._ssl is None else self._ssl,
                ),
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
        headers: CIMultiDict[str] = CIMultiDict()
        now = time.monotonic()
        for file_header in self._file_headers:
            headers[file_header.name] = file_header.value(now)
        # Set after the configured headers so that none of them can replace these.
        headers["Content-Type"] = "application/json"
        headers["Lambda-Runtime-Aws-Request-Id"] = invocation.request_id
        headers["Lambda-Runtime-Deadline-Ms"] = str(int(invocation.deadline * 1000))
        headers["Lambda-Runtime-Invoked-Function-Arn"] = invocation.function_arn
        for name, value in invocation.extra.items():
            headers[extra_header_name(name)] = _header_value(value)
        # traceparent and tracestate (W3C trace context), when tracing is on.
        headers.update(invocation.trace_headers)
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


class _FileHeader:
    """A header whose value is a file's content, read again once the file has changed."""

    __slots__ = (
        "_checked_at",
        "_failing",
        "_interval",
        "_value",
        "_version",
        "name",
        "path",
        "prefix",
    )

    def __init__(
        self, name: str, path: str, prefix: str, function_name: str, interval: float
    ) -> None:
        self.name = name
        self.path = path
        self.prefix = prefix
        self._interval = interval
        try:
            self._version = _file_version(path)
            self._value = prefix + _read_secret(path)
        except (OSError, _UnusableSecret) as exc:
            raise BackendError(
                f"function {function_name!r}: header {name!r}: cannot use {path}: {_reason(exc)}"
            ) from None
        self._checked_at = time.monotonic()
        self._failing = False

    def __repr__(self) -> str:
        return f"_FileHeader({self.name!r}, file={self.path!r})"

    def value(self, now: float) -> str:
        if now - self._checked_at >= self._interval:
            self._checked_at = now
            self._refresh()
        return self._value

    def _refresh(self) -> None:
        # A stat every few seconds is cheap enough to do inline on the event loop; the file is
        # only read again when it has changed. The version is taken before the read, so a
        # change racing the read is seen at the next check.
        try:
            version = _file_version(self.path)
            if version == self._version:
                return
            value = self.prefix + _read_secret(self.path)
        except (OSError, _UnusableSecret) as exc:
            # Mid-rotation or briefly unmounted: the previous value is the best there is.
            if not self._failing:
                log.warning(
                    "header file unusable, keeping its previous value",
                    header=self.name,
                    file=self.path,
                    error=_reason(exc),
                )
            self._failing = True
            return
        self._value = value
        self._version = version
        self._failing = False
        log.info("header file changed, using its new value", header=self.name, file=self.path)


class _UnusableSecret(Exception):
    """A secret file whose content cannot be a header value; the message never quotes it."""


def _file_version(path: str) -> tuple[int, int, int, int]:
    # The inode catches Kubernetes' rotation (a new file behind a swapped symlink) even when
    # the modification time did not move; size and mtime catch rewrites in place.
    stat = os.stat(path)
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _read_secret(path: str) -> str:
    with open(path, "rb") as file:
        data = file.read()
    try:
        text = data.decode()
    except UnicodeDecodeError:
        # The decode error's message quotes the offending byte, a piece of the secret.
        raise _UnusableSecret("the file is not UTF-8 text") from None
    text = text.rstrip("\r\n")
    if "\n" in text or "\r" in text:
        raise _UnusableSecret("the value must be on one line")
    return text


def _static_header(function_name: str, name: str, value: str | HeaderSource) -> str:
    """The value of a header given as text or as an environment variable."""
    if isinstance(value, HeaderSource):
        assert value.env is not None
        text = os.environ.get(value.env)
        if text is None:
            raise BackendError(
                f"function {function_name!r}: header {name!r}: environment variable "
                f"{value.env!r} is not set"
            )
        text = value.prefix + text.rstrip("\r\n")
    else:
        text = value
    if "\n" in text or "\r" in text:
        raise BackendError(
            f"function {function_name!r}: header {name!r}: the value must be on one line"
        )
    return text


def _tls_context(
    function_name: str,
    *,
    ca_bundle: str | None,
    client_cert: str | None,
    client_key: str | None,
    verify: bool,
) -> ssl.SSLContext:
    """The TLS settings of every connection to the function, built once."""
    if client_key is not None and client_cert is None:
        raise BackendError(f"function {function_name!r}: client_key needs client_cert")
    try:
        # With a bundle, only its CAs are trusted (as curl --cacert does).
        context = ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise BackendError(
            f"function {function_name!r}: cannot load ca_bundle {ca_bundle}: {_reason(exc)}"
        ) from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        log.warning("TLS certificate verification is off", function=function_name)
    if client_cert is not None:

        def no_password() -> NoReturn:
            # Without a callback OpenSSL would prompt on the terminal and hang the start.
            raise _UnusableSecret("the key is encrypted; esm needs an unencrypted key")

        try:
            context.load_cert_chain(client_cert, client_key, password=no_password)
        except (OSError, ssl.SSLError, _UnusableSecret) as exc:
            files = client_cert if client_key is None else f"{client_cert} and {client_key}"
            raise BackendError(
                f"function {function_name!r}: cannot load the client certificate from "
                f"{files}: {_reason(exc)}"
            ) from None
    return context


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


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
    return redact(f"cannot reach {url}: {type(exc).__name__}: {detail}")
