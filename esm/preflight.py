"""Start-up checks: what `esm run` would refuse at start, found without running anything.

`esm validate` and `esm run` both call `check_functions` after the configuration validates,
so a handler that does not import or a command that is not installed fails validation the
same way, with the same message, as it fails start-up.
"""

from __future__ import annotations

import os

import anyio

from esm.backends.command import program_problem
from esm.config import CommandFunctionConfig, EsmConfig
from esm.daemon import create_backend
from esm.errors import BackendError
from esm.redact import redact

# Built by the daemon with AWS clients (lambda) or from other functions (weighted): there is
# nothing more to check than the configuration already did.
_NOT_BUILT_HERE = frozenset({"lambda", "weighted"})

# Where each type's start-up problems come from, to name the setting.
_SETTING = {"python": "handler", "command": "command"}


async def check_functions(config: EsmConfig) -> list[str]:
    """One line per function that `esm run` could not start: a Python handler that does not
    import, a command that is not there or not executable, a header file that cannot be
    read, a plugin that refuses its options. Python handlers are imported, as at start-up."""
    problems = []
    for name, function in config.functions.items():
        if function.type in _NOT_BUILT_HERE:
            continue
        where = f"functions.{name}" + (
            f".{_SETTING[function.type]}" if function.type in _SETTING else ""
        )
        try:
            backend = create_backend(name, function)
        except BackendError as exc:
            problems.append(f"{where}: {_without_function_name(str(exc), name)}")
            continue
        except Exception as exc:  # noqa: BLE001 - plugin boundary
            # A plugin's factory is other people's code: anything it raises is a refusal.
            problems.append(f"{where}: {type(exc).__name__}: {exc}")
            continue
        with anyio.move_on_after(5, shield=True):
            await backend.aclose()
        if isinstance(function, CommandFunctionConfig):
            problems += _command_problems(name, function)
    return [redact(problem) for problem in problems]


def _command_problems(name: str, function: CommandFunctionConfig) -> list[str]:
    if function.cwd is not None and not os.path.isdir(function.cwd):
        return [f"functions.{name}.cwd: {function.cwd!r} is not a directory"]
    problem = program_problem(function.argv[0], env=function.env, cwd=function.cwd)
    return [] if problem is None else [f"functions.{name}.command: {problem}"]


def _without_function_name(message: str, name: str) -> str:
    # Backends name the function for their own callers; here the location names it already.
    for prefix in (f"function {name!r}: ", f"function {name}: "):
        message = message.removeprefix(prefix)
    return message
