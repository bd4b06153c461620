"""One mapping's life inside the daemon: its runner, restarted after a failure, on request
(a seek, a reload) and paused across restarts, so that nothing done to one mapping stops
another."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from esm.engine.lifecycle import Interruptible
from esm.engine.pause import PauseGate
from esm.engine.retry import Backoff
from esm.errors import EsmError, describe
from esm.metrics import Metrics


class Runner(Protocol):
    """A mapping's engine (StreamEngine, QueueEngine) as the supervisor drives it."""

    gate: PauseGate

    async def run(self) -> None: ...

    def stop(self, grace: float | None = None) -> None: ...

    def status(self) -> dict[str, Any]: ...


RunnerFactory = Callable[[], Runner]
BeforeStart = Callable[[], Awaitable[None]]


class Stopping(EsmError):
    """The mapping stops (esm shuts down, or the mapping was removed): it is not restarted."""


@dataclass
class _Restart:
    before_start: BeforeStart | None
    factory: RunnerFactory | None
    done: anyio.Event = field(default_factory=anyio.Event)
    error: BaseException | None = None


class MappingSupervisor:
    """Runs one mapping's runner until esm stops or the mapping is removed.

    A runner that fails with an error nothing below contained is logged in one line and
    replaced by a fresh one after a backoff, which reads again from the checkpoints. A
    restart on request stops the runner as a shutdown would (reading at once, in-flight
    batches within `grace`, their checkpoints written), then runs the request's action (a
    seek writes its checkpoints here, after the last one of the old runner) and starts a
    fresh runner.
    """

    def __init__(
        self,
        label: str,
        factory: RunnerFactory,
        *,
        metrics: Metrics,
        backoff: Backoff,
        stopping: Interruptible,
        grace: float,
        log: Any,
    ) -> None:
        self.label = label
        self.factory = factory
        self.runner = factory()
        self.paused = False
        self._metrics = metrics
        self._backoff = backoff
        self._stopping = stopping
        self._grace = grace
        self._log = log
        self._requests: list[_Restart] = []
        self._wake = anyio.Event()
        self._removed = False
        self._ended = anyio.Event()

    # -- requests ------------------------------------------------------------------------

    async def restart(
        self, before_start: BeforeStart | None = None, factory: RunnerFactory | None = None
    ) -> None:
        """Stop the runner, run `before_start`, start a fresh runner (from `factory`, which
        replaces the mapping's factory, when given); return once it is started.

        :raises Stopping: esm stops, or the mapping was removed, first.
        :raises Exception: what `before_start` raised; the fresh runner starts anyway.
        """
        if self._removed or self._stopping.interrupted or self._ended.is_set():
            raise Stopping(f"mapping {self.label} is stopping")
        request = _Restart(before_start, factory)
        self._requests.append(request)
        self._wake.set()
        self.runner.stop(self._grace)
        await request.done.wait()
        if request.error is not None:
            raise request.error

    async def remove(self) -> None:
        """Stop the mapping for good, as a shutdown would; return once it has stopped."""
        self._removed = True
        self._wake.set()
        self.runner.stop(self._grace)
        await self._ended.wait()

    def stop(self, grace: float | None) -> None:
        """esm shuts down: the runner winds down within `grace`."""
        self.runner.stop(grace)

    def set_paused(self, paused: bool) -> bool:
        """Pause or resume the runner, and every runner after it; False if nothing changed."""
        self.paused = paused
        return self.runner.gate.pause() if paused else self.runner.gate.resume()

    # -- running -------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self._ended.set()
            for request in self._requests:
                request.error = Stopping(f"mapping {self.label} is stopping")
                request.done.set()
            self._requests.clear()

    async def _run(self) -> None:
        failures = 0
        while True:
            failed_delay: float | None = None
            try:
                await self.runner.run()
            except Exception as exc:  # noqa: BLE001 - last-resort containment of a mapping
                if self._stopping.interrupted or self._removed:
                    return
                failures += 1
                failed_delay = self._backoff.delay(failures)
                self._metrics.contained_errors.labels(self.label, "mapping").inc()
                self._log.error(
                    "mapping failed, restarting it from its checkpoints",
                    mapping=self.label,
                    error=describe(exc),
                    retry_in_seconds=round(failed_delay, 3),
                )
            if self._stopping.interrupted or self._removed:
                return
            if not self._requests:
                if failed_delay is None:
                    return  # the runner ended on its own: nothing to restart
                if not await self._wait(failed_delay):
                    return
            requests, self._requests = self._requests, []
            self._wake = anyio.Event()
            for request in requests:
                await self._prepare(request)
            self.runner = self.factory()
            if self.paused:
                self.runner.gate.pause()
            if self._requests:
                # Asked again while the last requests were applied: round once more.
                self.runner.stop(self._grace)
            for request in requests:
                request.done.set()

    async def _prepare(self, request: _Restart) -> None:
        if request.factory is not None:
            self.factory = request.factory
        if request.before_start is None:
            return
        try:
            await request.before_start()
        except Exception as exc:  # noqa: BLE001 - handed to the requester, who reports it
            request.error = exc

    async def _wait(self, seconds: float) -> bool:
        """Wait out a failure's backoff; cut short by a request. False when stopping."""
        with anyio.move_on_after(seconds):
            async with anyio.create_task_group() as tg:

                async def until(event: Callable[[], Awaitable[Any]]) -> None:
                    await event()
                    tg.cancel_scope.cancel()

                tg.start_soon(until, self._stopping.wait)
                tg.start_soon(until, self._wake.wait)
        return not (self._stopping.interrupted or self._removed)
