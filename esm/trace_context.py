"""Trace context as it travels in text: W3C `traceparent` and AWS X-Ray's trace header.

Plain string work, without OpenTelemetry: the OpenTelemetry module turns what these parse
into span links, and the Runtime API backend writes the X-Ray form of a `traceparent` into
`Lambda-Runtime-Trace-Id`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
# Root=1-<8 hex digits: epoch seconds>-<24 hex digits>, as X-Ray writes it; fields may come
# in any order, among others (Sampled, Lineage, Self).
_XRAY_ROOT = re.compile(r"(?:^|;)\s*Root=1-([0-9a-f]{8})-([0-9a-f]{24})\s*(?:;|$)", re.I)
_XRAY_PARENT = re.compile(r"(?:^|;)\s*Parent=([0-9a-f]{16})\s*(?:;|$)", re.I)
_XRAY_SAMPLED = re.compile(r"(?:^|;)\s*Sampled=1\s*(?:;|$)")
# The form SQS and Lambda write, matched at once before anything else is tried.
_XRAY_CANONICAL = re.compile(
    r"Root=1-([0-9a-f]{8})-([0-9a-f]{24});Parent=([0-9a-f]{16})(?:;Sampled=([01]))?"
)
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class SpanRef:
    """A span of another process: where a message or an invocation came from."""

    trace_id: str
    """32 lowercase hex digits, never all zeros."""
    span_id: str
    """16 lowercase hex digits, never all zeros."""
    sampled: bool


def parse_traceparent(value: str) -> SpanRef | None:
    """The span a W3C `traceparent` names, or None when it is not one.

    Versions above 00 are read by their first four fields, as the W3C rules ask; version ff
    and all-zero ids are invalid.
    """
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags = match.group(1, 2, 3, 4)
    if version == "ff" or (version == "00" and match.group(5) is not None):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return SpanRef(trace_id, span_id, sampled=bool(int(flags, 16) & 1))


def parse_xray(value: str) -> SpanRef | None:
    """The span an X-Ray trace header names (`Root=1-5759e988-bd862e3fe1be46a994272793;
    Parent=53995c3f42cd8ad8;Sampled=1`), or None when it names none: a header without
    `Parent` names a trace but no span to link to."""
    # Searched rather than split into fields: a batch may hold thousands of these.
    canonical = _XRAY_CANONICAL.fullmatch(value)
    if canonical is not None:
        trace_id, span_id = canonical.group(1) + canonical.group(2), canonical.group(3)
        if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
            return None
        return SpanRef(trace_id, span_id, sampled=canonical.group(4) == "1")
    root = _XRAY_ROOT.search(value)
    parent = _XRAY_PARENT.search(value) if root is not None else None
    if root is None or parent is None:
        return None
    # X-Ray's trace id is W3C's: the epoch seconds and the random part, joined.
    trace_id = (root.group(1) + root.group(2)).lower()
    span_id = parent.group(1).lower()
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return SpanRef(trace_id, span_id, sampled=_XRAY_SAMPLED.search(value) is not None)


def xray_header(traceparent: str) -> str | None:
    """The X-Ray trace header for the span a `traceparent` names, or None when it is not one."""
    ref = parse_traceparent(traceparent)
    if ref is None:
        return None
    trace_id = ref.trace_id
    sampled = "1" if ref.sampled else "0"
    return f"Root=1-{trace_id[:8]}-{trace_id[8:]};Parent={ref.span_id};Sampled={sampled}"
