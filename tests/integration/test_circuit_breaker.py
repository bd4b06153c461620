"""The circuit breaker of a running esm, against moto: a function that keeps failing opens it
(nothing is polled or invoked while it is open), a probe after the cool-down finds the
function back and closes it, and every record is delivered; off by default."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest

from esm.config import parse_config
from esm.daemon import Daemon
from esm.engine.breaker import CircuitBreaker
from esm.engine.queue import QueueEngine
from esm.engine.streams import StreamEngine
from esm.model import Invocation, InvokeResult
from esm.testing import RecordingBackend, function_error

from .helpers import (
    create_stream,
    operations_config,
    put_records,
    queue_mapping,
    stream_data,
    stream_mapping,
    wait_for,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

BREAKER = "  circuit_breaker:\n    failures: 2\n    cool_down_seconds: 1.5\n"


class DownThenUp(RecordingBackend):
    """Fails while `down`; notes the breaker's state at each invocation."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.breaker: CircuitBreaker | None = None
        self.states: list[str] = []
        self.failed = 0

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        assert self.breaker is not None
        self.states.append(self.breaker.state.value)
        if self.down:
            self.failed += 1
            return function_error("downstream is down")
        return await super().invoke(invocation)


def sample(daemon: Daemon, name: str, mapping: str) -> float | None:
    return daemon.metrics.registry.get_sample_value(name, {"mapping": mapping})


@pytest.mark.parametrize("source", ["sqs", "kinesis"])
async def test_a_failing_function_opens_the_breaker_and_a_probe_closes_it(
    source: str, moto_endpoint: str, kinesis: Any, sqs: Any, stream_name: str
) -> None:
    if source == "sqs":
        queue = f"jobs-{uuid.uuid4().hex[:8]}"
        url = (await sqs.create_queue(QueueName=queue, Attributes={"VisibilityTimeout": "1"}))[
            "QueueUrl"
        ]
        mapping = queue_mapping(f"arn:aws:sqs:us-east-1:123456789012:{queue}")
        name = "jobs"
    else:
        arn = await create_stream(kinesis, stream_name, 1)
        mapping = stream_mapping(arn)
        name = "orders"
    text = operations_config(moto_endpoint, mapping).replace(
        "  shutdown_grace_seconds: 5\n", "  shutdown_grace_seconds: 5\n" + BREAKER
    )
    config = parse_config(text, environ={})
    backend = DownThenUp()
    daemon = Daemon(config, backends={"fn": backend})
    if source == "sqs":
        for n in range(5):
            await sqs.send_message(QueueUrl=url, MessageBody=f"m{n}")
        expected = 5
    else:
        await put_records(kinesis, stream_name, 5, prefix="r-")
        expected = 5
    async with anyio.create_task_group() as tg:
        await tg.start(
            lambda task_status: daemon.run(handle_signals=False, task_status=task_status)
        )
        (runner,) = daemon.runners.values()
        assert isinstance(runner, StreamEngine | QueueEngine)
        breaker = runner.deliverer.breaker
        assert breaker is not None
        backend.breaker = breaker

        await wait_for(lambda: breaker.state.value == "open")
        assert backend.failed == 2
        assert sample(daemon, "esm_circuit_breaker_open", name) == 1
        assert sample(daemon, "esm_circuit_breaker_opened_total", name) == 1
        status = daemon.status()["mappings"][0]
        assert status["circuit_breaker"]["state"] == "open"
        assert status["circuit_breaker"]["last_error"] == "downstream is down"
        assert status["paused"] is False  # not an operator's pause

        # The probe after the cool-down still fails: open again, for another cool-down.
        await wait_for(lambda: breaker.opened == 2)
        assert backend.failed == 3
        backend.down = False
        await wait_for(lambda: breaker.state.value == "closed")
        await wait_for(lambda: len(backend.delivered_records()) >= expected)
        # Nothing was invoked while the breaker was open.
        assert "open" not in backend.states
        assert backend.states[:3] == ["closed", "closed", "half_open"]
        assert sample(daemon, "esm_circuit_breaker_open", name) == 0
        daemon.request_stop()
    if source == "kinesis":
        assert stream_data(backend) == [f"r-{n}".encode() for n in range(5)]
    else:
        assert sorted(r["body"] for r in backend.delivered_records()) == [f"m{n}" for n in range(5)]


async def test_the_breaker_is_off_by_default(
    moto_endpoint: str, kinesis: Any, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    config = parse_config(operations_config(moto_endpoint, stream_mapping(arn)), environ={})
    backend = RecordingBackend(lambda event, call: function_error() if call <= 3 else None)
    daemon = Daemon(config, backends={"fn": backend})
    await put_records(kinesis, stream_name, 3)
    async with anyio.create_task_group() as tg:
        await tg.start(
            lambda task_status: daemon.run(handle_signals=False, task_status=task_status)
        )
        # Three failures in a row, then the fourth attempt: nothing held it up.
        await wait_for(lambda: len(backend.events) == 4)
        assert "circuit_breaker" not in daemon.status()["mappings"][0]
        daemon.request_stop()
