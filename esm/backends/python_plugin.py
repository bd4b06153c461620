"""The python backend as a plugin: its settings (`type: python`) and its factory.

The factory imports the implementation (esm.backends.python) when called: the
configuration loads every backend's settings, and `esm validate` or `esm schema` should
not pay for handler loading.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, field_validator

from esm.settings import FunctionSettings, config_problem, show

if TYPE_CHECKING:
    from esm.protocols import FunctionBackend
    from esm.registry import BackendContext

_PYTHON_HANDLER = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
)


class PythonFunctionConfig(FunctionSettings):
    """A Python handler run in-process: `handler(event, context)`, sync or async."""

    offline_checked_setting: ClassVar[str | None] = "handler"

    type: Literal["python"]
    handler: str = Field(
        description="package.module:function (dotted module, colon, dotted attribute), "
        "imported when esm starts and by esm validate. Lambda's module.function form is "
        "refused with the colon form to write instead."
    )

    @field_validator("handler")
    @classmethod
    def _check_handler(cls, value: str) -> str:
        if not _PYTHON_HANDLER.fullmatch(value):
            hint = ""
            if "." in value and ":" not in value:
                module, _, function = value.rpartition(".")
                hint = f" (for Lambda's module.function form write {module}:{function})"
            raise config_problem(f"{show(value)} must look like package.module:function{hint}")
        return value

    def target(self) -> str:
        return self.handler


async def create(context: BackendContext, config: PythonFunctionConfig) -> FunctionBackend:
    from esm.backends.python import PythonBackend

    return PythonBackend(
        config.handler,
        timeout=config.timeout,
        function_name=context.name,
        memory_size=config.memory_size,
    )
