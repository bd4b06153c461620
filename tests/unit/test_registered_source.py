"""Sources registered by a package, not by esm: the configuration checks their mappings by
the source's own rules and the daemon runs them on the engine they name, knowing them only
through the registry."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import anyio
import orjson
import pytest

from esm import registry
from esm.checkpoints.memory import MemoryCheckpointStore
from esm.config import EsmConfig, parse_config
from esm.daemon import Daemon
from esm.errors import ConfigError
from esm.examples.memory_source import MemoryQueue, MemoryQueueSource
from esm.examples.memory_source import plugin as memq_plugin
from esm.model import Invocation, InvokeResult, ResultKind
from esm.settings import SourceSettings
from esm.testing import FakeStream

from .test_registry import CountingSettings

pytestmark = pytest.mark.anyio

QUEUE_ARN = "arn:aws:memq:us-east-1:123456789012:jobs"


@dataclass
class _EntryPoint:
    """What importlib.metadata lists for an installed package's entry point."""

    name: str
    loaded: object

    def load(self) -> object:
        return self.loaded


@pytest.fixture
def memq(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The example source installed as a package's entry point (esm.sources: memq)."""
    monkeypatch.setattr(
        registry, "source_entry_points", lambda: {"memq": _EntryPoint("memq", memq_plugin)}
    )
    yield
    if "memq" in registry.SOURCES:
        registry.SOURCES.unregister("memq")


class RecordingBackend:
    """Keeps every body it is given; fails each batch that holds "fail" the first time."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.failed = False

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        event = orjson.loads(invocation.payload)
        bodies = [str(record.get("body", record.get("seq"))) for record in event["Records"]]
        if "fail" in bodies and not self.failed:
            self.failed = True
            return InvokeResult(kind=ResultKind.FUNCTION_ERROR, error="first try fails")
        self.bodies.extend(bodies)
        return InvokeResult(kind=ResultKind.SUCCESS)

    async def aclose(self) -> None:
        return None


@pytest.fixture
def recording() -> Iterator[RecordingBackend]:
    backend = RecordingBackend()

    async def create(context: registry.BackendContext, settings: Any) -> RecordingBackend:
        return backend

    plugin: registry.Plugin[registry.BackendFactory] = registry.Plugin(
        "test-counting", CountingSettings, create
    )
    with registry.FUNCTION_BACKENDS.registered(plugin):
        yield backend


def _config(mapping: str) -> EsmConfig:
    return parse_config(
        f"""
state: {{backend: memory}}
admin: {{enabled: false}}
sqs: {{wait_time_seconds: 1}}
functions:
  f: {{type: test-counting}}
mappings:
  - {{FunctionName: f, {mapping}}}
""",
        environ={},
    )


def _problems(mapping: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _config(mapping)
    return "\n".join(caught.value.problems)


def test_an_arn_of_no_installed_source_is_refused_naming_the_known_ones() -> None:
    problems = _problems(f"EventSourceArn: {QUEUE_ARN}")
    assert "is a 'memq' ARN: an event source must be a Kinesis stream" in problems
    assert "arn:aws:sqs:REGION:ACCOUNT:QUEUE" in problems


@pytest.mark.usefixtures("memq", "recording")
def test_an_installed_source_states_which_parameters_apply() -> None:
    [mapping] = _config(f"EventSourceArn: {QUEUE_ARN}").mappings
    assert isinstance(mapping.source, MemoryQueueSource)
    assert (mapping.source_kind, mapping.batch_size, mapping.stream_name) == ("memq", 10, "jobs")
    problems = _problems(f"EventSourceArn: {QUEUE_ARN}, StartingPosition: LATEST")
    assert "StartingPosition applies only to Kinesis and DynamoDB streams, not to an in-memory" in (
        problems
    )
    problems = _problems(
        f"EventSourceArn: {QUEUE_ARN}, "
        "DestinationConfig: {OnFailure: {Destination: arn:aws:sqs:us-east-1:123456789012:dlq}}"
    )
    assert (
        "applies only to Kinesis and DynamoDB stream sources, not to an in-memory queue: "
        "a failed message goes back to the queue"
    ) in problems
    assert "is not an in-memory queue ARN" in _problems(
        "EventSourceArn: 'arn:aws:memq:us-east-1:123456789012:no/slash'"
    )


async def _run_until(daemon: Daemon, done: Any) -> None:
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await tg.start(
                lambda task_status: daemon.run(handle_signals=False, task_status=task_status)
            )
            while not done():
                await anyio.sleep(0.02)
            daemon.request_stop()


@pytest.mark.usefixtures("memq")
async def test_the_daemon_runs_an_installed_queue_source_on_the_queue_engine(
    recording: RecordingBackend,
) -> None:
    queue = MemoryQueue.named("jobs")
    queue.send("a", "fail", "b")
    daemon = Daemon(_config(f"EventSourceArn: {QUEUE_ARN}, BatchSize: 2"))
    await _run_until(daemon, lambda: len(recording.bodies) == 3 and not queue.in_flight)
    # The failed batch was nacked, came back, and was delivered again: nothing lost.
    assert recording.failed
    assert sorted(recording.bodies) == ["a", "b", "fail"]
    assert (list(queue.visible), queue.in_flight) == ([], {})
    [status] = daemon.status()["mappings"]
    assert (status["queue"], status["ready"]) == ("jobs", True)


class FakeStreamSource(SourceSettings):
    """arn:aws:fakestream:REGION:ACCOUNT:NAME, an in-memory stream of a test."""

    kind: ClassVar[str] = "fakestream"
    title: ClassVar[str] = "fake"
    description: ClassVar[str] = "a fake stream"
    arn_form: ClassVar[str] = "arn:aws:fakestream:REGION:ACCOUNT:NAME"
    engine: ClassVar[Literal["stream", "queue"]] = "stream"
    starting_positions: ClassVar[tuple[str, ...]] = ("TRIM_HORIZON", "LATEST")


async def test_the_daemon_runs_a_registered_stream_source_on_the_stream_engine(
    recording: RecordingBackend,
) -> None:
    stream = FakeStream("arn:aws:fakestream:us-east-1:123456789012:s")
    stream.add_shard("shard-0")
    for _ in range(7):
        stream.put("shard-0")
    contexts: list[registry.SourceContext] = []

    async def open_fake(
        context: registry.SourceContext, source: FakeStreamSource
    ) -> registry.StreamSource:
        contexts.append(context)
        return registry.StreamSource(stream, poll_interval=0.01, records_limit=100)

    store = MemoryCheckpointStore()
    plugin: registry.Plugin[registry.SourceFactory] = registry.Plugin(
        "fakestream", FakeStreamSource, open_fake
    )
    with registry.SOURCES.registered(plugin):
        config = _config(f"EventSourceArn: '{stream.stream_arn}', StartingPosition: TRIM_HORIZON")
        daemon = Daemon(config, store=store)
        await _run_until(daemon, lambda: len(recording.bodies) == 7)
    assert recording.bodies == [str(n) for n in range(1, 8)]
    [context] = contexts
    assert context.mapping == "f-s"
    [mapping] = config.mappings
    checkpoints = await store.load(mapping.mapping_id)
    assert checkpoints["shard-0"].sequence == "7"
