"""Engine benchmark: esm's shard pipeline fed in-process, without network or parsing.

A canned source serves pre-built pages of 1 KB records as fast as they are asked for; a real
`StreamEngine` reads, batches, encodes each event, invokes a no-op function and
checkpoints in a `MemoryCheckpointStore`. Two sources:

- `records`: a `StreamAPI` handing out pre-built `Record`s (the runner alone: reader loop,
  batcher, event encoding, delivery bookkeeping, metrics, checkpoints);
- `kinesis`: the real `KinesisStreamAPI` over a canned client answering with records shaped as
  botocore returns them (bytes Data, datetime arrival), so the record conversion is included.

The 0.2 s pause the reader keeps between GetRecords calls on a busy shard (Kinesis allows 5
calls per second per shard) is set to 0 here: the source is in-process and has no such limit.

Run: .venv/bin/python bench/engine.py [--records 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import base64
import os
import time
from datetime import datetime

import anyio
import anyio.lowlevel
from botocore.utils import parse_timestamp
from common import (
    IDENTITY_ARN,
    RECORD_BYTES,
    REGION,
    STREAM,
    STREAM_ARN,
    Column,
    FinishLineStore,
    delivered,
    machine,
    make_runner,
    median,
    quiet_logs,
    rate,
    run_to_end,
    set_poll_floor,
    table,
)

from esm.aws.kinesis import (
    GetRecordsOutput,
    GetShardIteratorOutput,
    KinesisClient,
    KinesisRecord,
    ListShardsOutput,
)
from esm.model import Record, RecordsPage, ShardInfo, StartPosition
from esm.protocols import StreamAPI
from esm.sources.kinesis import KinesisRecordFactory, KinesisStreamAPI

PAGE_RECORDS = 10_000
# Distinct pages built per shard; a shard's pages cycle through them.
POOL_PAGES = 2
SEQUENCE_BASE = 49_600_000_000_000_000_000_000_000_000_000_000_000_000_000_000


def _shard_id(index: int) -> str:
    return f"shardId-{index:012d}"


def _pages_per_shard(total: int, shards: int, page: int) -> list[int]:
    """How many records each page of one shard holds: full pages, then the rest."""
    per_shard = total // shards
    sizes = [page] * (per_shard // page)
    if per_shard % page:
        sizes.append(per_shard % page)
    return sizes


class CannedStreamAPI:
    """A `StreamAPI` serving pre-built `Record` pages; each shard ends after its last page."""

    def __init__(self, shards: int, total: int, page: int = PAGE_RECORDS) -> None:
        factory = KinesisRecordFactory(
            stream_arn=STREAM_ARN, region=REGION, identity_arn=IDENTITY_ARN
        )
        self.shard_ids = [_shard_id(i) for i in range(shards)]
        self.sizes = _pages_per_shard(total, shards, page)
        self.pools: dict[str, list[list[Record]]] = {}
        data_b64 = _payload_b64()
        now = time.time()
        sequence = SEQUENCE_BASE
        for shard_id in self.shard_ids:
            pool = []
            for _ in range(POOL_PAGES):
                records = []
                for n in range(page):
                    sequence += 1
                    records.append(
                        factory.create(shard_id, str(sequence), f"pk-{n}", data_b64, now)
                    )
                pool.append(records)
            self.pools[shard_id] = pool

    @property
    def stream_arn(self) -> str:
        return STREAM_ARN

    async def list_shards(self) -> list[ShardInfo]:
        await anyio.lowlevel.checkpoint()
        return [ShardInfo(s) for s in self.shard_ids]

    async def get_shard_iterator(self, shard_id: str, position: StartPosition) -> str:
        await anyio.lowlevel.checkpoint()
        return f"{shard_id}|0"

    async def get_records(self, shard_id: str, iterator: str, limit: int) -> RecordsPage:
        await anyio.lowlevel.checkpoint()
        index = int(iterator.rsplit("|", 1)[1])
        size = min(self.sizes[index], limit)
        records = self.pools[shard_id][index % POOL_PAGES]
        last = index + 1 >= len(self.sizes)
        return RecordsPage(
            records=records if size == len(records) else records[:size],
            next_iterator=None if last else f"{shard_id}|{index + 1}",
            millis_behind=0 if last else 1000,
        )


class CannedKinesisClient:
    """A Kinesis client answering GetRecords with pre-built, botocore-shaped records."""

    def __init__(self, shards: int, total: int, page: int = PAGE_RECORDS) -> None:
        self.shard_ids = [_shard_id(i) for i in range(shards)]
        self.sizes = _pages_per_shard(total, shards, page)
        self.pools: dict[str, list[list[KinesisRecord]]] = {}
        data = os.urandom(RECORD_BYTES)
        # As botocore parses it: an aware datetime in the local zone (dateutil's tzlocal).
        arrival = parse_timestamp(round(time.time(), 3))
        sequence = SEQUENCE_BASE
        for shard_id in self.shard_ids:
            pool = []
            for _ in range(POOL_PAGES):
                raw: list[KinesisRecord] = []
                for n in range(page):
                    sequence += 1
                    raw.append(
                        {
                            "SequenceNumber": str(sequence),
                            "ApproximateArrivalTimestamp": arrival,
                            "Data": data,
                            "PartitionKey": f"pk-{n}",
                        }
                    )
                pool.append(raw)
            self.pools[shard_id] = pool

    async def list_shards(
        self, *, StreamName: str | None = None, NextToken: str | None = None
    ) -> ListShardsOutput:
        await anyio.lowlevel.checkpoint()
        return {
            "Shards": [
                {"ShardId": s, "SequenceNumberRange": {"StartingSequenceNumber": "0"}}
                for s in self.shard_ids
            ]
        }

    async def get_shard_iterator(
        self,
        *,
        StreamName: str,
        ShardId: str,
        ShardIteratorType: str,
        StartingSequenceNumber: str | None = None,
        Timestamp: datetime | float | None = None,
    ) -> GetShardIteratorOutput:
        await anyio.lowlevel.checkpoint()
        return {"ShardIterator": f"{ShardId}|0"}

    async def get_records(self, *, ShardIterator: str, Limit: int) -> GetRecordsOutput:
        await anyio.lowlevel.checkpoint()
        shard_id, index_text = ShardIterator.rsplit("|", 1)
        index = int(index_text)
        size = min(self.sizes[index], Limit)
        records = self.pools[shard_id][index % POOL_PAGES]
        answer: GetRecordsOutput = {
            "Records": records if size == len(records) else records[:size],
            "MillisBehindLatest": 1000,
        }
        if index + 1 < len(self.sizes):
            answer["NextShardIterator"] = f"{shard_id}|{index + 1}"
        else:
            answer["MillisBehindLatest"] = 0
        return answer


def _payload_b64() -> str:
    return base64.b64encode(os.urandom(RECORD_BYTES)).decode("ascii")


def make_api(source: str, shards: int, total: int) -> StreamAPI:
    if source == "records":
        return CannedStreamAPI(shards, total)
    factory = KinesisRecordFactory(stream_arn=STREAM_ARN, region=REGION, identity_arn=IDENTITY_ARN)
    # Declared the typed client, so that mypy checks the canned answers' shapes.
    client: KinesisClient = CannedKinesisClient(shards, total)
    return KinesisStreamAPI(
        client,
        stream_name=STREAM,
        stream_arn=STREAM_ARN,
        records=factory,
    )


async def measure(api: StreamAPI, shards: int, batch_size: int, total: int) -> float:
    """Seconds to deliver `total` records through a fresh runner."""
    store = FinishLineStore(shards)
    runner, backend = make_runner(api, store, batch_size)
    seconds = await run_to_end(runner, store, timeout=120)
    count = delivered(runner)
    if count != total or backend.invocations < total // batch_size:
        raise RuntimeError(f"delivered {count} records in {backend.invocations} invocations")
    return seconds


async def main(args: argparse.Namespace) -> None:
    quiet_logs()
    set_poll_floor(0.0)
    total: int = args.records
    print(f"esm engine benchmark: {machine()}")
    print(
        f"{total:,} records of {RECORD_BYTES} B per run, pages of {PAGE_RECORDS:,}, "
        f"no-op function, memory checkpoints, reader pause set to 0 s; "
        f"median of {args.repeat} runs"
    )
    print()
    columns = [
        Column("source", "<"),
        Column("shards"),
        Column("BatchSize"),
        Column("records/s"),
        Column("us/record"),
        Column("runs (s)", "<"),
    ]
    rows = []
    for source in args.sources:
        for shards in args.shards:
            if total % shards:
                raise SystemExit(f"--records must be a multiple of {shards}")
            api = make_api(source, shards, total)
            for batch_size in args.batch_sizes:
                runs = [await measure(api, shards, batch_size, total) for _ in range(args.repeat)]
                seconds = median(runs)
                rows.append(
                    [
                        source,
                        str(shards),
                        str(batch_size),
                        f"{rate(total, seconds):,.0f}",
                        f"{seconds / total * 1e6:.2f}",
                        " ".join(f"{r:.3f}" for r in runs),
                    ]
                )
                print(
                    f"{source}, {shards} shard(s), BatchSize {batch_size}: {rows[-1][3]} records/s",
                    flush=True,
                )
    print()
    print(table(columns, rows))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument(
        "--sources", nargs="+", choices=["records", "kinesis"], default=["records", "kinesis"]
    )
    return parser.parse_args()


if __name__ == "__main__":
    anyio.run(main, parse_args(), backend="asyncio")
