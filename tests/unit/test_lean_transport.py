"""The lean transport raises, for each way an exchange fails, the botocore exception that
aiobotocore's own `AIOHTTPSession.send` raises for it: both are run side by side over a
session that fails the same way."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import get_session
from aiohttp import http_exceptions
from botocore.awsrequest import AWSPreparedRequest
from botocore.exceptions import BotoCoreError

from esm.aws.lean_transport import SessionTransport

pytestmark = pytest.mark.anyio

URL = "http://127.0.0.1:9"
KEY: Any = SimpleNamespace(host="127.0.0.1", port=9, ssl=False, is_ssl=False)

FAILURES: list[Callable[[], Exception]] = [
    lambda: aiohttp.ClientConnectorSSLError(KEY, ssl.SSLError("bad certificate")),
    lambda: aiohttp.ClientConnectorCertificateError(KEY, ssl.SSLError("unknown issuer")),
    lambda: aiohttp.ClientProxyConnectionError(KEY, OSError(111, "refused")),
    lambda: aiohttp.ServerDisconnectedError(),
    lambda: aiohttp.ClientPayloadError("the answer stopped half way"),
    lambda: http_exceptions.BadStatusLine("HTTP/9 ???"),
    lambda: aiohttp.ServerTimeoutError("Connection timeout to host http://127.0.0.1:9"),
    lambda: aiohttp.ServerTimeoutError("Timeout on reading data from socket"),
    lambda: aiohttp.ClientConnectorError(KEY, OSError(111, "Connection refused")),
    lambda: aiohttp.ClientOSError(104, "Connection reset by peer"),
    lambda: socket.gaierror(-2, "Name or service not known"),
    lambda: TimeoutError(),
    lambda: ValueError("something else entirely"),
]


class _FailingSession:
    """An aiohttp session whose every request fails with `failure`."""

    def __init__(self, failure: Exception) -> None:
        self.failure = failure

    def request(self, *args: Any, **kwargs: Any) -> Any:
        raise self.failure


@pytest.fixture
async def http_session() -> AsyncIterator[Any]:
    async with get_session().create_client(
        "kinesis",
        region_name="us-east-1",
        endpoint_url=URL,
        aws_access_key_id="a",
        aws_secret_access_key="b",
    ) as client:
        yield client._endpoint.http_session


@pytest.mark.parametrize("make_failure", FAILURES)
async def test_a_failed_exchange_raises_what_aiobotocore_raises(
    http_session: Any, make_failure: Callable[[], Exception], monkeypatch: pytest.MonkeyPatch
) -> None:
    failure = make_failure()

    async def failing_session(proxy_url: str | None) -> _FailingSession:
        return _FailingSession(failure)

    monkeypatch.setattr(http_session, "_get_session", failing_session)
    request = AWSPreparedRequest("POST", URL, {"Content-Type": "x"}, b"{}", False)
    with pytest.raises(BotoCoreError) as theirs:
        await http_session.send(request)
    with pytest.raises(BotoCoreError) as ours:
        await SessionTransport(http_session, URL).post({"Content-Type": "x"}, b"{}")
    assert type(ours.value) is type(theirs.value)
    assert str(ours.value) == str(theirs.value)
    assert ours.value.__cause__ is failure


async def test_cancellation_passes_through(
    http_session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing_session(proxy_url: str | None) -> _FailingSession:
        return _FailingSession(asyncio.CancelledError())  # type: ignore[arg-type]

    monkeypatch.setattr(http_session, "_get_session", failing_session)
    with pytest.raises(asyncio.CancelledError):
        await SessionTransport(http_session, URL).post({}, b"{}")
