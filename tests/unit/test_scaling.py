"""The pollers' target as a pure decision: no clock, no queue, no tasks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from esm.engine.scaling import ScalingLimits, Signal, next_target

LIMITS = ScalingLimits(maximum=8)

targets = st.integers(min_value=1, max_value=2000)
signals = st.sampled_from(Signal)
seconds = st.floats(min_value=0, max_value=1e6, allow_nan=False)
limits = st.builds(ScalingLimits, maximum=st.integers(min_value=1, max_value=1250))


def test_a_mapping_starts_with_five_pollers_within_its_maximum() -> None:
    assert ScalingLimits().start == 5
    assert ScalingLimits(maximum=3).start == 3
    assert ScalingLimits(maximum=1).floor == 1


def test_full_receives_add_one_poller_at_most_every_interval() -> None:
    assert next_target(5, Signal.BUSY, since_change=0.2, limits=LIMITS) == 6
    assert next_target(5, Signal.BUSY, since_change=0.1, limits=LIMITS) == 5
    assert next_target(8, Signal.BUSY, since_change=10, limits=LIMITS) == 8, "at the cap"


def test_short_receives_remove_one_poller_every_five_seconds_down_to_two() -> None:
    assert next_target(5, Signal.SHORT, since_change=5, limits=LIMITS) == 4
    assert next_target(5, Signal.SHORT, since_change=4.9, limits=LIMITS) == 5
    assert next_target(2, Signal.SHORT, since_change=60, limits=LIMITS) == 2, "the idle floor"


def test_a_throttle_halves_the_pollers_at_once() -> None:
    assert next_target(8, Signal.THROTTLED, since_change=0, limits=LIMITS) == 4
    assert next_target(1, Signal.THROTTLED, since_change=0, limits=LIMITS) == 1


@given(targets, signals, seconds, limits)
def test_the_target_stays_between_one_and_the_maximum(
    target: int, signal: Signal, since: float, scaling: ScalingLimits
) -> None:
    target = min(target, scaling.maximum)
    assert 1 <= next_target(target, signal, since, scaling) <= scaling.maximum


@given(targets, seconds, limits)
def test_each_signal_moves_the_target_one_way_only(
    target: int, since: float, scaling: ScalingLimits
) -> None:
    target = min(target, scaling.maximum)
    assert target <= next_target(target, Signal.BUSY, since, scaling) <= target + 1
    assert target - 1 <= next_target(target, Signal.SHORT, since, scaling) <= target
    assert next_target(target, Signal.THROTTLED, since, scaling) == max(1, target // 2)


@given(targets, signals, limits)
def test_nothing_but_a_throttle_changes_the_target_right_after_a_change(
    target: int, signal: Signal, scaling: ScalingLimits
) -> None:
    target = min(target, scaling.maximum)
    if signal is not Signal.THROTTLED:
        assert next_target(target, signal, 0.0, scaling) == target
