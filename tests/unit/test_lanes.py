"""One lane on its own, with a fake delivery and injected clocks: batches cut by size and by
batching window, the shard's end, winding down, and tumbling windows' final invocations."""

from __future__ import annotations

import anyio
import pytest
from anyio.streams.memory import MemoryObjectSendStream

from esm.engine.batcher import BatchLimits
from esm.engine.driver import DeliveryOutcome
from esm.engine.lanes import END_OF_SHARD, Lane, LaneItem, lane_of
from esm.engine.lifecycle import UnitLife
from esm.engine.window import WindowState
from esm.model import Batch, Record

pytestmark = pytest.mark.anyio


def record(n: int, arrival: float = 1_700_000_000.0) -> Record:
    return Record(str(n), n, "key", arrival, 10, {"n": n})


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Deliveries:
    """Records each batch (and window) a lane hands over; answers from `outcome`."""

    def __init__(self, outcome: DeliveryOutcome = DeliveryOutcome.DELIVERED) -> None:
        self.outcome = outcome
        self.batches: list[list[int]] = []
        self.windows: list[float | None] = []
        self.closed: list[float | None] = []

    async def deliver(self, lane: int, batch: Batch, window: WindowState | None) -> DeliveryOutcome:
        self.batches.append([r.order for r in batch.records])
        self.windows.append(window.start if window else None)
        return self.outcome

    async def close(self, lane: int, window: WindowState) -> bool:
        self.closed.append(window.start)
        if window.start is not None:
            window.close()
        return True


def make_lane(
    deliveries: Deliveries,
    *,
    batch_size: int = 3,
    window_seconds: float = 0.0,
    tumbling: int = 0,
    life: UnitLife | None = None,
    clock: FakeClock | None = None,
) -> tuple[Lane, MemoryObjectSendStream[LaneItem]]:
    send, recv = anyio.create_memory_object_stream[LaneItem](10)
    clock = clock or FakeClock()
    lane = Lane(
        0,
        recv,
        limits=BatchLimits(batch_size=batch_size, window_seconds=window_seconds),
        partition="shardId-000000000000",
        life=life or UnitLife(),
        clock=clock,
        window=WindowState(tumbling, "shardId-000000000000", "arn") if tumbling else None,
        deliver=deliveries.deliver,
        close_window=deliveries.close,
        batch_clock=clock,
    )
    return lane, send


async def test_batches_are_cut_by_size_in_order_and_the_end_of_the_shard_ends_the_lane() -> None:
    deliveries = Deliveries()
    lane, send = make_lane(deliveries, batch_size=3)
    await send.send([record(n) for n in range(7)])
    await send.send(END_OF_SHARD)
    with anyio.fail_after(5), send:
        assert await lane.run()
    assert deliveries.batches == [[0, 1, 2], [3, 4, 5], [6]]


async def test_a_batching_window_that_has_passed_sends_what_is_pending() -> None:
    deliveries = Deliveries()
    clock = FakeClock()
    lane, send = make_lane(deliveries, batch_size=100, window_seconds=5, clock=clock)
    results: list[bool] = []

    async def run() -> None:
        results.append(await lane.run())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await send.send([record(1), record(2)])
            await anyio.sleep(0.05)
            assert deliveries.batches == [], "the window is still open"
            clock.now += 5  # the window passes without any real waiting
            await send.send([record(3)])
            while not deliveries.batches:
                await anyio.sleep(0.01)
            send.close()
    assert deliveries.batches[0] == [1, 2, 3]
    assert results == [False], "a lane whose reader stopped did not reach the shard's end"


async def test_a_winding_down_unit_starts_no_new_batch() -> None:
    deliveries = Deliveries()
    life = UnitLife()
    lane, send = make_lane(deliveries, batch_size=2, life=life)
    life.stop()
    await send.send([record(1), record(2), record(3)])
    with anyio.fail_after(5), send:
        assert not await lane.run()
    assert deliveries.batches == []


async def test_an_abandoned_delivery_ends_the_lane_without_reaching_the_end() -> None:
    deliveries = Deliveries(DeliveryOutcome.ABANDONED)
    lane, send = make_lane(deliveries, batch_size=2)
    await send.send([record(1), record(2), record(3)])
    await send.send(END_OF_SHARD)
    with anyio.fail_after(5), send:
        assert not await lane.run()
    assert deliveries.batches == [[1, 2]]


async def test_a_record_of_a_later_tumbling_window_closes_the_current_one_first() -> None:
    deliveries = Deliveries()
    base = 1_700_000_040.0  # a multiple of 60
    lane, send = make_lane(deliveries, batch_size=10, tumbling=60, clock=FakeClock(base + 1))
    await send.send([record(1, base + 1), record(2, base + 2), record(3, base + 61)])
    await send.send(END_OF_SHARD)
    with anyio.fail_after(5), send:
        assert await lane.run()
    # The first window's records, its final invocation, then the next window's, which the
    # shard's end closes.
    assert deliveries.batches == [[1, 2], [3]]
    assert deliveries.windows == [base, base + 60]
    assert deliveries.closed == [base, base + 60]


def test_a_key_always_goes_to_the_same_lane() -> None:
    assert {lane_of("customer-42", 4) for _ in range(10)} == {lane_of("customer-42", 4)}
    assert {lane_of(f"k{n}", 4) for n in range(100)} == {0, 1, 2, 3}
