"""The weighted backend as a plugin: its settings (`type: weighted`) and its factory.

The factory imports the implementation (esm.backends.weighted) when called: the
configuration loads every backend's settings, and `esm validate` or `esm schema` should
not pay for what it does not use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from esm.settings import ConfigModel, FunctionSettings, config_problem, unit

if TYPE_CHECKING:
    from esm.protocols import FunctionBackend
    from esm.registry import BackendContext


class WeightedTarget(ConfigModel):
    function: str = Field(description="A function of this file that is not weighted itself.")
    weight: float = Field(
        gt=0, description="Its share, relative to the others' (90 and 10 split 9 to 1)."
    )


class WeightedFunctionConfig(FunctionSettings):
    """Like a Lambda alias with weights: each batch goes to one target function, at random
    by weight (canary releases)."""

    type: Literal["weighted"]
    targets: list[WeightedTarget] = Field(
        description="Two or more functions of this file, each with a weight."
    )
    timeout: float = Field(
        900.0,
        gt=0,
        le=900,
        description="Unused: each target applies its own.",
        json_schema_extra=unit("seconds"),
    )

    @field_validator("targets")
    @classmethod
    def _check_targets(cls, value: list[WeightedTarget]) -> list[WeightedTarget]:
        if len(value) < 2:
            raise config_problem("give at least two targets")
        return value

    def target(self) -> str:
        return ", ".join(f"{t.function} {t.weight:g}" for t in self.targets)

    def functions_called(self) -> tuple[tuple[str, str], ...]:
        return tuple(("targets", t.function) for t in self.targets)


async def create(context: BackendContext, config: WeightedFunctionConfig) -> FunctionBackend:
    from esm.backends.weighted import WeightedBackend

    chosen = context.metrics.weighted_choices
    targets = [(t.function, await context.backend(t.function), t.weight) for t in config.targets]
    return WeightedBackend(
        targets, on_choice=lambda target: chosen.labels(context.name, target).inc()
    )
