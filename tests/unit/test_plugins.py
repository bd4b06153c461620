"""Backend plugins: registered through entry points, configured by `type`, run like any other."""

from __future__ import annotations

import time

import orjson
import pytest

from esm.backends.plugins import PluginFunctionConfig, create_plugin_backend
from esm.config import parse_config
from esm.errors import BackendError
from esm.model import Invocation, ResultKind

CONFIG = """
functions:
  echo:
    type: example-echo
    timeout: 5
    options: {fail_marker: "bad"}
mappings:
  - FunctionName: echo
    EventSourceArn: arn:aws:sqs:us-east-1:123456789012:work
"""


def _invocation(*bodies: str) -> Invocation:
    records = [{"messageId": f"id-{n}", "body": body} for n, body in enumerate(bodies)]
    return Invocation(
        payload=orjson.dumps({"Records": records}),
        request_id="r",
        function_name="echo",
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:echo",
        timeout=5,
        deadline=time.time() + 5,
    )


def test_a_plugin_type_is_accepted_by_the_configuration() -> None:
    config = parse_config(CONFIG, environ={})
    function = config.functions["echo"]
    assert isinstance(function, PluginFunctionConfig)
    assert function.plugin == "example-echo"
    assert function.options == {"fail_marker": "bad"}
    assert function.timeout == 5


@pytest.mark.anyio
async def test_the_example_plugin_runs_through_its_entry_point() -> None:
    backend = create_plugin_backend(
        "example-echo", "echo", {"fail_marker": "bad"}, timeout=5, memory_size=128
    )
    result = await backend.invoke(_invocation("good", "bad one", "fine"))
    assert result.kind is ResultKind.SUCCESS
    assert result.response == {"batchItemFailures": [{"itemIdentifier": "id-1"}]}
    await backend.aclose()


def test_unknown_plugins_and_options_are_clear_errors() -> None:
    with pytest.raises(BackendError, match="no backend plugin named 'nope'"):
        create_plugin_backend("nope", "f", {}, timeout=3, memory_size=128)
    with pytest.raises(BackendError, match="unknown options"):
        create_plugin_backend("example-echo", "f", {"colour": "red"}, timeout=3, memory_size=128)
