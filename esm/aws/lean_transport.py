"""The lean path's transport: POSTs on the aiohttp session of an aiobotocore client, with
what goes wrong on the way raised as the botocore exceptions the client raises.

aiobotocore's `AIOHTTPSession.send` looks up the proxy for the URL, rebuilds the headers
twice and wraps the answer in botocore's response objects on every call, about an eighth of
an idle GetRecords' CPU. The proxy of one endpoint is the same for every call, so it is
looked up once here; the session is the client's own (its TLS context and CA bundle,
connection pool, timeouts), taken from the client's HTTP session for that proxy.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, Final

import aiohttp
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
)
from botocore.httpsession import mask_proxy_url
from botocore.utils import ensure_boolean
from yarl import URL

__all__ = ["Answer", "RawHeaders", "SessionTransport", "botocore_error"]

RawHeaders = tuple[tuple[bytes, bytes], ...]
Answer = tuple[int, bytes, RawHeaders]
"""(status, body, headers as they came) of one HTTP answer."""

# Sent with every request, as aiobotocore sends it: the session does not decompress.
_IDENTITY: Final = "identity"


class SessionTransport:
    """POSTs to one endpoint on an aiobotocore client's HTTP session."""

    def __init__(self, http_session: Any, url: str) -> None:
        self._http_session = http_session
        self._url = url
        self._target = URL(url, encoded=True)
        proxies = http_session._proxy_config
        self._proxy_url: str | None = proxies.proxy_url_for(url)
        self._proxy_headers: dict[str, str] = proxies.proxy_headers_for(url)
        if ensure_boolean(os.environ.get("BOTO_EXPERIMENTAL__ADD_PROXY_HOST_HEADER", "")):
            self._proxy_headers["host"] = self._target.host or ""
        self._session: aiohttp.ClientSession | None = None

    async def post(self, headers: dict[str, str], body: bytes) -> Answer:
        """The answer to a POST of `body`; raises botocore's exception for a failed exchange."""
        session = self._session
        if session is None:
            # The client's own session for this proxy, made on the client's first use.
            session = self._session = await self._http_session._get_session(self._proxy_url)
        headers["Accept-Encoding"] = _IDENTITY
        try:
            async with session.request(
                "POST",
                self._target,
                data=body,
                headers=headers,
                proxy=self._proxy_url,
                proxy_headers=self._proxy_headers,
            ) as response:
                return response.status, await response.read(), response.raw_headers
        except Exception as exc:  # CancelledError is not an Exception: it passes.
            raise botocore_error(exc, self._url, self._proxy_url) from exc


def botocore_error(exc: Exception, url: str, proxy_url: str | None = None) -> Exception:
    """The botocore exception that aiobotocore's `AIOHTTPSession.send` raises for `exc`."""
    # In aiobotocore's order: an SSL error is a connector error, a server timeout an
    # asyncio timeout, so the narrower ones come first.
    error: Exception
    if isinstance(exc, aiohttp.ClientSSLError):
        error = SSLError(endpoint_url=url, error=exc)
    elif isinstance(exc, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError):
        error = ProxyConnectionError(proxy_url=mask_proxy_url(proxy_url), error=exc)
    elif isinstance(
        exc,
        aiohttp.ServerDisconnectedError
        | aiohttp.ClientPayloadError
        | aiohttp.http_exceptions.BadStatusLine,
    ):
        error = ConnectionClosedError(error=exc, request=None, endpoint_url=url)
    elif isinstance(exc, aiohttp.ServerTimeoutError) and str(exc).lower().startswith("connect"):
        error = ConnectTimeoutError(endpoint_url=url, error=exc)
    elif isinstance(exc, aiohttp.ServerTimeoutError):
        error = ReadTimeoutError(endpoint_url=url, error=exc)
    elif isinstance(
        exc, aiohttp.ClientConnectorError | aiohttp.ClientConnectionError | socket.gaierror
    ):
        error = EndpointConnectionError(endpoint_url=url, error=exc)
    elif isinstance(exc, asyncio.TimeoutError):
        error = ReadTimeoutError(endpoint_url=url, error=exc)
    else:
        error = HTTPClientError(error=exc)
    return error
