"""/readyz is about esm itself: an unreachable AWS keeps it 200 (a sidecar's pod stays in its
Service), while /status shows that the mapping does not poll yet."""

from __future__ import annotations

import aiohttp
import anyio
import pytest

from esm.daemon import Daemon
from esm.testing import RecordingBackend

from ..conftest import free_port
from .helpers import daemon_config

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_readyz_does_not_wait_for_an_unreachable_aws() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    config = daemon_config(nowhere, "arn:aws:kinesis:us-east-1:000000000000:stream/gone")
    daemon = Daemon(config, backends={"fn": RecordingBackend()})
    answers: list[int] = []
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await tg.start(
                lambda task_status: daemon.run(handle_signals=False, task_status=task_status)
            )
            url = f"http://127.0.0.1:{daemon.admin_port}/readyz"
            async with aiohttp.ClientSession() as http:
                async with http.get(url) as answer:
                    answers.append(answer.status)
                status = daemon.status()
                daemon.request_stop()
                # A daemon that is stopping is no longer ready.
                async with http.get(url) as answer:
                    answers.append(answer.status)
    assert answers == [200, 503]
    [mapping] = status["mappings"]
    assert mapping["ready"] is False
