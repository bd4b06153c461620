"""What a person reads of /status: one row per mapping, shared by `esm status` and the status
page, so the terminal and the browser say the same thing in the same words.

The input is /status's JSON as served (plain dicts), not the daemon's objects: `esm status`
reads a remote esm, and a field a newer or older esm leaves out shows as "-", never fails.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

MISSING = "-"


@dataclass(frozen=True)
class MappingRow:
    """One mapping, every column already text."""

    mapping: str
    source: str
    function: str
    state: str
    units: str
    """Shards (streams) or pollers (queues)."""
    owner: str
    """Which workers hold the shards' leases; "-" without leases."""
    lag: str
    """The largest iterator age (streams) or the visible backlog (queues)."""
    in_flight: str
    """Batches being delivered, and the records in them."""
    last_error: str

    @classmethod
    def headers(cls) -> list[str]:
        return [f.name.replace("_", " ") for f in fields(cls)]

    def cells(self) -> list[str]:
        return [str(getattr(self, f.name)) for f in fields(self)]


def source_name(arn: str) -> str:
    """`kinesis orders`, `dynamodb orders`, `sqs payments.fifo`: the service and the
    resource's own name, which is what tells mappings apart at a glance."""
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return arn or MISSING
    service, resource = parts[2], parts[5]
    if service == "kinesis":
        # stream/NAME, or stream/NAME/consumer/CONSUMER:TIMESTAMP for enhanced fan-out.
        pieces = resource.split("/")
        name = pieces[1] if len(pieces) > 1 else resource
        return f"kinesis {name}" + (
            f" (consumer {pieces[3].split(':')[0]})" if len(pieces) > 3 else ""
        )
    if service == "dynamodb":
        pieces = resource.split("/")
        return f"dynamodb {pieces[1] if len(pieces) > 1 else resource}"
    return f"{service} {resource}"


def seconds(value: float) -> str:
    """Ages as people say them: 0.4s, 12s, 3m05s, 2h10m."""
    if value < 10:
        return f"{value:.1f}s"
    whole = round(value)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _state(entry: Mapping[str, Any]) -> str:
    if entry.get("enabled") is False:
        return "disabled"
    if entry.get("paused"):
        return "paused"
    circuit = (entry.get("circuit_breaker") or {}).get("state")
    if circuit == "open":
        return "circuit open"
    if circuit == "half_open":
        return "probing"
    if entry.get("stopping"):
        return "stopping"
    if "ready" not in entry:
        return "starting"
    return "running" if entry.get("ready") else "starting"


def _stream_columns(shards: Mapping[str, Mapping[str, Any]]) -> tuple[str, str, str, str]:
    """units, owner, lag, in flight of a stream mapping."""
    leases = [s["lease"] for s in shards.values() if isinstance(s.get("lease"), Mapping)]
    phases = Counter(str(s.get("phase") or "unknown") for s in shards.values())
    units = f"{len(shards)} shard{'s' if len(shards) != 1 else ''}"
    if phases and set(phases) != {"reading"}:
        units += " (" + ", ".join(f"{n} {phase}" for phase, n in sorted(phases.items())) + ")"
    owners = Counter(str(lease.get("owner") or "free") for lease in leases)
    owner = ", ".join(f"{name} {count}" for name, count in sorted(owners.items())) or MISSING
    ages = [
        float(s["iterator_age_seconds"])
        for s in shards.values()
        if isinstance(s.get("iterator_age_seconds"), int | float)
    ]
    lag = f"age {seconds(max(ages))}" if ages else MISSING
    batches = [b for s in shards.values() for b in s.get("in_flight") or []]
    records = sum(int(b.get("records") or 0) for b in batches if isinstance(b, Mapping))
    in_flight = f"{len(batches)} ({records} records)" if batches else "0"
    return units, owner, lag, in_flight


def _queue_columns(entry: Mapping[str, Any]) -> tuple[str, str, str, str]:
    pollers = entry.get("pollers") or {}
    units = f"{pollers.get('running', MISSING)}/{pollers.get('target', MISSING)} pollers"
    backlog = entry.get("backlog")
    if isinstance(backlog, Mapping):
        visible = backlog.get("visible", backlog.get("ApproximateNumberOfMessages"))
        lag = f"{visible} visible" if visible is not None else MISSING
    elif isinstance(backlog, int | float):
        lag = f"{backlog} visible"
    else:
        lag = MISSING
    in_flight = str(entry.get("batches_in_flight", MISSING))
    return units, MISSING, lag, in_flight


def _last_error(entry: Mapping[str, Any]) -> str:
    if entry.get("last_error"):
        return str(entry["last_error"])
    for shard_id, shard in sorted((entry.get("shards") or {}).items()):
        for batch in shard.get("in_flight") or []:
            if isinstance(batch, Mapping) and batch.get("last_error"):
                return f"{shard_id}: {batch['last_error']}"
        if shard.get("last_read_error"):
            return f"{shard_id}: {shard['last_read_error']}"
    return MISSING


def mapping_rows(status: Mapping[str, Any]) -> list[MappingRow]:
    """The rows of /status's `mappings`, in its order."""
    rows = []
    for entry in status.get("mappings") or []:
        if not isinstance(entry, Mapping):
            continue
        shards = entry.get("shards")
        if isinstance(shards, Mapping):
            units, owner, lag, in_flight = _stream_columns(shards)
        elif "pollers" in entry:
            units, owner, lag, in_flight = _queue_columns(entry)
        else:
            units, owner, lag, in_flight = MISSING, MISSING, MISSING, MISSING
        rows.append(
            MappingRow(
                mapping=str(entry.get("name") or entry.get("id") or MISSING),
                source=source_name(str(entry.get("event_source_arn") or "")),
                function=str(entry.get("function") or MISSING),
                state=_state(entry),
                units=units,
                owner=owner,
                lag=lag,
                in_flight=in_flight,
                last_error=_last_error(entry),
            )
        )
    return rows


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, width: int = 0) -> str:
    """Columns padded to their widest cell, the last one cut to `width` when given (a
    terminal's width), so that a long error does not wrap the table."""
    table = [list(headers), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = []
    for row in table:
        line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        if width and len(line) > width:
            line = line[: max(width - 1, 0)] + "…"
        lines.append(line)
    return "\n".join(lines)


def process_state(status: Mapping[str, Any]) -> str:
    """`ready`, `not ready` or `stopping`: esm itself, as /readyz sees it."""
    if status.get("stopping"):
        return "stopping"
    return "ready" if status.get("ready") else "not ready"


def headline(status: Mapping[str, Any]) -> str:
    """The line about the process above the table: `esm ready, up 3m05s, 2 mappings`."""
    uptime = status.get("uptime_seconds")
    count = len(mapping_rows(status))
    return (
        f"esm {process_state(status)}"
        + (f", up {seconds(float(uptime))}" if isinstance(uptime, int | float) else "")
        + f", {count} mapping{'s' if count != 1 else ''}"
    )


def render_text(status: Mapping[str, Any], *, width: int = 0) -> str:
    """`esm status`'s table, with a first line about the process."""
    rows = mapping_rows(status)
    head = headline(status)
    if not rows:
        return head
    body = text_table(MappingRow.headers(), [row.cells() for row in rows], width=width)
    return f"{head}\n\n{body}"
