"""The circuit breaker alone: it opens after N failures in a row, holds the pause gate for
the cool-down, lets one probe through, and closes on its success; and the pause gate it
holds, which an operator's pause shares."""

from __future__ import annotations

import anyio
import pytest

from esm.engine.breaker import BreakerSettings, CircuitBreaker, CircuitState
from esm.engine.pause import PauseGate

pytestmark = pytest.mark.anyio

COOL_DOWN = 0.3


def breaker(failures: int = 3) -> tuple[CircuitBreaker, PauseGate, list[tuple[str, str]]]:
    gate = PauseGate()
    changes: list[tuple[str, str]] = []
    return (
        CircuitBreaker(
            BreakerSettings(failures, COOL_DOWN),
            gate,
            on_change=lambda before, after, n, error: changes.append((before.value, after.value)),
        ),
        gate,
        changes,
    )


async def test_it_opens_after_failures_in_a_row_and_a_success_resets_the_count() -> None:
    circuit, gate, changes = breaker(3)
    for ok in (False, False, True, False, False):
        await circuit.admit()
        circuit.record(ok, None if ok else "boom")
    assert (circuit.state, gate.closed, changes) == (CircuitState.CLOSED, False, [])
    await circuit.admit()
    circuit.record(False, "boom")
    assert circuit.state is CircuitState.OPEN
    assert gate.closed
    assert not gate.paused  # not an operator's pause
    assert changes == [("closed", "open")]
    assert circuit.status() == {
        "state": "open",
        "consecutive_failures": 3,
        "opened": 1,
        "last_error": "boom",
    }


async def test_an_open_breaker_lets_one_probe_through_after_the_cool_down() -> None:
    circuit, gate, changes = breaker(1)
    await circuit.admit()
    circuit.record(False, "down")
    admitted: list[int] = []
    started = anyio.current_time()

    async def invocation(number: int) -> None:
        await circuit.admit()
        admitted.append(number)

    async with anyio.create_task_group() as tg:
        for number in range(3):
            tg.start_soon(invocation, number)
        with anyio.fail_after(5):
            while not admitted:
                await anyio.sleep(0.01)
        # One probe after the cool-down; the others wait for its result.
        assert anyio.current_time() - started >= COOL_DOWN * 0.9
        assert circuit.state is CircuitState.HALF_OPEN
        assert not gate.closed  # reading goes on, to find batches to probe with
        await anyio.sleep(0.05)
        assert len(admitted) == 1
        circuit.record(False, "still down")  # the probe fails: open again
        assert circuit.status()["state"] == "open"
        with anyio.fail_after(5):
            while len(admitted) < 2:
                await anyio.sleep(0.01)
        circuit.record(True)  # the second probe succeeds: everyone goes
        with anyio.fail_after(5):
            while len(admitted) < 3:
                await anyio.sleep(0.01)
    assert circuit.state is CircuitState.CLOSED
    assert not gate.closed
    assert changes == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert circuit.opened == 2


async def test_readers_at_the_gate_probe_when_nobody_invokes() -> None:
    circuit, gate, _ = breaker(1)
    circuit.record(False, "down")
    with anyio.fail_after(5):
        await gate.wait_open()  # the cool-down ends the hold by itself
    assert circuit.state is CircuitState.HALF_OPEN


async def test_an_operator_pause_outlasts_the_breaker() -> None:
    circuit, gate, _ = breaker(1)
    circuit.record(False, "down")
    assert gate.pause()
    await anyio.sleep(COOL_DOWN + 0.05)
    assert gate.closed  # the cool-down ended, the operator's pause did not
    await circuit.admit()
    circuit.record(True)
    assert circuit.state is CircuitState.CLOSED
    assert gate.closed
    assert gate.paused
    assert gate.resume()
    assert not gate.closed


async def test_a_probe_cancelled_at_shutdown_lets_another_one_go() -> None:
    circuit, _, _ = breaker(1)
    circuit.record(False, "down")
    await circuit.admit()  # after the cool-down: the probe
    circuit.release_probe()
    with anyio.fail_after(1):
        await circuit.admit()
    assert circuit.state is CircuitState.HALF_OPEN
