"""A mapping's work units (a stream's shards, a queue's pollers) and the tasks that run them.

The coordinator is the one place that starts and stops a unit's task. Who decides which
units to hold is not its business: for a single esm that is the mapping itself (every shard
whose parents are done, as many pollers as the backlog wants); with several replicas it is a
lease manager. Both drive the same three calls:

- `acquire(key)`: start the unit;
- `release(key, grace)`: wind it down gracefully (stop reading, finish or abandon the
  in-flight batch within `grace`, final checkpoint);
- `lose(key)`: it belongs to someone else now: fence it and cancel it at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import anyio
import anyio.abc

from esm.engine.lifecycle import UnitLife

Key = TypeVar("Key", bound=Hashable)


class Coordinator(Generic[Key]):
    """Runs one task per held unit inside the caller's task group."""

    def __init__(
        self,
        task_group: anyio.abc.TaskGroup,
        run_unit: Callable[[Key, UnitLife], Awaitable[None]],
        *,
        name: str = "unit",
    ) -> None:
        self._task_group = task_group
        self._run_unit = run_unit
        self._name = name
        self._lives: dict[Key, UnitLife] = {}
        self._changed = anyio.Event()

    @property
    def held(self) -> frozenset[Key]:
        """The units whose task is running (a unit being released counts until it ends)."""
        return frozenset(self._lives)

    def life(self, key: Key) -> UnitLife | None:
        return self._lives.get(key)

    def acquire(self, key: Key) -> bool:
        """Start `key`'s task; False when it is already running."""
        if key in self._lives:
            return False
        life = UnitLife()
        self._lives[key] = life
        self._task_group.start_soon(self._run, key, life, name=f"{self._name} {key}")
        return True

    def release(self, key: Key, grace: float | None = None) -> None:
        """Wind `key` down: reading stops now, delivery within `grace` seconds."""
        life = self._lives.get(key)
        if life is not None:
            life.stop(grace)

    def lose(self, key: Key) -> None:
        """`key` is no longer ours: it checkpoints nothing more and is cancelled at once."""
        life = self._lives.get(key)
        if life is not None:
            life.lose()

    def release_all(self, grace: float | None = None) -> None:
        for key in list(self._lives):
            self.release(key, grace)

    async def wait_changed(self) -> None:
        """Return once some unit's task has ended."""
        await self._changed.wait()

    async def _run(self, key: Key, life: UnitLife) -> None:
        try:
            with life.delivery:
                await self._run_unit(key, life)
        finally:
            del self._lives[key]
            self._changed.set()
            self._changed = anyio.Event()
