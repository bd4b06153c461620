"""`esm status` against a running esm on moto: the table a person reads, the JSON, watching,
and one clear line when no esm answers."""

from __future__ import annotations

import json
import socket
import sys
import uuid
from typing import Any

import anyio
import pytest

from esm.daemon import Daemon
from esm.testing import RecordingBackend, function_error

from .helpers import create_stream, daemon_config, put_records

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def run_cli(*argv: str) -> tuple[int, str, str]:
    """The command as a user runs it, in a process of its own (the daemon it asks is served
    by this test's event loop, and its logs stay out of the command's output)."""
    done = await anyio.run_process([sys.executable, "-m", "esm", *argv], check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_status_shows_each_mapping_as_a_table_and_as_json(
    moto_endpoint: str, kinesis: Any, sqs: Any, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 2)
    queue = f"jobs-{uuid.uuid4().hex[:8]}"
    await sqs.create_queue(QueueName=queue)
    queue_arn = f"arn:aws:sqs:us-east-1:123456789012:{queue}"
    config = daemon_config(
        moto_endpoint,
        arn,
        batch_size=10,
        extra_mapping=f"    name: orders\n  - FunctionName: fn\n    EventSourceArn: {queue_arn}\n"
        "    name: jobs\n",
    )
    # moto's server answers one request at a time: a long poll would hold up the stream.
    config = config.model_copy(
        update={"sqs": config.sqs.model_copy(update={"wait_time_seconds": 0})}
    )
    # The stream's function keeps failing, so a batch stays in flight with its error.
    backend = RecordingBackend(lambda event, n: function_error("the database is down"))
    daemon = Daemon(config, backends={"fn": backend})
    await put_records(kinesis, stream_name, 5)
    async with anyio.create_task_group() as tg:
        await tg.start(
            lambda task_status: daemon.run(handle_signals=False, task_status=task_status)
        )
        with anyio.fail_after(30):
            while len(backend.events) < 2:
                await anyio.sleep(0.05)
        url = f"http://127.0.0.1:{daemon.admin_port}"

        code, out, err = await run_cli("status", "--url", url)
        assert (code, err) == (0, "")
        head, _, table = out.partition("\n\n")
        assert head.startswith("esm ready, up ")
        assert head.endswith(", 2 mappings")
        header, *rows = table.splitlines()
        assert header.split() == [
            "mapping", "source", "function", "state", "units", "owner", "lag", "in", "flight",
            "last", "error",
        ]  # fmt: skip
        orders = next(row for row in rows if row.startswith("orders "))
        jobs = next(row for row in rows if row.startswith("jobs "))
        assert f"kinesis {stream_name}" in orders
        assert "running" in orders
        assert "2 shards" in orders
        assert "age " in orders
        assert "the database is down" in orders
        assert f"sqs {queue}" in jobs
        assert "pollers" in jobs
        assert "0 visible" in jobs

        code, out, err = await run_cli("status", "--url", url, "--json")
        assert code == 0
        status = json.loads(out)
        assert [m["name"] for m in status["mappings"]] == ["orders", "jobs"]

        code, out, err = await run_cli("status", "--url", url.removeprefix("http://"))
        assert code == 0
        assert "orders" in out
        daemon.request_stop()


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_no_esm_at_the_address_is_one_line() -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    code, out, err = await run_cli("status", "--url", url)
    assert code == 1
    assert out == ""
    assert err.startswith(f"esm: cannot reach esm at {url}: ")
    assert len(err.splitlines()) == 1


async def test_the_address_comes_from_the_configuration(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ESM_ADMIN_URL", raising=False)
    port = unused_port()
    path = tmp_path / "esm.yaml"
    path.write_text(
        f"admin: {{listen: '0.0.0.0:{port}'}}\nfunctions: {{fn: {{type: http, url: 'http://x/'}}}}\n"
        "mappings: [{FunctionName: fn, EventSourceArn: 'arn:aws:sqs:us-east-1:123456789012:q'}]\n"
    )
    code, _, err = await run_cli("status", "-c", str(path))
    # 0.0.0.0 is reached on the loopback address.
    assert code == 1
    assert f"cannot reach esm at http://127.0.0.1:{port}:" in err
