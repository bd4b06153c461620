"""The runtime backend as a plugin: its settings (`type: runtime`) and its factory.

The factory imports the implementation (esm.backends.runtime) when called: the
configuration loads every backend's settings, and `esm validate` or `esm schema` should
not pay for aiohttp's server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from esm.settings import FunctionSettings, config_problem, host_problem, show

if TYPE_CHECKING:
    from esm.protocols import FunctionBackend
    from esm.registry import BackendContext


class RuntimeFunctionConfig(FunctionSettings):
    """esm serves the Lambda Runtime API; an unmodified Lambda runtime pulls invocations."""

    type: Literal["runtime"]
    listen: str = Field(
        "127.0.0.1:9001",
        description="host:port (port 1 to 65535) where esm serves the Lambda Runtime API: "
        "the AWS_LAMBDA_RUNTIME_API of the runtime clients (an AWS Lambda base image, or "
        "python -m awslambdaric module.handler). Concurrency is the number of clients "
        "waiting for work.",
    )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise config_problem(f"{show(value)} must be host:port")
        if problem := host_problem(host.removeprefix("[").removesuffix("]")):
            raise config_problem(f"{show(value)}: {problem}")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def target(self) -> str:
        return f"Runtime API on {self.listen}"


async def create(context: BackendContext, config: RuntimeFunctionConfig) -> FunctionBackend:
    """The backend, not yet listening: the daemon starts it (it is a `StartableBackend`)
    before any invocation, and `esm validate` builds it without binding the port."""
    from esm.backends.runtime import RuntimeApiBackend

    return RuntimeApiBackend(
        host=config.host,
        port=config.port,
        function_name=context.name,
        timeout=config.timeout,
        memory_size=config.memory_size,
    )
