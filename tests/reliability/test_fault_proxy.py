"""esm against an unreliable AWS: a fault proxy between `esm run` and the emulator resets
connections, answers 500/503 and throttling errors, delays and stalls requests. Nothing may
be lost, and the daemon must keep going while faults are intermittent and recover by itself
once they stop."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from tests.conftest import free_port

from .fault_proxy import Fault, FaultProxy, FaultSchedule
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
    wait_until,
)

pytestmark = [pytest.mark.anyio, pytest.mark.reliability]

INTERMITTENT = ("reset", "reset_after", "http_500", "http_503", "throttle", "delay")
OUTAGE = ("reset", "http_500", "http_503", "throttle")


async def test_schedule_is_seeded() -> None:
    """The same seed and the same requests give the same faults."""

    def decisions(seed: int) -> list[Fault | None]:
        schedule = FaultSchedule(seed=seed, rate=0.5)
        schedule.force(Fault("stall", 35.0), operations=("GetRecords",))
        ops = ["ListShards", "GetRecords", "ReceiveMessage"] * 20
        return [schedule.decide("kinesis", op) for op in ops]

    assert decisions(3) == decisions(3)
    assert decisions(3) != decisions(4)
    first = decisions(3)
    assert first[1] == Fault("stall", 35.0)
    assert {f.kind for f in first if f} >= {"reset", "http_503", "throttle"}


async def test_faults_look_like_the_service_to_botocore(
    moto_endpoint: str, kinesis: Any, sqs: Any
) -> None:
    """Each injected answer reaches the client as the service's own error would."""
    stream = f"rel-{uuid.uuid4().hex[:10]}"
    await kinesis.create_stream(StreamName=stream, ShardCount=1)
    url = (await sqs.create_queue(QueueName=f"rel-{uuid.uuid4().hex[:10]}"))["QueueUrl"]
    schedule = FaultSchedule(seed=0)
    no_retries = AioConfig(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=2)
    async with (
        FaultProxy(moto_endpoint, schedule) as proxy,
        get_session().create_client(
            "kinesis", region_name="us-east-1", endpoint_url=proxy.url, config=no_retries
        ) as proxied_kinesis,
        get_session().create_client(
            "sqs", region_name="us-east-1", endpoint_url=proxy.url, config=no_retries
        ) as proxied_sqs,
    ):

        async def kinesis_error(fault: Fault) -> str:
            schedule.force(fault)
            try:
                await proxied_kinesis.list_shards(StreamName=stream)
            except ClientError as exc:
                return str(exc.response["Error"]["Code"])
            except (BotoCoreError, aiohttp.ClientError) as exc:
                return type(exc).__name__
            return "no error"

        async def sqs_error(fault: Fault) -> str:
            schedule.force(fault)
            try:
                await proxied_sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
            except ClientError as exc:
                return str(exc.response["Error"]["Code"])
            except (BotoCoreError, aiohttp.ClientError) as exc:
                return type(exc).__name__
            return "no error"

        assert await kinesis_error(Fault("throttle")) == "ProvisionedThroughputExceededException"
        assert await kinesis_error(Fault("http_500")) == "InternalFailure"
        assert await kinesis_error(Fault("http_503")) == "ServiceUnavailable"
        assert await kinesis_error(Fault("reset")) in {
            "EndpointConnectionError",
            "ConnectionClosedError",
        }
        assert await kinesis_error(Fault("delay", 0.1)) == "no error"
        assert await sqs_error(Fault("throttle")) == "RequestThrottled"
        assert await sqs_error(Fault("http_503")) == "ServiceUnavailable"
        assert await sqs_error(Fault("reset_after")) in {
            "EndpointConnectionError",
            "ConnectionClosedError",
        }
        # A stall outlasts the client's read timeout.
        assert await sqs_error(Fault("stall", 5)) == "ReadTimeoutError"
    assert proxy.forwarded >= 2


async def metric_total(admin: str, name: str, **labels: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{admin}/metrics") as answer:
        text = await answer.text()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.timeout(400)
async def test_nothing_lost_through_faults(
    moto_endpoint: str, kinesis: Any, sqs: Any, tmp_path: Path
) -> None:
    seed = SETTINGS.seed
    stream = f"rel-{uuid.uuid4().hex[:10]}"
    await kinesis.create_stream(StreamName=stream, ShardCount=3)
    stream_arn = (await kinesis.describe_stream_summary(StreamName=stream))[
        "StreamDescriptionSummary"
    ]["StreamARN"]
    queue = f"rel-{uuid.uuid4().hex[:10]}"
    url = (await sqs.create_queue(QueueName=queue, Attributes={"VisibilityTimeout": "3"}))[
        "QueueUrl"
    ]
    queue_arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))[
        "Attributes"
    ]["QueueArn"]
    records = KinesisProducer(kinesis, stream, keys=20, seed=seed + 3)
    messages = SqsProducer(sqs, url)
    schedule = FaultSchedule(seed=seed)
    admin_port = free_port()
    admin = f"http://127.0.0.1:{admin_port}"
    mappings = f"""
  - FunctionName: sink
    EventSourceArn: {stream_arn}
    StartingPosition: TRIM_HORIZON
    BatchSize: 20
    ParallelizationFactor: 2
  - FunctionName: sink
    EventSourceArn: {queue_arn}
    BatchSize: 10
    ScalingConfig: {{MaximumConcurrency: 3}}
"""
    phases: list[str] = []

    def unique() -> tuple[int, int]:
        kinesis_seen = {(i.key, i.n) for i in kinesis_items(receiver, stream_arn)}
        return len(kinesis_seen), len({m for _, m in sqs_ids(receiver, queue_arn)})

    # The producers write to the emulator directly; only esm goes through the proxy.
    async with (
        FaultProxy(moto_endpoint, schedule) as proxy,
        FunctionReceiver(seed) as receiver,
        anyio.create_task_group() as tg,
    ):

        def configure(run: int) -> str:
            return esm_config(
                endpoint=proxy.url,
                function_url=receiver.url(run),
                state_path=tmp_path / "state.db",
                mappings=mappings,
                admin_listen=f"127.0.0.1:{admin_port}",
            )

        esm = EsmProcess(tmp_path, configure)
        stop_producing = anyio.Event()
        tg.start_soon(lambda: records.run(stop_producing, per_tick=6, tick=0.1))
        tg.start_soon(lambda: messages.run(stop_producing, per_tick=3, tick=0.1))
        try:
            await esm.start(0)
            await wait_until(
                lambda: all(unique()), 60, f"esm delivers from both sources\n{esm.log_tail()}"
            )

            # Stalls outlast the client's read timeout (30 s), so they run alongside the
            # other faults. A stalled receive that reached the emulator took messages whose
            # answer never comes: they must come back when their visibility ends.
            schedule.force(Fault("stall", schedule.stall_seconds), operations=("GetRecords",))
            schedule.force(
                Fault("stall", schedule.stall_seconds, forward=True),
                operations=("ReceiveMessage",),
            )

            # Intermittent faults: a quarter of the requests, and esm still makes progress.
            schedule.set(0.25, INTERMITTENT)
            before = unique()
            await anyio.sleep(12)
            during = unique()
            phases.append(f"intermittent: {before} -> {during}")
            stalled = f"no progress while faults were intermittent: {before} -> {during}"
            assert during[0] > before[0], f"kinesis: {stalled} (seed {seed})"
            assert during[1] > before[1], f"sqs: {stalled} (seed {seed})"
            assert esm.alive, esm.log_tail()

            # An outage: every request fails.
            schedule.set(1.0, OUTAGE)
            await anyio.sleep(5)
            assert esm.alive, esm.log_tail()

            # Calm: everything written gets delivered, without any help; meanwhile one delete
            # is carried out but never confirmed (a poller waits out its read timeout).
            schedule.set(0.0)
            schedule.force(
                Fault("stall", schedule.stall_seconds, forward=True),
                operations=("DeleteMessageBatch",),
            )
            stop_producing.set()
            phases.append(f"outage ended at {unique()}")
            with anyio.fail_after(150):
                while unique() != (records.total, messages.sent):
                    await anyio.sleep(0.1)
            phases.append(f"recovered: {unique()}")
            assert schedule.forced_pending() == 0, "every forced stall happened"
            assert esm.alive, esm.log_tail()

            # The faults esm saw are counted where an operator looks.
            assert await metric_total(admin, "esm_source_read_errors_total") > 0
            assert await metric_total(admin, "esm_queue_errors_total") > 0

            async def drained() -> bool:
                answer = await sqs.get_queue_attributes(
                    QueueUrl=url,
                    AttributeNames=[
                        "ApproximateNumberOfMessages",
                        "ApproximateNumberOfMessagesNotVisible",
                    ],
                )
                return all(v == "0" for v in answer["Attributes"].values())

            with anyio.fail_after(60):
                while not await drained():
                    await anyio.sleep(0.2)
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
    injected = dict(sorted(schedule.counts.items()))
    print(f"fault proxy: seed={seed} requests={schedule.requests} injected={injected}")
    print("  " + "; ".join(phases))
    print(f"  kinesis: {stream_report.summary()}")
    print(f"  sqs: {queue_report.summary()}")
    where = f"(seed {seed}; replay with ESM_RELIABILITY_SEED={seed})"
    assert set(injected) >= {*INTERMITTENT, "stall"}, injected

    assert not stream_report.lost, f"lost {stream_report.lost[:10]} {where}"
    assert not stream_report.order_violations, f"{stream_report.order_violations[:10]} {where}"
    assert not stream_report.gaps, f"{stream_report.gaps[:10]} {where}"
    # One process, a function that never fails: a failed read is retried from the same
    # iterator and nothing is handed on twice, whatever the network does.
    assert stream_report.duplicates == 0, where
    assert not queue_report.unknown, where
    # SQS may deliver again what a lost answer left undeleted; it may not lose anything.
    assert not queue_report.lost, f"lost {queue_report.lost[:10]} {where}"
