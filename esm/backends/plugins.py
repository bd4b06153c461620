"""Backend plugins: factories other packages register under the entry-point group esm.backends.

Two kinds of entry point are accepted. A `esm.registry.Plugin` (settings model and factory)
becomes a function type of its own, validated like the built-ins (docs/adding-a-backend.md).
A plain factory, `create(name, options, *, timeout, memory_size)`, is run by the `plugin`
type below: its functions keep their settings under `options:` and the factory checks them.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from esm.errors import BackendError
from esm.protocols import BackendFactory, FunctionBackend
from esm.settings import FunctionSettings

if TYPE_CHECKING:
    from esm.registry import BackendContext

GROUP = "esm.backends"


class PluginFunctionConfig(FunctionSettings):
    """A backend from another package, registered under the entry-point group esm.backends."""

    type: Literal["plugin"]
    plugin: str = Field(
        description="The entry point's name: what the configuration wrote as `type`."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="The plugin's own settings, checked by its factory."
    )

    def target(self) -> str:
        return f"plugin {self.plugin}"


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
    if not callable(factory):
        raise BackendError(f"function {name}: plugin {plugin!r} is not a backend factory")
    backend = factory(name, options, timeout=timeout, memory_size=memory_size)
    if not isinstance(backend, FunctionBackend):
        raise BackendError(
            f"function {name}: plugin {plugin!r} returned {type(backend).__name__}, "
            "which has no invoke and aclose"
        )
    return backend


async def create(context: BackendContext, config: PluginFunctionConfig) -> FunctionBackend:
    """The registry's factory of `type: plugin` functions."""
    return create_plugin_backend(
        config.plugin,
        context.name,
        config.options,
        timeout=config.timeout,
        memory_size=config.memory_size,
    )
