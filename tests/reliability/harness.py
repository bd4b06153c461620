"""What the reliability tests share: their settings, a durable function receiver, `esm run` as
a process, traffic producers, and the accounting of what was delivered.

Every delivery is recorded by an HTTP function served by the test process, so it outlives
the esm process it comes from. Each esm process of a test is a *run*; the function's URL
names the run (``/run/<n>``), so a delivery is counted for the process that sent it, even
when its request is read after that process was killed.
"""

from __future__ import annotations

import base64
import contextlib
import os
import random
import signal
import sqlite3
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.abc
import orjson
from aiohttp import web

# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """How hard the suite pushes: the short mode by default, the long mode on demand.

    ESM_RELIABILITY_LONG=1 switches to the long mode (50 kill trials per source, a 30-minute
    soak, more fuzzing); ESM_RELIABILITY_TRIALS, ESM_RELIABILITY_SOAK_SECONDS,
    ESM_RELIABILITY_FUZZ_EXAMPLES and ESM_RELIABILITY_SEED override single values.
    """

    long: bool
    trials: int
    soak_seconds: float
    fuzz_examples: int
    seed: int

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ) if environ is None else environ
        long = env.get("ESM_RELIABILITY_LONG", "") not in ("", "0")
        trials = int(env.get("ESM_RELIABILITY_TRIALS") or (50 if long else 5))
        soak = float(env.get("ESM_RELIABILITY_SOAK_SECONDS") or (1800 if long else 0))
        fuzz = int(env.get("ESM_RELIABILITY_FUZZ_EXAMPLES") or (3000 if long else 500))
        seed_text = env.get("ESM_RELIABILITY_SEED")
        # The short mode is the same every time; the long mode explores (its seed is printed).
        seed = (
            int(seed_text) if seed_text else (random.SystemRandom().randrange(2**32) if long else 8)
        )
        return cls(long=long, trials=trials, soak_seconds=soak, fuzz_examples=fuzz, seed=seed)

    def replay(self) -> str:
        """The environment that reproduces a run with these settings."""
        return f"ESM_RELIABILITY_SEED={self.seed} ESM_RELIABILITY_TRIALS={self.trials}"


SETTINGS = Settings.from_environment()


# --------------------------------------------------------------------------- the function


@dataclass(frozen=True)
class Delivery:
    """One invocation as the function received it."""

    run: int
    records: list[dict[str, Any]]


class FunctionReceiver:
    """An HTTP function on 127.0.0.1 that appends every event it receives to `deliveries`
    before answering (so an invocation whose answer esm never read still counts)."""

    def __init__(self, seed: int, *, max_delay: float = 0.02) -> None:
        self.deliveries: list[Delivery] = []
        self.max_delay = max_delay
        self._rng = random.Random(seed)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> FunctionReceiver:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/run/{run}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, run: int) -> str:
        return f"http://127.0.0.1:{self.port}/run/{run}"

    async def _handle(self, request: web.Request) -> web.Response:
        run = int(request.match_info["run"])
        event = orjson.loads(await request.read())
        self.deliveries.append(Delivery(run, list(event.get("Records", []))))
        # A short, varying pause keeps invocations in flight long enough for a kill to land
        # in the middle of one.
        await anyio.sleep(self._rng.uniform(0, self.max_delay))
        return web.json_response({"batchItemFailures": []})

    def records(
        self, source_arn: str, run: int | None = None
    ) -> Iterable[tuple[int, dict[str, Any]]]:
        for delivery in list(self.deliveries):
            if run is not None and delivery.run != run:
                continue
            for record in delivery.records:
                if record.get("eventSourceARN") == source_arn:
                    yield delivery.run, record

    def count(self, source_arn: str, run: int | None = None) -> int:
        return sum(1 for _ in self.records(source_arn, run))


# --------------------------------------------------------------------------- esm as a process


class EsmProcess:
    """`esm run` as a subprocess; `configure(run)` writes the configuration of each run."""

    def __init__(self, workdir: Path, configure: Callable[[int], str]) -> None:
        self.workdir = workdir
        self.configure = configure
        self.config_path = workdir / "esm.yaml"
        self.process: anyio.abc.Process | None = None
        self.run = -1
        self.logs: list[Path] = []

    async def start(self, run: int) -> None:
        assert self.process is None or self.process.returncode is not None
        self.run = run
        self.config_path.write_text(self.configure(run))
        log = self.workdir / f"run-{run}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            # Output to a file: a pipe nobody reads would fill up and block esm.
            self.process = await anyio.open_process(
                [sys.executable, "-m", "esm", "run", "-c", str(self.config_path)],
                stdout=out,
                stderr=out,
                cwd=self.workdir,
            )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def wait_ready(self, admin: str, seconds: float = 60) -> None:
        """Until /readyz says ready: every mapping is polling, and signals are handled (a
        SIGTERM before that ends the process the default way, not with a graceful stop)."""
        async with aiohttp.ClientSession() as http:
            with anyio.move_on_after(seconds):
                while self.alive:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"{admin}/readyz") as answer:
                            if answer.status == 200:
                                return
                    await anyio.sleep(0.1)
        raise AssertionError(f"esm not ready within {seconds:g} s:\n{self.log_tail()}")

    async def kill(self) -> None:
        """SIGKILL: no cleanup, no shutdown grace, nothing flushed."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        with anyio.fail_after(30):
            await self.process.wait()

    async def stop(self) -> int:
        """SIGTERM and the exit status of the graceful shutdown."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(60):
            return await self.process.wait()

    def cleanup(self) -> None:
        """Leave no esm behind when a test fails half way."""
        if self.alive:
            assert self.process is not None
            self.process.kill()

    def rss_bytes(self) -> int:
        """Resident set size of the esm process, from /proc."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS line")

    def log_tail(self, lines: int = 40) -> str:
        if not self.logs or not self.logs[-1].exists():
            return "(no log)"
        text = self.logs[-1].read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())


def esm_config(
    *,
    endpoint: str,
    function_url: str,
    state_path: Path,
    mappings: str,
    admin_listen: str = "127.0.0.1:0",
    state: str | None = None,
) -> str:
    """A configuration for these tests: fast polling, short backoff, sqlite state at
    `state_path` unless `state` gives the state section's body."""
    state = state or f"backend: sqlite\n  path: {state_path}"
    return f"""
aws:
  region: us-east-1
  endpoint_url: {endpoint}
state:
  {state}
admin:
  listen: {admin_listen}
log:
  format: json
  level: info
delivery:
  backoff_initial_seconds: 0.05
  backoff_max_seconds: 1
  shutdown_grace_seconds: 20
polling:
  interval_seconds: 0.2
  shard_discovery_interval_seconds: 1
sqs:
  wait_time_seconds: 0
functions:
  sink:
    type: http
    url: {function_url}
    timeout: 30
mappings:
{mappings}
"""


def read_checkpoints(state_path: Path) -> dict[tuple[str, str], int | None]:
    """(mapping id, shard) -> last settled sequence number, as the state file holds them."""
    if not state_path.exists():
        return {}
    connection = sqlite3.connect(state_path)
    try:
        try:
            rows = connection.execute(
                "SELECT mapping_id, partition, sequence FROM checkpoints"
            ).fetchall()
        except sqlite3.OperationalError:
            # Killed before the table was created.
            return {}
    finally:
        connection.close()
    return {(m, p): (int(s) if s is not None else None) for m, p, s in rows}


async def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    with anyio.move_on_after(seconds) as scope:
        while not condition():
            await anyio.sleep(0.05)
    if scope.cancelled_caught and not condition():
        raise AssertionError(f"not within {seconds:g} s: {what}")


# --------------------------------------------------------------------------- producers


class KinesisProducer:
    """Writes records with per-partition-key counters: data is {"k": key, "n": counter}."""

    def __init__(self, client: Any, stream: str, *, keys: int, seed: int) -> None:
        self.client = client
        self.stream = stream
        self.keys = [f"key-{i:03d}" for i in range(keys)]
        self.produced: Counter[str] = Counter()
        self._rng = random.Random(seed)

    @property
    def total(self) -> int:
        return sum(self.produced.values())

    async def put(self, count: int) -> None:
        entries = []
        for _ in range(count):
            key = self._rng.choice(self.keys)
            data = orjson.dumps({"k": key, "n": self.produced[key]})
            self.produced[key] += 1
            entries.append({"Data": data, "PartitionKey": key})
        answer = await self.client.put_records(StreamName=self.stream, Records=entries)
        assert answer.get("FailedRecordCount", 0) == 0, answer

    async def run(self, stop: anyio.Event, *, per_tick: int, tick: float) -> None:
        while not stop.is_set():
            await self.put(per_tick)
            with anyio.move_on_after(tick):
                await stop.wait()


class SqsProducer:
    """Sends messages whose bodies are {"id": n}, n counting from 0."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self.client = client
        self.queue_url = queue_url
        self.sent = 0

    async def send(self, count: int) -> None:
        for start in range(0, count, 10):
            entries = []
            for n in range(start, min(count, start + 10)):
                entries.append(
                    {"Id": str(n - start), "MessageBody": orjson.dumps({"id": self.sent}).decode()}
                )
                self.sent += 1
            answer = await self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            assert not answer.get("Failed"), answer

    async def run(self, stop: anyio.Event, *, per_tick: int, tick: float) -> None:
        while not stop.is_set():
            await self.send(per_tick)
            with anyio.move_on_after(tick):
                await stop.wait()


# --------------------------------------------------------------------------- accounting


@dataclass(frozen=True)
class KinesisItem:
    run: int
    shard: str
    sequence: int
    key: str
    n: int


def kinesis_items(receiver: FunctionReceiver, stream_arn: str) -> list[KinesisItem]:
    """Every Kinesis record delivered, in the order the function received them."""
    items = []
    for run, record in receiver.records(stream_arn):
        data = orjson.loads(base64.b64decode(record["kinesis"]["data"]))
        items.append(
            KinesisItem(
                run=run,
                shard=record["eventID"].split(":")[0],
                sequence=int(record["kinesis"]["sequenceNumber"]),
                key=record["kinesis"]["partitionKey"],
                n=int(data["n"]),
            )
        )
    return items


@dataclass
class KinesisReport:
    delivered: int = 0
    unique: int = 0
    produced: int = 0
    lost: list[tuple[str, int]] = field(default_factory=list)
    order_violations: list[str] = field(default_factory=list)
    """Within one run, a key's counter went back (a later record came before an earlier one)."""
    gaps: list[str] = field(default_factory=list)
    """Within one run, a key's counter skipped one: a record was passed over."""
    restart_skips: list[str] = field(default_factory=list)
    """A run started a key past the next record nobody had delivered yet."""
    behind_checkpoint: list[str] = field(default_factory=list)
    """A record at or before the checkpoint saved when the previous run died was delivered."""
    beyond_checkpoint: list[dict[str, int]] = field(default_factory=list)
    """Per killed run and shard: records delivered past the checkpoint it left behind."""

    @property
    def duplicates(self) -> int:
        return self.delivered - self.unique

    def summary(self) -> str:
        return (
            f"produced={self.produced} delivered={self.delivered} unique={self.unique} "
            f"lost={len(self.lost)} duplicates={self.duplicates} "
            f"order_violations={len(self.order_violations)} gaps={len(self.gaps)} "
            f"restart_skips={len(self.restart_skips)} "
            f"behind_checkpoint={len(self.behind_checkpoint)}"
        )


def analyse_kinesis(
    items: list[KinesisItem],
    produced: Counter[str],
    *,
    mapping_id: str,
    checkpoints_at_kill: list[dict[tuple[str, str], int | None]] | None = None,
    shard_order: dict[str, list[int]] | None = None,
) -> KinesisReport:
    """What a sequence of runs delivered, against what was written.

    Order is checked per partition key. `shard_order` (each shard's sequence numbers, for a
    mapping with one lane per shard) checks it per shard too: within a run, each shard's
    records come one after the other, in the shard's order.
    `checkpoints_at_kill[r]` is the state file as run r left it when it was killed; run r+1
    must start right after it.
    """
    report = KinesisReport(delivered=len(items), produced=sum(produced.values()))
    seen = {(i.key, i.n) for i in items}
    report.unique = len({(i.shard, i.sequence) for i in items})
    report.lost = sorted(
        (key, n) for key, count in produced.items() for n in range(count) if (key, n) not in seen
    )
    runs = sorted({i.run for i in items})
    highest: dict[str, int] = {}  # across earlier runs: the highest counter delivered per key
    for run in runs:
        last: dict[str, int] = {}
        for item in (i for i in items if i.run == run):
            previous = last.get(item.key)
            if previous is None:
                limit = highest.get(item.key, -1) + 1
                if item.n > limit:
                    report.restart_skips.append(
                        f"run {run}: {item.key} started at {item.n}, {limit} not delivered yet"
                    )
            elif item.n < previous:
                report.order_violations.append(
                    f"run {run}: {item.key} {item.n} came after {previous}"
                )
            elif item.n > previous + 1:
                report.gaps.append(f"run {run}: {item.key} went from {previous} to {item.n}")
            last[item.key] = item.n
        for key, n in last.items():
            highest[key] = max(highest.get(key, -1), n)

    if shard_order is not None:
        position = {
            (shard, seq): i for shard, seqs in shard_order.items() for i, seq in enumerate(seqs)
        }
        furthest: dict[str, int] = {}  # across earlier runs, per shard
        for run in runs:
            at: dict[str, int] = {}
            for item in (i for i in items if i.run == run):
                here = position[(item.shard, item.sequence)]
                previous = at.get(item.shard)
                if previous is None and here > furthest.get(item.shard, -1) + 1:
                    report.restart_skips.append(
                        f"run {run}: {item.shard} started at #{here}, "
                        f"#{furthest.get(item.shard, -1) + 1} not delivered yet"
                    )
                elif previous is not None and here <= previous:
                    report.order_violations.append(
                        f"run {run}: {item.shard} sequence {item.sequence} (#{here}) came "
                        f"after #{previous}"
                    )
                elif previous is not None and here > previous + 1:
                    report.gaps.append(f"run {run}: {item.shard} went from #{previous} to #{here}")
                at[item.shard] = here
            for shard, here in at.items():
                furthest[shard] = max(furthest.get(shard, -1), here)

    if checkpoints_at_kill is not None:
        for run, checkpoints in enumerate(checkpoints_at_kill):
            beyond: dict[str, int] = defaultdict(int)
            for item in items:
                cp = checkpoints.get((mapping_id, item.shard))
                if item.run == run and (cp is None or item.sequence > cp):
                    beyond[item.shard] += 1
                if item.run == run + 1 and cp is not None and item.sequence <= cp:
                    report.behind_checkpoint.append(
                        f"run {run + 1}: {item.shard} sequence {item.sequence} at or before "
                        f"the checkpoint {cp} left by run {run}"
                    )
            report.beyond_checkpoint.append(dict(beyond))
    return report


def sqs_ids(receiver: FunctionReceiver, queue_arn: str) -> list[tuple[int, int]]:
    """(run, message id) of every SQS message delivered, in order."""
    return [
        (run, int(orjson.loads(record["body"])["id"]))
        for run, record in receiver.records(queue_arn)
    ]


@dataclass
class SqsReport:
    sent: int
    delivered: int
    unique: int
    lost: list[int]
    restart_redeliveries: int
    """Deliveries in a later run of a message an earlier run had delivered (one per run)."""
    within_run_duplicates: int
    unknown: list[int]

    @property
    def duplicates(self) -> int:
        return self.delivered - self.unique

    def summary(self) -> str:
        return (
            f"sent={self.sent} delivered={self.delivered} unique={self.unique} "
            f"lost={len(self.lost)} duplicates={self.duplicates} "
            f"(restart={self.restart_redeliveries}, within_run={self.within_run_duplicates})"
        )


def analyse_sqs(delivered: list[tuple[int, int]], sent: int) -> SqsReport:
    runs_of: dict[int, set[int]] = defaultdict(set)
    per_run: Counter[tuple[int, int]] = Counter()
    for run, message in delivered:
        runs_of[message].add(run)
        per_run[(run, message)] += 1
    return SqsReport(
        sent=sent,
        delivered=len(delivered),
        unique=len(runs_of),
        lost=[n for n in range(sent) if n not in runs_of],
        restart_redeliveries=sum(len(runs) - 1 for runs in runs_of.values()),
        within_run_duplicates=sum(c - 1 for c in per_run.values()),
        unknown=sorted(n for n in runs_of if not 0 <= n < sent),
    )


async def shard_truth(client: Any, stream: str) -> dict[str, list[tuple[int, str, int]]]:
    """Each shard's records as the emulator holds them: (sequence, key, counter), in order."""
    shards = (await client.list_shards(StreamName=stream))["Shards"]
    out: dict[str, list[tuple[int, str, int]]] = {}
    for shard in shards:
        iterator = (
            await client.get_shard_iterator(
                StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )
        )["ShardIterator"]
        records: list[tuple[int, str, int]] = []
        while True:
            page = await client.get_records(ShardIterator=iterator, Limit=10000)
            for r in page["Records"]:
                data = orjson.loads(r["Data"])
                records.append((int(r["SequenceNumber"]), r["PartitionKey"], int(data["n"])))
            if not page["Records"]:
                break
            iterator = page["NextShardIterator"]
        out[shard["ShardId"]] = records
    return out


def check_truth(truth: dict[str, list[tuple[int, str, int]]], produced: Counter[str]) -> None:
    """The test's own premise: each key lives in one shard, its counters in shard order."""
    where: dict[str, str] = {}
    counters: dict[str, list[int]] = defaultdict(list)
    for shard, records in truth.items():
        for _, key, n in records:
            assert where.setdefault(key, shard) == shard, f"{key} in two shards"
            counters[key].append(n)
    for key, count in produced.items():
        assert counters[key] == list(range(count)), f"the stream does not hold {key} in order"
