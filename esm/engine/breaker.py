"""A mapping's circuit breaker: after N invocations in a row fail, stop polling and invoking
for a cool-down, then let one invocation through as a probe.

Lambda has no such thing: a mapping whose function is down goes on polling, and an SQS
queue's messages run through their maxReceiveCount into the dead-letter queue while the
function cannot take any of them. With the breaker open, readers read nothing (the mapping's
pause gate is held) and batches already read wait before invoking; a queue's messages stay
invisible while they wait, as they do while invoked. After the cool-down the breaker is half
open: reading goes on, and the first invocation is the probe while the others wait for its
result. A success closes the breaker; a failure opens it for another cool-down.

Failed invocations are function errors, timeouts, throttles and system errors (the function
could not be reached). A success resets the count, also one whose answer reports batch item
failures: the function ran.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import structlog

from esm.engine.pause import PauseGate
from esm.metrics import Metrics

BREAKER = "circuit_breaker"
"""The pause gate's reason while the breaker is open."""


class CircuitState(enum.Enum):
    CLOSED = "closed"
    """Invocations flow."""
    OPEN = "open"
    """Nothing is read or invoked until the cool-down ends."""
    HALF_OPEN = "half_open"
    """One invocation at a time probes the function."""


@dataclass(frozen=True)
class BreakerSettings:
    failures: int
    """Consecutive failed invocations that open the breaker (at least 1)."""
    cool_down_seconds: float
    """How long it stays open before probing."""


Listener = Callable[[CircuitState, CircuitState, int, "str | None"], None]
"""Told of each change: (before, after, consecutive failures, last error)."""


class CircuitBreaker:
    """One mapping's breaker, shared by all its shards or pollers."""

    def __init__(
        self, settings: BreakerSettings, gate: PauseGate, on_change: Listener | None = None
    ) -> None:
        self.settings = settings
        self.gate = gate
        self.state = CircuitState.CLOSED
        self.failures = 0
        """Failed invocations in a row."""
        self.opened = 0
        """How many times it opened."""
        self._on_change = on_change
        self._changed = anyio.Event()
        self._probing = False
        self._reopen_at: float | None = None
        self.last_error: str | None = None

    async def admit(self) -> None:
        """Return when an invocation may start: at once while closed, after the cool-down
        while open, and when no other probe is out while half open."""
        while True:
            if self.state is CircuitState.CLOSED:
                return
            if self.state is CircuitState.HALF_OPEN and not self._probing:
                self._probing = True
                return
            changed = self._changed
            if self.state is CircuitState.OPEN and self._reopen_at is not None:
                with anyio.move_on_after(max(0.0, self._reopen_at - anyio.current_time())):
                    await changed.wait()
                if self.state is CircuitState.OPEN:
                    self._half_open()
            else:
                await changed.wait()

    def record(self, ok: bool, error: str | None = None) -> None:
        """The result of an admitted invocation."""
        if ok:
            self.failures = 0
            self._probing = False
            if self.state is not CircuitState.CLOSED:
                self._set(CircuitState.CLOSED)
                self.gate.release(BREAKER)
            return
        self.failures += 1
        self.last_error = error
        if self.state is CircuitState.HALF_OPEN:
            self._probing = False
            self._open()
        elif self.state is CircuitState.CLOSED and self.failures >= self.settings.failures:
            self._open()

    def release_probe(self) -> None:
        """An admitted invocation ended without a result (cancelled at shutdown)."""
        if self._probing:
            self._probing = False
            self._notify()

    def status(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "consecutive_failures": self.failures,
            "opened": self.opened,
            **({"last_error": self.last_error} if self.last_error else {}),
        }

    # -- transitions ---------------------------------------------------------------------

    def _open(self) -> None:
        self.opened += 1
        self._reopen_at = anyio.current_time() + self.settings.cool_down_seconds
        self.gate.hold(BREAKER, seconds=self.settings.cool_down_seconds, on_expire=self._half_open)
        self._set(CircuitState.OPEN)

    def _half_open(self) -> None:
        if self.state is not CircuitState.OPEN:
            return
        self._reopen_at = None
        self.gate.release(BREAKER)
        self._set(CircuitState.HALF_OPEN)

    def _set(self, state: CircuitState) -> None:
        before, self.state = self.state, state
        if self._on_change is not None:
            self._on_change(before, state, self.failures, self.last_error)
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()


def breaker_log(label: str, metrics: Metrics, cool_down: float) -> Listener:
    """What a mapping's breaker says when it changes: a log line and its metrics."""
    log = structlog.get_logger("esm.breaker").bind(mapping=label)

    def changed(
        before: CircuitState, after: CircuitState, failures: int, error: str | None
    ) -> None:
        metrics.circuit_open.labels(label).set(0 if after is CircuitState.CLOSED else 1)
        if after is CircuitState.OPEN:
            metrics.circuit_opened.labels(label).inc()
            log.warning(
                "circuit breaker opened: polling paused"
                if before is CircuitState.CLOSED
                else "circuit breaker probe failed: polling paused again",
                consecutive_failures=failures,
                cool_down_seconds=cool_down,
                error=error,
            )
        elif after is CircuitState.HALF_OPEN:
            log.info("circuit breaker half open: one invocation probes the function")
        else:
            log.info("circuit breaker closed: polling again")

    return changed
