"""Traces of batches: what the engine asks of a tracer, the tracer that does nothing, and how
the OpenTelemetry one is chosen at start-up.

The engine opens one span per batch (`BatchTracer.start_batch`) and one per invocation of
it (`BatchSpan.attempt`); the invocation carries that attempt's W3C trace headers to the
function. With tracing off (the default) every call goes to `NO_TRACING`'s singletons: no
OpenTelemetry import, no allocation per batch or record. `esm.tracing_otel` is the one
module that imports OpenTelemetry (the `tracing` extra); `esm.tracing_setup` imports it at
start-up, only when tracing is on.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from esm.model import NO_TRACE_HEADERS, InvokeResult, Record

__all__ = [
    "NO_HEADERS",
    "NO_SPAN",
    "NO_TRACER",
    "NO_TRACING",
    "AttemptSpan",
    "BatchResult",
    "BatchSpan",
    "BatchTracer",
    "Exporter",
    "MappingTrace",
    "Tracing",
    "TracingSettings",
    "exporter_from_environment",
    "wanted_by_environment",
]

Exporter = Literal["otlp", "console", "none"]
EXPORTERS: Final[tuple[Exporter, ...]] = ("otlp", "console", "none")
TraceAttributes = Mapping[str, str | int | float | bool]

NO_HEADERS: Final[Mapping[str, str]] = NO_TRACE_HEADERS
"""The trace headers of an invocation that is not traced."""


class BatchResult(enum.Enum):
    """How a batch ended, as its span's `esm.result` says."""

    SUCCESS = "success"
    """Every record was delivered."""
    PARTIAL_FAILURE = "partial_failure"
    """The function reported some messages failed (ReportBatchItemFailures): they go back."""
    FUNCTION_ERROR = "function_error"
    """The function failed on the batch: its messages go back to the queue."""
    THROTTLE = "throttle"
    SYSTEM_ERROR = "system_error"
    GIVEN_UP = "given_up"
    """Records a stream mapping stopped retrying (to the on-failure destination, or dropped)."""
    ABANDONED = "abandoned"
    """Shutdown came first: the batch is delivered again after a restart."""


@dataclass(frozen=True, slots=True)
class MappingTrace:
    """What every span of one mapping says about it."""

    mapping: str
    """The mapping's name."""
    function: str
    source: str
    """The source's kind: kinesis, dynamodb or sqs (only a queue's messages carry links)."""
    event_source_arn: str


class AttemptSpan(Protocol):
    """One invocation of a batch (or of part of it, after a bisect)."""

    @property
    def headers(self) -> Mapping[str, str]:
        """W3C trace headers (`traceparent`, `tracestate`) naming this invocation."""
        ...

    def current(self) -> AbstractContextManager[object]:
        """While entered, this invocation's span is the current one, so that spans the
        function makes in esm's process (an in-process Python handler's) are its children."""
        ...

    def end(self, result: InvokeResult) -> None: ...


class BatchSpan(Protocol):
    """One batch, from when it was read until it is settled."""

    def attempt(self, records: int, request_id: str) -> AttemptSpan:
        """The span of the next invocation, of `records` records, as a child of the batch."""
        ...

    def note(self, event: str, attributes: TraceAttributes) -> None:
        """Something that happened to the batch between invocations (a bisect, a give-up)."""
        ...

    def end(self, result: BatchResult) -> None: ...


class BatchTracer(Protocol):
    """Opens the spans of one mapping's batches."""

    def start_batch(
        self, partition: str, records: Sequence[Record], waited: float = 0.0
    ) -> BatchSpan:
        """The span of a batch of `partition` (a shard, or a queue), begun `waited` seconds
        ago (when its first record was received)."""
        ...


class Tracing(Protocol):
    """The process's tracing, chosen once at start-up."""

    def for_mapping(self, mapping: MappingTrace) -> BatchTracer: ...

    def shutdown(self, timeout: float) -> None:
        """Export what is still buffered, waiting at most `timeout` seconds; blocking."""
        ...


# --------------------------------------------------------------------------- tracing off

_NOT_CURRENT: Final = contextlib.nullcontext()


class _NoAttempt:
    __slots__ = ()
    headers: Final[Mapping[str, str]] = NO_HEADERS

    def current(self) -> AbstractContextManager[object]:
        return _NOT_CURRENT

    def end(self, result: InvokeResult) -> None:
        pass


class _NoSpan:
    __slots__ = ()

    def attempt(self, records: int, request_id: str) -> AttemptSpan:
        return _NO_ATTEMPT

    def note(self, event: str, attributes: TraceAttributes) -> None:
        pass

    def end(self, result: BatchResult) -> None:
        pass


class _NoTracer:
    __slots__ = ()

    def start_batch(
        self, partition: str, records: Sequence[Record], waited: float = 0.0
    ) -> BatchSpan:
        return NO_SPAN


class _NoTracing:
    __slots__ = ()

    def for_mapping(self, mapping: MappingTrace) -> BatchTracer:
        return NO_TRACER

    def shutdown(self, timeout: float) -> None:
        pass


_NO_ATTEMPT: Final = _NoAttempt()
NO_SPAN: Final[BatchSpan] = _NoSpan()
NO_TRACER: Final[BatchTracer] = _NoTracer()
NO_TRACING: Final[Tracing] = _NoTracing()


# --------------------------------------------------------------------------- tracing on


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """How the OpenTelemetry tracer exports; None leaves a setting to the OTEL_* variables
    (as the OpenTelemetry SDK reads them), then to the SDK's default."""

    exporter: Exporter = "otlp"
    endpoint: str | None = None
    service_name: str | None = None
    sample_ratio: float | None = None


def wanted_by_environment(environ: Mapping[str, str]) -> bool:
    """Whether the OTEL_* variables ask for traces when the configuration does not say:
    OTEL_TRACES_EXPORTER names an exporter, or an OTLP endpoint is set; OTEL_SDK_DISABLED
    turns them off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return any(
        environ.get(name, "").strip()
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def exporter_from_environment(environ: Mapping[str, str]) -> str | None:
    """The first exporter OTEL_TRACES_EXPORTER names (it is a comma-separated list), or None."""
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    return next((name for name in names if name), None)
