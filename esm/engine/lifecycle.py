"""How a work unit winds down: reading is interrupted first, delivery gets a deadline, and a
unit that was lost is fenced.

Shutdown (and, with leases, handing a shard to another worker) must stop a unit in a set
order: stop reading and stop waiting at once; let the batch being invoked finish within a
grace period; then write the last checkpoint. These are cancel scopes, not a flag that every
loop polls: whoever reads or waits does it inside `Interruptible.scope()` or through
`Interruptible.sleep()`, and one `interrupt()` cancels them all, those entered later included.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import anyio


class Interruptible:
    """A group of cancel scopes cancelled together: the reading and the waiting of one unit
    (or of a whole mapping). Once interrupted, every scope entered later is cancelled too."""

    def __init__(self) -> None:
        self._scopes: set[anyio.CancelScope] = set()
        self._interrupted = anyio.Event()

    @property
    def interrupted(self) -> bool:
        return self._interrupted.is_set()

    def interrupt(self) -> None:
        self._interrupted.set()
        for scope in list(self._scopes):
            scope.cancel()

    @contextlib.contextmanager
    def scope(self) -> Iterator[anyio.CancelScope]:
        """A cancel scope that `interrupt()` cancels; check `cancelled_caught` afterwards to
        tell an interruption from a normal exit."""
        with anyio.CancelScope() as scope:
            if self.interrupted:
                scope.cancel()
            self._scopes.add(scope)
            try:
                yield scope
            finally:
                self._scopes.discard(scope)

    async def sleep(self, seconds: float) -> bool:
        """Sleep `seconds`; False when interrupted first (or already)."""
        if self.interrupted:
            return False
        with anyio.move_on_after(max(0.0, seconds)):
            await self._interrupted.wait()
        return not self.interrupted

    async def wait(self) -> None:
        """Return once interrupted."""
        await self._interrupted.wait()


class UnitLife:
    """One work unit's life as its coordinator controls it.

    - `reading` is interrupted first: no page is read, no new batch cut, no retry waited for.
    - `delivery` is the scope the unit's whole task runs in; a graceful stop gives it a
      deadline (the grace period), a loss cancels it at once.
    - `fenced`: the unit was lost (another worker owns it now); it must not acknowledge or
      checkpoint anything any more, even what its in-flight batch settles.
    """

    def __init__(self) -> None:
        self.reading = Interruptible()
        self.delivery = anyio.CancelScope()
        self._fenced = False

    @property
    def fenced(self) -> bool:
        return self._fenced

    @property
    def stopping(self) -> bool:
        """Reading was interrupted: the unit is winding down."""
        return self.reading.interrupted

    def stop(self, grace: float | None = None) -> None:
        """Wind down gracefully: reading now, delivery after `grace` seconds (None: wait for
        the in-flight batch however long it takes)."""
        self.reading.interrupt()
        if grace is not None:
            deadline = anyio.current_time() + max(0.0, grace)
            self.delivery.deadline = min(self.delivery.deadline, deadline)

    def lose(self) -> None:
        """The unit is no longer ours: fence it and cancel everything at once."""
        self._fenced = True
        self.reading.interrupt()
        self.delivery.cancel()
