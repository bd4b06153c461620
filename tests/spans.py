"""Spans recorded in memory, for the tests of tracing: esm's OpenTelemetry tracing over an
SDK provider whose spans an `InMemorySpanExporter` keeps."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from esm.tracing_otel import OtelTracing


class RecordedSpans:
    """A tracing whose finished spans are kept, in the order they ended."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracing = OtelTracing(self.provider)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def batches(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.kind is SpanKind.CONSUMER]

    def attempts(self, batch: ReadableSpan | None = None) -> list[ReadableSpan]:
        """Invocation spans, of `batch` only when given, in the order they started."""
        found = [s for s in self.spans() if s.kind is SpanKind.CLIENT]
        if batch is not None:
            batch_id = batch.get_span_context()
            assert batch_id is not None
            found = [
                s for s in found if s.parent is not None and s.parent.span_id == batch_id.span_id
            ]
        return sorted(found, key=lambda s: s.start_time or 0)


def traceparent_of(span: ReadableSpan) -> str:
    """The `traceparent` header that names `span`, with its flags."""
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
