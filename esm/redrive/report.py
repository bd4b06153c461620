"""What a redrive did with each failure record, as lines for a person and as JSON."""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ItemReport", "Outcome", "RedriveReport"]


class Outcome(enum.Enum):
    REDRIVEN = "redriven"
    """The function succeeded with the batch; the failure record was deleted."""
    WOULD_REDRIVE = "would_redrive"
    """--dry-run: the batch is still there to redrive."""
    EXPIRED = "expired"
    """None of the batch's records is left in the stream: nothing can bring them back."""
    FAILED_AGAIN = "failed_again"
    """The function failed again; the failure record stays for a later run."""
    ERROR = "error"
    """The stream could not be read; the failure record stays."""
    SKIPPED = "skipped"
    """Another mapping's failure record (--mapping chose one); left alone."""
    UNMATCHED = "unmatched"
    """No mapping of the configuration reads the record's stream; left alone."""
    UNREADABLE = "unreadable"
    """Not a stream failure record; left alone."""


# The outcomes that leave nothing for the operator to look at.
_FINE = frozenset({Outcome.REDRIVEN, Outcome.WOULD_REDRIVE, Outcome.SKIPPED})


@dataclass(frozen=True, slots=True)
class ItemReport:
    item: str
    """The message id or object key of the failure record."""
    outcome: Outcome
    mapping: str | None = None
    shard: str | None = None
    start: str | None = None
    end: str | None = None
    records: int = 0
    """Records invoked (or that would be, on a dry run)."""
    expired_records: int = 0
    """Records of the batch the stream no longer holds."""
    error: str | None = None

    def line(self) -> str:
        where = f" {self.mapping} {self.shard} {self.start}..{self.end}" if self.shard else ""
        text = f"{self.outcome.value:<13} {self.item}{where}"
        details = []
        if self.outcome in (Outcome.REDRIVEN, Outcome.WOULD_REDRIVE, Outcome.FAILED_AGAIN):
            details.append(f"{self.records} record(s)")
        if self.expired_records:
            details.append(f"{self.expired_records} expired from the stream")
        if details:
            text += ": " + ", ".join(details)
        if self.error:
            text += f" ({self.error})"
        return text

    def as_dict(self) -> dict[str, Any]:
        entry = asdict(self)
        entry["outcome"] = self.outcome.value
        return {key: value for key, value in entry.items() if value is not None}


@dataclass
class RedriveReport:
    source: str
    dry_run: bool
    items: list[ItemReport] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counted = Counter(item.outcome.value for item in self.items)
        return {outcome.value: counted[outcome.value] for outcome in Outcome}

    @property
    def clean(self) -> bool:
        """Every failure record taken was redriven (or would be)."""
        return all(item.outcome in _FINE for item in self.items)

    def summary(self) -> str:
        counts = {name: n for name, n in self.counts().items() if n}
        done = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in counts.items())
        verb = "dry run of" if self.dry_run else "redrive from"
        records = sum(
            item.records
            for item in self.items
            if item.outcome in (Outcome.REDRIVEN, Outcome.WOULD_REDRIVE)
        )
        return (
            f"{verb} {self.source}: {len(self.items)} failure record(s): "
            f"{done or 'none found'}; {records} record(s) "
            + ("would be invoked" if self.dry_run else "invoked successfully")
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "dry_run": self.dry_run,
            "counts": self.counts(),
            "items": [item.as_dict() for item in self.items],
        }
