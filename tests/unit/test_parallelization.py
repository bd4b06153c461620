"""ParallelizationFactor: per-key order, no overlap per key, and a checkpoint that never
passes an unsettled record, shown over random streams against the fake source."""

from __future__ import annotations

from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esm.checkpoints.memory import MemoryCheckpointStore
from esm.engine.batcher import BatchLimits
from esm.engine.driver import Deliverer, FunctionTarget
from esm.engine.retry import Backoff
from esm.engine.stream_model import StreamSettings
from esm.engine.streams import StreamEngine
from esm.metrics import Metrics
from esm.model import Checkpoint, Invocation, InvokeResult, IteratorType, ResultKind, StartPosition
from esm.sources.kinesis import KinesisRecordFactory, KinesisStreamAPI
from esm.testing import FakeKinesisClient

STREAM = "lanes"
ARN = f"arn:aws:kinesis:us-east-1:000000000000:stream/{STREAM}"


class KeyedBackend:
    """Completes batches after a delay drawn per batch; records what was in flight per key
    and which sequence numbers completed, failing every `fail_every`-th call once."""

    def __init__(self, delays: list[float], fail_every: int) -> None:
        self.delays = delays
        self.fail_every = fail_every
        self.calls = 0
        self.in_flight_keys: set[str] = set()
        self.overlaps: list[str] = []
        self.completed: set[int] = set()
        self.by_key: dict[str, list[int]] = {}
        self.concurrent = 0
        self.max_concurrent = 0

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        import orjson

        records = orjson.loads(invocation.payload)["Records"]
        keys = {r["kinesis"]["partitionKey"] for r in records}
        overlap = keys & self.in_flight_keys
        self.overlaps.extend(overlap)
        self.in_flight_keys |= keys
        self.calls += 1
        call = self.calls
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            await anyio.sleep(self.delays[call % len(self.delays)])
        finally:
            self.in_flight_keys -= keys
            self.concurrent -= 1
        if self.fail_every and call % self.fail_every == 0:
            return InvokeResult(kind=ResultKind.FUNCTION_ERROR, error="flaky")
        for r in records:
            sequence = int(r["kinesis"]["sequenceNumber"])
            self.completed.add(sequence)
            self.by_key.setdefault(r["kinesis"]["partitionKey"], []).append(sequence)
        return InvokeResult(kind=ResultKind.SUCCESS)

    async def aclose(self) -> None:
        return None


class CheckingStore(MemoryCheckpointStore):
    """A store that checks, at every save, that nothing at or before the checkpoint is
    still undelivered."""

    def __init__(self, backend: KeyedBackend, written: list[int]) -> None:
        super().__init__()
        self.backend = backend
        self.written = written
        self.violations: list[str] = []
        self.saves = 0

    async def save(self, mapping_id: str, partition: str, checkpoint: Checkpoint) -> None:
        self.saves += 1
        if checkpoint.sequence is not None:
            upto = int(checkpoint.sequence)
            missing = [s for s in self.written if s <= upto and s not in self.backend.completed]
            if missing:
                self.violations.append(f"checkpoint {upto} passes undelivered {missing[:3]}")
        await super().save(mapping_id, partition, checkpoint)


async def _run(
    keys: list[int], factor: int, batch_size: int, delays: list[float], fail_every: int
) -> tuple[KeyedBackend, CheckingStore, list[int]]:
    client = FakeKinesisClient(page_limit=10)
    client.create_stream(STREAM, 1)
    shard = client.shard_ids(STREAM)[0]
    written = [int(client.put_record(STREAM, b"x", f"key-{k}", shard_id=shard)) for k in keys]
    backend = KeyedBackend(delays, fail_every)
    store = CheckingStore(backend, written)
    metrics = Metrics()
    factory = KinesisRecordFactory(
        stream_arn=ARN, region="us-east-1", identity_arn="arn:aws:iam::0:role/esm"
    )
    api = KinesisStreamAPI(client, stream_name=STREAM, stream_arn=ARN, records=factory)
    settings_ = StreamSettings(
        mapping_id="m",
        starting_position=StartPosition(IteratorType.TRIM_HORIZON),
        limits=BatchLimits(batch_size=batch_size),
        poll_interval=0.2,
        busy_poll_interval=0.0,
        discovery_interval=0.2,
        parallelization=factor,
    )
    target = FunctionTarget(name="fn", arn="arn:aws:lambda:us-east-1:0:function:fn", timeout=3)
    deliverer = Deliverer(backend, target, "m", metrics, backoff=Backoff(0.001, 0.002))
    runner = StreamEngine(api, settings_, deliverer, store, metrics)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            while len(backend.completed) < len(written):
                await anyio.sleep(0.005)
            runner.stop()
    return backend, store, written


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    keys=st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=120),
    factor=st.integers(min_value=1, max_value=10),
    batch_size=st.integers(min_value=1, max_value=15),
    delays=st.lists(st.sampled_from([0.0, 0.001, 0.003]), min_size=1, max_size=5),
    fail_every=st.sampled_from([0, 3, 7]),
)
def test_lanes_keep_per_key_order_and_the_checkpoint_never_passes_unsettled_records(
    keys: list[int], factor: int, batch_size: int, delays: list[float], fail_every: int
) -> None:
    backend, store, written = anyio.run(_run, keys, factor, batch_size, delays, fail_every)
    assert backend.overlaps == [], "records of one key were in flight together"
    for key, sequences in backend.by_key.items():
        assert sequences == sorted(sequences), f"{key} out of order"
    assert store.violations == []
    assert backend.completed == set(written)


def test_parallel_lanes_overlap_across_keys() -> None:
    """With a factor of 4 and four keys, batches of different keys run at the same time."""

    async def run() -> Any:
        return await _run(list(range(4)) * 10, 4, 5, [0.05], 0)

    backend, _, _ = anyio.run(run)
    assert backend.overlaps == []
    assert backend.max_concurrent > 1
