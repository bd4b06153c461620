"""Pausing a mapping: its readers stop before their next read and go on from where they were
when it is resumed. Nothing else changes: batches already read are delivered and settled,
checkpoints and leases are kept (a lease manager goes on renewing), and a paused reader is not
"failing to read".

A gate is held closed for reasons: an operator's pause (`esm pause`), or a circuit breaker
that opened, which holds it until its cool-down ends. It opens when no reason is left, so a
breaker that closes never resumes a mapping an operator paused."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio

OPERATOR = "operator"
"""The reason of `pause()`: a person (or a script) paused the mapping."""


@dataclass
class _Hold:
    until: float | None
    """anyio.current_time() at which the hold ends by itself; None: until released."""
    on_expire: Callable[[], None] | None


class PauseGate:
    """Open by default; readers `await wait_open()` before each read while it is `closed`."""

    def __init__(self) -> None:
        self._open = anyio.Event()
        self._open.set()
        self._holds: dict[str, _Hold] = {}
        self.paused_at: float | None = None
        """Wall-clock time of the operator's pause, for /status; None while not paused."""

    @property
    def paused(self) -> bool:
        """An operator paused the mapping."""
        return self.paused_at is not None

    @property
    def closed(self) -> bool:
        """Readers must wait: held for any reason."""
        self._expire()
        return bool(self._holds)

    def pause(self) -> bool:
        """The operator's pause; False if it was paused already."""
        if self.paused:
            return False
        self.paused_at = time.time()
        self.hold(OPERATOR)
        return True

    def resume(self) -> bool:
        """End the operator's pause; False if it was not paused. The gate opens unless
        another reason still holds it."""
        if not self.paused:
            return False
        self.paused_at = None
        self.release(OPERATOR)
        return True

    def hold(
        self,
        reason: str,
        *,
        seconds: float | None = None,
        on_expire: Callable[[], None] | None = None,
    ) -> None:
        """Hold the gate closed for `reason`, for `seconds` (None: until released); once they
        have passed, the first to look releases it and calls `on_expire`."""
        until = None if seconds is None else anyio.current_time() + seconds
        self._holds[reason] = _Hold(until, on_expire)
        if self._open.is_set():
            self._open = anyio.Event()

    def release(self, reason: str) -> None:
        """Drop `reason`; wake every waiting reader when none is left."""
        self._holds.pop(reason, None)
        if not self._holds:
            self._open.set()

    async def wait_open(self) -> None:
        while self.closed:
            deadlines = [h.until for h in self._holds.values() if h.until is not None]
            if not deadlines:
                await self._open.wait()
                continue
            with anyio.move_on_after(max(0.0, min(deadlines) - anyio.current_time())):
                await self._open.wait()

    def _expire(self) -> None:
        now = anyio.current_time() if self._holds else 0.0
        for reason, held in list(self._holds.items()):
            if held.until is not None and held.until <= now:
                self.release(reason)
                if held.on_expire is not None:
                    held.on_expire()
