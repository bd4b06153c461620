"""The stream engine at its own seam (a `FakeStream` reader, no client): lineage, resuming
from checkpoints, and what happens to a shard's checkpoints when its unit is released or
lost."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from esm.checkpoints.memory import MemoryCheckpointStore
from esm.engine.batcher import BatchLimits
from esm.engine.driver import Deliverer, FunctionTarget
from esm.engine.retry import Backoff
from esm.engine.stream_model import StreamSettings
from esm.engine.streams import StreamEngine
from esm.metrics import Metrics
from esm.model import Checkpoint, IteratorType, StartPosition
from esm.testing import FakeStream, RecordingBackend

pytestmark = pytest.mark.anyio

FAST = Backoff(initial=0.01, maximum=0.05)
TARGET = FunctionTarget(
    name="fn", arn="arn:aws:lambda:us-east-1:123456789012:function:fn", timeout=3
)


class JournalStore(MemoryCheckpointStore):
    """Notes every save, and what the function had seen by then."""

    def __init__(self, backend: RecordingBackend) -> None:
        super().__init__()
        self.backend = backend
        self.saves: list[tuple[str, str | None, int]] = []

    async def save(self, mapping_id: str, partition: str, checkpoint: Checkpoint) -> None:
        await super().save(mapping_id, partition, checkpoint)
        self.saves.append((partition, checkpoint.sequence, len(self.backend.events)))


def engine_for(
    stream: FakeStream,
    backend: RecordingBackend,
    store: MemoryCheckpointStore,
    batch_size: int = 10,
) -> StreamEngine:
    metrics = Metrics()
    settings = StreamSettings(
        mapping_id="m1",
        starting_position=StartPosition(IteratorType.TRIM_HORIZON),
        limits=BatchLimits(batch_size=batch_size, window_seconds=0),
        poll_interval=0.02,
        busy_poll_interval=0.02,
        discovery_interval=0.05,
        read_backoff=FAST,
        checkpoint_backoff=FAST,
    )
    deliverer = Deliverer(backend, TARGET, "m1", metrics, backoff=FAST)
    return StreamEngine(stream, settings, deliverer, store, metrics)


async def run_until(
    engine: StreamEngine, done: Callable[[], bool], act: Callable[[StreamEngine], Any] | None = None
) -> None:
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.run)
            while not done():
                await anyio.sleep(0.01)
                if act is not None and act(engine):
                    act = None
            engine.stop(grace=1)


def sequences(backend: RecordingBackend) -> list[list[int]]:
    return [[r["seq"] for r in event["Records"]] for event in backend.events]


async def test_children_are_read_only_after_their_parent_is_finished() -> None:
    stream = FakeStream()
    stream.add_shard("parent")
    before = [stream.put("parent").order for _ in range(3)]
    stream.close("parent")
    stream.add_shard("left", "parent")
    stream.add_shard("right", "parent")
    after = [stream.put("left").order, stream.put("right").order]
    backend = RecordingBackend()
    store = MemoryCheckpointStore()
    engine = engine_for(stream, backend, store)

    await run_until(engine, lambda: len(backend.delivered_records()) == 5)

    delivered = [seq for batch in sequences(backend) for seq in batch]
    assert delivered[:3] == before
    assert sorted(delivered[3:]) == after
    assert (await store.load("m1"))["parent"].finished


async def test_a_restart_resumes_after_the_checkpoint() -> None:
    stream = FakeStream()
    stream.add_shard("s0")
    records = [stream.put("s0") for _ in range(6)]
    backend = RecordingBackend()
    store = MemoryCheckpointStore()
    await store.save("m1", "s0", Checkpoint(records[3].sequence))
    engine = engine_for(stream, backend, store)

    await run_until(engine, lambda: len(backend.delivered_records()) == 2)

    assert sequences(backend) == [[records[4].order, records[5].order]]


async def test_a_released_shard_finishes_its_batch_and_checkpoints_it() -> None:
    stream = FakeStream()
    stream.add_shard("s0")
    last = [stream.put("s0") for _ in range(4)][-1]
    backend = RecordingBackend(delay=0.2)
    store = JournalStore(backend)
    engine = engine_for(stream, backend, store)

    def release_once_in_flight(engine: StreamEngine) -> bool:
        if backend.concurrent and engine.units is not None:
            engine.units.release("s0", grace=5)
            return True
        return False

    await run_until(engine, lambda: bool(store.saves), release_once_in_flight)

    # The batch in flight when the release came was delivered once, then checkpointed.
    assert store.saves[0] == ("s0", last.sequence, 1)


async def test_a_lost_shard_never_checkpoints_what_it_had_in_flight() -> None:
    stream = FakeStream()
    stream.add_shard("s0")
    last = [stream.put("s0") for _ in range(4)][-1]
    backend = RecordingBackend(delay=0.2)
    store = JournalStore(backend)
    engine = engine_for(stream, backend, store)

    def lose_once_in_flight(engine: StreamEngine) -> bool:
        if backend.concurrent and engine.units is not None:
            engine.units.lose("s0")
            return True
        return False

    await run_until(engine, lambda: bool(store.saves), lose_once_in_flight)

    # The lost unit's batch was cut off and not checkpointed; the shard's next run (the
    # engine takes it up again: it is the only worker) delivered it again and saved.
    assert store.saves[0] == ("s0", last.sequence, 2)
    assert sequences(backend)[0] == sequences(backend)[1]
