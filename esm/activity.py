"""The info-level line per mapping, once a minute: what esm did since the last one, so that a
person watching `esm run` sees batches flow (or not) without turning on debug logs.

It reads the mapping's own metrics, the same numbers Prometheus scrapes, so the line and the
dashboards never disagree."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from esm.metrics import Metrics

_RESULTS = ("success", "function_error", "throttle", "system_error")


@dataclass(frozen=True)
class Totals:
    """A mapping's counters at one moment."""

    records: float = 0.0
    batches: float = 0.0
    errors: float = 0.0
    dropped: float = 0.0


def totals(metrics: Metrics, mapping: str) -> Totals:
    def sample(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, {"mapping": mapping, **labels}) or 0.0

    by_result = {r: sample("esm_invocations_total", result=r) for r in _RESULTS}
    return Totals(
        records=sample("esm_invoked_events_total"),
        batches=sum(by_result.values()),
        errors=by_result["function_error"] + by_result["throttle"] + by_result["system_error"],
        dropped=sample("esm_dropped_events_total"),
    )


def lag(status: Mapping[str, Any]) -> dict[str, Any]:
    """The mapping's lag from its /status entry: the largest iterator age of a stream, the
    visible backlog of a queue."""
    shards = status.get("shards")
    if isinstance(shards, Mapping):
        ages = [
            s["iterator_age_seconds"]
            for s in shards.values()
            if isinstance(s, Mapping) and isinstance(s.get("iterator_age_seconds"), int | float)
        ]
        return {"iterator_age_seconds": round(max(ages), 3)} if ages else {}
    backlog = status.get("backlog")
    if isinstance(backlog, Mapping) and "visible" in backlog:
        return {"backlog": backlog["visible"]}
    return {}


class ActivitySummary:
    """Remembers each mapping's counters between two lines."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._last: dict[str, Totals] = {}

    def lines(
        self, mappings: Iterable[tuple[str, Mapping[str, Any]]], interval: float
    ) -> list[dict[str, Any]]:
        """One line's fields per (mapping name, /status entry): the counts since the last
        call (since start-up on the first)."""
        out = []
        for name, status in mappings:
            now = totals(self.metrics, name)
            before = self._last.get(name, Totals())
            self._last[name] = now
            out.append(
                {
                    "mapping": name,
                    "interval_seconds": interval,
                    "records": int(now.records - before.records),
                    "batches": int(now.batches - before.batches),
                    "errors": int(now.errors - before.errors),
                    **({"dropped": d} if (d := int(now.dropped - before.dropped)) else {}),
                    **lag(status),
                }
            )
        return out


async def log_activity(
    summary: ActivitySummary,
    mappings: Callable[[], Iterable[tuple[str, Mapping[str, Any]]]],
    interval: float,
    log: Any,
    sleep: Callable[[float], Any],
) -> None:
    """Every `interval` seconds, one info line per mapping, until cancelled."""
    while True:
        await sleep(interval)
        for fields in summary.lines(mappings(), interval):
            log.info("activity", **fields)
