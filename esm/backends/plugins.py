"""Backend plugins: factories other packages register under the entry-point group esm.backends."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from esm.errors import BackendError
from esm.protocols import BackendFactory, FunctionBackend

GROUP = "esm.backends"


def create_plugin_backend(
    plugin: str, name: str, options: Mapping[str, Any], *, timeout: float, memory_size: int
) -> FunctionBackend:
    """The backend of function `name`, built by the factory registered as `plugin`.

    :raises BackendError: no such plugin, it does not load, or it refuses the options.
    """
    found = [ep for ep in entry_points(group=GROUP) if ep.name == plugin]
    if not found:
        raise BackendError(f"function {name}: no backend plugin named {plugin!r} is installed")
    try:
        factory: BackendFactory = found[0].load()
    except Exception as exc:
        raise BackendError(f"function {name}: plugin {plugin!r} does not load: {exc}") from exc
    backend = factory(name, options, timeout=timeout, memory_size=memory_size)
    if not isinstance(backend, FunctionBackend):
        raise BackendError(
            f"function {name}: plugin {plugin!r} returned {type(backend).__name__}, "
            "which has no invoke and aclose"
        )
    return backend
