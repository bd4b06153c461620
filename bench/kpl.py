"""KPL de-aggregation benchmark: what `kpl_deaggregate` costs where it changes esm's work,
the conversion of a GetRecords page into records (`KinesisRecordFactory.page`).

Pages of 10,000 wire-form records of 1 KB, converted repeatedly in one process. Rows:

- `plain, off`: plain records, the option off: what every mapping did before;
- `plain, on`: the same plain records with the option on: each record's base64 is checked
  for the container prefix and passes; this is the cost the option adds to streams whose
  producers do not aggregate;
- `containers, on`: the same 10,000 user records packed by aws-kinesis-agg into containers
  of 100, de-aggregated (per user record).

Run: .venv/bin/python bench/kpl.py [--pages 20] [--repeat 5]
"""

from __future__ import annotations

import argparse
import base64
import time
from typing import Any

from aws_kinesis_agg.aggregator import AggRecord
from common import IDENTITY_ARN, REGION, STREAM_ARN, Column, machine, median, table

from esm.sources.kinesis import KinesisRecordFactory

SHARD = "shardId-000000000000"
RECORDS = 10_000
PER_CONTAINER = 100
PAYLOAD = b'{"order": 1, "note": "' + b"x" * 990 + b'"}'


def _wire(sequence: int, key: str, data: bytes) -> dict[str, Any]:
    return {
        "SequenceNumber": str(49590338271490256608559692538361571095921575989136588898 + sequence),
        "PartitionKey": key,
        "Data": base64.b64encode(data).decode(),
        "ApproximateArrivalTimestamp": 1700000000.123,
    }


def plain_page() -> list[dict[str, Any]]:
    return [_wire(n, f"key-{n}", PAYLOAD) for n in range(RECORDS)]


def container_page() -> list[dict[str, Any]]:
    page = []
    for c in range(RECORDS // PER_CONTAINER):
        aggregate = AggRecord()
        for n in range(PER_CONTAINER):
            assert aggregate.add_user_record(f"key-{c * PER_CONTAINER + n}", PAYLOAD)
        key, _, data = aggregate.get_contents()
        page.append(_wire(c, key, data))
    return page


def per_record_us(factory: KinesisRecordFactory, page: list[dict[str, Any]], pages: int) -> float:
    started = time.perf_counter()
    count = 0
    for _ in range(pages):
        count += len(factory.page(SHARD, page, wire=True))
    assert count == RECORDS * pages
    return (time.perf_counter() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    off = KinesisRecordFactory(stream_arn=STREAM_ARN, region=REGION, identity_arn=IDENTITY_ARN)
    on = KinesisRecordFactory(
        stream_arn=STREAM_ARN, region=REGION, identity_arn=IDENTITY_ARN, deaggregate=True
    )
    plain, containers = plain_page(), container_page()
    cases = [
        ("plain, off", off, plain),
        ("plain, on", on, plain),
        ("containers, on", on, containers),
    ]
    runs: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(args.repeat):
        # Interleaved, so that a slower moment of the machine hits every row alike.
        for name, factory, page in cases:
            runs[name].append(per_record_us(factory, page, args.pages))
    rows = [
        [name, f"{median(values):.2f}", " ".join(f"{v:.2f}" for v in values)]
        for name, values in runs.items()
    ]
    print(machine())
    print(f"{RECORDS:,} records of {len(PAYLOAD)} bytes a page, {args.pages} pages a run")
    print(table([Column("records"), Column("µs/record"), Column("runs", "<")], rows))


if __name__ == "__main__":
    main()
