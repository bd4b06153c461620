"""W3C traceparent and X-Ray trace headers, parsed and converted without OpenTelemetry."""

from __future__ import annotations

import pytest

from esm.trace_context import SpanRef, parse_traceparent, parse_xray, xray_header

XRAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


def test_an_xray_header_names_the_w3c_span_its_root_and_parent_make() -> None:
    assert parse_xray(XRAY) == SpanRef(
        trace_id="5759e988bd862e3fe1be46a994272793", span_id="53995c3f42cd8ad8", sampled=True
    )
    # Order, spaces, case and extra fields (Lineage, Self) do not matter.
    reordered = (
        "Sampled=0; Lineage=a87bd80c:1|68fd508a:5 ;Parent=53995C3F42CD8AD8;"
        "Root=1-5759E988-BD862E3FE1BE46A994272793"
    )
    ref = parse_xray(reordered)
    assert ref is not None
    assert (ref.trace_id, ref.span_id, ref.sampled) == (
        "5759e988bd862e3fe1be46a994272793",
        "53995c3f42cd8ad8",
        False,
    )


@pytest.mark.parametrize(
    "header",
    [
        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",  # a trace, but no span
        "Root=1-5759e988-bd862e3fe1be46a9942727;Parent=53995c3f42cd8ad8",  # short id
        "Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",  # version 2
        "Root=1-00000000-000000000000000000000000;Parent=53995c3f42cd8ad8",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=0000000000000000",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=xyz",
        "",
        "garbage",
    ],
)
def test_a_header_naming_no_span_is_none(header: str) -> None:
    assert parse_xray(header) is None


def test_a_traceparent_names_its_span_and_sampled_flag() -> None:
    assert parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") == SpanRef(
        "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", sampled=True
    )
    ref = parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")
    assert ref is not None
    assert not ref.sampled
    # A later version is read by its first four fields.
    assert parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra")


@pytest.mark.parametrize(
    "value",
    [
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
        "",
    ],
)
def test_an_invalid_traceparent_is_none(value: str) -> None:
    assert parse_traceparent(value) is None


def test_a_traceparent_becomes_the_xray_header_of_the_same_span() -> None:
    header = xray_header("00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01")
    assert header == XRAY
    assert header is not None
    assert parse_xray(header) == parse_traceparent(
        "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"
    )
    assert xray_header("00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-00") == (
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0"
    )
    assert xray_header("not a traceparent") is None
