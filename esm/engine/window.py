"""Tumbling windows (TumblingWindowInSeconds): window bounds, event fields and state rules."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

# Lambda keeps at most 1 MB of state per shard; a larger state ends the window early.
MAX_STATE_BYTES = 1024 * 1024
# With no new records Lambda waits up to 2 minutes before it treats a window as over; esm
# closes a quiet window this long after its end, leaving time for late reads.
CLOSE_DELAY_SECONDS = 1.0


def window_start(arrival: float, length: int) -> float:
    """The start of the window a record belongs to: windows are aligned to multiples of
    their length since the epoch, by the record's arrival time."""
    return math.floor(arrival / length) * length


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class WindowState:
    """One shard's current window and the state the function returned in it."""

    length: int
    shard_id: str
    stream_arn: str
    start: float | None = None
    state: dict[str, Any] = field(default_factory=dict)
    terminated_early: bool = False

    @property
    def end(self) -> float:
        assert self.start is not None
        return self.start + self.length

    def open(self, start: float) -> None:
        self.start = start
        self.state = {}
        self.terminated_early = False

    def close(self) -> None:
        self.start = None
        self.state = {}
        self.terminated_early = False

    def event_fields(self, *, final: bool) -> dict[str, Any]:
        """The fields a tumbling-window event carries besides its Records."""
        assert self.start is not None
        return {
            "window": {"start": iso(self.start), "end": iso(self.end)},
            "state": self.state,
            "shardId": self.shard_id,
            "eventSourceARN": self.stream_arn,
            "isFinalInvokeForWindow": final,
            "isWindowTerminatedEarly": final and self.terminated_early,
        }

    def accept(self, answer: Any) -> None:
        """Keep the state of a successful answer (already checked by `answer_problem`)."""
        state = answer["state"]
        if len(orjson.dumps(state)) > MAX_STATE_BYTES:
            # Over the limit the window ends early: its final invocation gets the last
            # state that fit, and the window goes on with a fresh state.
            self.terminated_early = True
            return
        self.state = state


def answer_problem(answer: Any) -> str | None:
    """Why an answer to a tumbling-window event counts as a failed invocation, or None.

    The function must answer with a `state` object (TimeWindowEventResponse)."""
    if not isinstance(answer, dict) or "state" not in answer:
        return "a tumbling window answer must include a state object"
    if not isinstance(answer["state"], dict):
        return "the state of a tumbling window answer must be an object"
    return None
