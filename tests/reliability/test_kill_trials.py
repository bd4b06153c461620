"""kill -9 trials: `esm run` is killed with SIGKILL at random moments while traffic flows,
restarted on the same sqlite state file each time, then left to finish.

Nothing may be lost and, within the life of one process, every partition key's records must
arrive in order. Duplicates are allowed (at least once), but only what was in flight when a
process died may come again; the bounds are derived in each test.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from esm.config import parse_config
from tests.conftest import free_port

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
    read_checkpoints,
    shard_truth,
    sqs_ids,
    wait_until,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.reliability,
    pytest.mark.timeout(300 + 20 * SETTINGS.trials),
]

BATCH_SIZE = 10


async def create_stream(kinesis: Any, shards: int) -> tuple[str, str]:
    name = f"rel-{uuid.uuid4().hex[:10]}"
    await kinesis.create_stream(StreamName=name, ShardCount=shards)
    summary = await kinesis.describe_stream_summary(StreamName=name)
    return name, str(summary["StreamDescriptionSummary"]["StreamARN"])


async def kill_at_random_moment(
    esm: EsmProcess, receiver: FunctionReceiver, rng: random.Random, arns: list[str]
) -> str:
    """Kill the current run: now and then during startup, mostly while batches flow."""
    run = esm.run
    if rng.random() < 0.2:
        moment = f"{rng.uniform(0, 1.2):.2f}s after start"
        await anyio.sleep(float(moment.split("s")[0]))
    else:
        await wait_until(
            lambda: any(receiver.count(arn, run) for arn in arns),
            60,
            f"run {run} delivers something\n{esm.log_tail()}",
        )
        pause = rng.uniform(0, 0.8)
        moment = f"{pause:.2f}s into deliveries"
        await anyio.sleep(pause)
    assert esm.alive, f"esm exited on its own in run {run}:\n{esm.log_tail()}"
    await esm.kill()
    return moment


async def test_kinesis_kill_9_trials(moto_endpoint: str, kinesis: Any, tmp_path: Path) -> None:
    seed, trials = SETTINGS.seed, SETTINGS.trials
    rng = random.Random(seed)
    # Stream A: one lane per shard, where the bound on repeats is exact. Stream B: three lanes
    # per shard (ParallelizationFactor), where order holds per key, not per shard.
    name_a, arn_a = await create_stream(kinesis, 4)
    name_b, arn_b = await create_stream(kinesis, 2)
    producers = [
        KinesisProducer(kinesis, name_a, keys=24, seed=seed + 1),
        KinesisProducer(kinesis, name_b, keys=24, seed=seed + 2),
    ]
    state = tmp_path / "state.db"
    mappings = f"""
  - FunctionName: sink
    EventSourceArn: {arn_a}
    StartingPosition: TRIM_HORIZON
    BatchSize: {BATCH_SIZE}
  - FunctionName: sink
    EventSourceArn: {arn_b}
    StartingPosition: TRIM_HORIZON
    BatchSize: {BATCH_SIZE}
    ParallelizationFactor: 3
"""
    admin_port = free_port()
    checkpoints: list[dict[tuple[str, str], int | None]] = []
    moments: list[str] = []
    # A function that takes up to 0.1 s keeps batches in flight most of the time, so that
    # kills land in the middle of invocations.
    async with FunctionReceiver(seed, max_delay=0.1) as receiver, anyio.create_task_group() as tg:

        def configure(run: int) -> str:
            return esm_config(
                endpoint=moto_endpoint,
                function_url=receiver.url(run),
                state_path=state,
                mappings=mappings,
                admin_listen=f"127.0.0.1:{admin_port}",
            )

        esm = EsmProcess(tmp_path, configure)
        ids = [m.mapping_id for m in parse_config(configure(0), environ={}).mappings]
        stop_producing = anyio.Event()
        produced = [anyio.Event() for _ in producers]

        async def produce(producer: KinesisProducer, done: anyio.Event) -> None:
            try:
                await producer.run(stop_producing, per_tick=8, tick=0.05)
            finally:
                done.set()

        for producer, done in zip(producers, produced, strict=True):
            tg.start_soon(produce, producer, done)
        try:
            for trial in range(trials):
                await esm.start(trial)
                moments.append(await kill_at_random_moment(esm, receiver, rng, [arn_a, arn_b]))
                checkpoints.append(read_checkpoints(state))
            stop_producing.set()
            for done in produced:
                await done.wait()
            # Where each shard ends: the last run is done when its checkpoint is there (what
            # it delivers may all have been delivered before, by a killed run).
            tails = {}
            for producer, mapping_id in zip(producers, ids, strict=True):
                for shard, records in (await shard_truth(kinesis, producer.stream)).items():
                    if records:
                        tails[(mapping_id, shard)] = records[-1][0]
            await esm.start(trials)
            await esm.wait_ready(f"http://127.0.0.1:{admin_port}")
            for producer, arn in zip(producers, (arn_a, arn_b), strict=True):

                def all_delivered(p: KinesisProducer = producer, a: str = arn) -> bool:
                    return len({(i.key, i.n) for i in kinesis_items(receiver, a)}) >= p.total

                await wait_until(
                    all_delivered,
                    120,
                    f"everything delivered after the last restart (seed {seed})\n{esm.log_tail()}",
                )
            await wait_until(
                lambda: all(read_checkpoints(state).get(k) == v for k, v in tails.items()),
                120,
                f"every shard checkpointed at its last record (seed {seed})\n{esm.log_tail()}",
            )
            assert esm.alive, esm.log_tail()
            assert await esm.stop() == 0, esm.log_tail()
        finally:
            stop_producing.set()
            esm.cleanup()

    final = read_checkpoints(state)
    lines = [f"kinesis kill -9: seed={seed} trials={trials} kills at: {', '.join(moments)}"]
    for producer, arn, mapping_id, lanes in zip(
        producers, (arn_a, arn_b), ids, (1, 3), strict=True
    ):
        truth = await shard_truth(kinesis, producer.stream)
        check_truth(truth, producer.produced)
        report = analyse_kinesis(
            kinesis_items(receiver, arn),
            producer.produced,
            mapping_id=mapping_id,
            checkpoints_at_kill=checkpoints,
            shard_order={s: [r[0] for r in rs] for s, rs in truth.items()} if lanes == 1 else None,
        )
        beyond = [sum(b.values()) for b in report.beyond_checkpoint]
        lines.append(
            f"  {len(truth)} shards x {lanes} lanes: {report.summary()} "
            f"delivered past the checkpoint at each kill: {beyond}"
        )
        where = f"(seed {seed}; replay with {SETTINGS.replay()})"
        assert not report.lost, f"lost {len(report.lost)}: {report.lost[:10]} {where}"
        assert not report.order_violations, f"{report.order_violations[:10]} {where}"
        assert not report.gaps, f"{report.gaps[:10]} {where}"
        assert not report.restart_skips, f"{report.restart_skips[:10]} {where}"
        # A restart resumes right after the checkpoint: what it holds is never sent again.
        assert not report.behind_checkpoint, f"{report.behind_checkpoint[:10]} {where}"
        # Repeats come only from past the checkpoint a killed run left behind.
        assert report.duplicates <= sum(beyond), where
        if lanes == 1:
            # One lane: a shard's next batch starts only once the previous one is settled and
            # its checkpoint saved, so a killed run leaves at most one batch per shard
            # delivered past its checkpoint: the one in flight, or the one whose save the
            # kill interrupted.
            for run, per_shard in enumerate(report.beyond_checkpoint):
                assert all(n <= BATCH_SIZE for n in per_shard.values()), (
                    f"run {run} delivered {per_shard} past its checkpoint {where}"
                )
            assert report.duplicates <= trials * len(truth) * BATCH_SIZE, where
        # The graceful stop at the end settled everything: each shard's checkpoint is its
        # last record.
        for shard, records in truth.items():
            if records:
                saved = final.get((mapping_id, shard))
                assert saved == records[-1][0], (
                    f"{shard}: checkpoint {saved} after the graceful stop, last record "
                    f"{records[-1][0]} {where}\n{esm.log_tail(15)}"
                )
    print("\n".join(lines))


async def test_sqs_kill_9_trials(moto_endpoint: str, sqs: Any, tmp_path: Path) -> None:
    seed, trials = SETTINGS.seed, SETTINGS.trials
    rng = random.Random(seed + 10)
    name = f"rel-{uuid.uuid4().hex[:10]}"
    # A short visibility timeout brings back what a killed process held within seconds.
    url = (await sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "2"}))[
        "QueueUrl"
    ]
    arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"][
        "QueueArn"
    ]
    max_concurrency = 2
    producer = SqsProducer(sqs, url)
    state = tmp_path / "state.db"
    mappings = f"""
  - FunctionName: sink
    EventSourceArn: {arn}
    BatchSize: {BATCH_SIZE}
    ScalingConfig: {{MaximumConcurrency: {max_concurrency}}}
"""
    moments: list[str] = []
    admin_port = free_port()
    async with FunctionReceiver(seed, max_delay=0.1) as receiver, anyio.create_task_group() as tg:

        def configure(run: int) -> str:
            return esm_config(
                endpoint=moto_endpoint,
                function_url=receiver.url(run),
                state_path=state,
                mappings=mappings,
                admin_listen=f"127.0.0.1:{admin_port}",
            )

        esm = EsmProcess(tmp_path, configure)
        stop_producing = anyio.Event()
        tg.start_soon(lambda: producer.run(stop_producing, per_tick=5, tick=0.1))
        try:
            for trial in range(trials):
                await esm.start(trial)
                moments.append(await kill_at_random_moment(esm, receiver, rng, [arn]))
            stop_producing.set()
            await esm.start(trials)
            await esm.wait_ready(f"http://127.0.0.1:{admin_port}")
            await wait_until(
                lambda: len({m for _, m in sqs_ids(receiver, arn)}) >= producer.sent,
                120,
                f"every message delivered after the last restart (seed {seed})\n{esm.log_tail()}",
            )

            async def drained() -> bool:
                answer = await sqs.get_queue_attributes(
                    QueueUrl=url,
                    AttributeNames=[
                        "ApproximateNumberOfMessages",
                        "ApproximateNumberOfMessagesNotVisible",
                    ],
                )
                return all(v == "0" for v in answer["Attributes"].values())

            # What the killed runs held comes back and is deleted too: the queue empties.
            with anyio.fail_after(60):
                while not await drained():
                    await anyio.sleep(0.2)
            assert esm.alive, esm.log_tail()
            assert await esm.stop() == 0, esm.log_tail()
        finally:
            stop_producing.set()
            esm.cleanup()

    report = analyse_sqs(sqs_ids(receiver, arn), producer.sent)
    print(f"sqs kill -9: seed={seed} trials={trials} kills at: {', '.join(moments)}")
    print(f"  {report.summary()}")
    where = f"(seed {seed}; replay with {SETTINGS.replay()})"
    assert not report.unknown, where
    assert not report.lost, f"lost {len(report.lost)}: {report.lost[:10]} {where}"
    # A poller deletes a batch before it receives the next, and at most MaximumConcurrency
    # pollers run: a killed run leaves at most that many batches delivered but not deleted,
    # and only those come back in a later run.
    assert report.restart_redeliveries <= trials * max_concurrency * BATCH_SIZE, where
