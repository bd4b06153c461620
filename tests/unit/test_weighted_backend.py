"""Tests for the weighted backend: the split follows the weights, results pass through."""

from __future__ import annotations

import math
import random
import time
import uuid
from collections import Counter
from typing import Any

import orjson
import pytest

from esm.backends.weighted import WeightedBackend
from esm.model import Invocation, InvokeResult, ResultKind
from esm.protocols import FunctionBackend
from esm.testing import RecordingBackend, function_error

pytestmark = pytest.mark.anyio

INVOCATIONS = 10_000


def make_invocation() -> Invocation:
    return Invocation(
        payload=orjson.dumps({"Records": []}),
        request_id=str(uuid.uuid4()),
        function_name="orders",
        function_arn="arn:aws:lambda:us-east-1:000000000000:function:orders",
        timeout=5.0,
        deadline=time.time() + 5.0,
    )


def answering(name: str) -> RecordingBackend:
    """A target whose every answer names it."""
    return RecordingBackend(lambda event, call: {"target": name})


class FailingClose(RecordingBackend):
    async def aclose(self) -> None:
        await super().aclose()
        raise RuntimeError("cannot close")


@pytest.mark.parametrize(
    "weights",
    [
        {"stable": 90.0, "canary": 10.0},
        {"a": 0.5, "b": 0.3, "c": 0.2},
        {"only": 7.0},
    ],
)
async def test_the_split_follows_the_weights(weights: dict[str, float]) -> None:
    targets = {name: answering(name) for name in weights}
    chosen: list[str] = []
    backend = WeightedBackend(
        [(name, targets[name], weight) for name, weight in weights.items()],
        rng=random.Random(20240601),
        on_choice=chosen.append,
    )

    for _ in range(INVOCATIONS):
        invocation = make_invocation()
        result = await backend.invoke(invocation)
        # The chosen target ran it, and the result is that target's.
        assert targets[chosen[-1]].invocations[-1] is invocation
        assert result.response == {"target": chosen[-1]}

    counts = Counter(chosen)
    total = sum(weights.values())
    for name, weight in weights.items():
        share = weight / total
        assert backend.weights[name] == pytest.approx(share)
        assert len(targets[name].invocations) == counts[name]
        # Four binomial standard deviations: a seeded run within it is no accident, and a
        # wrong split (e.g. unnormalised or reversed weights) is far outside it.
        expected = INVOCATIONS * share
        tolerance = 4 * math.sqrt(INVOCATIONS * share * (1 - share))
        assert abs(counts[name] - expected) <= tolerance, (name, counts[name], expected)
    assert sum(counts.values()) == INVOCATIONS


async def test_each_invocation_runs_once_on_the_chosen_target() -> None:
    stable, canary = answering("stable"), answering("canary")
    chosen: list[str] = []
    backend = WeightedBackend(
        [("stable", stable, 1), ("canary", canary, 1)],
        rng=random.Random(7),
        on_choice=chosen.append,
    )
    invocations = [make_invocation() for _ in range(200)]

    for invocation in invocations:
        await backend.invoke(invocation)

    by_target = {"stable": stable, "canary": canary}
    seen = {name: [i.request_id for i in target.invocations] for name, target in by_target.items()}
    expected: dict[str, list[str]] = {"stable": [], "canary": []}
    for name, invocation in zip(chosen, invocations, strict=True):
        expected[name].append(invocation.request_id)
    assert seen == expected
    assert expected["stable"]
    assert expected["canary"]


async def test_a_failed_result_is_passed_through_unchanged() -> None:
    failure = function_error("bad batch")
    backend = WeightedBackend([("broken", RecordingBackend(lambda event, call: failure), 1.0)])

    result = await backend.invoke(make_invocation())

    assert result is failure
    assert result.kind is ResultKind.FUNCTION_ERROR


async def test_a_failing_on_choice_does_not_fail_the_invocation() -> None:
    def broken(name: str) -> None:
        raise RuntimeError("metrics are down")

    backend = WeightedBackend([("only", answering("only"), 1.0)], on_choice=broken)

    result = await backend.invoke(make_invocation())

    assert result == InvokeResult(kind=ResultKind.SUCCESS, response={"target": "only"})


@pytest.mark.parametrize("weight", [0, 0.0, -1, -0.5, math.nan, math.inf, True, "10"])
def test_a_weight_that_is_not_positive_is_refused(weight: Any) -> None:
    with pytest.raises(ValueError, match="canary"):
        WeightedBackend([("stable", answering("stable"), 90), ("canary", answering("x"), weight)])


def test_no_targets_or_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one target"):
        WeightedBackend([])
    with pytest.raises(ValueError, match="unique: a"):
        WeightedBackend([("a", answering("a"), 1), ("a", answering("b"), 1)])


async def test_aclose_closes_every_target() -> None:
    first, second, third = answering("first"), answering("second"), answering("third")
    backend = WeightedBackend([("first", first, 1), ("second", second, 2), ("third", third, 3)])

    await backend.aclose()

    assert [first.closed, second.closed, third.closed] == [True, True, True]


async def test_aclose_closes_the_rest_when_one_fails_and_raises_its_error() -> None:
    failing, other = FailingClose(), answering("other")
    backend = WeightedBackend([("failing", failing, 1), ("other", other, 1)])

    with pytest.raises(RuntimeError, match="cannot close"):
        await backend.aclose()

    assert failing.closed
    assert other.closed


async def test_a_backend_listed_twice_is_closed_once() -> None:
    closes: list[str] = []

    class Counting(RecordingBackend):
        async def aclose(self) -> None:
            closes.append("closed")

    shared = Counting()
    backend = WeightedBackend([("blue", shared, 1), ("green", shared, 1)])

    await backend.aclose()

    assert closes == ["closed"]


def test_it_is_a_function_backend_with_a_readable_repr() -> None:
    backend = WeightedBackend([("stable", answering("s"), 3), ("canary", answering("c"), 1)])

    assert isinstance(backend, FunctionBackend)
    assert repr(backend) == "WeightedBackend(stable=0.75, canary=0.25)"
    assert dict(backend.weights) == {"stable": 0.75, "canary": 0.25}
