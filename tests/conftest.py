"""Fixtures shared by every test: the async backend and moto's server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiobotocore.session import get_session

from esm.demo import serial_emulator


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:

    # moto accepts any credentials; these keep botocore from looking for real ones.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    # One request at a time, as the demo runs it: moto's backends race under concurrent
    # requests (two ReceiveMessage calls can take the same message); real AWS never does.
    server = serial_emulator("127.0.0.1", port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@contextlib.asynccontextmanager
async def _moto_client(service: str, endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        service, region_name="us-east-1", endpoint_url=endpoint
    ) as client:
        yield client


@pytest.fixture
async def kinesis(moto_endpoint: str) -> AsyncIterator[Any]:
    async with _moto_client("kinesis", moto_endpoint) as client:
        yield client


@pytest.fixture
async def dynamodb(moto_endpoint: str) -> AsyncIterator[Any]:
    async with _moto_client("dynamodb", moto_endpoint) as client:
        yield client


@pytest.fixture
async def sqs(moto_endpoint: str) -> AsyncIterator[Any]:
    async with _moto_client("sqs", moto_endpoint) as client:
        yield client


@pytest.fixture
def stream_name() -> str:
    """A stream name of this test's own, so tests never see each other's records."""
    return f"test-{uuid.uuid4().hex[:12]}"
