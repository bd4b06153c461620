"""Tracing benchmark: the per-batch cost of the delivery path, tracing off and on.

`Deliverer.deliver` (what every stream batch goes through: policy, event encoding, the
invocation, metrics, settle) with a no-op function that succeeds at once, timed over many
batches in one event loop. Rows:

- `off (no-op tracer)`: the Deliverer as the daemon builds it with tracing off;
- `on, not sampled`: OpenTelemetry's SDK with a sample ratio of 0: spans are not recorded,
  but each invocation still gets a traceparent;
- `on, exported`: every batch recorded and handed to the SDK's batch processor, whose
  exporter drops the spans (the export thread's work is in the CPU column);
- `on, exported, SQS links`: the same, with every record an SQS message carrying an
  AWSTraceHeader (one link each).

It runs on a checkout from before tracing too (`PYTHONPATH=<checkout>`): there the one row
is `none (before tracing)`, the Deliverer without any tracer, which is what the no-op
tracer's cost is measured against.

Run: .venv/bin/python bench/tracing.py [--batches 10000] [--batch-sizes 1 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
from common import FUNCTION_ARN, Column, NoopBackend, machine, median, quiet_logs, table

from esm.engine.driver import Deliverer, FunctionTarget, InFlight
from esm.engine.lifecycle import Interruptible
from esm.events import create_record, sqs_record
from esm.metrics import Metrics
from esm.model import Batch, Record

SHARD = "shardId-000000000000"
QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:bench"
XRAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent={:016x};Sampled=1"
TARGET = FunctionTarget(name="noop", arn=FUNCTION_ARN, timeout=30)


def _records(count: int, linked: bool) -> list[Record]:
    if not linked:
        return [
            create_record(
                sequence=str(n), order=n, key=f"k{n}", arrival=1.0, entry={"n": n, "d": "x" * 64}
            )
            for n in range(count)
        ]
    return [
        sqs_record(
            {
                "MessageId": f"m{n}",
                "ReceiptHandle": f"h{n}",
                "Body": "x" * 64,
                "Attributes": {"AWSTraceHeader": XRAY.format(n + 1), "SentTimestamp": "1"},
            },
            queue_arn=QUEUE_ARN,
            region="us-east-1",
            order=n,
        )
        for n in range(count)
    ]


class _DropExporter:
    """A span exporter that accepts and forgets: the cost of esm and the SDK, not of a wire."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace.export import SpanExportResult

        self._ok = SpanExportResult.SUCCESS

    def export(self, spans: Sequence[Any]) -> Any:
        return self._ok

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _tracers() -> dict[str, Callable[[str], tuple[Any, Callable[[], None]]]]:
    """Each traced row's tracer for a mapping of `source`, and how to stop it."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

        from esm.tracing import MappingTrace
        from esm.tracing_otel import OtelTracing
    except ImportError:
        return {}

    def build(sampled: bool) -> Callable[[str], tuple[Any, Callable[[], None]]]:
        def make(source: str) -> tuple[Any, Callable[[], None]]:
            if sampled:
                provider = TracerProvider(shutdown_on_exit=False)
                # A queue deep enough that no span is dropped at the benchmark's rate.
                processor = BatchSpanProcessor(
                    _DropExporter(),  # type: ignore[arg-type]
                    max_queue_size=1_000_000,
                    schedule_delay_millis=100,
                )
                provider.add_span_processor(processor)
            else:
                provider = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
            mapping = MappingTrace("bench", "noop", source, QUEUE_ARN)
            return OtelTracing(provider).for_mapping(mapping), provider.shutdown

        return make

    return {"on, not sampled": build(False), "on, exported": build(True)}


def _off_label() -> str:
    try:
        import esm.tracing  # noqa: F401 - there only once tracing was built
    except ImportError:
        return "none (before tracing)"
    return "off (no-op tracer)"


async def _run(deliverer: Deliverer, batch: Batch, batches: int) -> None:
    interrupt = Interruptible()
    for _ in range(batches):
        in_flight = InFlight(batch.first.sequence, batch.last.sequence, len(batch.records), 0.0)
        await deliverer.deliver(batch, interrupt=interrupt, in_flight=in_flight)


def measure(deliverer: Deliverer, batch: Batch, batches: int) -> tuple[float, float]:
    """(wall µs per batch, CPU µs per batch) of delivering `batch` `batches` times."""
    anyio.run(_run, deliverer, batch, min(batches, 1000))  # warm up
    wall, cpu = time.perf_counter(), time.process_time()
    anyio.run(_run, deliverer, batch, batches)
    return (
        (time.perf_counter() - wall) / batches * 1e6,
        (time.process_time() - cpu) / batches * 1e6,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=10_000, help="batches per run")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the median counts")
    args = parser.parse_args()
    quiet_logs()
    tracers = _tracers()
    rows: list[list[str]] = []
    for size in args.batch_sizes:
        cases: list[tuple[str, Callable[[str], tuple[Any, Callable[[], None]]] | None, bool]] = [
            (_off_label(), None, False),
            *((name, make, False) for name, make in tracers.items()),
        ]
        if "on, exported" in tracers:
            cases.append(("on, exported, SQS links", tracers["on, exported"], True))
        baseline = None
        for name, make, linked in cases:
            batch = Batch(SHARD, _records(size, linked))
            walls, cpus = [], []
            for _ in range(args.repeat):
                fields: dict[str, Any] = {}
                stop: Callable[[], None] = lambda: None  # noqa: E731 - nothing to stop
                if make is not None:
                    fields["tracer"], stop = make("sqs" if linked else "kinesis")
                deliverer = Deliverer(NoopBackend(), TARGET, "bench", Metrics(), **fields)
                wall, cpu = measure(deliverer, batch, args.batches)
                stop()
                walls.append(wall)
                cpus.append(cpu)
            wall, cpu = median(walls), median(cpus)
            baseline = baseline if baseline is not None else wall
            rows.append(
                [
                    name,
                    str(size),
                    f"{wall:.1f}",
                    f"{cpu:.1f}",
                    f"{wall - baseline:+.1f}",
                    " ".join(f"{w:.1f}" for w in walls),
                ]
            )
    print(f"{machine()}; {args.batches} batches per run, median of {args.repeat}")
    print()
    columns = [
        Column("tracing", "<"),
        Column("records"),
        Column("µs/batch"),
        Column("CPU µs/batch"),
        Column("vs off"),
        Column("runs (µs/batch)", "<"),
    ]
    print(table(columns, rows))


if __name__ == "__main__":
    main()
