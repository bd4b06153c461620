"""Reloading esm.yaml in a running esm, against moto: a mapping added, changed or removed
starts, restarts or stops alone while the others go on; a configuration that does not
validate is refused and the running one stays. Through `esm reload` and SIGHUP."""

from __future__ import annotations

import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from esm.daemon import Daemon
from esm.testing import RecordingBackend

from .helpers import (
    create_stream,
    put_records,
    queue_mapping,
    stream_data,
    stream_mapping,
    wait_for,
)
from .helpers import operations_config as config_text
from .helpers import run_esm as esm

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def bodies(backend: RecordingBackend) -> list[str]:
    return [r["body"] for r in backend.delivered_records() if "body" in r]


async def test_a_reload_starts_changes_and_stops_mappings_alone(
    moto_endpoint: str, kinesis: Any, sqs: Any, stream_name: str, tmp_path: Path
) -> None:
    arn = await create_stream(kinesis, stream_name, 2)
    queue = f"jobs-{uuid.uuid4().hex[:8]}"
    queue_url = (await sqs.create_queue(QueueName=queue))["QueueUrl"]
    queue_arn = f"arn:aws:sqs:us-east-1:123456789012:{queue}"
    path = tmp_path / "esm.yaml"
    path.write_text(config_text(moto_endpoint, stream_mapping(arn)))
    from esm.config import load_config

    backend = RecordingBackend()
    daemon = Daemon(load_config(path), backends={"fn": backend}, config_path=str(path))
    first = await put_records(kinesis, stream_name, 10, prefix="first-")
    async with anyio.create_task_group() as tg:
        await tg.start(
            lambda task_status: daemon.run(handle_signals=False, task_status=task_status)
        )
        admin = f"http://127.0.0.1:{daemon.admin_port}"
        await wait_for(lambda: len(stream_data(backend)) == 10)
        (orders_id,) = daemon.supervisors
        orders = daemon.runners[orders_id]

        # Added: the queue mapping starts; the stream mapping's engine is the same object.
        path.write_text(config_text(moto_endpoint, stream_mapping(arn) + queue_mapping(queue_arn)))
        assert await esm("reload", "--url", admin) == (0, "reloaded: added jobs; 1 unchanged", "")
        assert daemon.runners[orders_id] is orders
        await sqs.send_message(QueueUrl=queue_url, MessageBody="hello")
        more = await put_records(kinesis, stream_name, 5, prefix="more-")
        await wait_for(lambda: bodies(backend) == ["hello"] and len(stream_data(backend)) == 15)
        assert sorted(stream_data(backend)) == sorted(first + more)
        assert [m["name"] for m in daemon.status()["mappings"]] == ["orders", "jobs"]
        assert daemon.ready()

        # Changed: the stream mapping restarts from its checkpoints with the new BatchSize;
        # the queue mapping goes on untouched.
        jobs_id = next(i for i in daemon.supervisors if i != orders_id)
        jobs = daemon.runners[jobs_id]
        path.write_text(
            config_text(moto_endpoint, stream_mapping(arn, batch_size=3) + queue_mapping(queue_arn))
        )
        code, out, _ = await esm("reload", "--url", admin)
        assert (code, out) == (0, "reloaded: restarted orders; 1 unchanged")
        assert daemon.runners[jobs_id] is jobs
        assert daemon.runners[orders_id] is not orders
        latest = await put_records(kinesis, stream_name, 7, prefix="latest-")
        await wait_for(lambda: len(stream_data(backend)) == 22)
        # Nothing read twice across the restart, and the new batch size is in force.
        assert sorted(stream_data(backend)) == sorted(first + more + latest)
        assert daemon.status()["mappings"][0]["batch_size"] == 3
        sizes = [len(e["Records"]) for e in backend.events if "kinesis" in e["Records"][0]]
        assert max(sizes[-3:]) <= 3

        # Removed: the queue mapping stops; what is sent to the queue stays there.
        path.write_text(config_text(moto_endpoint, stream_mapping(arn, batch_size=3)))
        code, out, _ = await esm("reload", "--url", admin)
        assert (code, out) == (0, "reloaded: removed jobs; 1 unchanged")
        await sqs.send_message(QueueUrl=queue_url, MessageBody="nobody reads this")
        await anyio.sleep(1.0)
        assert bodies(backend) == ["hello"]
        assert list(daemon.supervisors) == [orders_id]
        assert daemon.ready()
        daemon.request_stop()


async def test_a_configuration_that_fails_validation_is_refused(
    moto_endpoint: str, kinesis: Any, stream_name: str, tmp_path: Path
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    path = tmp_path / "esm.yaml"
    good = config_text(moto_endpoint, stream_mapping(arn))
    path.write_text(good)
    from esm.config import load_config

    backend = RecordingBackend()
    daemon = Daemon(load_config(path), backends={"fn": backend}, config_path=str(path))
    async with anyio.create_task_group() as tg:
        await tg.start(
            lambda task_status: daemon.run(handle_signals=False, task_status=task_status)
        )
        admin = f"http://127.0.0.1:{daemon.admin_port}"
        (orders_id,) = daemon.supervisors
        orders, config = daemon.runners[orders_id], daemon.config
        refusals = [
            (
                good.replace("BatchSize: 10", "BatchSize: 0"),
                "is not valid, the running configuration stays: mappings[0] (fn <- arn:aws:",
            ),
            (
                good.replace("handler: esm.examples.handlers:handle", "handler: no_such:thing"),
                "is not valid, the running configuration stays: functions.fn",
            ),
            (
                good.replace("backend: memory", f"backend: sqlite\n  path: {tmp_path}/s.db"),
                "400 reload cannot change state: restart esm for that; nothing was changed",
            ),
        ]
        for text, expected in refusals:
            path.write_text(text)
            code, out, err = await esm("reload", "--url", admin)
            assert (code, out) == (1, ""), err
            assert expected in err, err
            assert len(err.splitlines()) == 1
            assert daemon.config is config
            assert daemon.runners[orders_id] is orders
        # Still delivering.
        data = await put_records(kinesis, stream_name, 3, prefix="still-")
        await wait_for(lambda: stream_data(backend) == data)
        daemon.request_stop()


async def test_sighup_reloads_a_running_esm(
    moto_endpoint: str, kinesis: Any, sqs: Any, stream_name: str, tmp_path: Path
) -> None:
    from tests.conftest import free_port

    arn = await create_stream(kinesis, stream_name, 1)
    queue = f"jobs-{uuid.uuid4().hex[:8]}"
    await sqs.create_queue(QueueName=queue)
    queue_arn = f"arn:aws:sqs:us-east-1:123456789012:{queue}"
    port = free_port()
    path = tmp_path / "esm.yaml"

    def write(mappings: str) -> None:
        path.write_text(
            config_text(moto_endpoint, mappings).replace("127.0.0.1:0", f"127.0.0.1:{port}")
        )

    write(stream_mapping(arn))
    log = tmp_path / "esm.log"
    with log.open("wb") as out:
        process = await anyio.open_process(
            [sys.executable, "-m", "esm", "run", "-c", str(path)], stdout=out, stderr=out
        )
    try:

        async def names() -> list[str]:
            code, text, _ = await esm("status", "--json", "--url", f"127.0.0.1:{port}")
            if code != 0:
                return []
            import json

            return [m["name"] for m in json.loads(text)["mappings"] if m.get("ready")]

        with anyio.fail_after(30):
            while await names() != ["orders"]:
                await anyio.sleep(0.2)
        write(stream_mapping(arn) + queue_mapping(queue_arn))
        process.send_signal(signal.SIGHUP)
        with anyio.fail_after(30):
            while await names() != ["orders", "jobs"]:
                await anyio.sleep(0.2)
        # A refused reload is one line in the log; esm goes on.
        path.write_text("mappings: [")
        process.send_signal(signal.SIGHUP)
        with anyio.fail_after(30):
            while b"reload refused" not in log.read_bytes():
                await anyio.sleep(0.1)
        assert await names() == ["orders", "jobs"]
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
    text = log.read_text()
    assert "configuration reloaded" in text
    assert "Traceback" not in text
