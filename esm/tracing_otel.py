"""Batch spans with OpenTelemetry: the one module of esm that imports it (the `tracing` extra).

One CONSUMER span per batch, a new trace, from when its first record was received until it
is settled; one CLIENT span per invocation under it, whose W3C context the function gets
(`traceparent` header, Python handler context). An SQS message that carries a trace (its
`AWSTraceHeader` system attribute, or a `traceparent` message attribute) is a link of the
batch span: a batch mixes messages of many traces, so it has no parent.

Spans are exported from the SDK's batch processor thread; an exporter that fails or raises
is contained there, logged once per failure streak.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

import structlog
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from esm import __version__
from esm.errors import describe
from esm.model import InvokeResult, Record, ResultKind
from esm.trace_context import SpanRef, parse_traceparent, parse_xray
from esm.tracing import BatchResult, MappingTrace, TraceAttributes, TracingSettings

# The SDK keeps at most 128 links per span (OTEL_SPAN_LINK_COUNT_LIMIT); a batch of 10,000
# messages need not build the links it would drop.
MAX_LINKS: Final = 128
# An error text on a span status, at most this long.
_STATUS_TEXT = 300
_TRACES_PATH = "/v1/traces"
_ROOT: Final = otel_context.Context()
"""An empty context: batch spans start new traces whatever is current."""

log = structlog.get_logger("esm.tracing")


class OtelTracing:
    """esm's tracing over an OpenTelemetry `TracerProvider`.

    `owned`: the provider was made here (`from_settings`), so `shutdown` flushes and stops
    it; a provider passed in (a test's, an embedding application's) is its owner's.
    """

    def __init__(self, provider: trace.TracerProvider, *, owned: bool = False) -> None:
        self._provider = provider
        self._owned = owned
        self._tracer = provider.get_tracer("esm", __version__)

    @classmethod
    def from_settings(cls, settings: TracingSettings) -> OtelTracing:
        """A provider for `settings`; what they leave unset, the SDK reads from OTEL_*.

        It becomes the process's global provider unless one is set already, so that an
        in-process Python handler's spans are exported along with esm's.
        """
        sampler = None
        if settings.sample_ratio is not None:
            sampler = ParentBased(TraceIdRatioBased(settings.sample_ratio))
        provider = SdkTracerProvider(
            sampler=sampler, resource=_resource(settings), shutdown_on_exit=False
        )
        exporter = _exporter(settings)
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(ContainedExporter(exporter)))
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(provider)
        return cls(provider, owned=True)

    def for_mapping(self, mapping: MappingTrace) -> MappingTracer:
        return MappingTracer(self._tracer, mapping)

    def shutdown(self, timeout: float) -> None:
        if not self._owned or not isinstance(self._provider, SdkTracerProvider):
            return
        provider = self._provider

        def stop() -> None:
            try:
                provider.shutdown()
            except Exception as exc:  # noqa: BLE001 - the SDK and its exporter are not esm's
                log.warning("stopping the span exporter failed", error=describe(exc))

        # A daemon thread: an exporter that hangs past `timeout` cannot hold up the exit.
        thread = threading.Thread(target=stop, name="esm-tracing-shutdown", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            log.warning("spans still unexported at exit were dropped", timeout_seconds=timeout)


def _resource(settings: TracingSettings) -> Resource:
    attributes: dict[str, str] = {SERVICE_VERSION: __version__}
    if settings.service_name is not None:
        attributes[SERVICE_NAME] = settings.service_name
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read here, under what the file sets.
    resource = Resource.create(attributes)
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "esm"}))
    return resource


def _exporter(settings: TracingSettings) -> SpanExporter | None:
    if settings.exporter == "none":
        # Spans are still made, so functions still get trace headers to continue.
        return None
    if settings.exporter == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=traces_url(settings.endpoint))


def traces_url(endpoint: str | None) -> str | None:
    """The URL spans are posted to: `endpoint` as given when it has a path, else with
    /v1/traces, as the SDK treats OTEL_EXPORTER_OTLP_ENDPOINT; None leaves it to the SDK."""
    if endpoint is None:
        return None
    if urlsplit(endpoint).path in ("", "/"):
        return endpoint.rstrip("/") + _TRACES_PATH
    return endpoint


class ContainedExporter(SpanExporter):
    """An exporter whose failures never leave it: an exception is a failed export (the SDK
    would log its traceback), and a failure streak is logged once, when it starts, and once
    more when exporting works again."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner
        self._failed_exports = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        error = None
        try:
            result = self._inner.export(spans)
        except Exception as exc:  # noqa: BLE001 - an exporter is a containment boundary
            result, error = SpanExportResult.FAILURE, describe(exc)
        if result is SpanExportResult.SUCCESS:
            if self._failed_exports:
                log.info("exporting spans works again", failed_exports=self._failed_exports)
            self._failed_exports = 0
            return result
        if not self._failed_exports:
            log.warning(
                "exporting spans failed; spans are dropped until it works again",
                exporter=type(self._inner).__name__,
                error=error or "the exporter's own line says why",
            )
        self._failed_exports += 1
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        try:
            self._inner.shutdown()
        except Exception as exc:  # noqa: BLE001 - an exporter is a containment boundary
            log.warning("stopping the span exporter failed", error=describe(exc))

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return self._inner.force_flush(timeout_millis)
        except Exception as exc:  # noqa: BLE001 - an exporter is a containment boundary
            log.warning("flushing the span exporter failed", error=describe(exc))
            return False


class MappingTracer:
    """The spans of one mapping's batches."""

    def __init__(self, tracer: trace.Tracer, mapping: MappingTrace) -> None:
        self._tracer = tracer
        self.batch_name = f"process {mapping.mapping}"
        self.attempt_name = f"invoke {mapping.function}"
        self.function = mapping.function
        self._queue = mapping.source == "sqs"
        self._partition_key = "esm.queue" if self._queue else "esm.shard_id"
        self._attributes: dict[str, str] = {
            "esm.mapping": mapping.mapping,
            "esm.function": mapping.function,
            "esm.source": mapping.source,
            "esm.event_source_arn": mapping.event_source_arn,
            "faas.trigger": "pubsub",
            "messaging.operation.type": "process",
        }
        if self._queue:
            self._attributes["messaging.system"] = "aws_sqs"

    def start_batch(
        self, partition: str, records: Sequence[Record], waited: float = 0.0
    ) -> OtelBatchSpan:
        attributes: dict[str, str | int] = {
            **self._attributes,
            self._partition_key: partition,
            "messaging.batch.message_count": len(records),
        }
        if self._queue:
            attributes["messaging.destination.name"] = partition
        span = self._tracer.start_span(
            self.batch_name,
            context=_ROOT,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=message_links(records) if self._queue else (),
            start_time=time.time_ns() - int(max(0.0, waited) * 1e9),
        )
        return OtelBatchSpan(self, span)

    def start_attempt(
        self, batch: trace.Span, number: int, records: int, request_id: str
    ) -> trace.Span:
        return self._tracer.start_span(
            self.attempt_name,
            context=trace.set_span_in_context(batch, _ROOT),
            kind=SpanKind.CLIENT,
            attributes={
                "esm.attempt": number,
                "messaging.batch.message_count": records,
                "faas.invoked_name": self.function,
                "faas.invocation_id": request_id,
            },
        )


class OtelBatchSpan:
    __slots__ = ("_attempts", "_span", "_tracer")

    def __init__(self, tracer: MappingTracer, span: trace.Span) -> None:
        self._tracer = tracer
        self._span = span
        self._attempts = 0

    @property
    def span(self) -> trace.Span:
        return self._span

    def attempt(self, records: int, request_id: str) -> OtelAttemptSpan:
        self._attempts += 1
        return OtelAttemptSpan(
            self._tracer.start_attempt(self._span, self._attempts, records, request_id)
        )

    def note(self, event: str, attributes: TraceAttributes) -> None:
        self._span.add_event(event, attributes)

    def end(self, result: BatchResult) -> None:
        self._span.set_attribute("esm.result", result.value)
        self._span.set_attribute("esm.attempts", self._attempts)
        if result is not BatchResult.SUCCESS:
            self._span.set_status(Status(StatusCode.ERROR, result.value))
        self._span.end()


class OtelAttemptSpan:
    __slots__ = ("_context", "_span", "headers")

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self._context = trace.set_span_in_context(span, _ROOT)
        headers: dict[str, str] = {}
        # The global propagator: W3C trace context unless OTEL_PROPAGATORS says otherwise.
        propagate.inject(headers, context=self._context)
        self.headers: Mapping[str, str] = headers

    def current(self) -> _Current:
        return _Current(self._context)

    def end(self, result: InvokeResult) -> None:
        span = self._span
        span.set_attribute("esm.result", result.kind.value)
        if result.function_error is not None:
            span.set_attribute("esm.function_error", result.function_error)
        if result.kind is not ResultKind.SUCCESS:
            error = result.error or result.kind.value
            span.set_status(Status(StatusCode.ERROR, error[:_STATUS_TEXT]))
        span.end()


class _Current:
    """Makes a context the current one while entered (opentelemetry's use_span would also
    record exceptions on the span; an invocation's outcome is its result, not an exception)."""

    __slots__ = ("_context", "_token")

    def __init__(self, context: otel_context.Context) -> None:
        self._context = context
        self._token: Any = None

    def __enter__(self) -> None:
        self._token = otel_context.attach(self._context)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        otel_context.detach(self._token)


# --------------------------------------------------------------------------- links


def message_links(records: Sequence[Record]) -> list[Link]:
    """A link to each distinct span the messages of a batch name, at most MAX_LINKS."""
    links: list[Link] = []
    seen: set[tuple[str, str]] = set()
    for record in records:
        entry = record.entry
        for ref, tracestate in _message_refs(entry):
            if (ref.trace_id, ref.span_id) in seen:
                continue
            seen.add((ref.trace_id, ref.span_id))
            context = SpanContext(
                int(ref.trace_id, 16),
                int(ref.span_id, 16),
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED if ref.sampled else TraceFlags.DEFAULT),
                trace_state=tracestate,
            )
            # No attributes: they would triple what the SDK spends on each link.
            links.append(Link(context))
            if len(links) >= MAX_LINKS:
                return links
    return links


def _message_refs(entry: Mapping[str, Any]) -> list[tuple[SpanRef, TraceState | None]]:
    """The spans one SQS event entry names: its AWSTraceHeader system attribute (X-Ray), its
    traceparent message attribute (W3C, with its tracestate)."""
    refs: list[tuple[SpanRef, TraceState | None]] = []
    attributes = entry.get("attributes")
    if isinstance(attributes, Mapping):
        header = attributes.get("AWSTraceHeader")
        if isinstance(header, str) and (ref := parse_xray(header)) is not None:
            refs.append((ref, None))
    message_attributes = entry.get("messageAttributes")
    if isinstance(message_attributes, Mapping):
        traceparent = _string_attribute(message_attributes, "traceparent")
        if traceparent is not None and (ref := parse_traceparent(traceparent)) is not None:
            tracestate = _string_attribute(message_attributes, "tracestate")
            state = TraceState.from_header([tracestate]) if tracestate else None
            refs.append((ref, state))
    return refs


def _string_attribute(attributes: Mapping[str, Any], name: str) -> str | None:
    value = attributes.get(name)
    if isinstance(value, Mapping):
        text = value.get("stringValue")
        if isinstance(text, str):
            return text
    return None
