"""What each kind of input is read into: mappings in esm.yaml's terms, and the functions
they call, before the output is built."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from esm.importer.values import Text

__all__ = ["FunctionSpec", "ImportedMapping"]


@dataclass(frozen=True)
class FunctionSpec:
    """A function as the input knows it."""

    name: str
    """Its name, for the key under `functions` (made valid there)."""
    target: str | Text | None = None
    """What Lambda calls it (a name or an ARN), for `--function-type lambda`; None when it is
    `name` itself."""
    handler: str | None = None
    """Lambda's handler (`module.function`), for `--function-type python`."""
    timeout: float | None = None
    memory_size: int | None = None
    reserved_concurrency: int | None = None


@dataclass(frozen=True)
class ImportedMapping:
    """One mapping: where the input has it, its function, and its parameters under
    CreateEventSourceMapping's names (FunctionName aside: the output names the function)."""

    where: str
    function: FunctionSpec
    parameters: Mapping[str, Any] = field(default_factory=dict)
