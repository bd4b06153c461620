"""A function's concurrency limit (Lambda's reserved concurrency), shared by its mappings."""

from __future__ import annotations

import anyio

from esm.metrics import Metrics
from esm.model import Invocation, InvokeResult
from esm.protocols import FunctionBackend


class ConcurrencyLimitedBackend:
    """A `FunctionBackend` that runs at most `limit` invocations of a function at once.

    Every mapping of the function shares one instance, so the limit holds across them.
    Invocations over the limit wait for a slot (counted in `esm_function_waiting_batches`)
    instead of failing: esm queues what Lambda would throttle.
    """

    def __init__(
        self, backend: FunctionBackend, limit: int, *, function: str, metrics: Metrics
    ) -> None:
        self.backend = backend
        self.limit = limit
        self.function = function
        self._limiter = anyio.CapacityLimiter(limit)
        self._waiting = metrics.function_waiting_batches.labels(function)
        self._running = metrics.function_concurrent_invocations.labels(function)

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        self._waiting.inc()
        try:
            await self._limiter.acquire()
        finally:
            self._waiting.dec()
        try:
            self._running.inc()
            return await self.backend.invoke(invocation)
        finally:
            self._running.dec()
            self._limiter.release()

    async def aclose(self) -> None:
        await self.backend.aclose()
