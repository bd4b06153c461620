"""The delivery policy as a pure function: properties over random answers, with no clock."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from esm.engine.policy import (
    DeliveryPolicy,
    GiveUpPart,
    Invoke,
    PartState,
    Settle,
    Split,
    Wait,
)
from esm.engine.retry import Backoff, GiveUpCondition, RetryPolicy
from esm.events import create_record
from esm.model import InvokeResult, Record, ResultKind

NOW = 10_000.0


def _records(arrivals: Sequence[float]) -> list[Record]:
    return [
        create_record(sequence=str(n), order=n, key=f"k{n}", arrival=arrival, entry={"n": n})
        for n, arrival in enumerate(arrivals)
    ]


OK = InvokeResult(kind=ResultKind.SUCCESS)
FAILED = InvokeResult(kind=ResultKind.FUNCTION_ERROR, function_error="Unhandled")
THROTTLED = InvokeResult(kind=ResultKind.THROTTLE, status_code=429)


Answer = Callable[[tuple[Record, ...], int], tuple[InvokeResult, int | None]]
"""(records, call number) -> the result and the lowest reported failed index."""


@dataclass
class Run:
    """What a simulated driver saw while carrying out the policy's decisions."""

    invocations: list[tuple[int, ...]] = field(default_factory=list)
    settled: list[int] = field(default_factory=list)
    given_up: list[GiveUpPart] = field(default_factory=list)
    waited: float = 0.0
    done: set[int] = field(default_factory=set)


def drive(
    policy: DeliveryPolicy, records: list[Record], answer: Answer, *, limit: int = 500
) -> Run:
    """Carry out the policy's decisions the way the delivery driver does, with a clock that
    moves only by the waits the policy asks for (plus one second per invocation)."""
    run = Run()
    clock = NOW
    pending: list[tuple[Record, ...]] = [tuple(records)]
    while pending:
        state: PartState | None = policy.start(pending.pop(0))
        while state is not None:
            assert len(run.invocations) < limit, "the policy never ends this batch"
            step = policy.before_invoke(state, clock)
            result: tuple[InvokeResult, int | None] | None = None
            for decision in step.decisions:
                if isinstance(decision, GiveUpPart):
                    run.given_up.append(decision)
                    run.done.update(r.order for r in decision.records)
                elif isinstance(decision, Invoke):
                    orders = tuple(r.order for r in decision.records)
                    assert not run.done & set(orders), "a record came back once it was done"
                    run.invocations.append(orders)
                    result = answer(decision.records, len(run.invocations))
                    clock += 1
            if step.state is None or result is None:
                break
            step = policy.after_result(step.state, *result)
            for decision in step.decisions:
                if isinstance(decision, Settle):
                    run.settled.extend(r.order for r in decision.records)
                    run.done.update(r.order for r in decision.records)
                elif isinstance(decision, GiveUpPart):
                    run.given_up.append(decision)
                    run.done.update(r.order for r in decision.records)
                elif isinstance(decision, Split):
                    pending[:0] = list(decision.parts)
                elif isinstance(decision, Wait):
                    run.waited += decision.seconds
                    clock += decision.seconds
            state = step.state
    return run


def _policy(**retry: float) -> Callable[..., DeliveryPolicy]:
    def make(bisect: bool = False, seed: int = 0) -> DeliveryPolicy:
        return DeliveryPolicy(
            RetryPolicy(**retry),  # type: ignore[arg-type]
            Backoff(1.0, 30.0),
            bisect,
            random.Random(seed),
        )

    return make


answers = st.sampled_from(["ok", "error", "throttle", "partial", "partial-first", "bad-answer"])


def scripted(choices: list[str]) -> Answer:
    def answer(records: tuple[Record, ...], call: int) -> tuple[InvokeResult, int | None]:
        kind = choices[(call - 1) % len(choices)]
        if kind == "ok":
            return OK, None
        if kind == "error":
            return FAILED, None
        if kind == "throttle":
            return THROTTLED, None
        if kind == "partial":
            return OK, len(records) // 2
        # The first record failed, or an answer that fails the whole batch.
        return OK, 0

    return answer


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(1, 12),
    choices=st.lists(answers, min_size=1, max_size=8),
    retries=st.integers(0, 3),
    bisect=st.booleans(),
)
def test_every_record_is_settled_exactly_once_and_given_up_records_are_settled_after(
    size: int, choices: list[str], retries: int, bisect: bool
) -> None:
    # Throttles alone never end a batch: the record age limit bounds them, as on AWS.
    policy = _policy(maximum_retry_attempts=retries, maximum_record_age_seconds=3_600)(bisect)
    records = _records([NOW] * size)
    run = drive(policy, records, scripted(choices), limit=5_000)
    given_up = [r.order for g in run.given_up for r in g.records]
    assert sorted(run.settled + given_up) == list(range(size))
    for give_up in run.given_up:
        if give_up.condition is GiveUpCondition.RETRY_ATTEMPTS_EXHAUSTED:
            assert give_up.invoke_count == retries + 1
            assert give_up.last_result is not None
        else:
            assert give_up.last_result is None, "RecordAgeExceeded has no responseContext"
            assert give_up.invoke_count >= 1


@settings(max_examples=200, deadline=None)
@given(
    ages=st.lists(st.sampled_from([0.0, 30.0, 61.0, 600.0]), min_size=1, max_size=10),
    choices=st.lists(answers, min_size=1, max_size=6),
)
def test_expired_records_are_never_invoked_and_fresh_ones_always_are(
    ages: list[float], choices: list[str]
) -> None:
    policy = _policy(maximum_retry_attempts=2, maximum_record_age_seconds=60)()
    records = _records([NOW - age for age in ages])
    run = drive(policy, records, scripted(choices))
    expired_at_start = {n for n, age in enumerate(ages) if age > 60}
    first_invocation = set(run.invocations[0]) if run.invocations else set()
    assert not expired_at_start & first_invocation
    if len(expired_at_start) < len(ages):
        assert first_invocation == set(range(len(ages))) - expired_at_start
    aged = [g for g in run.given_up if g.condition is GiveUpCondition.RECORD_AGE_EXCEEDED]
    if expired_at_start:
        assert {r.order for r in aged[0].records} == expired_at_start
        assert aged[0].invoke_count == 1, "AWS counts 1 for records never invoked"


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 40), poison=st.sets(st.integers(0, 39), max_size=5))
def test_bisect_with_no_retries_takes_at_most_2n_minus_1_invocations(
    size: int, poison: set[int]
) -> None:
    poison = {p for p in poison if p < size}

    def answer(records: tuple[Record, ...], call: int) -> tuple[InvokeResult, int | None]:
        return (FAILED if poison & {r.order for r in records} else OK), None

    run = drive(_policy(maximum_retry_attempts=0)(bisect=True), _records([NOW] * size), answer)
    assert len(run.invocations) <= 2 * size - 1
    assert sorted(r.order for g in run.given_up for r in g.records) == sorted(poison)
    assert all(len(g.records) == 1 for g in run.given_up)


@settings(max_examples=100, deadline=None)
@given(throttles=st.integers(1, 20), seed=st.integers(0, 1_000))
def test_throttles_never_count_as_attempts(throttles: int, seed: int) -> None:
    def answer(records: tuple[Record, ...], call: int) -> tuple[InvokeResult, int | None]:
        return (THROTTLED if call <= throttles else FAILED), None

    run = drive(_policy(maximum_retry_attempts=0)(seed=seed), _records([NOW] * 3), answer)
    assert len(run.invocations) == throttles + 1
    [give_up] = run.given_up
    assert give_up.invoke_count == 1
    assert run.waited >= throttles  # a second at least after each throttle


def test_a_record_failing_after_a_partial_failure_gets_1_plus_retries_alone() -> None:
    """Recorded from AWS: BatchSize 3, the last record always reported failed,
    MaximumRetryAttempts 3: the record is invoked once in its batch, then 1 + 3 times."""

    def answer(records: tuple[Record, ...], call: int) -> tuple[InvokeResult, int | None]:
        orders = [r.order for r in records]
        return OK, (orders.index(2) if 2 in orders else None)

    run = drive(_policy(maximum_retry_attempts=3)(), _records([NOW] * 3), answer)
    assert run.invocations == [(0, 1, 2)] + [(2,)] * 4
    [give_up] = run.given_up
    assert give_up.invoke_count == 4
    assert give_up.last_result is OK
    assert run.settled == [0, 1]


def test_retry_after_is_honoured_up_to_the_backoff_cap() -> None:
    policy = _policy()()
    asked = InvokeResult(kind=ResultKind.THROTTLE, retry_after=20.0)
    assert policy.retry_delay(1, asked) == 20.0
    too_long = InvokeResult(kind=ResultKind.THROTTLE, retry_after=3_600.0)
    assert policy.retry_delay(1, too_long) == 30.0
