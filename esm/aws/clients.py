"""Opening aiobotocore clients with esm's timeouts, retries and connection pool."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from esm.aws.call_metrics import CallObserver, instrument_client

__all__ = ["ClientOpener", "ClientPool", "open_client"]

# Connections per AWS client: one per shard being read at once, with room to spare.
_MAX_POOL_CONNECTIONS = 64
# Lambda's longest function timeout is 900 s; the Invoke call may take that long.
_LAMBDA_READ_TIMEOUT_SECONDS = 910


def _client_config(service: str) -> AioConfig:
    if service == "lambda":
        # An invocation may run 15 minutes, and a retried Invoke would run the function
        # twice: esm's own delivery retries, the client never does.
        return AioConfig(
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=5,
            read_timeout=_LAMBDA_READ_TIMEOUT_SECONDS,
            max_pool_connections=_MAX_POOL_CONNECTIONS,
        )
    return AioConfig(
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=_MAX_POOL_CONNECTIONS,
    )


@contextlib.asynccontextmanager
async def open_client(service: str, region: str, endpoint_url: str | None) -> AsyncIterator[Any]:
    """An aiobotocore client for `service` in `region`, at `endpoint_url` when one is given
    (an emulator) and AWS's own endpoint otherwise."""
    session = get_session()
    async with session.create_client(
        service,
        region_name=region,
        endpoint_url=endpoint_url,
        config=_client_config(service),
    ) as client:
        yield client


ClientOpener = Callable[[str, str], AbstractAsyncContextManager[Any]]
"""Opens an AWS client for (service, region); tests pass one that opens fakes."""


class ClientPool:
    """AWS clients opened on demand, one per service and region, closed with `stack`; with
    `observe`, every call of every client is told to it (`esm.aws.call_metrics`)."""

    def __init__(
        self,
        opener: ClientOpener,
        stack: contextlib.AsyncExitStack,
        observe: CallObserver | None = None,
    ) -> None:
        self._opener = opener
        self._stack = stack
        self._observe = observe
        self._opened: dict[tuple[str, str], Any] = {}

    async def get(self, service: str, region: str) -> Any:
        key = (service, region)
        if key not in self._opened:
            client = await self._stack.enter_async_context(self._opener(service, region))
            # Tests' fakes carry no botocore events: only real clients are counted.
            if self._observe is not None and hasattr(getattr(client, "meta", None), "events"):
                instrument_client(client, self._observe)
            self._opened[key] = client
        return self._opened[key]
