"""Plugin families by type name: event sources, function backends, on-failure destinations,
checkpoint stores.

Each plugin is a settings model (pydantic, on `esm.settings`) and a factory, registered here
once. The configuration builds its unions and checks from these tables and the daemon builds
through them, so neither names a plugin type.

Entries name their model and factory as "module:attribute" strings, loaded on first use: the
configuration imports every settings module (they are small), but a backend's implementation
(aiohttp, botocore, subprocess machinery) is imported only when a function uses it. Backends
from other packages come from the entry-point group `esm.backends` (see `discover_backend`).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel

from esm.errors import ConfigError
from esm.protocols import CheckpointStore, Destination, FunctionBackend, QueueReader, StreamAPI

if TYPE_CHECKING:
    from esm.metrics import Metrics
    from esm.settings import FunctionSettings, SourceSettings, StateSettings

__all__ = [
    "BACKEND_ENTRY_POINTS",
    "CHECKPOINT_STORES",
    "DEFAULT_CHECKPOINT_STORE",
    "DESTINATIONS",
    "FUNCTION_BACKENDS",
    "PLAIN_FACTORY_TYPE",
    "SOURCES",
    "SOURCE_ENTRY_POINTS",
    "BackendContext",
    "BackendFactory",
    "CheckpointStoreFactory",
    "DestinationContext",
    "DestinationFactory",
    "Family",
    "Plugin",
    "QueueSource",
    "SourceContext",
    "SourceFactory",
    "StartableBackend",
    "StoreContext",
    "StreamSource",
    "UnknownPlugin",
    "as_plain_factory_function",
    "backend_entry_points",
    "build_backend",
    "build_checkpoint_store",
    "build_destination",
    "build_source",
    "discover_backend",
    "discover_source",
    "source_entry_points",
]

BACKEND_ENTRY_POINTS = "esm.backends"
"""The entry-point group other packages register function backends under."""
SOURCE_ENTRY_POINTS = "esm.sources"
"""The entry-point group other packages register event sources under (by ARN service)."""

AwsClients = Callable[[str, str], Awaitable[Any]]
"""An open AWS client for (service, region); whoever provides it closes it."""


@dataclass(frozen=True)
class BackendContext:
    """What a backend factory gets besides its settings."""

    name: str
    """The function's key under `functions`."""
    region: str
    """The region of the first mapping that uses the function."""
    aws_client: AwsClients
    metrics: Metrics
    backend: Callable[[str], Awaitable[FunctionBackend]]
    """The backend of another function of the file (for functions that dispatch)."""


@dataclass(frozen=True)
class DestinationContext:
    """What a destination factory gets besides the destination's ARN."""

    mapping_id: str
    region: str
    """The mapping's region: for ARNs that name none (S3 buckets)."""
    aws_client: AwsClients


@dataclass(frozen=True)
class SourceContext:
    """What a source factory gets besides the source (its parsed EventSourceArn)."""

    mapping: str
    """The mapping's name, for logs and metrics."""
    aws_client: AwsClients
    metrics: Metrics
    identity_arn: str
    """The role esm acts as (a Kinesis event's invokeIdentityArn)."""
    poll_interval: float
    """`polling.interval_seconds`: how long a stream shard waits after an empty read."""
    records_limit: int
    """`polling.records_limit`: the most records one read asks for."""
    extend_visibility: bool
    """`sqs.extend_visibility`: keep a queue's in-flight messages invisible while invoking."""
    retry_delay: Callable[[int], float]
    """The delay before retry N of a failed call (esm's backoff)."""
    on_close: Callable[[Callable[[], Awaitable[None]]], None]
    """Register a coroutine function to run when the mapping's resources are closed."""
    kpl_deaggregate: bool = False
    """The mapping's `kpl_deaggregate`: split KPL containers into their user records."""


@dataclass(frozen=True)
class StreamSource:
    """A source read shard by shard, with checkpoints (the stream engine runs it)."""

    api: StreamAPI
    poll_interval: float
    """The wait after a read that returned nothing."""
    records_limit: int
    busy_poll_interval: float | None = None
    """The wait after a read that returned records; None for the engine's least."""


@dataclass(frozen=True)
class QueueSource:
    """A source of messages that are deleted once processed (the queue engine runs it)."""

    open_reader: Callable[[], QueueReader]
    """A fresh reader: the engine of a mapping restarted after a failure gets a new one."""


SourceFactory = Callable[[SourceContext, Any], Awaitable[StreamSource | QueueSource]]


@runtime_checkable
class StartableBackend(Protocol):
    """A backend that must be running before its first invocation (it listens for clients
    that connect as soon as they start). The daemon starts it; `esm validate` does not."""

    async def start(self) -> None: ...


BackendFactory = Callable[[BackendContext, Any], Awaitable[FunctionBackend]]
DestinationFactory = Callable[[DestinationContext, Any], Awaitable[Destination]]


@dataclass(frozen=True)
class StoreContext:
    """What a checkpoint store factory gets besides its settings."""

    region: str
    """`aws.region`: for a store in AWS that names no region of its own."""
    aws_client: AwsClients
    metrics: Metrics


CheckpointStoreFactory = Callable[[Any, StoreContext | None], CheckpointStore]
"""Builds a store from its settings; the context is None where no AWS is at hand (a store
opened by a command on its own), and a store that needs AWS says so then."""

F = TypeVar("F")


class UnknownPlugin(ConfigError):
    """A type name no plugin of the family is registered under."""


def _load(path: str) -> Any:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Plugin(Generic[F]):
    """One plugin: the name the configuration gives it, its settings model and its factory,
    each either the object itself or "module:attribute" to import when first needed."""

    name: str
    settings: str | type[BaseModel]
    factory: str | F
    summary: str = ""
    """What it is, in a few words (the configuration reference's list of types)."""
    written: bool = True
    """Whether a configuration names it; False for a type reached through other names."""

    def settings_model(self) -> type[BaseModel]:
        model = _load(self.settings) if isinstance(self.settings, str) else self.settings
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"plugin {self.name!r}: settings {self.settings!r} is not a model")
        return model

    def load_factory(self) -> F:
        if isinstance(self.factory, str):
            loaded: F = _load(self.factory)
            return loaded
        return self.factory


class Family(Generic[F]):
    """The plugins of one kind, by name, in registration order (the order messages list)."""

    def __init__(self, kind: str, plugins: Iterable[Plugin[F]]) -> None:
        self.kind = kind
        """What a name of this family is, in messages: "type", "backend"."""
        self._plugins: dict[str, Plugin[F]] = {}
        for plugin in plugins:
            self.register(plugin)
        self.built_in = self.names()
        """The plugins esm itself ships (docs/configuration.md documents them)."""

    def names(self) -> tuple[str, ...]:
        return tuple(self._plugins)

    def written_names(self) -> tuple[str, ...]:
        """The names a configuration may write, in registration order."""
        return tuple(name for name, plugin in self._plugins.items() if plugin.written)

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    def get(self, name: str) -> Plugin[F]:
        """:raises UnknownPlugin: naming the known names."""
        try:
            return self._plugins[name]
        except KeyError:
            raise UnknownPlugin([self.unknown(name)]) from None

    def unknown(self, name: object, known: Sequence[str] | None = None) -> str:
        """The problem of a name that is not registered: what the known ones are (by default
        the names a configuration may write)."""
        from esm.settings import show

        listing = ", ".join(self.written_names() if known is None else known)
        return f"unknown {self.kind} {show(name)}: must be one of {listing}"

    def fingerprint(self) -> tuple[tuple[str, str | type[BaseModel]], ...]:
        """The names and settings registered now: models built from the family are built
        again when it changes (and reused when it changes back)."""
        return tuple((plugin.name, plugin.settings) for plugin in self._plugins.values())

    def plugins(self) -> tuple[Plugin[F], ...]:
        return tuple(self._plugins.values())

    def settings_models(self) -> list[type[BaseModel]]:
        return [plugin.settings_model() for plugin in self._plugins.values()]

    def register(self, plugin: Plugin[F]) -> None:
        """Add a plugin; a name is registered once (replacing a built-in is refused, so a
        configuration means the same whatever else is installed)."""
        if plugin.name in self._plugins:
            raise ValueError(f"{self.kind} {plugin.name!r} is already registered")
        self._plugins[plugin.name] = plugin

    def unregister(self, name: str) -> None:
        del self._plugins[name]

    @contextlib.contextmanager
    def registered(self, plugin: Plugin[F]) -> Iterator[Plugin[F]]:
        """`plugin` registered for the duration of a `with` block (tests)."""
        self.register(plugin)
        try:
            yield plugin
        finally:
            self.unregister(plugin.name)


# --------------------------------------------------------------------------- built-ins

PLAIN_FACTORY_TYPE = "plugin"
"""The registered type of functions whose backend is a plain-factory entry point."""


SOURCES: Family[SourceFactory] = Family(
    "event source service",
    [
        Plugin(
            "kinesis",
            "esm.sources.plugins:KinesisSource",
            "esm.sources.plugins:open_kinesis",
            "a Kinesis stream, or a stream consumer for enhanced fan-out",
        ),
        Plugin(
            "dynamodb",
            "esm.sources.plugins:DynamoDBSource",
            "esm.sources.plugins:open_dynamodb",
            "a DynamoDB table's stream",
        ),
        Plugin(
            "sqs",
            "esm.sources.plugins:SqsSource",
            "esm.sources.plugins:open_sqs",
            "an SQS standard or FIFO queue",
        ),
    ],
)
"""Event sources by the service of their EventSourceArn."""

FUNCTION_BACKENDS: Family[BackendFactory] = Family(
    "type",
    [
        Plugin(
            "http",
            "esm.backends.http_plugin:HttpFunctionConfig",
            "esm.backends.http_plugin:create",
            "an HTTP endpoint",
        ),
        Plugin(
            "python",
            "esm.backends.python_plugin:PythonFunctionConfig",
            "esm.backends.python_plugin:create",
            "a Python handler in esm's process",
        ),
        Plugin(
            "command",
            "esm.backends.command_plugin:CommandFunctionConfig",
            "esm.backends.command_plugin:create",
            "a command in any language, per batch or as persistent workers",
        ),
        Plugin(
            "lambda",
            "esm.backends.lambda_plugin:LambdaFunctionConfig",
            "esm.backends.lambda_plugin:create",
            "a Lambda function (or anything speaking the Invoke API)",
        ),
        Plugin(
            "runtime",
            "esm.backends.runtime_plugin:RuntimeFunctionConfig",
            "esm.backends.runtime_plugin:create",
            "an unmodified Lambda runtime pulling from esm's Lambda Runtime API",
        ),
        Plugin(
            "weighted",
            "esm.backends.weighted_plugin:WeightedFunctionConfig",
            "esm.backends.weighted_plugin:create",
            "one of several functions, chosen by weight",
        ),
        Plugin(
            PLAIN_FACTORY_TYPE,
            "esm.backends.plugins:PluginFunctionConfig",
            "esm.backends.plugins:create",
            "a backend from another package, by its entry point's name (`options:` holds "
            "its settings)",
            written=False,
        ),
    ],
)
"""Function backends by `functions.NAME.type`."""

DESTINATIONS: Family[DestinationFactory] = Family(
    "destination service",
    [
        Plugin(
            "sqs",
            "esm.destinations.plugins:SqsDestinationConfig",
            "esm.destinations.plugins:create_sqs",
            "an SQS standard queue",
        ),
        Plugin(
            "sns",
            "esm.destinations.plugins:SnsDestinationConfig",
            "esm.destinations.plugins:create_sns",
            "an SNS standard topic",
        ),
        Plugin(
            "s3",
            "esm.destinations.plugins:S3DestinationConfig",
            "esm.destinations.plugins:create_s3",
            "an S3 bucket",
        ),
    ],
)
"""On-failure destinations by the service of their ARN."""

CHECKPOINT_STORES: Family[CheckpointStoreFactory] = Family(
    "backend",
    [
        Plugin(
            "sqlite",
            "esm.checkpoints.plugins:SqliteStateConfig",
            "esm.checkpoints.plugins:create_sqlite",
            "a SQLite file",
        ),
        Plugin(
            "memory",
            "esm.checkpoints.plugins:MemoryStateConfig",
            "esm.checkpoints.plugins:create_memory",
            "memory: forgotten on exit (tests and demos)",
        ),
        Plugin(
            "dynamodb",
            "esm.checkpoints.plugins:DynamoDBStateConfig",
            "esm.checkpoints.plugins:create_dynamodb",
            "a DynamoDB lease table (KCL's format), shared by several esm processes",
        ),
    ],
)
"""Checkpoint stores by `state.backend`."""

DEFAULT_CHECKPOINT_STORE = "sqlite"
"""The `state.backend` of a file that names none."""


# --------------------------------------------------------------------------- building


async def build_source(
    context: SourceContext, source: SourceSettings
) -> StreamSource | QueueSource:
    """What reads `source` (a mapping's parsed EventSourceArn), by its kind."""
    return await SOURCES.get(source.kind).load_factory()(context, source)


async def build_backend(context: BackendContext, settings: FunctionSettings) -> FunctionBackend:
    """The backend of a function, by its settings' type."""
    factory = FUNCTION_BACKENDS.get(settings.type).load_factory()
    return await factory(context, settings)


async def build_destination(context: DestinationContext, arn: str) -> Destination:
    """The on-failure destination of `arn`, by its service."""
    # arn:PARTITION:SERVICE:...; the configuration has checked the ARN's form.
    plugin = DESTINATIONS.get(arn.split(":")[2] if arn.count(":") >= 5 else arn)
    settings = plugin.settings_model().model_validate({"arn": arn})
    return await plugin.load_factory()(context, settings)


def build_checkpoint_store(
    settings: StateSettings, context: StoreContext | None = None
) -> CheckpointStore:
    """The checkpoint store of the `state` section, by its backend."""
    return CHECKPOINT_STORES.get(settings.backend).load_factory()(settings, context)


# --------------------------------------------------------------------------- entry points


def backend_entry_points() -> dict[str, Any]:
    """Entry points registered under `esm.backends`, by name (not loaded)."""
    return {ep.name: ep for ep in entry_points(group=BACKEND_ENTRY_POINTS)}


def as_plain_factory_function(settings: dict[str, Any], entry_point: str) -> dict[str, Any]:
    """A function's settings whose `type` names a plain-factory entry point, as the settings
    of the type that runs such factories (esm.backends.plugins)."""
    return {**settings, "type": PLAIN_FACTORY_TYPE, "plugin": entry_point}


def discover_backend(name: str) -> bool:
    """Whether `name` is a registered function type, registering it first when an installed
    package's entry point of that name is a `Plugin` (settings model and factory).

    An entry point that is a plain factory (`create(name, options, *, timeout, memory_size)`)
    is not registered: such functions are `type: plugin` functions, their `options` checked
    by the factory itself. An entry point that does not load is left for that path too, which
    reports it with the function's name.
    """
    if name in FUNCTION_BACKENDS:
        return True
    found = backend_entry_points().get(name)
    if found is None:
        return False
    try:
        loaded = found.load()
    except Exception:  # noqa: BLE001 - plugin boundary: reported when the function is built
        return False
    if not isinstance(loaded, Plugin):
        return False
    if loaded.name != name:
        # The configuration's `type` is the entry point's name, and the settings' `type`
        # must say the same: a mismatch is reported when the function is built.
        return False
    FUNCTION_BACKENDS.register(loaded)
    return True


def source_entry_points() -> dict[str, Any]:
    """Entry points registered under `esm.sources`, by name (not loaded)."""
    return {ep.name: ep for ep in entry_points(group=SOURCE_ENTRY_POINTS)}


def discover_source(service: str) -> bool:
    """Whether `service` (an ARN's service) is a registered source, registering it first
    when an installed package's entry point of that name is a `Plugin` of that name.

    An entry point that does not load, or is not such a plugin, leaves the service unknown:
    the configuration then says that its ARN is not an event source.
    """
    if service in SOURCES:
        return True
    found = source_entry_points().get(service)
    if found is None:
        return False
    try:
        loaded = found.load()
    except Exception:  # noqa: BLE001 - plugin boundary: an unusable plugin is an unknown source
        return False
    if not isinstance(loaded, Plugin) or loaded.name != service:
        return False
    SOURCES.register(loaded)
    return True
