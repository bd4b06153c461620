"""Retry limits, record age, bisect and partial failures in the delivery of a batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esm.engine.driver import Deliverer, DeliveryOutcome, FunctionTarget, GiveUp, InFlight
from esm.engine.lifecycle import Interruptible
from esm.engine.retry import Backoff, GiveUpCondition, RetryPolicy
from esm.events import create_record
from esm.metrics import Metrics
from esm.model import Batch, Record
from esm.testing import RecordingBackend, function_error

TARGET = FunctionTarget(
    name="fn", arn="arn:aws:lambda:us-east-1:000000000000:function:fn", timeout=3
)
FAST = Backoff(0.001, 0.002)


def _records(count: int, arrival: float = 1_000.0) -> list[Record]:
    return [
        create_record(
            sequence=str(500 + n),
            order=500 + n,
            key=f"k{n}",
            arrival=arrival,
            entry={"kinesis": {"sequenceNumber": str(500 + n)}},
        )
        for n in range(count)
    ]


class Outcome:
    """What a delivery settled, in order, and what it gave up."""

    def __init__(self) -> None:
        self.settled: list[str] = []
        self.given_up: list[GiveUp] = []

    async def on_settled(self, records: Sequence[Record]) -> None:
        self.settled.extend(r.sequence for r in records)

    async def discard(self, give_up: GiveUp, interrupt: Interruptible) -> bool:
        self.given_up.append(give_up)
        return True


def _sequences(event: dict[str, Any]) -> list[str]:
    return [r["kinesis"]["sequenceNumber"] for r in event["Records"]]


async def _deliver(
    deliverer: Deliverer, records: list[Record], outcome: Outcome
) -> DeliveryOutcome:
    batch = Batch("shardId-000000000000", records)
    in_flight = InFlight(batch.first.sequence, batch.last.sequence, len(records), 0.0)
    with anyio.fail_after(30):
        return await deliverer.deliver(
            batch, interrupt=Interruptible(), in_flight=in_flight, on_settled=outcome.on_settled
        )


@pytest.mark.anyio
async def test_maximum_retry_attempts_2_gives_three_invocations_then_gives_up() -> None:
    backend = RecordingBackend(lambda event, call: function_error("always"))
    outcome = Outcome()
    metrics = Metrics()
    deliverer = Deliverer(
        backend,
        TARGET,
        "m",
        metrics,
        backoff=FAST,
        policy=RetryPolicy(maximum_retry_attempts=2),
        discard=outcome.discard,
    )
    records = _records(4)
    assert await _deliver(deliverer, records, outcome) is DeliveryOutcome.DELIVERED
    assert len(backend.events) == 3
    [give_up] = outcome.given_up
    assert give_up.condition is GiveUpCondition.RETRY_ATTEMPTS_EXHAUSTED
    assert give_up.invoke_count == 3
    assert give_up.last_result is not None
    assert give_up.last_result.error == "always"
    assert [r.sequence for r in give_up.records] == ["500", "501", "502", "503"]
    # The records are settled once stored: the shard moves past them.
    assert outcome.settled == ["500", "501", "502", "503"]


@pytest.mark.anyio
async def test_without_a_destination_given_up_records_are_dropped_and_counted() -> None:
    backend = RecordingBackend(lambda event, call: function_error())
    outcome = Outcome()
    metrics = Metrics()
    deliverer = Deliverer(
        backend, TARGET, "m", metrics, backoff=FAST, policy=RetryPolicy(maximum_retry_attempts=0)
    )
    await _deliver(deliverer, _records(3), outcome)
    assert len(backend.events) == 1
    assert metrics.dropped_events.labels("m")._value.get() == 3
    assert outcome.settled == ["500", "501", "502"]


@pytest.mark.anyio
async def test_records_too_old_when_read_are_given_up_without_invoking() -> None:
    backend = RecordingBackend()
    outcome = Outcome()
    deliverer = Deliverer(
        backend,
        TARGET,
        "m",
        Metrics(),
        backoff=FAST,
        policy=RetryPolicy(maximum_record_age_seconds=60),
        clock=lambda: 10_000.0,
        discard=outcome.discard,
    )
    await _deliver(deliverer, _records(2, arrival=10_000.0 - 61), outcome)
    assert backend.events == []
    [give_up] = outcome.given_up
    assert give_up.condition is GiveUpCondition.RECORD_AGE_EXCEEDED
    # AWS writes approximateInvokeCount 1 for records that were never invoked.
    assert give_up.invoke_count == 1
    assert give_up.last_result is None


@pytest.mark.anyio
async def test_records_that_age_while_retried_are_given_up_for_age() -> None:
    now = {"t": 10_000.0}

    def script(event: dict[str, Any], call: int) -> Any:
        now["t"] += 30  # each failed attempt takes half a minute of the record's life
        return function_error()

    backend = RecordingBackend(script)
    outcome = Outcome()
    deliverer = Deliverer(
        backend,
        TARGET,
        "m",
        Metrics(),
        backoff=FAST,
        policy=RetryPolicy(maximum_retry_attempts=100, maximum_record_age_seconds=100),
        clock=lambda: now["t"],
        discard=outcome.discard,
    )
    await _deliver(deliverer, _records(2, arrival=10_000.0), outcome)
    assert len(backend.events) == 4
    [give_up] = outcome.given_up
    assert give_up.condition is GiveUpCondition.RECORD_AGE_EXCEEDED
    assert give_up.invoke_count == 4
    # Even after function errors, a record-age failure record has no responseContext.
    assert give_up.last_result is None


@pytest.mark.anyio
async def test_only_the_expired_records_are_given_up_and_the_fresh_ones_invoked() -> None:
    backend = RecordingBackend()
    outcome = Outcome()
    deliverer = Deliverer(
        backend,
        TARGET,
        "m",
        Metrics(),
        backoff=FAST,
        policy=RetryPolicy(maximum_record_age_seconds=60),
        clock=lambda: 10_000.0,
        discard=outcome.discard,
    )
    old = _records(3, arrival=10_000.0 - 61)
    fresh = [
        create_record(
            sequence=str(600 + n),
            order=600 + n,
            key="k",
            arrival=10_000.0 - 5,
            entry={"kinesis": {"sequenceNumber": str(600 + n)}},
        )
        for n in range(2)
    ]
    await _deliver(deliverer, old + fresh, outcome)
    assert [_sequences(e) for e in backend.events] == [["600", "601"]]
    [give_up] = outcome.given_up
    assert [r.sequence for r in give_up.records] == ["500", "501", "502"]
    assert give_up.condition is GiveUpCondition.RECORD_AGE_EXCEEDED
    assert give_up.invoke_count == 1
    assert outcome.settled == ["500", "501", "502", "600", "601"]


@pytest.mark.anyio
async def test_records_that_expire_while_retried_leave_the_fresh_ones_to_go_on() -> None:
    now = {"t": 10_000.0}

    def script(event: dict[str, Any], call: int) -> Any:
        now["t"] += 30
        return function_error() if call <= 2 else None

    backend = RecordingBackend(script)
    outcome = Outcome()
    deliverer = Deliverer(
        backend,
        TARGET,
        "m",
        Metrics(),
        backoff=FAST,
        policy=RetryPolicy(maximum_record_age_seconds=100),
        clock=lambda: now["t"],
        discard=outcome.discard,
    )
    old = _records(2, arrival=10_000.0 - 50)
    young = [
        create_record(sequence="700", order=700, key="k", arrival=10_000.0, entry={"kinesis": {}})
    ]
    await _deliver(deliverer, old + young, outcome)
    # Two failed invocations of all three; then the two older records are past 100 s.
    assert [len(e["Records"]) for e in backend.events] == [3, 3, 1]
    [give_up] = outcome.given_up
    assert [r.sequence for r in give_up.records] == ["500", "501"]
    assert give_up.invoke_count == 2
    assert give_up.last_result is None
    assert outcome.settled == ["500", "501", "700"]


@pytest.mark.anyio
async def test_a_record_failing_after_a_partial_failure_is_invoked_1_plus_retries_alone() -> None:
    backend = RecordingBackend(
        lambda event, call: {"batchItemFailures": [{"itemIdentifier": "502"}]}
    )
    outcome = Outcome()
    deliverer = Deliverer(
        backend,
        TARGET,
        "m",
        Metrics(),
        backoff=FAST,
        report_item_failures=True,
        policy=RetryPolicy(maximum_retry_attempts=3),
        discard=outcome.discard,
    )
    await _deliver(deliverer, _records(3), outcome)
    assert [_sequences(e) for e in backend.events] == [["500", "501", "502"]] + [["502"]] * 4
    [give_up] = outcome.given_up
    assert give_up.invoke_count == 4
    assert give_up.last_result is not None
    assert give_up.last_result.ok


@pytest.mark.anyio
async def test_partial_failure_settles_records_before_the_lowest_failure_and_retries_the_rest() -> (
    None
):
    answers = [{"batchItemFailures": [{"itemIdentifier": "504"}, {"itemIdentifier": "502"}]}, None]
    backend = RecordingBackend(lambda event, call: answers[call - 1])
    outcome = Outcome()
    metrics = Metrics()
    deliverer = Deliverer(backend, TARGET, "m", metrics, backoff=FAST, report_item_failures=True)
    await _deliver(deliverer, _records(6), outcome)
    assert [_sequences(e) for e in backend.events] == [
        ["500", "501", "502", "503", "504", "505"],
        ["502", "503", "504", "505"],
    ]
    assert outcome.settled == ["500", "501", "502", "503", "504", "505"]
    assert metrics.failed_invoke_events.labels("m")._value.get() == 6


@pytest.mark.anyio
async def test_without_report_batch_item_failures_the_answer_is_ignored() -> None:
    answers = [{"batchItemFailures": [{"itemIdentifier": "501"}]}]
    backend = RecordingBackend(lambda event, call: answers[0])
    outcome = Outcome()
    deliverer = Deliverer(backend, TARGET, "m", Metrics(), backoff=FAST)
    await _deliver(deliverer, _records(3), outcome)
    assert len(backend.events) == 1
    assert outcome.settled == ["500", "501", "502"]


@pytest.mark.anyio
async def test_the_failed_tail_of_a_partial_failure_starts_its_own_count() -> None:
    backend = RecordingBackend(
        lambda event, call: {"batchItemFailures": [{"itemIdentifier": "502"}]}
    )
    outcome = Outcome()
    deliverer = Deliverer(
        backend,
        TARGET,
        "m",
        Metrics(),
        backoff=FAST,
        report_item_failures=True,
        policy=RetryPolicy(maximum_retry_attempts=1),
        discard=outcome.discard,
    )
    await _deliver(deliverer, _records(4), outcome)
    # The tail is a new batch: 1 + MaximumRetryAttempts invocations of its own, as on AWS.
    assert [_sequences(e) for e in backend.events] == [
        ["500", "501", "502", "503"],
        ["502", "503"],
        ["502", "503"],
    ]
    [give_up] = outcome.given_up
    assert [r.sequence for r in give_up.records] == ["502", "503"]
    assert give_up.condition is GiveUpCondition.RETRY_ATTEMPTS_EXHAUSTED
    assert give_up.invoke_count == 2


@pytest.mark.anyio
async def test_bisect_isolates_a_poison_record() -> None:
    def script(event: dict[str, Any], call: int) -> Any:
        return function_error("poison") if "505" in _sequences(event) else None

    backend = RecordingBackend(script)
    outcome = Outcome()
    deliverer = Deliverer(
        backend,
        TARGET,
        "m",
        Metrics(),
        backoff=FAST,
        bisect=True,
        policy=RetryPolicy(maximum_retry_attempts=2),
        discard=outcome.discard,
    )
    await _deliver(deliverer, _records(8), outcome)
    [give_up] = outcome.given_up
    assert [r.sequence for r in give_up.records] == ["505"]
    assert give_up.invoke_count == 3
    delivered = [
        s
        for e, ok in zip(backend.events, _successes(backend), strict=True)
        if ok
        for s in _sequences(e)
    ]
    assert sorted(delivered) == [str(500 + n) for n in range(8) if n != 5]
    assert outcome.settled == [str(500 + n) for n in range(8)]


def _successes(backend: RecordingBackend) -> list[bool]:
    return ["505" not in _sequences(e) for e in backend.events]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.integers(min_value=1, max_value=40),
    poison=st.sets(st.integers(min_value=0, max_value=39), max_size=6),
)
def test_bisect_settles_every_record_exactly_once_within_2n_minus_1_invocations(
    count: int, poison: set[int]
) -> None:
    poison = {p for p in poison if p < count}
    bad = {str(500 + p) for p in poison}

    def script(event: dict[str, Any], call: int) -> Any:
        return function_error() if bad & set(_sequences(event)) else None

    backend = RecordingBackend(script)
    outcome = Outcome()
    deliverer = Deliverer(
        backend,
        TARGET,
        "m",
        Metrics(),
        backoff=FAST,
        bisect=True,
        policy=RetryPolicy(maximum_retry_attempts=0),
        discard=outcome.discard,
    )
    anyio.run(_deliver, deliverer, _records(count), outcome)
    everything = [str(500 + n) for n in range(count)]
    # Settled in order, each record once: delivered or given up.
    assert outcome.settled == everything
    given_up = [r.sequence for g in outcome.given_up for r in g.records]
    assert sorted(given_up) == sorted(bad)
    assert all(len(g.records) == 1 for g in outcome.given_up), "a poison record ends alone"
    delivered = [s for e in backend.events if not bad & set(_sequences(e)) for s in _sequences(e)]
    assert sorted(delivered) == sorted(set(everything) - bad), "good records delivered once"
    assert len(backend.events) <= 2 * count - 1
