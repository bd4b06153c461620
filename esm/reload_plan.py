"""What a reload of esm.yaml changes: which mappings start, stop or restart, and which keep
running untouched. Deciding it is kept apart from doing it, so that it can be checked alone."""

from __future__ import annotations

from dataclasses import dataclass, field

from esm.config import EsmConfig, MappingConfig
from esm.errors import EsmError

__all__ = ["FIXED_SECTIONS", "SHARED_SECTIONS", "ReloadPlan", "ReloadRefused", "plan_reload"]

FIXED_SECTIONS = ("aws", "state", "admin", "log", "tracing")
"""Sections a running esm cannot change: its clients, checkpoint store, admin server and
logging are opened once, before any mapping starts."""

SHARED_SECTIONS = ("delivery", "polling", "sqs")
"""Sections every mapping runs with: a change restarts them all."""


class ReloadRefused(EsmError, ValueError):
    """The new configuration is not applied, and the running one stays; the message says why."""


@dataclass(frozen=True)
class ReloadPlan:
    """Mapping ids by what the reload does to them."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)
    """Functions whose settings changed: their backends are built anew."""

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def _running(config: EsmConfig) -> dict[str, MappingConfig]:
    return {m.mapping_id: m for m in config.mappings if m.Enabled}


def plan_reload(old: EsmConfig, new: EsmConfig) -> ReloadPlan:
    """What it takes to go from `old` to `new`.

    A mapping is keyed by its UUID (function and event source), so a rename or a new
    BatchSize is a change of that mapping, and a new EventSourceArn a mapping removed and
    another added. A mapping is changed when its own settings, its function's, or a shared
    section differ; one that becomes disabled is removed, one that becomes enabled added.

    :raises ReloadRefused: a fixed section differs.
    """
    fixed = [name for name in FIXED_SECTIONS if getattr(old, name) != getattr(new, name)]
    if fixed:
        raise ReloadRefused(
            f"reload cannot change {', '.join(fixed)}: restart esm for that; nothing was changed"
        )
    functions = sorted(
        name
        for name in set(old.functions) | set(new.functions)
        if old.functions.get(name) != new.functions.get(name)
    )
    shared = any(getattr(old, name) != getattr(new, name) for name in SHARED_SECTIONS)
    before, after = _running(old), _running(new)
    plan = ReloadPlan(
        added=[i for i in after if i not in before],
        removed=[i for i in before if i not in after],
        functions=functions,
    )
    for mapping_id, mapping in after.items():
        previous = before.get(mapping_id)
        if previous is None:
            continue
        if shared or previous != mapping or mapping.function_name in functions:
            plan.changed.append(mapping_id)
        else:
            plan.unchanged.append(mapping_id)
    return plan
