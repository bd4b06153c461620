"""The command backend as a plugin: its settings (`type: command`) and its factory.

The factory imports the implementation (esm.backends.command) when called: the
configuration loads every backend's settings, and `esm validate` or `esm schema` should
not pay for process management.
"""

from __future__ import annotations

import os
import shlex
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from esm.settings import FunctionSettings, config_problem

if TYPE_CHECKING:
    from esm.protocols import FunctionBackend
    from esm.registry import BackendContext


class CommandFunctionConfig(FunctionSettings):
    """A command in any language: the event on stdin, the answer on stdout (per batch), or a
    pool of long-lived workers speaking newline-delimited JSON (persistent)."""

    offline_checked_setting: ClassVar[str | None] = "command"

    type: Literal["command"]
    command: list[str] | str = Field(
        description="The program and its arguments; a string is split like a shell would "
        "(no shell runs). The program must exist and be executable when esm starts and when "
        "esm validate runs."
    )
    mode: Literal["per-batch", "persistent"] = Field(
        "per-batch",
        description="per-batch: one process per invocation (event on stdin, answer on "
        "stdout, a non-zero exit code is a function error, the process group is killed at the "
        "timeout); persistent: long-lived workers speaking newline-delimited JSON, restarted "
        "when they die.",
    )
    workers: int = Field(
        1, ge=1, le=1000, description="Persistent mode: worker processes (invocations at once)."
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment of the processes."
    )
    cwd: str | None = Field(None, description="Working directory of the processes.")

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.command) if isinstance(self.command, str) else list(self.command)

    @model_validator(mode="after")
    def _check_command(self) -> CommandFunctionConfig:
        if not self.argv:
            raise config_problem("command: give the program to run")
        return self

    def target(self) -> str:
        return f"{shlex.join(self.argv)} ({self.mode})"

    def offline_problems(self, name: str) -> list[str]:
        # Imported here: the check lives with the process code it mirrors.
        from esm.backends.command import program_problem

        if self.cwd is not None and not os.path.isdir(self.cwd):
            return [f"functions.{name}.cwd: {self.cwd!r} is not a directory"]
        problem = program_problem(self.argv[0], env=self.env, cwd=self.cwd)
        return [] if problem is None else [f"functions.{name}.command: {problem}"]


async def create(context: BackendContext, config: CommandFunctionConfig) -> FunctionBackend:
    from esm.backends.command import CommandBackend

    return CommandBackend(
        config.argv,
        mode=config.mode,
        timeout=config.timeout,
        function_name=context.name,
        workers=config.workers,
        env=config.env,
        cwd=config.cwd,
    )
