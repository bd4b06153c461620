"""Start-up checks: what `esm run` would refuse at start, found without running anything.

`esm validate` and `esm run` both call `check_functions` and `check_tracing` after the
configuration validates, so a handler that does not import, a command that is not installed
or traces asked for without the tracing extra fail validation the same way, with the same
message, as they fail start-up.
"""

from __future__ import annotations

from typing import NoReturn

import anyio

from esm import registry
from esm.config import EsmConfig
from esm.errors import BackendError
from esm.metrics import Metrics
from esm.protocols import FunctionBackend
from esm.redact import redact
from esm.settings import FunctionSettings
from esm.tracing_setup import missing_extra


class _NeedsTheDaemon(Exception):
    """The backend needs AWS clients or other functions' backends: only `esm run` has them,
    and the configuration has already checked what can be checked without."""


async def _no_client(service: str, region: str) -> NoReturn:
    raise _NeedsTheDaemon


async def _no_backend(name: str) -> NoReturn:
    raise _NeedsTheDaemon


async def check_functions(config: EsmConfig) -> list[str]:
    """One line per function that `esm run` could not start: a Python handler that does not
    import, a command that is not there or not executable, a header file that cannot be
    read, a plugin that refuses its options. Python handlers are imported, as at start-up."""
    problems = []
    metrics = Metrics()
    for name, function in config.functions.items():
        context = registry.BackendContext(
            name=name,
            region=config.aws.region,
            aws_client=_no_client,
            metrics=metrics,
            backend=_no_backend,
        )
        try:
            backend = await registry.build_backend(context, function)
        except _NeedsTheDaemon:
            continue
        except BackendError as exc:
            problems.append(f"{_where(name, function)}: {_without_function_name(str(exc), name)}")
            continue
        except Exception as exc:  # noqa: BLE001 - plugin boundary
            # A plugin's factory is other people's code: anything it raises is a refusal.
            problems.append(f"{_where(name, function)}: {type(exc).__name__}: {exc}")
            continue
        await _close(backend)
        problems += function.offline_problems(name)
    return [redact(problem) for problem in problems]


def check_tracing(config: EsmConfig) -> list[str]:
    """One line when traces are on but OpenTelemetry cannot be imported (the extra is not
    installed); with tracing off nothing is imported."""
    if not config.tracing.enabled:
        return []
    problem = missing_extra()
    if problem is None:
        return []
    return [
        f"tracing.enabled: traces are on (by tracing.enabled or an OTEL_* variable) but "
        f"{problem}; or set tracing.enabled: false"
    ]


def _where(name: str, function: FunctionSettings) -> str:
    # Where the backend's start-up problems come from, to name the setting.
    setting = function.offline_checked_setting
    return f"functions.{name}" + (f".{setting}" if setting else "")


async def _close(backend: FunctionBackend) -> None:
    with anyio.move_on_after(5, shield=True):
        await backend.aclose()


def _without_function_name(message: str, name: str) -> str:
    # Backends name the function for their own callers; here the location names it already.
    for prefix in (f"function {name!r}: ", f"function {name}: "):
        message = message.removeprefix(prefix)
    return message
