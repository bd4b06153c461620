"""Filter benchmark: RecordFilter.matches on Kinesis records with 1 KB JSON data.

Builds a pool of Kinesis entries shaped as the Lambda event carries them (data in base64),
compiles FilterCriteria once, then calls `matches` on the pool over and over for a fixed time.
Three rows:

- `3 filters`: one exact + prefix, one numeric range, one anything-but + exists, all on
  `data`, chosen so that about half the records pass;
- `decode only`: base64 + orjson of the data and nothing else, the floor of any data filter;
- `metadata only`: one prefix filter on partitionKey, which never decodes the data.

Run: .venv/bin/python bench/filter.py [--seconds 2] [--records 10000]
"""

from __future__ import annotations

import argparse
import base64
import binascii
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from esm.events import kinesis_entry
from esm.filter import compile_filters

DATA_BYTES = 1024
STREAM_ARN = "arn:aws:kinesis:us-east-1:000000000000:stream/bench"

THREE_FILTERS = [
    '{"data": {"type": ["order"], "region": [{"prefix": "us-"}]}}',
    '{"data": {"amount": [{"numeric": [">", 900, "<=", 1000]}]}}',
    '{"data": {"status": [{"anything-but": ["cancelled", "pending"]}], '
    '"coupon": [{"exists": true}]}}',
]
METADATA_ONLY = ['{"partitionKey": [{"prefix": "customer-1"}]}']


def _payload(rng: random.Random, n: int) -> bytes:
    doc: dict[str, Any] = {
        "type": rng.choice(["order", "refund", "quote"]),
        "region": rng.choice(["us-east-1", "us-west-2", "eu-west-1"]),
        "amount": rng.randint(0, 1000),
        "status": rng.choice(["shipped", "cancelled", "pending", "paid"]),
        "customer": {"id": f"customer-{n % 97}", "tier": rng.choice(["gold", "basic"])},
        "items": [
            {"sku": f"sku-{rng.randint(0, 9999)}", "qty": rng.randint(1, 5)} for _ in range(5)
        ],
    }
    if rng.random() < 0.5:
        doc["coupon"] = "SPRING"
    # Pad to exactly DATA_BYTES of JSON, as a producer's 1 KB records would be.
    doc["note"] = ""
    doc["note"] = "x" * (DATA_BYTES - len(orjson.dumps(doc)))
    data = orjson.dumps(doc)
    assert len(data) == DATA_BYTES
    return data


def build_pool(records: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    pool = []
    for n in range(records):
        sequence = str(49_600_000_000_000_000_000_000_000_000_000_000_000_000_000_000 + n)
        pool.append(
            kinesis_entry(
                shard_id="shardId-000000000000",
                sequence_number=sequence,
                partition_key=f"customer-{n % 97}",
                data_b64=base64.b64encode(_payload(rng, n)).decode(),
                arrival=1_700_000_000.0 + n / 1000,
                stream_arn=STREAM_ARN,
                region="us-east-1",
                identity_arn="arn:aws:iam::000000000000:role/bench",
            )
        )
    return pool


def _decode_only(entry: Mapping[str, Any]) -> bool:
    return orjson.loads(binascii.a2b_base64(entry["kinesis"]["data"])) is not None


def measure(
    test: Callable[[Mapping[str, Any]], bool], pool: list[dict[str, Any]], seconds: float
) -> tuple[int, int, float]:
    """(records tested, records passed, elapsed seconds), whole passes over the pool."""
    for entry in pool[:1000]:  # warm up
        test(entry)
    done = passed = 0
    start = time.perf_counter()
    elapsed = 0.0
    while elapsed < seconds:
        for entry in pool:
            if test(entry):
                passed += 1
        done += len(pool)
        elapsed = time.perf_counter() - start
    return done, passed, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per row (default 2)")
    parser.add_argument("--records", type=int, default=10_000, help="records in the pool")
    args = parser.parse_args()

    pool = build_pool(args.records)
    rows = [
        ("3 filters", compile_filters(THREE_FILTERS, source="kinesis").matches),
        ("decode only", _decode_only),
        ("metadata only", compile_filters(METADATA_ONLY, source="kinesis").matches),
    ]
    print(
        f"{os.cpu_count()} cores, {platform.machine()}, Python {sys.version.split()[0]}, "
        f"orjson {orjson.__version__}; {args.records} records of {DATA_BYTES} B data, "
        f"{args.seconds:g} s per row"
    )
    print()
    print("| filters       | records/s | us/record | passed |")
    print("|---------------|----------:|----------:|-------:|")
    for name, test in rows:
        done, passed, elapsed = measure(test, pool, args.seconds)
        per_second = done / elapsed
        share = "-" if test is _decode_only else f"{passed / done:.1%}"
        print(f"| {name:<13} | {per_second:>9,.0f} | {1e6 / per_second:>9.2f} | {share:>6} |")


if __name__ == "__main__":
    main()
