"""Delivery of one batch: classification, what counts as an attempt, backoff, shutdown."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from esm.engine.driver import Deliverer, DeliveryOutcome, FunctionTarget, InFlight
from esm.engine.lifecycle import Interruptible
from esm.engine.retry import Backoff
from esm.events import create_record
from esm.metrics import Metrics
from esm.model import Batch, InvokeResult, ResultKind
from esm.testing import RecordingBackend, function_error, throttle

pytestmark = pytest.mark.anyio

TARGET = FunctionTarget(
    name="fn", arn="arn:aws:lambda:us-east-1:000000000000:function:fn", timeout=3
)


def _batch(count: int = 3, data_size: int = 10) -> Batch:
    records = [
        create_record(
            sequence=str(n), order=n, key="k", arrival=1.0, entry={"n": n, "d": "x" * data_size}
        )
        for n in range(count)
    ]
    return Batch("shardId-000000000000", records)


def _in_flight(batch: Batch) -> InFlight:
    return InFlight(batch.first.sequence, batch.last.sequence, len(batch.records), 0.0)


def _value(metric: Any) -> float:
    return float(metric._value.get())


async def test_throttles_and_system_errors_are_retried_but_not_counted_as_attempts() -> None:
    answers = [
        throttle(),
        InvokeResult(kind=ResultKind.SYSTEM_ERROR, error="connection refused", status_code=0),
        function_error(),
        None,
    ]

    def script(event: dict[str, Any], call: int) -> Any:
        return answers[call - 1]

    backend = RecordingBackend(script)
    metrics = Metrics()
    deliverer = Deliverer(backend, TARGET, "m", metrics, backoff=Backoff(0.001, 0.01))
    batch = _batch()
    in_flight = _in_flight(batch)
    outcome = await deliverer.deliver(batch, interrupt=Interruptible(), in_flight=in_flight)
    assert outcome is DeliveryOutcome.DELIVERED
    assert len(backend.events) == 4
    assert (in_flight.attempts, in_flight.throttles, in_flight.system_errors) == (1, 1, 1)
    for result in ("throttle", "system_error", "function_error", "success"):
        assert _value(metrics.invocations.labels("m", result)) == 1
    # Only invocations that reached the function count as invoked events.
    assert _value(metrics.invoked_events.labels("m")) == 6
    assert _value(metrics.failed_invoke_events.labels("m")) == 3


async def test_every_attempt_sends_the_same_event_with_a_new_request_id() -> None:
    backend = RecordingBackend(lambda event, call: function_error() if call < 3 else None)
    deliverer = Deliverer(backend, TARGET, "m", Metrics(), backoff=Backoff(0.001, 0.01))
    batch = _batch()
    await deliverer.deliver(batch, interrupt=Interruptible(), in_flight=_in_flight(batch))
    assert len({i.payload for i in backend.invocations}) == 1
    assert len({i.request_id for i in backend.invocations}) == 3
    invocation = backend.invocations[0]
    assert invocation.function_arn == TARGET.arn
    assert invocation.timeout == 3
    assert invocation.deadline - invocation.timeout > 0
    assert dict(invocation.extra) == {"mapping": "m", "shard": "shardId-000000000000"}


def test_retry_delay_grows_to_the_maximum_and_honours_retry_after() -> None:
    deliverer = Deliverer(RecordingBackend(), TARGET, "m", Metrics(), backoff=Backoff(1, 300))
    plain = function_error()
    delays = [deliverer.retry_delay(n, plain) for n in range(1, 12)]
    assert 1 <= delays[0] <= 1.25
    assert 2 <= delays[1] <= 2.5
    assert delays[-1] == 300
    assert all(d <= 300 for d in delays)
    assert deliverer.retry_delay(1, throttle(retry_after=42)) == 42
    assert deliverer.retry_delay(1, throttle(retry_after=3600)) == 300


async def test_a_stop_during_backoff_abandons_the_batch_at_once() -> None:
    backend = RecordingBackend(lambda event, call: function_error())
    deliverer = Deliverer(backend, TARGET, "m", Metrics(), backoff=Backoff(60, 300))
    stopping = Interruptible()
    batch = _batch()
    outcome: list[DeliveryOutcome] = []

    async def deliver() -> None:
        outcome.append(
            await deliverer.deliver(batch, interrupt=stopping, in_flight=_in_flight(batch))
        )

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(deliver)
            while not backend.events:
                await anyio.sleep(0.01)
            stopping.interrupt()
    assert outcome == [DeliveryOutcome.ABANDONED]
    assert len(backend.events) == 1


async def test_an_event_over_the_payload_limit_is_never_sent() -> None:
    backend = RecordingBackend(lambda event, call: None)
    metrics = Metrics()
    deliverer = Deliverer(
        backend, TARGET, "m", metrics, backoff=Backoff(60, 300), max_payload_bytes=1000
    )
    stopping = Interruptible()
    batch = _batch(count=1, data_size=5000)
    in_flight = _in_flight(batch)
    outcome: list[DeliveryOutcome] = []

    async def deliver() -> None:
        outcome.append(await deliverer.deliver(batch, interrupt=stopping, in_flight=in_flight))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(deliver)
            while in_flight.attempts == 0:
                await anyio.sleep(0.01)
            stopping.interrupt()
    assert backend.events == []
    assert in_flight.last_error is not None
    assert "RequestEntityTooLargeException" in in_flight.last_error
    assert _value(metrics.invocations.labels("m", "function_error")) == 1
