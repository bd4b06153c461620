"""The status page at the admin server's `/`: `esm status`'s table as one self-contained HTML
page that reloads itself.

The rows are status_view's, so the browser and the terminal show the same columns in the same
words; this module only decides how they look. The page has no script and loads nothing else
(inline CSS, a `<meta>` refresh), so it works with JavaScript off and behind any proxy, and
the admin server can forbid scripts outright (CONTENT_SECURITY_POLICY).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from esm.redact import redact
from esm.status_view import MISSING, MappingRow, headline, mapping_rows, process_state

REFRESH_SECONDS = 5
"""How often the page reloads itself: often enough to follow a shard or a backlog, rarely
enough that a tab left open costs esm nothing worth measuring."""

CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'"
"""What the page may load: nothing but its own inline style. Should a value ever slip past
escaping, a browser still runs no script from it."""

# A state's colour class; a state not listed (a newer esm's) shows as a warning, not as fine.
_STATE_CLASSES = {
    "running": "ok",
    "paused": "paused",
    "starting": "warn",
    "stopping": "warn",
    "circuit open": "bad",
    "disabled": "off",
}
_PROCESS_CLASSES = {"ready": "ok", "not ready": "warn", "stopping": "warn"}

_STYLE = """
:root { color-scheme: light dark; --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e;
  --paused: #6639ba; --off: #6e7781; --line: #d0d7de; --head: #f6f8fa; --error-bg: #ffebe9; }
@media (prefers-color-scheme: dark) {
  :root { --ok: #3fb950; --warn: #d29922; --bad: #f85149; --paused: #a371f7; --off: #8b949e;
    --line: #30363d; --head: #161b22; --error-bg: #3c1618; } }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem; }
h1 { font-size: 1.25rem; margin: 0 0 1rem; display: flex; gap: .75rem; align-items: center; }
.process { font-size: .95rem; font-weight: normal; padding: .15rem .6rem; border-radius: 1rem;
  border: 1px solid currentColor; }
.wrap { overflow-x: auto; }
table { border-collapse: collapse; min-width: 100%; }
th, td { text-align: left; padding: .4rem .7rem; border-bottom: 1px solid var(--line);
  vertical-align: top; white-space: nowrap; }
th { background: var(--head); font-weight: 600; }
td.last-error { white-space: normal; max-width: 40ch; overflow-wrap: anywhere; }
tr.has-error td.last-error { color: var(--bad); background: var(--error-bg); }
.state { font-weight: 600; }
.state::before { content: "\\25CF  "; }
.ok { color: var(--ok); } .warn { color: var(--warn); } .bad { color: var(--bad); }
.paused { color: var(--paused); } .off { color: var(--off); }
.empty { padding: 1rem; border: 1px dashed var(--line); color: var(--off); }
footer { margin-top: 1rem; color: var(--off); font-size: .85rem; }
"""


def _text(value: object) -> str:
    """Every value that reaches the page goes through here: its URLs' passwords hidden, as
    /status hides them, then escaped, since names and errors come from configuration and AWS."""
    return html.escape(redact(str(value)))


def _column_class(name: str) -> str:
    return name.replace(" ", "-")


def _row(row: MappingRow) -> str:
    names = [_column_class(header) for header in MappingRow.headers()]
    cells = []
    for name, cell in zip(names, row.cells(), strict=True):
        if name == "state":
            state_class = _STATE_CLASSES.get(row.state, "warn")
            cells.append(f'<td class="state {state_class}">{_text(cell)}</td>')
        else:
            cells.append(f'<td class="{name}">{_text(cell)}</td>')
    marked = ' class="has-error"' if row.last_error != MISSING else ""
    return f"<tr{marked}>{''.join(cells)}</tr>"


def _table(rows: list[MappingRow]) -> str:
    if not rows:
        return '<p class="empty">No mappings: this esm has none in its configuration.</p>'
    head = "".join(f"<th>{_text(header)}</th>" for header in MappingRow.headers())
    body = "\n".join(_row(row) for row in rows)
    return (
        f'<div class="wrap"><table>\n<thead><tr>{head}</tr></thead>\n'
        f"<tbody>\n{body}\n</tbody>\n</table></div>"
    )


def _document(title: str, body: str, refresh_seconds: int) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_text(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def render_page(
    status: Mapping[str, Any],
    *,
    now: datetime | None = None,
    refresh_seconds: int = REFRESH_SECONDS,
) -> str:
    """The status page of /status's report `status`; `now` (when given) is shown as the time
    of the report, so that a page that stopped reloading is seen to be old."""
    rows = mapping_rows(status)
    state = process_state(status)
    summary = headline(status).removeprefix("esm ")
    as_of = f"As of {now.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC. " if now else ""
    body = (
        f'<h1>esm <span class="process {_PROCESS_CLASSES.get(state, "warn")}">'
        f"{_text(summary)}</span></h1>\n"
        f"{_table(rows)}\n"
        f"<footer>{_text(as_of)}Reloads every {int(refresh_seconds)} s. Read-only: the same "
        'rows as <code>esm status</code>; the full report is <a href="status">/status</a>, '
        'the metrics <a href="metrics">/metrics</a>.</footer>'
    )
    return _document(f"esm: {summary}", body, refresh_seconds)


def render_error_page(message: str, *, refresh_seconds: int = REFRESH_SECONDS) -> str:
    """The page when the status cannot be built: the one line of why, and it keeps reloading,
    so the table comes back by itself once the cause is gone."""
    body = (
        '<h1>esm <span class="process bad">status unavailable</span></h1>\n'
        f'<p class="bad">{_text(message)}</p>'
    )
    return _document("esm: status unavailable", body, refresh_seconds)
