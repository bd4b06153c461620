"""Pausing a mapping: its readers stop before their next read and go on from where they were
when it is resumed. Nothing else changes: batches already read are delivered and settled,
checkpoints and leases are kept (a lease manager goes on renewing), and a paused reader is not
"failing to read"."""

from __future__ import annotations

import time

import anyio


class PauseGate:
    """Open by default; readers `await wait_open()` before each read."""

    def __init__(self) -> None:
        self._open = anyio.Event()
        self._open.set()
        self.paused_at: float | None = None
        """Wall-clock time of the pause, for /status; None while running."""

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    def pause(self) -> bool:
        """Close the gate; False if it was closed already."""
        if self.paused:
            return False
        self._open = anyio.Event()
        self.paused_at = time.time()
        return True

    def resume(self) -> bool:
        """Open the gate and wake every waiting reader; False if it was open."""
        if not self.paused:
            return False
        self.paused_at = None
        self._open.set()
        return True

    async def wait_open(self) -> None:
        while not self._open.is_set():
            await self._open.wait()
