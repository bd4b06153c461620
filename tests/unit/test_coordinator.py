"""The coordinator and unit lifecycle: acquire starts a unit, release winds it down in order
(reading first, delivery within the grace), lose fences and cancels at once."""

from __future__ import annotations

import anyio
import pytest

from esm.engine.coordinator import Coordinator
from esm.engine.lifecycle import Interruptible, UnitLife

pytestmark = pytest.mark.anyio


class _Unit:
    """A unit that reads until interrupted, then 'delivers' for `delivery_seconds`, then
    checkpoints unless fenced."""

    def __init__(self, delivery_seconds: float) -> None:
        self.delivery_seconds = delivery_seconds
        self.events: list[str] = []
        self.started = anyio.Event()

    async def run(self, key: str, life: UnitLife) -> None:
        self.events.append(f"{key} start")
        self.started.set()
        with life.reading.scope():
            await anyio.sleep_forever()
        self.events.append(f"{key} reading stopped")
        try:
            await anyio.sleep(self.delivery_seconds)
            self.events.append(f"{key} delivered")
        finally:
            if not life.fenced:
                self.events.append(f"{key} checkpoint")


async def test_acquire_runs_once_and_release_stops_reading_then_delivery_finishes() -> None:
    unit = _Unit(delivery_seconds=0.01)
    async with anyio.create_task_group() as tg:
        coordinator: Coordinator[str] = Coordinator(tg, unit.run)
        assert coordinator.acquire("a")
        assert not coordinator.acquire("a")
        await unit.started.wait()
        assert coordinator.held == {"a"}
        coordinator.release("a", grace=5)
        await coordinator.wait_changed()
    assert unit.events == ["a start", "a reading stopped", "a delivered", "a checkpoint"]
    assert coordinator.held == frozenset()


async def test_release_cancels_delivery_past_the_grace_but_still_checkpoints() -> None:
    unit = _Unit(delivery_seconds=60)
    async with anyio.create_task_group() as tg:
        coordinator: Coordinator[str] = Coordinator(tg, unit.run)
        coordinator.acquire("a")
        await unit.started.wait()
        coordinator.release("a", grace=0.01)
    assert unit.events == ["a start", "a reading stopped", "a checkpoint"]


async def test_a_lost_unit_is_fenced_and_cancelled_at_once() -> None:
    unit = _Unit(delivery_seconds=60)
    async with anyio.create_task_group() as tg:
        coordinator: Coordinator[str] = Coordinator(tg, unit.run)
        coordinator.acquire("a")
        coordinator.acquire("b")
        while len(unit.events) < 2:
            await anyio.sleep(0.001)
        coordinator.lose("a")
        await coordinator.wait_changed()
        assert coordinator.held == {"b"}
        coordinator.release_all(grace=0.05)
    assert "a checkpoint" not in unit.events
    assert "a delivered" not in unit.events
    assert "b checkpoint" in unit.events


async def test_interruptible_cancels_scopes_entered_after_the_interrupt() -> None:
    reading = Interruptible()
    reading.interrupt()
    with reading.scope() as scope:
        await anyio.sleep(60)
    assert scope.cancelled_caught
    assert not await reading.sleep(60)


async def test_interruptible_sleep_ends_early_on_interrupt() -> None:
    reading = Interruptible()
    results: list[bool] = []

    async def sleeper() -> None:
        results.append(await reading.sleep(60))

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await anyio.sleep(0.01)
        reading.interrupt()
    assert results == [False]
    assert await Interruptible().sleep(0)
