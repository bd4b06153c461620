"""Fixtures shared by every test: the async backend and moto's server on 127.0.0.1."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiobotocore.session import get_session


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serial_moto_server(port: int) -> Any:
    """moto's server, answering one request at a time.

    moto's backends are not safe under concurrent requests (two ReceiveMessage calls can take
    the same SQS message; iterating a FIFO queue's groups can fail), which real AWS never
    does; serving requests one by one makes the emulator behave like the service. Every
    test uses short polling, so no request holds the server.
    """
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class SerialMotoServer(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = DomainDispatcherApplication(create_backend_app)
            self._server = make_server(
                "127.0.0.1", port, app, threaded=False, request_handler=MotoRequestHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever()

    return SerialMotoServer(ip_address="127.0.0.1", port=port, verbose=False)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:

    # moto accepts any credentials; these keep botocore from looking for real ones.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = _serial_moto_server(port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
async def kinesis(moto_endpoint: str) -> AsyncIterator[Any]:
    session = get_session()
    async with session.create_client(
        "kinesis", region_name="us-east-1", endpoint_url=moto_endpoint
    ) as client:
        yield client


@pytest.fixture
def stream_name() -> str:
    """A stream name of this test's own, so tests never see each other's records."""
    return f"test-{uuid.uuid4().hex[:12]}"
