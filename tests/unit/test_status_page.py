"""The status page's HTML: status_view's rows as a table, the process above it, every value
escaped and redacted, colours by state, an empty state, and a page that loads nothing else."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from esm.status_page import REFRESH_SECONDS, render_error_page, render_page
from esm.status_view import MappingRow, mapping_rows

from ..html_table import read_page


def _status() -> dict[str, Any]:
    return {
        "ready": True,
        "stopping": False,
        "uptime_seconds": 185,
        "mappings": [
            {"name": "orders", "function": "fn", "ready": True,
             "event_source_arn": "arn:aws:kinesis:us-east-1:123456789012:stream/orders",
             "shards": {"shardId-0": {"phase": "reading", "iterator_age_seconds": 0.4,
                                      "in_flight": []},
                        "shardId-1": {"phase": "reading", "iterator_age_seconds": 2,
                                      "in_flight": []}}},
            {"name": "jobs", "function": "worker", "ready": True,
             "event_source_arn": "arn:aws:sqs:us-east-1:123456789012:jobs",
             "pollers": {"running": 2, "target": 2}, "batches_in_flight": 0,
             "backlog": {"visible": 12}},
            {"name": "audit", "function": "fn", "ready": True, "paused": True,
             "event_source_arn": "arn:aws:sqs:us-east-1:123456789012:audit",
             "pollers": {"running": 1, "target": 1}, "batches_in_flight": 0},
            {"name": "billing", "function": "fn", "ready": False,
             "event_source_arn": "arn:aws:sqs:us-east-1:123456789012:billing",
             "pollers": {"running": 0, "target": 1},
             "last_error": "AccessDenied: not authorized to receive"},
        ],
    }  # fmt: skip


def test_the_table_is_status_views_rows() -> None:
    status = _status()
    page = read_page(render_page(status))
    assert page.headers == MappingRow.headers()
    assert page.texts() == [row.cells() for row in mapping_rows(status)]


def test_the_process_is_above_the_table_and_in_the_title() -> None:
    html = render_page(_status(), now=datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC))
    page = read_page(html)
    assert page.by_tag["h1"] == ["esm ready, up 3m05s, 4 mappings"]
    assert "ok" in _classes_of(html, "process")
    assert page.by_tag["title"] == ["esm: ready, up 3m05s, 4 mappings"]
    # The time of the report: a page that stopped reloading shows that it is old.
    assert page.by_tag["footer"][0].startswith("As of 2024-05-01 12:00:01 UTC. Reloads every 5 s.")


def _classes_of(html: str, name: str) -> set[str]:
    """The classes of the first element that has class `name`."""
    match = re.search(rf'class="([^"]*\b{name}\b[^"]*)"', html)
    assert match, name
    return set(match.group(1).split())


def test_states_and_errors_have_their_colours() -> None:
    page = read_page(render_page(_status()))
    states = {row[0].text: row[3] for row in page.rows}
    assert {name: cell.text for name, cell in states.items()} == {
        "orders": "running", "jobs": "running", "audit": "paused", "billing": "starting",
    }  # fmt: skip
    assert "ok" in states["orders"].classes
    assert "paused" in states["audit"].classes
    assert "warn" in states["billing"].classes
    # Only the row with an error is marked as one.
    assert page.row_classes == [set(), set(), set(), {"has-error"}]


def test_a_process_not_ready_or_stopping_is_not_shown_as_fine() -> None:
    for update, words in (({"ready": False}, "not ready"), ({"stopping": True}, "stopping")):
        html = render_page(_status() | update)
        assert read_page(html).by_class["process"][0].startswith(words + ", ")
        assert "warn" in _classes_of(html, "process")


def test_names_and_errors_are_escaped() -> None:
    hostile = "<script>alert('x')</script>&"
    status = {
        "ready": True,
        "mappings": [
            {"name": hostile, "function": '"><img src=x>', "last_error": hostile,
             "event_source_arn": "arn:aws:sqs:us-east-1:123456789012:q<b>"},
        ],
    }  # fmt: skip
    html = render_page(status)
    assert "<script" not in html
    assert "<img" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;" in html
    row = read_page(html).texts()[0]
    # What a browser shows is the text itself, unchanged.
    assert (row[0], row[1], row[2], row[-1]) == (hostile, "sqs q<b>", '"><img src=x>', hostile)


def test_url_passwords_are_hidden_as_in_status() -> None:
    status = {
        "ready": True,
        "mappings": [
            {"name": "orders", "function": "https://deploy:hunter2@functions.example/orders",
             "last_error": "ConnectError: https://TOKEN123@functions.example/orders refused"},
        ],
    }  # fmt: skip
    html = render_page(status)
    assert "hunter2" not in html
    assert "TOKEN123" not in html
    row = read_page(html).texts()[0]
    assert row[2] == "https://deploy:***@functions.example/orders"
    assert row[-1] == "ConnectError: https://***@functions.example/orders refused"


def test_no_mappings_is_said_in_words() -> None:
    html = render_page({"ready": True, "uptime_seconds": 3, "mappings": []})
    page = read_page(html)
    assert page.rows == []
    assert "<table" not in html
    assert page.by_class["empty"] == ["No mappings: this esm has none in its configuration."]
    assert page.by_class["process"] == ["ready, up 3.0s, 0 mappings"]


def test_the_page_reloads_itself_and_loads_nothing_else() -> None:
    html = render_page(_status())
    assert f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' in html
    assert "<script" not in html
    assert "<link" not in html
    assert " src=" not in html
    # Links are relative, so the page works behind a proxy's path prefix too.
    assert re.findall(r'href="([^"]*)"', html) == ["status", "metrics"]


def test_the_error_page_is_one_escaped_line_and_keeps_reloading() -> None:
    html = render_error_page("RuntimeError: <boom> at https://u:pw@h/")
    assert "pw@" not in html
    assert "<boom>" not in html
    assert read_page(html).by_class["bad"] == [
        "status unavailable",
        "RuntimeError: <boom> at https://u:***@h/",
    ]
    assert 'http-equiv="refresh"' in html
