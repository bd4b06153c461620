"""The weighted function backend: each invocation goes to one of several targets, by weight."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import structlog

from esm.errors import describe
from esm.model import Invocation, InvokeResult
from esm.protocols import FunctionBackend

log = structlog.get_logger("esm.backends.weighted")


class WeightedBackend:
    """Splits invocations between functions by weight, as a Lambda alias with weights does.

    `targets` are `(name, backend, weight)`; every weight must be a positive finite number, and
    the weights are normalised, so 90 and 10 split like 0.9 and 0.1. Each invocation is run by
    exactly one target, chosen at random, and its result is returned unchanged. `on_choice` is
    called with the chosen target's name before each invocation (per-target metrics).
    """

    def __init__(
        self,
        targets: Sequence[tuple[str, FunctionBackend, float]],
        *,
        rng: random.Random | None = None,
        on_choice: Callable[[str], None] | None = None,
    ) -> None:
        if not targets:
            raise ValueError("a weighted backend needs at least one target")
        names = [name for name, _, _ in targets]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"target names must be unique: {', '.join(duplicates)}")
        for name, _, weight in targets:
            # bool is an int; True as a weight is a configuration slip, not a weight of 1.
            if (
                isinstance(weight, bool)
                or not isinstance(weight, int | float)
                or not math.isfinite(weight)
                or weight <= 0
            ):
                raise ValueError(
                    f"target {name!r}: the weight must be a positive number, not {weight!r}"
                )
        total = math.fsum(weight for _, _, weight in targets)
        self._names = names
        self._backends = [backend for _, backend, _ in targets]
        self._cumulative = list(itertools.accumulate(weight / total for _, _, weight in targets))
        self._rng = rng if rng is not None else random.Random()
        self._on_choice = on_choice
        self.weights: Mapping[str, float] = MappingProxyType(
            {name: weight / total for name, _, weight in targets}
        )
        """Each target's share of the invocations, summing to 1."""

    def __repr__(self) -> str:
        shares = ", ".join(f"{name}={share:.4g}" for name, share in self.weights.items())
        return f"WeightedBackend({shares})"

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        [index] = self._rng.choices(range(len(self._names)), cum_weights=self._cumulative)
        name = self._names[index]
        if self._on_choice is not None:
            try:
                self._on_choice(name)
            except Exception as exc:  # noqa: BLE001 - a metrics hook must not fail the batch
                log.error("on_choice failed", target=name, error=describe(exc))
        return await self._backends[index].invoke(invocation)

    async def aclose(self) -> None:
        """Close every target (once each, even if listed twice), then raise the first error."""
        first_error: BaseException | None = None
        closed: set[int] = set()
        for name, backend in zip(self._names, self._backends, strict=True):
            if id(backend) in closed:
                continue
            closed.add(id(backend))
            try:
                await backend.aclose()
            except Exception as exc:  # noqa: BLE001 - plugin boundary
                log.warning("closing a weighted target failed", target=name, error=repr(exc))
                if first_error is None:
                    first_error = exc
        if first_error is not None:
            raise first_error
