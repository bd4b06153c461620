"""The lambda backend as a plugin: its settings (`type: lambda`) and its factory.

The factory imports the implementation (esm.backends.lambda_) when called: the
configuration loads every backend's settings, and `esm validate` or `esm schema` should
not pay for botocore.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from esm.settings import FunctionSettings, unit

if TYPE_CHECKING:
    from esm.protocols import FunctionBackend
    from esm.registry import BackendContext


class LambdaFunctionConfig(FunctionSettings):
    """A real Lambda function (or anything speaking the Lambda Invoke API, like LocalStack)."""

    type: Literal["lambda"]
    function_name: str | None = Field(
        None,
        description="The Lambda function: a name, name:alias, or an ARN; the key under "
        "functions if unset.",
    )
    qualifier: str | None = Field(None, description="A version or alias.")
    region: str | None = Field(
        None,
        description="Where the function is; the mapping's region if unset (an ARN names its own).",
    )
    timeout: float = Field(
        900.0,
        gt=0,
        le=900,
        description="How long esm waits for the Invoke call; Lambda enforces the function's "
        "own timeout.",
        json_schema_extra=unit("seconds"),
    )

    def target(self) -> str:
        return self.function_name or "(the function's key)"


def _arn_region(function_name: str) -> str | None:
    """The region of a Lambda ARN (`arn:aws:lambda:REGION:...`), None for a plain name."""
    parts = function_name.split(":")
    return parts[3] if function_name.startswith("arn:") and len(parts) > 3 else None


async def create(context: BackendContext, config: LambdaFunctionConfig) -> FunctionBackend:
    from esm.aws.lambda_ import lambda_client
    from esm.backends.lambda_ import LambdaBackend

    function_name = config.function_name or context.name
    # The function's own region: set, or named by its ARN, or else the mapping's.
    region = config.region or _arn_region(function_name) or context.region
    return LambdaBackend(
        lambda_client(await context.aws_client("lambda", region)),
        function_name=function_name,
        qualifier=config.qualifier,
        timeout=config.timeout,
    )
