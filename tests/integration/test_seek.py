"""`esm seek` against moto: a running esm moves through its admin API and delivers from the
new position next; a stopped one gets the position in its state store and starts there."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from esm.checkpoints.sqlite import SqliteCheckpointStore
from esm.config import EsmConfig, parse_config
from esm.daemon import Daemon
from esm.testing import RecordingBackend, kinesis_data
from tests.conftest import free_port

from .helpers import (
    create_stream,
    operations_config,
    put_records,
    queue_mapping,
    run_daemon_until,
    stream_data,
    stream_mapping,
    wait_for,
)
from .helpers import run_esm as esm

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def config_text(endpoint: str, arn: str, queue_arn: str, state: str, admin: str) -> str:
    mappings = stream_mapping(arn) + queue_mapping(queue_arn)
    return operations_config(endpoint, mappings, state=state, admin=admin)


async def test_a_running_mapping_delivers_from_where_it_was_moved(
    moto_endpoint: str, kinesis: Any, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 2)
    queue_arn = f"arn:aws:sqs:us-east-1:123456789012:none-{uuid.uuid4().hex[:6]}"
    config = parse_config(
        config_text(moto_endpoint, arn, queue_arn, "backend: memory", "127.0.0.1:0"), environ={}
    )
    backend = RecordingBackend()
    daemon = Daemon(config, backends={"fn": backend})
    first = await put_records(kinesis, stream_name, 20, prefix="first-")
    async with anyio.create_task_group() as tg:
        await tg.start(
            lambda task_status: daemon.run(handle_signals=False, task_status=task_status)
        )
        admin = f"http://127.0.0.1:{daemon.admin_port}"
        await wait_for(lambda: len(stream_data(backend)) == 20)

        # Back to the trim horizon: every record once more, in each shard's order.
        code, out, err = await esm("seek", "orders", "--to", "TRIM_HORIZON", "--url", admin)
        assert (code, err) == (0, "")
        assert out == "mapping orders: 2 shard(s) moved to TRIM_HORIZON; reading again"
        await wait_for(lambda: len(stream_data(backend)) == 40)
        assert sorted(stream_data(backend)[20:]) == sorted(first)

        # To LATEST: nothing old again, only what is written after the seek.
        code, out, _ = await esm("seek", "orders", "--to", "LATEST", "--url", admin)
        assert code == 0
        later = await put_records(kinesis, stream_name, 6, prefix="later-")
        await wait_for(lambda: len(stream_data(backend)) == 46)
        assert sorted(stream_data(backend)[40:]) == sorted(later)

        # One shard, at one of its sequence numbers: that record and those after it.
        records = [r for r in backend.delivered_records() if "kinesis" in r]
        shard = records[0]["eventID"].split(":")[0]
        in_shard = [r for r in records[:20] if r["eventID"].startswith(shard)]
        middle = in_shard[len(in_shard) // 2]
        at = f"AT_SEQUENCE_NUMBER={middle['kinesis']['sequenceNumber']}"
        code, out, _ = await esm("seek", "orders", "--to", at, "--shard", shard, "--url", admin)
        assert (code, out) == (0, f"mapping orders: 1 shard(s) moved to {at}; reading again")
        expected = [kinesis_data(r) for r in in_shard[len(in_shard) // 2 :]]
        expected += [d for d in later if d in _shard_data(backend, shard, 40, 46)]
        await wait_for(lambda: len(stream_data(backend)) == 46 + len(expected))
        assert stream_data(backend)[46:] == expected
        daemon.request_stop()


def _shard_data(backend: RecordingBackend, shard: str, start: int, end: int) -> list[bytes]:
    records = [r for r in backend.delivered_records() if "kinesis" in r][start:end]
    return [kinesis_data(r) for r in records if r["eventID"].startswith(shard)]


async def test_refused_seeks_say_why_in_one_line(
    moto_endpoint: str, kinesis: Any, sqs: Any, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    queue = f"jobs-{uuid.uuid4().hex[:8]}"
    await sqs.create_queue(QueueName=queue)
    queue_arn = f"arn:aws:sqs:us-east-1:123456789012:{queue}"
    config = parse_config(
        config_text(moto_endpoint, arn, queue_arn, "backend: memory", "127.0.0.1:0"), environ={}
    )
    daemon = Daemon(config, backends={"fn": RecordingBackend()})
    async with anyio.create_task_group() as tg:
        await tg.start(
            lambda task_status: daemon.run(handle_signals=False, task_status=task_status)
        )
        admin = f"http://127.0.0.1:{daemon.admin_port}"
        cases = [
            (["jobs", "--to", "LATEST"], "400 mapping jobs reads a queue: a queue has no position"),
            (
                ["orders", "--to", "AT_SEQUENCE_NUMBER=1"],
                "400 --to AT_SEQUENCE_NUMBER needs --shard: a sequence number is a shard's",
            ),
            (["orders", "--to", "LATEST", "--shard", "shardId-9"], "400 --shard shardId-9: the"),
            (["nope", "--to", "LATEST"], "404 no mapping nope"),
        ]
        for argv, expected in cases:
            code, out, err = await esm("seek", *argv, "--url", admin)
            assert (code, out) == (1, ""), argv
            assert expected in err, (argv, err)
            assert len(err.splitlines()) == 1
        code, _, err = await esm("seek", "orders", "--to", "YESTERDAY", "--url", admin)
        assert code == 2
        assert err.startswith("esm seek: --to YESTERDAY: expected TRIM_HORIZON, LATEST")
        # Nothing of it stopped the mappings.
        assert daemon.ready()
        daemon.request_stop()


async def test_a_stopped_esm_starts_where_the_state_store_was_moved(
    moto_endpoint: str, kinesis: Any, stream_name: str, tmp_path: Path
) -> None:
    arn = await create_stream(kinesis, stream_name, 2)
    queue_arn = f"arn:aws:sqs:us-east-1:123456789012:none-{uuid.uuid4().hex[:6]}"
    state = tmp_path / "state.db"
    # An admin address nothing listens on: the esm of this configuration is stopped.
    text = config_text(
        moto_endpoint,
        arn,
        queue_arn,
        f"backend: sqlite\n  path: {state}",
        f"127.0.0.1:{free_port()}",
    )
    config_file = tmp_path / "esm.yaml"
    config_file.write_text(text)
    config: EsmConfig = parse_config(text, environ={})
    first = await put_records(kinesis, stream_name, 12, prefix="first-")
    backend = RecordingBackend()
    await run_daemon_until(config, backend, lambda: len(stream_data(backend)) == 12)
    async with SqliteCheckpointStore(state) as store:
        saved = await store.load(config.mappings[0].mapping_id)
    assert all(cp.sequence is not None and cp.sequence.isdigit() for cp in saved.values())

    code, out, err = await esm("seek", "orders", "--to", "TRIM_HORIZON", "-c", str(config_file))
    assert code == 0, err
    assert err.startswith("esm seek: no esm answers at http://127.0.0.1:")
    assert out == (
        "mapping orders: 2 shard(s) set to TRIM_HORIZON in the state store; "
        "the next esm run reads from there"
    )
    async with SqliteCheckpointStore(state) as store:
        moved = await store.load(config.mappings[0].mapping_id)
    assert {cp.sequence for cp in moved.values()} == {"TRIM_HORIZON"}

    # The next run delivers everything again, then goes on after it as usual.
    again = RecordingBackend()
    await run_daemon_until(config, again, lambda: len(stream_data(again)) == 12)
    assert sorted(stream_data(again)) == sorted(first)
    async with SqliteCheckpointStore(state) as store:
        after = await store.load(config.mappings[0].mapping_id)
    assert after == saved


class HeldFirstBatch(RecordingBackend):
    """Holds its first invocation until `release` is set: a batch in flight at the seek."""

    def __init__(self) -> None:
        super().__init__()
        self.release = anyio.Event()
        self.holding = anyio.Event()

    async def invoke(self, invocation: Any) -> Any:
        if not self.holding.is_set():
            self.holding.set()
            await self.release.wait()
        return await super().invoke(invocation)


async def test_the_batch_in_flight_at_a_seek_is_not_checkpointed_over_it(
    moto_endpoint: str, kinesis: Any, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    queue_arn = f"arn:aws:sqs:us-east-1:123456789012:none-{uuid.uuid4().hex[:6]}"
    text = config_text(moto_endpoint, arn, queue_arn, "backend: memory", "127.0.0.1:0")
    config = parse_config(text.replace("BatchSize: 10", "BatchSize: 5"), environ={})
    records = await put_records(kinesis, stream_name, 10, prefix="r-")
    backend = HeldFirstBatch()
    daemon = Daemon(config, backends={"fn": backend})
    async with anyio.create_task_group() as tg:
        await tg.start(
            lambda task_status: daemon.run(handle_signals=False, task_status=task_status)
        )
        with anyio.fail_after(30):
            await backend.holding.wait()
        answer: dict[str, Any] = {}

        async def seek() -> None:
            answer.update(await daemon.seek("orders", "TRIM_HORIZON"))

        tg.start_soon(seek)
        await anyio.sleep(0.3)
        assert not answer  # the seek waits for the batch in flight
        backend.release.set()
        await wait_for(lambda: bool(answer))
        assert answer["to"] == "TRIM_HORIZON"
        # The held batch finished; then everything from the trim horizon, in order.
        await wait_for(lambda: len(stream_data(backend)) == 15)
        assert stream_data(backend) == records[:5] + records
        daemon.request_stop()
