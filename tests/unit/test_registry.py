"""The plugin registry: lookups, the unknown-name message, and a backend registered by a test
that the configuration validates without knowing it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import pytest
import yaml
from pydantic import Field

from esm import registry
from esm.backends.http_plugin import HttpFunctionConfig
from esm.checkpoints.plugins import MemoryStateConfig, SqliteStateConfig
from esm.config import EsmConfig, config_model, describe_config, parse_config
from esm.destinations.plugins import S3DestinationConfig
from esm.errors import ConfigError
from esm.metrics import Metrics
from esm.model import Invocation, InvokeResult, ResultKind
from esm.protocols import FunctionBackend
from esm.registry import BackendContext, Plugin
from esm.settings import FunctionSettings

QUEUE = "arn:aws:sqs:us-east-1:123456789012:work"


class CountingSettings(FunctionSettings):
    type: Literal["test-counting"]
    step: int = Field(1, ge=1, le=5, description="Added per invocation.")

    def target(self) -> str:
        return f"step {self.step}"


class CountingBackend:
    def __init__(self, step: int) -> None:
        self.step = step
        self.count = 0

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        self.count += self.step
        return InvokeResult(kind=ResultKind.SUCCESS)

    async def aclose(self) -> None:
        return None


async def create_counting(context: BackendContext, settings: CountingSettings) -> CountingBackend:
    return CountingBackend(settings.step)


COUNTING: Plugin[registry.BackendFactory] = Plugin(
    "test-counting", CountingSettings, create_counting, "a test's backend"
)


@pytest.fixture
def counting() -> Iterator[Plugin[registry.BackendFactory]]:
    with registry.FUNCTION_BACKENDS.registered(COUNTING) as plugin:
        yield plugin


def _config(function: dict[str, object], **sections: object) -> str:
    return yaml.safe_dump(
        {"functions": {"f": function}, "mappings": [{"FunctionName": "f", "EventSourceArn": QUEUE}]}
        | sections
    )


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_config(text, environ={})
    return raised.value.problems


def test_the_built_in_families_list_their_plugins_in_order() -> None:
    assert registry.FUNCTION_BACKENDS.built_in == (
        "http",
        "python",
        "command",
        "lambda",
        "runtime",
        "weighted",
        "plugin",
    )
    # `plugin` is reached through plain-factory entry points' names only.
    assert "plugin" not in registry.FUNCTION_BACKENDS.written_names()
    assert registry.DESTINATIONS.names() == ("sqs", "sns", "s3")
    assert registry.CHECKPOINT_STORES.names() == ("sqlite", "memory", "dynamodb")


def test_lookup_loads_the_settings_model_and_the_factory() -> None:
    http = registry.FUNCTION_BACKENDS.get("http")
    assert http.settings_model() is HttpFunctionConfig
    assert callable(http.load_factory())
    assert registry.CHECKPOINT_STORES.get("memory").settings_model() is MemoryStateConfig
    assert registry.DESTINATIONS.get("s3").settings_model() is S3DestinationConfig


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(registry.UnknownPlugin) as raised:
        registry.CHECKPOINT_STORES.get("redis")
    assert raised.value.problems == [
        "unknown backend 'redis': must be one of sqlite, memory, dynamodb"
    ]
    [problem] = _problems(_config({"type": "grpc"}))
    assert problem == (
        "functions.f: unknown type 'grpc': must be one of http, python, command, lambda, "
        "runtime, weighted, example-echo, example-jsonl"
    )


def test_a_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.FUNCTION_BACKENDS.register(Plugin("http", HttpFunctionConfig, create_counting))


def test_a_registered_backend_is_validated_by_its_own_model(
    counting: Plugin[registry.BackendFactory],
) -> None:
    config = parse_config(_config({"type": "test-counting", "step": 3}), environ={})
    function = config.functions["f"]
    assert isinstance(function, CountingSettings)
    assert function.step == 3
    assert isinstance(config, EsmConfig)
    assert "function f: test-counting step 3 (timeout 3s, memory 128 MB)" in describe_config(config)
    assert _problems(_config({"type": "test-counting", "step": 9})) == [
        "functions.f.step: 9 is out of range: must be between 1 and 5"
    ]
    assert _problems(_config({"type": "test-counting", "steps": 2})) == [
        "functions.f: unknown key 'steps' (did you mean step?)"
    ]


def test_the_configuration_forgets_a_backend_that_is_unregistered() -> None:
    before = config_model()
    with registry.FUNCTION_BACKENDS.registered(COUNTING):
        parse_config(_config({"type": "test-counting"}), environ={})
        assert config_model() is not before
    assert config_model() is before
    [problem] = _problems(_config({"type": "test-counting"}))
    assert problem.startswith("functions.f: unknown type 'test-counting'")


@pytest.mark.anyio
async def test_a_registered_backend_is_built_through_the_registry(
    counting: Plugin[registry.BackendFactory],
) -> None:
    config = parse_config(_config({"type": "test-counting", "step": 2}), environ={})

    async def no_client(service: str, region: str) -> object:
        raise AssertionError("no AWS client is needed")

    async def no_backend(name: str) -> FunctionBackend:
        raise AssertionError("no other backend is needed")

    context = BackendContext("f", "us-east-1", no_client, Metrics(), no_backend)
    backend = await registry.build_backend(context, config.functions["f"])
    assert isinstance(backend, CountingBackend)
    assert backend.step == 2


def test_state_settings_come_from_the_store_plugins() -> None:
    default = parse_config(_config({"type": "python", "handler": "a:b"}), environ={})
    assert isinstance(default.state, SqliteStateConfig)
    memory = parse_config(
        _config({"type": "python", "handler": "a:b"}, state={"backend": "memory"}), environ={}
    )
    assert isinstance(memory.state, MemoryStateConfig)
    store = registry.build_checkpoint_store(memory.state)
    assert type(store).__name__ == "MemoryCheckpointStore"
