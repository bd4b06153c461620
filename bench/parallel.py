"""ParallelizationFactor benchmark: one shard, a function that takes 5 ms per batch.

With one batch per shard in flight the shard is bound by the function's latency; with a
factor of N, N batches of different partition keys run at once. The source is the engine
benchmark's canned one (pre-built records, keys spread over the page), so only the
pipeline and the function's latency count.
"""

from __future__ import annotations

import argparse

import anyio
from common import (
    FinishLineStore,
    NoopBackend,
    delivered,
    machine,
    make_runner,
    median,
    quiet_logs,
    rate,
    run_to_end,
    set_poll_floor,
)
from engine import CannedStreamAPI

from esm.model import Invocation, InvokeResult


class SleepingBackend(NoopBackend):
    """A function that answers after `seconds`, like a call to a database would take."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        await anyio.sleep(self.seconds)
        return await super().invoke(invocation)


async def measure(
    api: CannedStreamAPI, factor: int, batch_size: int, total: int, sleep: float
) -> float:
    store = FinishLineStore(1)
    runner, _ = make_runner(
        api, store, batch_size, parallelization=factor, backend=SleepingBackend(sleep)
    )
    seconds = await run_to_end(runner, store, timeout=300)
    if delivered(runner) != total:
        raise RuntimeError(f"delivered {delivered(runner)} of {total}")
    return seconds


async def main(args: argparse.Namespace) -> None:
    quiet_logs()
    set_poll_floor(0.0)
    print(f"esm parallelization benchmark: {machine()}")
    print(
        f"1 shard, {args.records:,} records, BatchSize {args.batch_size}, function sleeps "
        f"{args.sleep * 1000:.0f} ms per batch; median of {args.repeat} runs"
    )
    print()
    print("| ParallelizationFactor | records/s | batches/s | speed-up |")
    print("|---:|---:|---:|---:|")
    base = 0.0
    for factor in args.factors:
        api = CannedStreamAPI(1, args.records)
        runs = [
            await measure(api, factor, args.batch_size, args.records, args.sleep)
            for _ in range(args.repeat)
        ]
        seconds = median(runs)
        records_per_s = rate(args.records, seconds)
        base = base or records_per_s
        print(
            f"| {factor} | {records_per_s:,.0f} | {records_per_s / args.batch_size:,.0f} | "
            f"{records_per_s / base:.1f}x |",
            flush=True,
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--sleep", type=float, default=0.005)
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 4, 10])
    parser.add_argument("--repeat", type=int, default=3)
    return parser.parse_args()


if __name__ == "__main__":
    anyio.run(main, parse_args())
