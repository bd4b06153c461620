"""Batch spans with OpenTelemetry's SDK: one per batch with its attributes, one per attempt
under it, the trace context each invocation carries, links from SQS messages, an exporter
that fails, and tracing off."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from esm.backends.python import PythonBackend
from esm.engine.driver import Deliverer, DeliveryOutcome, FunctionTarget, InFlight
from esm.engine.lifecycle import Interruptible
from esm.engine.retry import Backoff, RetryPolicy
from esm.events import create_record, sqs_record
from esm.metrics import Metrics
from esm.model import NO_TRACE_HEADERS, Batch, Record
from esm.testing import RecordingBackend, function_error
from esm.trace_context import parse_traceparent
from esm.tracing import NO_TRACER, BatchResult, MappingTrace, TracingSettings
from esm.tracing_otel import MAX_LINKS, ContainedExporter, OtelTracing, message_links, traces_url

from ..spans import RecordedSpans, traceparent_of

pytestmark = pytest.mark.anyio

TARGET = FunctionTarget(
    name="fn", arn="arn:aws:lambda:us-east-1:000000000000:function:fn", timeout=3
)
STREAM_ARN = "arn:aws:kinesis:us-east-1:000000000000:stream/orders"
QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:jobs"
SHARD = "shardId-000000000000"
FAST = Backoff(0.001, 0.01)
XRAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def recorded() -> RecordedSpans:
    return RecordedSpans()


def _records(count: int) -> list[Record]:
    return [
        create_record(sequence=str(n), order=n, key="k", arrival=1.0, entry={"n": n})
        for n in range(count)
    ]


def _deliverer(
    backend: Any, recorded: RecordedSpans, source: str = "kinesis", **fields: Any
) -> Deliverer:
    tracer = recorded.tracing.for_mapping(
        MappingTrace(mapping="orders", function="fn", source=source, event_source_arn=STREAM_ARN)
    )
    return Deliverer(backend, TARGET, "orders", Metrics(), backoff=FAST, tracer=tracer, **fields)


async def _deliver(deliverer: Deliverer, records: Sequence[Record]) -> DeliveryOutcome:
    batch = Batch(SHARD, records)
    in_flight = InFlight(batch.first.sequence, batch.last.sequence, len(records), 0.0)
    return await deliverer.deliver(batch, interrupt=Interruptible(), in_flight=in_flight)


def _context_ids(span: ReadableSpan) -> tuple[int, int]:
    context = span.get_span_context()
    assert context is not None
    return context.trace_id, context.span_id


async def test_a_batch_is_one_span_with_its_mapping_shard_size_and_result(
    recorded: RecordedSpans,
) -> None:
    backend = RecordingBackend()
    outcome = await _deliver(_deliverer(backend, recorded), _records(3))
    assert outcome is DeliveryOutcome.DELIVERED
    [batch] = recorded.batches()
    assert batch.name == "process orders"
    assert batch.kind is SpanKind.CONSUMER
    assert batch.parent is None  # a new trace: a batch mixes records of many
    attributes = dict(batch.attributes or {})
    assert attributes.pop("esm.mapping") == "orders"
    assert attributes.pop("esm.function") == "fn"
    assert attributes.pop("esm.source") == "kinesis"
    assert attributes.pop("esm.event_source_arn") == STREAM_ARN
    assert attributes.pop("esm.shard_id") == SHARD
    assert attributes.pop("messaging.batch.message_count") == 3
    assert attributes.pop("messaging.operation.type") == "process"
    assert attributes.pop("faas.trigger") == "pubsub"
    assert attributes.pop("esm.result") == "success"
    assert attributes.pop("esm.attempts") == 1
    assert attributes == {}
    assert batch.status.status_code is StatusCode.UNSET

    [attempt] = recorded.attempts(batch)
    assert attempt.name == "invoke fn"
    assert attempt.kind is SpanKind.CLIENT
    [invocation] = backend.invocations
    assert dict(attempt.attributes or {}) == {
        "esm.attempt": 1,
        "messaging.batch.message_count": 3,
        "faas.invoked_name": "fn",
        "faas.invocation_id": invocation.request_id,
        "esm.result": "success",
    }
    # The invocation names its own span, for the function to continue.
    assert invocation.trace_headers["traceparent"] == traceparent_of(attempt)
    assert _context_ids(attempt)[0] == _context_ids(batch)[0]
    assert batch.start_time is not None
    assert attempt.start_time is not None
    assert batch.end_time is not None
    assert attempt.end_time is not None
    assert batch.start_time <= attempt.start_time <= attempt.end_time <= batch.end_time


async def test_a_failed_then_retried_batch_has_a_span_per_attempt(
    recorded: RecordedSpans,
) -> None:
    backend = RecordingBackend(lambda event, call: function_error("boom") if call == 1 else None)
    await _deliver(_deliverer(backend, recorded), _records(2))
    [batch] = recorded.batches()
    first, second = recorded.attempts(batch)
    assert [a.attributes["esm.attempt"] for a in (first, second) if a.attributes] == [1, 2]
    assert first.attributes is not None
    assert first.attributes["esm.result"] == "function_error"
    assert first.attributes["esm.function_error"] == "Unhandled"
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description == "boom"
    assert second.attributes is not None
    assert second.attributes["esm.result"] == "success"
    assert batch.attributes is not None
    assert (batch.attributes["esm.result"], batch.attributes["esm.attempts"]) == ("success", 2)
    # Each attempt's invocation carries that attempt's context, not the first one's.
    assert [i.trace_headers["traceparent"] for i in backend.invocations] == [
        traceparent_of(first),
        traceparent_of(second),
    ]


async def test_a_bisected_batch_given_up_notes_both_on_its_span(
    recorded: RecordedSpans,
) -> None:
    backend = RecordingBackend(lambda event, call: function_error())
    deliverer = _deliverer(
        backend, recorded, bisect=True, policy=RetryPolicy(maximum_retry_attempts=0)
    )
    assert await _deliver(deliverer, _records(2)) is DeliveryOutcome.DELIVERED
    [batch] = recorded.batches()
    assert batch.attributes is not None
    assert batch.attributes["esm.result"] == "given_up"
    assert batch.status.status_code is StatusCode.ERROR
    events = [(e.name, dict(e.attributes or {})) for e in batch.events]
    assert events[0] == ("bisect", {"messaging.batch.message_count": 2})
    give_ups = [attributes for name, attributes in events if name == "give_up"]
    assert give_ups
    assert all(a["messaging.batch.message_count"] == 1 for a in give_ups)
    # The whole batch, then each half: one attempt span each, all under the batch.
    counts = [
        a.attributes["messaging.batch.message_count"]
        for a in recorded.attempts(batch)
        if a.attributes
    ]
    assert counts == [2, 1, 1]


async def test_a_batch_cut_short_by_shutdown_ends_its_span_as_abandoned(
    recorded: RecordedSpans,
) -> None:
    backend = RecordingBackend(delay=10)
    deliverer = _deliverer(backend, recorded)
    with anyio.move_on_after(0.1):
        await _deliver(deliverer, _records(1))
    [batch] = recorded.batches()
    assert batch.attributes is not None
    assert batch.attributes["esm.result"] == "abandoned"
    [attempt] = recorded.attempts(batch)
    assert attempt.attributes is not None
    assert attempt.attributes["esm.result"] == "system_error"


async def test_a_python_handler_sees_its_trace_context_and_its_spans_are_children(
    recorded: RecordedSpans,
) -> None:
    seen: list[tuple[str | None, int]] = []
    handler_tracer = recorded.provider.get_tracer("the handler")

    def handler(event: dict[str, Any], context: Any) -> None:
        # The handler's own tracing, through OpenTelemetry's API as any library would.
        seen.append((context.traceparent, trace.get_current_span().get_span_context().span_id))
        with handler_tracer.start_as_current_span("handler work"):
            pass

    async def async_handler(event: dict[str, Any], context: Any) -> None:
        handler(event, context)

    for function in (handler, async_handler):
        backend = PythonBackend(function, timeout=3, function_name="fn")
        await _deliver(_deliverer(backend, recorded), _records(1))
    attempts = recorded.attempts()
    assert len(attempts) == 2
    work = [s for s in recorded.spans() if s.name == "handler work"]
    for (traceparent, current), attempt, child in zip(seen, attempts, work, strict=True):
        assert traceparent == traceparent_of(attempt)
        assert current == _context_ids(attempt)[1]
        assert child.parent is not None
        assert child.parent.span_id == _context_ids(attempt)[1]


def _sqs_records(*messages: dict[str, Any]) -> list[Record]:
    return [
        sqs_record(
            {"MessageId": f"m{n}", "ReceiptHandle": f"h{n}", "Body": "{}", **message},
            queue_arn=QUEUE_ARN,
            region="us-east-1",
            order=n,
        )
        for n, message in enumerate(messages)
    ]


def _traceparent_attribute(value: str) -> dict[str, Any]:
    return {"MessageAttributes": {"traceparent": {"DataType": "String", "StringValue": value}}}


def test_an_aws_trace_header_and_a_traceparent_attribute_become_links() -> None:
    records = _sqs_records(
        {"Attributes": {"AWSTraceHeader": XRAY, "SentTimestamp": "1"}},
        _traceparent_attribute(TRACEPARENT),
        {"Attributes": {"AWSTraceHeader": XRAY}},  # the same span again: one link
        {"Attributes": {"AWSTraceHeader": "Root=1-5759e988-bd862e3fe1be46a994272793"}},
        _traceparent_attribute("not a traceparent"),
        {},
    )
    xray, w3c = message_links(records)
    assert xray.context.trace_id == 0x5759E988BD862E3FE1BE46A994272793
    assert xray.context.span_id == 0x53995C3F42CD8AD8
    assert xray.context.trace_flags.sampled
    assert xray.context.is_remote
    assert not xray.attributes
    assert w3c.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert w3c.context.span_id == 0xB7AD6B7169203331
    assert not w3c.attributes


def test_a_tracestate_attribute_travels_with_its_traceparent_link() -> None:
    message = _traceparent_attribute(TRACEPARENT)
    message["MessageAttributes"]["tracestate"] = {"DataType": "String", "StringValue": "v=1"}
    [link] = message_links(_sqs_records(message))
    assert link.context.trace_state.to_header() == "v=1"


def test_a_large_batch_keeps_the_first_links_only() -> None:
    messages = [
        _traceparent_attribute(f"00-0af7651916cd43dd8448eb211c80319c-{n + 1:016x}-01")
        for n in range(MAX_LINKS + 10)
    ]
    assert len(message_links(_sqs_records(*messages))) == MAX_LINKS


async def test_a_queue_batch_span_links_its_messages(recorded: RecordedSpans) -> None:
    backend = RecordingBackend()
    deliverer = _deliverer(backend, recorded, source="sqs")
    records = _sqs_records({"Attributes": {"AWSTraceHeader": XRAY}})
    span = deliverer.tracer.start_batch("jobs", records)
    await deliverer.invoke_once(b"{}", {}, 1, span=span)
    span.end(BatchResult.SUCCESS)
    [batch] = recorded.batches()
    attributes = batch.attributes or {}
    assert (attributes["esm.queue"], attributes["messaging.destination.name"]) == ("jobs", "jobs")
    assert attributes["messaging.system"] == "aws_sqs"
    assert "esm.shard_id" not in attributes
    [link] = batch.links
    assert link.context.span_id == 0x53995C3F42CD8AD8


async def test_tracing_off_sends_no_trace_context_and_allocates_none() -> None:
    backend = RecordingBackend()
    deliverer = Deliverer(backend, TARGET, "orders", Metrics(), backoff=FAST)
    assert deliverer.tracer is NO_TRACER
    await _deliver(deliverer, _records(2))
    [invocation] = backend.invocations
    assert invocation.trace_headers is NO_TRACE_HEADERS
    assert NO_TRACER.start_batch(SHARD, _records(1)) is NO_TRACER.start_batch(SHARD, ())


def test_tracing_off_needs_no_opentelemetry() -> None:
    # In a process of its own, where importing opentelemetry fails: the daemon's modules and
    # a delivered batch never ask for it.
    script = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None
        import anyio
        import esm.cli, esm.daemon, esm.config, esm.preflight, esm.tracing_setup
        from esm.backends.python import PythonBackend
        from esm.engine.driver import Deliverer, FunctionTarget, InFlight
        from esm.engine.lifecycle import Interruptible
        from esm.events import create_record
        from esm.metrics import Metrics
        from esm.model import Batch

        seen = []
        handler = lambda e, c: seen.append(c.traceparent)
        backend = PythonBackend(handler, timeout=3, function_name="fn")
        target = FunctionTarget("fn", "arn:aws:lambda:us-east-1:0:function:fn", 3)
        deliverer = Deliverer(backend, target, "m", Metrics())
        batch = Batch("s", [create_record(sequence="1", order=1, key="k", arrival=1.0, entry={})])
        anyio.run(lambda: deliverer.deliver(
            batch, interrupt=Interruptible(), in_flight=InFlight("1", "1", 1, 0.0)))
        assert seen == [None], seen
        assert not [m for m, v in sys.modules.items() if m.startswith("opentelemetry") and v]
        assert "esm.tracing_otel" not in sys.modules
        print("ok")
        """
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


class _Failing(SpanExporter):
    def __init__(self) -> None:
        self.calls = 0
        self.broken = True

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        if self.broken:
            raise ConnectionError("collector is down")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        raise RuntimeError("cannot stop")


def test_an_exporter_that_raises_is_contained_and_logged_once_per_streak() -> None:
    inner = _Failing()
    exporter = ContainedExporter(inner)
    with structlog.testing.capture_logs() as logs:
        assert exporter.export([]) is SpanExportResult.FAILURE
        assert exporter.export([]) is SpanExportResult.FAILURE
        inner.broken = False
        assert exporter.export([]) is SpanExportResult.SUCCESS
        exporter.shutdown()
    assert inner.calls == 3
    assert [(line["log_level"], line["event"]) for line in logs] == [
        ("warning", "exporting spans failed; spans are dropped until it works again"),
        ("info", "exporting spans works again"),
        ("warning", "stopping the span exporter failed"),
    ]
    assert logs[0]["error"] == "ConnectionError: collector is down"
    assert logs[1]["failed_exports"] == 2


@pytest.fixture
def no_global_provider(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """from_settings without making its provider the test process's global one."""
    installed: list[Any] = []
    monkeypatch.setattr(trace, "set_tracer_provider", installed.append)
    return installed


def _resource_of(tracing: OtelTracing) -> dict[str, Any]:
    provider = tracing._provider
    assert isinstance(provider, TracerProvider)
    return dict(provider.resource.attributes)


def test_settings_name_the_service_and_install_a_global_provider(
    no_global_provider: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    tracing = OtelTracing.from_settings(TracingSettings(exporter="none"))
    assert _resource_of(tracing)["service.name"] == "esm"
    assert no_global_provider == [tracing._provider]
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    assert (
        _resource_of(OtelTracing.from_settings(TracingSettings(exporter="none")))["service.name"]
        == "from-env"
    )
    named = OtelTracing.from_settings(TracingSettings(exporter="none", service_name="orders-esm"))
    assert _resource_of(named)["service.name"] == "orders-esm"
    named.shutdown(1)


async def test_an_unsampled_batch_still_hands_its_context_on(no_global_provider: list[Any]) -> None:
    tracing = OtelTracing.from_settings(TracingSettings(exporter="none", sample_ratio=0.0))
    tracer = tracing.for_mapping(MappingTrace("m", "fn", "kinesis", STREAM_ARN))
    backend = RecordingBackend()
    deliverer = Deliverer(backend, TARGET, "m", Metrics(), tracer=tracer)
    await _deliver(deliverer, _records(1))
    ref = parse_traceparent(backend.invocations[0].trace_headers["traceparent"])
    assert ref is not None
    assert not ref.sampled
    tracing.shutdown(1)


def test_an_endpoint_without_a_path_gets_the_traces_path() -> None:
    assert traces_url(None) is None
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_url("https://collector/otlp/v1/traces") == "https://collector/otlp/v1/traces"


def test_shutdown_flushes_within_its_bound_and_never_raises(
    no_global_provider: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    tracing = OtelTracing.from_settings(TracingSettings(exporter="console"))
    tracing.shutdown(5)
    tracing.shutdown(5)  # twice is harmless


async def test_a_stream_batch_span_starts_when_its_first_record_was_read(
    recorded: RecordedSpans,
) -> None:
    from esm.engine.batcher import Batcher, BatchLimits

    now = [100.0]
    batcher = Batcher(BatchLimits(batch_size=2, window_seconds=5), clock=lambda: now[0])
    batcher.add(_records(3))
    now[0] = 104.0
    assert batcher.waited() == 4.0
    waited = batcher.waited()
    records = batcher.take()
    # The record left over was read with the others: it has waited as long.
    assert batcher.waited() == 4.0
    batcher.take()
    assert batcher.waited() == 0.0

    batch = Batch(SHARD, records, waited)
    in_flight = InFlight(batch.first.sequence, batch.last.sequence, 2, 0.0)
    await _deliverer(RecordingBackend(), recorded).deliver(
        batch, interrupt=Interruptible(), in_flight=in_flight
    )
    [span] = recorded.batches()
    [attempt] = recorded.attempts(span)
    assert span.start_time is not None
    assert attempt.start_time is not None
    # Four seconds of reading and batching window before the first invocation.
    assert attempt.start_time - span.start_time >= 4 * 10**9
