"""Pausing and resuming a running esm's mappings through the admin API and `esm pause` /
`esm resume`, against moto: a paused mapping delivers nothing and keeps its place; write
operations need the admin token."""

from __future__ import annotations

import os
import sys
import uuid
from typing import Any

import anyio
import pytest

from esm.config import EsmConfig
from esm.daemon import Daemon
from esm.testing import RecordingBackend, kinesis_data

from .helpers import create_stream, daemon_config, put_records

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

TOKEN = "s3cret-admin-token-0123"


async def esm(*argv: str, token: str | None = TOKEN) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ESM_ADMIN_TOKEN"}
    if token is not None:
        env["ESM_ADMIN_TOKEN"] = token
    done = await anyio.run_process([sys.executable, "-m", "esm", *argv], check=False, env=env)
    return done.returncode, done.stdout.decode().strip(), done.stderr.decode().strip()


def config_with(endpoint: str, arn: str, queue_arn: str, token: str | None) -> EsmConfig:
    config = daemon_config(
        endpoint,
        arn,
        batch_size=10,
        extra_mapping=f"    name: orders\n  - FunctionName: fn\n    EventSourceArn: {queue_arn}\n"
        "    name: jobs\n",
    )
    return config.model_copy(
        update={
            "admin": config.admin.model_copy(update={"token": token}),
            # moto's server answers one request at a time: no long poll holding up the stream.
            "sqs": config.sqs.model_copy(update={"wait_time_seconds": 0}),
        }
    )


async def wait_for(condition: Any, seconds: float = 30) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.05)


async def test_a_paused_mapping_delivers_nothing_until_resumed(
    moto_endpoint: str, kinesis: Any, sqs: Any, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 2)
    queue = f"jobs-{uuid.uuid4().hex[:8]}"
    url = (await sqs.create_queue(QueueName=queue))["QueueUrl"]
    config = config_with(moto_endpoint, arn, f"arn:aws:sqs:us-east-1:123456789012:{queue}", TOKEN)
    backend = RecordingBackend()
    daemon = Daemon(config, backends={"fn": backend})
    first = await put_records(kinesis, stream_name, 20, prefix="before-")

    def stream_data() -> list[bytes]:
        return [kinesis_data(r) for r in backend.delivered_records() if "kinesis" in r]

    def messages() -> list[str]:
        return [r["body"] for r in backend.delivered_records() if "body" in r]

    async with anyio.create_task_group() as tg:
        await tg.start(
            lambda task_status: daemon.run(handle_signals=False, task_status=task_status)
        )
        admin = f"http://127.0.0.1:{daemon.admin_port}"
        await wait_for(lambda: sorted(stream_data()) == sorted(first))

        assert await esm("pause", "orders", "--url", admin) == (0, "mapping orders: paused", "")
        assert await esm("pause", "orders", "--url", admin) == (
            0,
            "mapping orders: paused (already)",
            "",
        )
        (orders, jobs) = daemon.status()["mappings"]
        assert (orders["paused"], jobs["paused"]) == (True, False)
        code, table, _ = await esm("status", "--url", admin)
        rows = {line.split()[0]: line.split() for line in table.splitlines()[2:]}
        assert (rows["orders"][4], rows["jobs"][4]) == ("paused", "running")
        later = await put_records(kinesis, stream_name, 15, prefix="after-")
        await sqs.send_message(QueueUrl=url, MessageBody="still flowing")
        # The other mapping goes on; the paused one delivers nothing at all meanwhile.
        await wait_for(lambda: messages() == ["still flowing"])
        await anyio.sleep(1.5)  # several polling intervals
        assert sorted(stream_data()) == sorted(first)
        assert (
            daemon.metrics.registry.get_sample_value("esm_mapping_paused", {"mapping": "orders"})
            == 1
        )

        code, out, _ = await esm("resume", "orders", "--url", admin)
        assert (code, out) == (0, "mapping orders: running")
        # It reads on from where it was: the new records, none twice.
        await wait_for(lambda: len(stream_data()) == len(first) + len(later))
        assert sorted(stream_data()) == sorted(first + later)
        assert daemon.status()["mappings"][0]["paused"] is False
        daemon.request_stop()


async def test_write_operations_need_the_token(
    moto_endpoint: str, kinesis: Any, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    queue_arn = "arn:aws:sqs:us-east-1:123456789012:nothing-here"
    for token, wrong_token in ((None, None), (TOKEN, "not-the-token")):
        config = config_with(moto_endpoint, arn, queue_arn, token)
        daemon = Daemon(config, backends={"fn": RecordingBackend()})
        async with anyio.create_task_group() as tg:
            await tg.start(
                lambda task_status, d=daemon: d.run(handle_signals=False, task_status=task_status)
            )
            admin = f"http://127.0.0.1:{daemon.admin_port}"
            code, out, err = await esm("pause", "orders", "--url", admin, token=wrong_token)
            assert (code, out) == (1, "")
            if token is None:
                assert err.endswith(
                    "403 write operations are off: set admin.token or ESM_ADMIN_TOKEN to allow them"
                )
            else:
                assert err.endswith("401 a valid token is needed (Authorization: Bearer TOKEN)")
                code, _, err = await esm("pause", "nope", "--url", admin)
                assert (code, err.endswith("404 no mapping nope")) == (1, True)
            assert daemon.status()["mappings"][0]["paused"] is False
            daemon.request_stop()
