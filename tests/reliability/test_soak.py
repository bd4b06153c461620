"""A soak: steady traffic through one `esm run` for a long time (30 minutes in the long mode),
the process's resident memory sampled every few seconds. Nothing may be lost, and memory must
level off rather than grow with the traffic.

Skipped in the short mode; ESM_RELIABILITY_LONG=1 or ESM_RELIABILITY_SOAK_SECONDS=N runs it.
"""

from __future__ import annotations

import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from .harness import (
    SETTINGS,
    EsmProcess,
    FunctionReceiver,
    KinesisProducer,
    SqsProducer,
    analyse_kinesis,
    analyse_sqs,
    check_truth,
    esm_config,
    kinesis_items,
    shard_truth,
    sqs_ids,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.reliability,
    pytest.mark.timeout(SETTINGS.soak_seconds + 600),
    pytest.mark.skipif(
        SETTINGS.soak_seconds <= 0,
        reason="the soak runs in the long mode: ESM_RELIABILITY_LONG=1 or "
        "ESM_RELIABILITY_SOAK_SECONDS=N",
    ),
]

MIB = 1024 * 1024
# After warm-up (imports, connection pools, caches, the first checkpoints), the resident set
# may still move with the allocator and the garbage collector, but not by more than this.
RSS_GROWTH_LIMIT = 32 * MIB


async def test_soak(moto_endpoint: str, kinesis: Any, sqs: Any, tmp_path: Path) -> None:
    seed, duration = SETTINGS.seed, SETTINGS.soak_seconds
    interval = min(5.0, max(1.0, duration / 60))
    warm_up = min(120.0, duration * 0.2)
    stream = f"soak-{uuid.uuid4().hex[:10]}"
    await kinesis.create_stream(StreamName=stream, ShardCount=2)
    stream_arn = (await kinesis.describe_stream_summary(StreamName=stream))[
        "StreamDescriptionSummary"
    ]["StreamARN"]
    queue = f"soak-{uuid.uuid4().hex[:10]}"
    url = (await sqs.create_queue(QueueName=queue, Attributes={"VisibilityTimeout": "10"}))[
        "QueueUrl"
    ]
    queue_arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))[
        "Attributes"
    ]["QueueArn"]
    records = KinesisProducer(kinesis, stream, keys=50, seed=seed + 5)
    messages = SqsProducer(sqs, url)
    mappings = f"""
  - FunctionName: sink
    EventSourceArn: {stream_arn}
    StartingPosition: TRIM_HORIZON
    BatchSize: 50
    ParallelizationFactor: 2
  - FunctionName: sink
    EventSourceArn: {queue_arn}
    BatchSize: 10
"""
    samples: list[tuple[float, int]] = []
    async with FunctionReceiver(seed, max_delay=0.005) as receiver, anyio.create_task_group() as tg:

        def configure(run: int) -> str:
            return esm_config(
                endpoint=moto_endpoint,
                function_url=receiver.url(run),
                state_path=tmp_path / "state.db",
                mappings=mappings,
            )

        esm = EsmProcess(tmp_path, configure)
        stop_producing = anyio.Event()
        tg.start_soon(lambda: records.run(stop_producing, per_tick=4, tick=0.2))
        tg.start_soon(lambda: messages.run(stop_producing, per_tick=2, tick=0.2))
        try:
            await esm.start(0)
            with anyio.fail_after(60):
                while not receiver.deliveries:
                    await anyio.sleep(0.05)
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < duration:
                assert esm.alive, esm.log_tail()
                samples.append((elapsed, esm.rss_bytes()))
                await anyio.sleep(interval)
            stop_producing.set()
            with anyio.fail_after(180):
                while (
                    len({(i.key, i.n) for i in kinesis_items(receiver, stream_arn)}) < records.total
                    or len({m for _, m in sqs_ids(receiver, queue_arn)}) < messages.sent
                ):
                    await anyio.sleep(0.2)
            samples.append((time.monotonic() - started, esm.rss_bytes()))
            assert await esm.stop() == 0, esm.log_tail()
        finally:
            stop_producing.set()
            esm.cleanup()

    truth = await shard_truth(kinesis, stream)
    check_truth(truth, records.produced)
    stream_report = analyse_kinesis(
        kinesis_items(receiver, stream_arn), records.produced, mapping_id=""
    )
    queue_report = analyse_sqs(sqs_ids(receiver, queue_arn), messages.sent)
    settled = [rss for t, rss in samples if t >= warm_up]
    assert len(settled) >= 2, "the soak is too short to sample after warm-up"
    head = settled[: max(1, min(5, len(settled) // 4))]
    tail = settled[-max(1, min(5, len(settled) // 4)) :]
    baseline, end = statistics.median(head), statistics.median(tail)
    peak = max(rss for _, rss in samples)
    print(
        f"soak: seed={seed} seconds={duration:g} samples={len(samples)} "
        f"rss_first={samples[0][1] / MIB:.1f}MiB rss_after_warm_up={baseline / MIB:.1f}MiB "
        f"rss_end={end / MIB:.1f}MiB rss_peak={peak / MIB:.1f}MiB"
    )
    print(f"  kinesis: {stream_report.summary()}")
    print(f"  sqs: {queue_report.summary()}")
    where = f"(seed {seed})"
    assert not stream_report.lost, f"lost {stream_report.lost[:10]} {where}"
    assert not stream_report.order_violations, where
    assert not stream_report.gaps, where
    assert stream_report.duplicates == 0, where
    assert not queue_report.lost, f"lost {queue_report.lost[:10]} {where}"
    assert not queue_report.unknown, where
    assert end - baseline <= RSS_GROWTH_LIMIT, (
        f"resident memory grew from {baseline / MIB:.1f} MiB to {end / MIB:.1f} MiB {where}"
    )
