"""Configuration: YAML with ${VAR} expansion, validated into frozen pydantic models."""

from __future__ import annotations

import difflib
import functools
import math
import os
import re
import time
import types
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, cast, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from esm import registry
from esm.errors import ConfigError
from esm.filter import compile_filters
from esm.redact import redact
from esm.settings import (
    ACCOUNT as _ACCOUNT,
)
from esm.settings import (
    REGION as _REGION,
)
from esm.settings import (
    ConfigModel,
    DestinationSettings,
    FunctionSettings,
    SourceSettings,
    StateSettings,
    range_text,
    unit,
)
from esm.settings import (
    config_problem as _fail,
)
from esm.settings import (
    host_problem as _host_problem,
)
from esm.settings import (
    show as _show,
)
from esm.settings import (
    url_problem as _url_problem,
)
from esm.tracing import (
    EXPORTERS,
    Exporter,
    TracingSettings,
    exporter_from_environment,
    wanted_by_environment,
)

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_PROBLEMS",
    "AdminConfig",
    "AwsConfig",
    "DeliveryConfig",
    "EsmConfig",
    "FunctionConfig",
    "LogConfig",
    "MappingConfig",
    "MappingDestinationConfig",
    "MappingFilter",
    "MappingFilterCriteria",
    "MappingMetricsConfig",
    "MappingScalingConfig",
    "OnFailureDestination",
    "PollingConfig",
    "SourceArn",
    "SourceKind",
    "SqsConfig",
    "StartingPositionType",
    "StateConfig",
    "TracingConfig",
    "config_model",
    "describe_config",
    "load_config",
    "parse_config",
    "parse_source_arn",
]

SourceKind = str
"""A source's kind: the service of its ARN, as registered in `esm.registry.SOURCES`."""
SourceArn = SourceSettings
"""An EventSourceArn taken apart, by the model of its kind (`esm.sources.plugins`)."""
StartingPositionType = Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"]

AWS_SERVICES = ("kinesis", "dynamodb", "dynamodbstreams", "sqs", "sns", "s3", "lambda", "sts")

# Parameters of CreateEventSourceMapping that only Kafka, Amazon MQ or DocumentDB sources take.
_FOREIGN_PARAMETERS: dict[str, str] = {
    name: "applies only to Kafka/MQ/DocumentDB sources, not to Kinesis, DynamoDB or SQS"
    for name in (
        "Topics",
        "Queues",
        "SourceAccessConfigurations",
        "SelfManagedEventSource",
        "AmazonManagedKafkaEventSourceConfig",
        "SelfManagedKafkaEventSourceConfig",
        "DocumentDBEventSourceConfig",
        "LoggingConfig",
    )
}
_FOREIGN_PARAMETERS.update(
    {
        "ProvisionedPollerConfig": "provisioned mode (SQS pollers) is not supported yet",
        "KMSKeyArn": "is not applicable: esm keeps FilterCriteria in this file, "
        "there is nothing stored in AWS to encrypt",
        "OnSuccess": "is not supported for event source mappings: only OnFailure is",
        "FunctionArn": "is an alias of FunctionName: give one of them, not both",
    }
)

_ARN = re.compile(
    r"arn:(?P<partition>aws[a-zA-Z0-9-]*):(?P<service>[a-zA-Z0-9-]+):"
    r"(?P<region>[^:]*):(?P<account>[^:]*):(?P<resource>.+)"
)
_KCL_TABLE = re.compile(r"[a-zA-Z0-9_.-]{3,255}")
_FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
# A mapping's `name`: a Prometheus label value, a log field and an HTTP header value.
_MAPPING_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_LAMBDA_ARN = re.compile(
    r"arn:aws[a-zA-Z0-9-]*:lambda:(?P<region>[^:]+):(?P<account>\d{12}):function:"
    r"(?P<name>[a-zA-Z0-9_-]{1,64})(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]{1,128}))?"
)
# Fixed forever: mapping ids name checkpoints, so changing it would restart every stream.
_MAPPING_ID_NAMESPACE = uuid.UUID("8b0f4d52-6f0e-4a43-9d8e-3c1f5a7e2b90")


# The largest configuration read: what a Kubernetes ConfigMap or Secret can hold. Real ones
# are a few kilobytes, and YAML costs about a second per megabyte to parse.
MAX_CONFIG_BYTES = 1024 * 1024

# Problems described in full; beyond them, problems are only counted. A file with a million
# unknown keys must fail in seconds with a screenful, not minutes and a hundred megabytes.
MAX_PROBLEMS = 50


class _Problems:
    """The problems found so far: the first MAX_PROBLEMS as text, the others counted."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.omitted = 0

    def __len__(self) -> int:
        return len(self.lines) + self.omitted

    @property
    def full(self) -> bool:
        """No further problem will be shown: skip the work of describing it."""
        return len(self.lines) >= MAX_PROBLEMS

    def append(self, line: str) -> None:
        if self.full:
            self.omitted += 1
        else:
            self.lines.append(line)

    def extend(self, lines: list[str]) -> None:
        for line in lines:
            self.append(line)

    def error(self) -> ConfigError:
        return ConfigError(self.lines, self.omitted)


def _check_range(value: float, low: float, high: float, suffix: str = "") -> None:
    # For ranges that depend on other settings (the source kind); a fixed range is a Field's.
    if not low <= value <= high:
        raise _fail(f"{_show(value)} is out of range: must be between {low} and {high}{suffix}")


def _context(info: ValidationInfo) -> Mapping[str, Any]:
    return info.context if isinstance(info.context, Mapping) else {}


# --------------------------------------------------------------------------- ARNs


def _source_models() -> list[type[SourceSettings]]:
    return [
        cast(type[SourceSettings], plugin.settings_model()) for plugin in registry.SOURCES.plugins()
    ]


def _listing(items: list[str], last: str = "or") -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}"


def _source_kinds_text(engine: str | None = None) -> str:
    """The registered sources' titles, of one engine or all ("Kinesis and DynamoDB")."""
    return _listing(
        [model.title for model in _source_models() if engine in (None, model.engine)], "and"
    )


def parse_source_arn(arn: str) -> SourceArn:
    """Take an EventSourceArn apart; raises ValueError naming what is wrong."""
    parts = arn.split(":", 3)
    if len(parts) == 4 and parts[0] == "arn":
        registry.discover_source(parts[2])  # a source of an installed package, by its service
    return _parse_source_arn(arn, registry.SOURCES.fingerprint())


@functools.lru_cache(maxsize=256)
def _parse_source_arn(arn: str, sources: object) -> SourceArn:
    # `sources` (the registered kinds) is part of the key: a test may register one for a while.
    models = {model.kind: model for model in _source_models()}
    forms = _listing([model.arn_form for model in models.values()])
    match = _ARN.fullmatch(arn)
    if match is None:
        raise ValueError(f"{_show(arn)} is not an ARN: expected {forms}")
    service, region, account = match["service"], match["region"], match["account"]
    if service not in models:
        kinds = _listing([model.description for model in models.values()])
        raise ValueError(
            f"{_show(arn)} is a {service!r} ARN: an event source must be {kinds} ({forms})"
        )
    if not _REGION.fullmatch(region):
        raise ValueError(f"{_show(arn)} has no valid region (like us-east-1): {region!r}")
    if not _ACCOUNT.fullmatch(account):
        raise ValueError(f"{_show(arn)} has no valid account id (12 digits): {account!r}")
    return models[service].from_resource(
        arn, match["partition"], region, account, match["resource"]
    )


def _function_key(function_name: str) -> str:
    """The key into `functions` that a FunctionName (a name or a Lambda ARN) refers to."""
    if function_name.startswith("arn:"):
        found = _LAMBDA_ARN.fullmatch(function_name)
        if found is None:
            raise ValueError(
                f"{_show(function_name)} is not a Lambda function ARN: expected "
                "arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]"
            )
        return found["name"]
    if _FUNCTION_NAME.fullmatch(function_name) is None:
        raise ValueError(
            f"{_show(function_name)} is not a function name (1 to 64 letters, digits, - and _) "
            "or a Lambda function ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME)"
        )
    return function_name


def _destination_problem(arn: str) -> str | None:
    """Why `arn` cannot be an on-failure destination, or None when it can; each kind of
    destination (esm.registry.DESTINATIONS) says which ARNs of its service it takes."""
    models = {
        plugin.name: cast(type[DestinationSettings], plugin.settings_model())
        for plugin in registry.DESTINATIONS.plugins()
    }
    forms = [model.arn_form for model in models.values()]
    expected = "must be the ARN of " + ", ".join(forms[:-1]) + " or " + forms[-1]
    if len(arn) > 350:
        return f"{_show(arn)} is too long: at most 350 characters"
    match = _ARN.fullmatch(arn)
    if match is None or match["service"] not in models:
        return f"{_show(arn)} {expected}"
    model = models[match["service"]]
    return model.arn_problem(arn, match["region"], match["account"], match["resource"])


# --------------------------------------------------------------------------- sections


_Model = ConfigModel


class AwsConfig(_Model):
    """Where the AWS APIs are (region, and endpoints for LocalStack, moto or kinesalite)."""

    region: str = "us-east-1"
    endpoint_url: str | None = None
    endpoints: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _region_from_environment(cls, data: Any, info: ValidationInfo) -> Any:
        environ = _context(info).get("environ")
        if isinstance(data, dict) and "region" not in data and environ is not None:
            region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
            if region:
                return {**data, "region": region}
        return data

    @field_validator("region")
    @classmethod
    def _check_region(cls, value: str) -> str:
        if not _REGION.fullmatch(value):
            raise _fail(f"{_show(value)} is not an AWS region name (like us-east-1)")
        return value

    @field_validator("endpoint_url", mode="before")
    @classmethod
    def _empty_means_aws(cls, value: Any) -> Any:
        # `endpoint_url: ${AWS_ENDPOINT_URL:-}` must be able to say "AWS itself".
        return None if value == "" else value

    @field_validator("endpoint_url")
    @classmethod
    def _check_endpoint_url(cls, value: str | None) -> str | None:
        if value is not None and (problem := _url_problem(value)):
            raise _fail(problem)
        return value

    @field_validator("endpoints")
    @classmethod
    def _check_endpoints(cls, value: dict[str, str]) -> dict[str, str]:
        problems = []
        for service, url in value.items():
            if service not in AWS_SERVICES:
                problems.append(
                    f"unknown service {service!r}: must be one of {', '.join(AWS_SERVICES)}"
                )
            elif problem := _url_problem(url):
                problems.append(f"{service}: {problem}")
        if problems:
            raise _fail(*problems)
        return value

    def endpoint_for(self, service: str) -> str | None:
        """The endpoint URL to use for `service`, or None for AWS's own."""
        if service not in AWS_SERVICES:
            raise ValueError(f"unknown service {service!r}: one of {', '.join(AWS_SERVICES)}")
        return self.endpoints.get(service, self.endpoint_url)


def _state_backend(value: Any) -> Any:
    """`state` names its store by `backend` (sqlite when it names none); an unknown one is
    one problem naming the known ones, before the tagged union says it tersely."""
    if not isinstance(value, dict):
        return value
    backend = value.get("backend", registry.DEFAULT_CHECKPOINT_STORE)
    stores = registry.CHECKPOINT_STORES
    if backend not in stores.written_names():
        known = " or ".join(repr(name) for name in stores.written_names())
        raise _fail(f"must be {known}, got {_show(backend)}", at="backend")
    return {**value, "backend": backend}


def _default_state() -> StateSettings:
    return cast(StateSettings, _state_adapter().validate_python({}))


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit():
        raise ValueError(f"{_show(listen)} must be HOST:PORT (like 127.0.0.1:9464)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class AdminConfig(_Model):
    """The HTTP server for /metrics, /healthz, /readyz and /status."""

    listen: str = "127.0.0.1:9464"
    enabled: bool = True
    token: str | None = Field(
        None,
        min_length=16,
        description="Bearer token for the admin API's write operations (pause, resume); "
        "$ESM_ADMIN_TOKEN when unset. Without either they are refused.",
    )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        try:
            host, port = _split_listen(value)
        except ValueError as exc:
            raise _fail(str(exc)) from None
        if not host:
            raise _fail(f"{_show(value)} has no host (use 0.0.0.0 for every interface)")
        if problem := _host_problem(host):
            raise _fail(f"{_show(value)}: {problem}")
        if port > 65535:
            raise _fail(f"port {port} is out of range: must be between 0 and 65535")
        return value

    @property
    def host(self) -> str:
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        """0 means: let the system pick a free port."""
        return _split_listen(self.listen)[1]


class LogConfig(_Model):
    format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="auto: console lines when stderr is a terminal, JSON lines otherwise.",
    )
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="debug adds one line per invoked batch."
    )
    summary_interval_seconds: float = Field(
        60.0,
        ge=0,
        le=86400,
        description="At info level, a line per mapping this often: records, batches, errors "
        "and lag since the last one; 0 turns it off.",
    )

    @field_validator("level", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class CircuitBreakerConfig(_Model):
    """esm's own circuit breaker (Lambda has none): polling stops after `failures` failed
    invocations in a row, and one invocation probes after `cool_down_seconds`."""

    failures: int = Field(
        0,
        ge=0,
        le=10_000,
        description="Consecutive failed invocations (errors, timeouts, throttles, "
        "unreachable) that open the breaker; 0 turns it off (the default).",
    )
    cool_down_seconds: float = Field(
        60.0,
        gt=0,
        le=86_400,
        description="How long an open breaker waits before one invocation probes the function.",
    )


class DeliveryConfig(_Model):
    """esm's own pacing of retries (AWS publishes no numbers for mappings)."""

    backoff_initial_seconds: float = Field(
        1.0,
        gt=0,
        le=300,
        description="The first pause after a throttle or system error; it doubles per retry.",
    )
    backoff_max_seconds: float = Field(
        300.0, description="The longest pause; at least backoff_initial_seconds."
    )
    shutdown_grace_seconds: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="How long in-flight batches may finish after SIGTERM.",
    )
    circuit_breaker: CircuitBreakerConfig = Field(
        default_factory=CircuitBreakerConfig,
        description="Every mapping's circuit breaker, unless the mapping sets its own; off "
        "by default.",
    )

    @field_validator("backoff_max_seconds")
    @classmethod
    def _check_max(cls, value: float, info: ValidationInfo) -> float:
        initial = info.data.get("backoff_initial_seconds")
        if initial is not None and value < initial:
            raise _fail(
                f"{_show(value)} is out of range: must be at least "
                f"backoff_initial_seconds ({_show(initial)})"
            )
        return value


class PollingConfig(_Model):
    interval_seconds: float = Field(
        1.0,
        ge=0.2,
        le=60,
        # Kinesis allows 5 GetRecords per second per shard, shared by every consumer.
        description="Pause between GetRecords calls on an idle shard.",
    )
    records_limit: int = Field(
        10000, ge=1, le=10000, description="The Limit of each GetRecords call."
    )
    shard_discovery_interval_seconds: float = Field(
        10.0,
        # ListShards allows 100 calls per second per account; once a second is plenty.
        ge=0.1,
        le=3600,
        description="Pause between ListShards calls that find new shards after a split or merge.",
    )


class SqsConfig(_Model):
    """How esm reads SQS queues, beyond what Lambda's mapping parameters say."""

    wait_time_seconds: int = Field(
        20,
        ge=0,
        le=20,
        description="Long polling: how long each ReceiveMessage waits for messages.",
        json_schema_extra=unit("seconds"),
    )
    extend_visibility: bool = Field(
        True,
        description="Extend a batch's visibility while the function processes it, so that a "
        "function slower than the queue's visibility timeout never causes the same messages "
        "to be delivered twice.",
    )
    failure_visibility_timeout_seconds: int | None = Field(
        None,
        # SQS's own bounds for a visibility timeout: up to 12 hours.
        ge=0,
        le=43200,
        description="Visibility given to messages whose processing failed, spacing their "
        "retries; unset, they reappear when their current visibility ends (the queue's "
        "timeout, as on Lambda).",
        json_schema_extra=unit("seconds"),
    )
    release_on_shutdown: bool = Field(
        True,
        description="At shutdown, make messages received but not yet delivered visible again "
        "at once.",
    )
    backlog_sample_seconds: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="Seconds between samples of the queue's ApproximateNumberOfMessages (the "
        "backlog gauge).",
        json_schema_extra=unit("seconds"),
    )


class TracingConfig(_Model):
    """OpenTelemetry traces (the `tracing` extra: pip install 'esm[tracing]'): a span per
    batch, and trace context sent to the function. What is left unset here is read from the
    OTEL_* environment variables, as the OpenTelemetry SDK reads them."""

    enabled: bool = Field(
        False,
        description="Unset: on when OTEL_TRACES_EXPORTER names an exporter or "
        "OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, unless "
        "OTEL_SDK_DISABLED is true.",
    )
    exporter: Exporter = Field(
        "otlp",
        description="Where spans go: otlp (OTLP over HTTP), console (stdout) or none (spans "
        "are made and trace context still reaches the function, nothing is exported). "
        "Unset: OTEL_TRACES_EXPORTER, else otlp.",
    )
    endpoint: str | None = Field(
        None,
        description="The OTLP/HTTP collector, such as http://otel-collector:4318 (/v1/traces "
        "is added to a URL without a path). Unset: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "
        "OTEL_EXPORTER_OTLP_ENDPOINT, else http://localhost:4318.",
    )
    service_name: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="The service.name of esm's spans. Unset: OTEL_SERVICE_NAME, else esm.",
    )
    sample_ratio: float | None = Field(
        None,
        ge=0,
        le=1,
        description="The share of batches traced (a trace id ratio). Unset: "
        "OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, else every batch.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_environment(cls, data: Any, info: ValidationInfo) -> Any:
        # Only what the file leaves unset; the SDK reads the other OTEL_* variables itself.
        environ = _context(info).get("environ")
        if not isinstance(data, dict) or environ is None:
            return data
        data = {**data}
        if "enabled" not in data:
            data["enabled"] = wanted_by_environment(environ)
        if "exporter" not in data and data["enabled"] is True:
            named = exporter_from_environment(environ)
            if named is not None and named not in EXPORTERS:
                raise _fail(
                    f"OTEL_TRACES_EXPORTER={named!r}: esm exports to "
                    f"{', '.join(EXPORTERS)}: set tracing.exporter or OTEL_TRACES_EXPORTER"
                )
            if named is not None:
                data["exporter"] = named
        if data["enabled"] is True and data.get("exporter", "otlp") == "otlp":
            protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
                "OTEL_EXPORTER_OTLP_PROTOCOL", ""
            )
            if protocol.strip().lower() == "grpc":
                # Sent over HTTP to a gRPC port, every export would fail.
                raise _fail(
                    "OTEL_EXPORTER_OTLP_PROTOCOL=grpc: esm sends OTLP over HTTP "
                    "(http/protobuf, port 4318): unset it or set it to http/protobuf"
                )
        return data

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is not None and (problem := _url_problem(value)):
            raise _fail(problem)
        return value

    def settings(self) -> TracingSettings:
        return TracingSettings(
            exporter=self.exporter,
            endpoint=self.endpoint,
            service_name=self.service_name,
            sample_ratio=self.sample_ratio,
        )

    def summary(self) -> str:
        """What `esm validate` says of tracing."""
        if not self.enabled:
            return "off"
        endpoint = self.endpoint or "OTEL_EXPORTER_OTLP_*, else http://localhost:4318"
        where = f"otlp to {endpoint}" if self.exporter == "otlp" else self.exporter
        ratio = "" if self.sample_ratio is None else f", sample ratio {self.sample_ratio:g}"
        return f"on, {where}{ratio}"


# --------------------------------------------------------------------------- functions


def _check_function_type(value: Any) -> Any:
    """Say plainly what is wrong with `type` before the tagged union does, tersely; a type
    that names a plain-factory backend plugin becomes a `plugin` function with that plugin."""
    family = registry.FUNCTION_BACKENDS
    types_ = family.written_names()
    if not isinstance(value, dict):
        raise _fail(f"must be a mapping with a type ({', '.join(types_)})")
    kind = value.get("type")
    if kind is None:
        raise _fail(f"type is required: one of {', '.join(types_)}")
    if kind in types_:
        return value
    plugins = registry.backend_entry_points()
    if isinstance(kind, str) and kind in plugins:
        return registry.as_plain_factory_function(value, kind)
    # esm's own types in their order, then every other one by name, whether or not it has
    # been loaded yet: the message is the same whatever ran before.
    built_in = [name for name in family.built_in if name in types_]
    others = sorted({*plugins, *types_} - set(built_in))
    raise _fail(family.unknown(kind, known=[*built_in, *others]))


def _check_function_key(name: str) -> str:
    if _FUNCTION_NAME.fullmatch(name) is None:
        raise _fail(
            f"function name {_show(name)} is not valid: 1 to 64 letters, digits, - and _ "
            "(a Lambda function name)"
        )
    return name


# --------------------------------------------------------------------------- mappings


class OnFailureDestination(_Model):
    Destination: str = ""
    """An SQS queue, SNS topic or S3 bucket ARN; empty means no destination."""

    @field_validator("Destination")
    @classmethod
    def _check_destination(cls, value: str) -> str:
        if value and (problem := _destination_problem(value)):
            raise _fail(problem)
        return value


class MappingDestinationConfig(_Model):
    OnFailure: OnFailureDestination | None = None

    @property
    def on_failure_arn(self) -> str | None:
        return (self.OnFailure.Destination or None) if self.OnFailure else None


class MappingFilter(_Model):
    Pattern: str


class MappingFilterCriteria(_Model):
    # The patterns are compiled, and so checked, by the mapping that knows the source.
    Filters: list[MappingFilter] = Field(default_factory=list)


class MappingScalingConfig(_Model):
    MaximumConcurrency: int | None = None

    @field_validator("MaximumConcurrency")
    @classmethod
    def _check_concurrency(cls, value: int | None) -> int | None:
        if value is not None:
            _check_range(value, 2, 1000)
        return value


class MappingMetricsConfig(_Model):
    Metrics: list[str] = Field(default_factory=list)

    @field_validator("Metrics")
    @classmethod
    def _check_metrics(cls, value: list[str]) -> list[str]:
        # ErrorCount and KafkaMetrics exist on AWS but only for Kafka sources.
        bad = [name for name in value if name != "EventCount"]
        if bad:
            raise _fail(
                f"{_show(bad)} not allowed: Kinesis, DynamoDB and SQS mappings take only "
                '["EventCount"] (esm always exports event counts)'
            )
        if len(value) > 3:
            raise _fail(f"{len(value)} entries: at most 3 are allowed")
        return value


def _source_in(info: ValidationInfo) -> SourceArn | None:
    """The mapping's parsed EventSourceArn, when it was valid."""
    arn = info.data.get("EventSourceArn")
    return parse_source_arn(arn) if isinstance(arn, str) else None


def _streams_only_text(source: SourceArn) -> str:
    return (
        f"applies only to {_source_kinds_text('stream')} stream sources, "
        f"not to {source.description}"
    )


def _streams_only(info: ValidationInfo) -> None:
    source = _source_in(info)
    if source is not None and source.engine != "stream":
        raise _fail(f"{_streams_only_text(source)}: remove it")


class MappingConfig(_Model):
    """One event source mapping, with AWS CreateEventSourceMapping's parameter names and rules."""

    # Field order matters: later validators look at earlier fields through `info.data`.
    EventSourceArn: str
    FunctionName: str = Field(validation_alias=AliasChoices("FunctionName", "FunctionArn"))
    Enabled: bool = True
    BatchSize: int | None = None
    MaximumBatchingWindowInSeconds: int = Field(default=0, validate_default=True)
    StartingPosition: str | None = Field(default=None, validate_default=True)
    StartingPositionTimestamp: float | None = Field(default=None, validate_default=True)
    ParallelizationFactor: int = 1
    BisectBatchOnFunctionError: bool = False
    MaximumRetryAttempts: int = -1
    MaximumRecordAgeInSeconds: int = -1
    DestinationConfig: MappingDestinationConfig | None = None
    FunctionResponseTypes: list[str] = Field(default_factory=list)
    TumblingWindowInSeconds: int = 0
    FilterCriteria: MappingFilterCriteria | None = None
    ScalingConfig: MappingScalingConfig | None = None
    MetricsConfig: MappingMetricsConfig | None = None
    Tags: dict[str, str] = Field(default_factory=dict)
    name: str | None = None
    """esm's own key: the mapping's name in metrics, logs and the X-Esm-Mapping header."""
    kcl_lease_table: str | None = None
    """esm's own key: the lease table of a Kinesis Client Library application whose
    checkpoints this mapping continues from (state.backend dynamodb)."""
    circuit_breaker: CircuitBreakerConfig | None = None
    """esm's own key: this mapping's circuit breaker, in place of delivery.circuit_breaker."""
    kpl_deaggregate: bool = False
    """esm's own key (Lambda has none): split records the Kinesis Producer Library
    aggregated into their user records, each its own event record (needs `esm[kpl]`)."""

    @field_validator("EventSourceArn")
    @classmethod
    def _check_source(cls, value: str) -> str:
        try:
            parse_source_arn(value)
        except ValueError as exc:
            raise _fail(str(exc)) from None
        return value

    @field_validator("FunctionName")
    @classmethod
    def _check_function(cls, value: str, info: ValidationInfo) -> str:
        try:
            key = _function_key(value)
        except ValueError as exc:
            raise _fail(str(exc)) from None
        defined = _context(info).get("functions")
        if defined is not None and key not in defined:
            listing = ", ".join(sorted(defined)) or "none"
            via = f" (the function {key!r} of that ARN)" if key != value else ""
            raise _fail(f"{_show(value)}{via} is not defined under functions (defined: {listing})")
        return value

    @field_validator("BatchSize")
    @classmethod
    def _check_batch_size(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None:
            return value
        source = _source_in(info)
        if source is not None and (problem := source.batch_size_problem(value)):
            raise _fail(problem)
        _check_range(value, 1, 10000)
        return value

    @field_validator("MaximumBatchingWindowInSeconds")
    @classmethod
    def _check_window(cls, value: int, info: ValidationInfo) -> int:
        _check_range(value, 0, 300, " seconds")
        source = _source_in(info)
        if source is not None and (
            problem := source.window_problem(value, info.data.get("BatchSize"))
        ):
            raise _fail(problem)
        return value

    @field_validator("StartingPosition")
    @classmethod
    def _check_starting_position(cls, value: str | None, info: ValidationInfo) -> str | None:
        source = _source_in(info)
        if source is None:
            return value
        allowed = source.starting_positions
        if not allowed:
            if value is not None:
                takers = _listing(
                    [model.title for model in _source_models() if model.starting_positions],
                    "and",
                )
                raise _fail(
                    f"{_show(value)} not allowed: StartingPosition applies only to {takers} "
                    f"streams, not to {source.description}"
                )
            return value
        if value is None:
            raise _fail(f"is required for {source.describe()}: one of {', '.join(allowed)}")
        if value not in allowed:
            raise _fail(
                f"{_show(value)} is not valid for {source.describe()}: "
                f"must be one of {', '.join(allowed)}"
            )
        return value

    @field_validator("StartingPositionTimestamp", mode="before")
    @classmethod
    def _timestamp_to_epoch(cls, value: Any) -> Any:
        # YAML turns an unquoted ISO timestamp into a datetime (or a date) already.
        if isinstance(value, datetime):
            moment = value if value.tzinfo else value.replace(tzinfo=UTC)
            return moment.timestamp()
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
        if isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value.strip())
            except ValueError:
                raise _fail(
                    f"{_show(value)} is neither epoch seconds nor an ISO-8601 timestamp "
                    "(like 2024-05-01T12:00:00Z)"
                ) from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.timestamp()
        return value

    @field_validator("StartingPositionTimestamp")
    @classmethod
    def _check_timestamp(cls, value: float | None, info: ValidationInfo) -> float | None:
        source = _source_in(info)
        if value is not None and source is not None and not source.takes_timestamp:
            takers = _listing(
                [
                    model.title
                    for model in _source_models()
                    if "AT_TIMESTAMP" in model.starting_positions
                ],
                "and",
            )
            raise _fail(f"applies only to {takers} streams, not to {source.describe()}: remove it")
        if "StartingPosition" not in info.data:
            return value
        position = info.data["StartingPosition"]
        if value is None:
            if position == "AT_TIMESTAMP":
                raise _fail("is required when StartingPosition is AT_TIMESTAMP")
            return value
        if position != "AT_TIMESTAMP":
            raise _fail(
                f"{_show(value)} not allowed: StartingPositionTimestamp is used only when "
                f"StartingPosition is AT_TIMESTAMP (it is {position})"
            )
        now = _context(info).get("now") or time.time()
        if not math.isfinite(value):
            raise _fail(f"{_show(value)} is not a time: give epoch seconds or an ISO 8601 time")
        if value < 0:
            raise _fail(f"{_show(value)} is out of range: must not be before 1970")
        if value > now:
            try:
                when = f" ({datetime.fromtimestamp(value, UTC).isoformat()})"
            except (OverflowError, ValueError, OSError):
                when = ""  # past year 9999
            raise _fail(f"{_show(value)}{when} is in the future: it must be a past time")
        return value

    @field_validator("ParallelizationFactor")
    @classmethod
    def _check_parallelization(cls, value: int, info: ValidationInfo) -> int:
        _streams_only(info)
        _check_range(value, 1, 10)
        return value

    @field_validator("BisectBatchOnFunctionError")
    @classmethod
    def _check_bisect(cls, value: bool, info: ValidationInfo) -> bool:
        _streams_only(info)
        return value

    @field_validator("MaximumRetryAttempts")
    @classmethod
    def _check_retries(cls, value: int, info: ValidationInfo) -> int:
        _streams_only(info)
        if not -1 <= value <= 10000:
            raise _fail(
                f"{_show(value)} is out of range: must be between -1 and 10000 "
                "(-1 retries until the record expires)"
            )
        return value

    @field_validator("MaximumRecordAgeInSeconds")
    @classmethod
    def _check_record_age(cls, value: int, info: ValidationInfo) -> int:
        _streams_only(info)
        if value != -1 and not 60 <= value <= 604800:
            raise _fail(
                f"{_show(value)} is out of range: must be -1 (no limit) "
                "or between 60 and 604800 seconds"
            )
        return value

    @field_validator("DestinationConfig")
    @classmethod
    def _check_destination(
        cls, value: MappingDestinationConfig | None, info: ValidationInfo
    ) -> MappingDestinationConfig | None:
        source = _source_in(info)
        if value is not None and source is not None and source.engine != "stream":
            raise _fail(f"{_streams_only_text(source)}: {source.failures_note}")
        return value

    @field_validator("FunctionResponseTypes")
    @classmethod
    def _check_response_types(cls, value: list[str]) -> list[str]:
        if value and value != ["ReportBatchItemFailures"]:
            raise _fail(f'{_show(value)} not allowed: must be [] or ["ReportBatchItemFailures"]')
        return value

    @field_validator("TumblingWindowInSeconds")
    @classmethod
    def _check_tumbling(cls, value: int, info: ValidationInfo) -> int:
        _streams_only(info)
        _check_range(value, 0, 900, " seconds (0 = no window)")
        return value

    @field_validator("FilterCriteria")
    @classmethod
    def _check_filters(
        cls, value: MappingFilterCriteria | None, info: ValidationInfo
    ) -> MappingFilterCriteria | None:
        source = _source_in(info)
        if value is None or not value.Filters or source is None:
            return value
        # The engine that will run the patterns checks them, so what is accepted here is
        # exactly what runs.
        try:
            compile_filters([f.Pattern for f in value.Filters], source=source.record_form)
        except ConfigError as error:
            raise _fail(*error.problems) from None
        return value

    @field_validator("ScalingConfig")
    @classmethod
    def _check_scaling(
        cls, value: MappingScalingConfig | None, info: ValidationInfo
    ) -> MappingScalingConfig | None:
        source = _source_in(info)
        if value is not None and source is not None and source.engine != "queue":
            raise _fail(
                f"applies only to {_source_kinds_text('queue')} sources, "
                f"not to {source.describe()}: remove it"
            )
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and _MAPPING_NAME.fullmatch(value) is None:
            raise _fail(
                f"{_show(value)} is not a mapping name: 1 to 128 letters, digits, '.', '_' "
                "and '-', starting with a letter or digit"
            )
        return value

    @field_validator("kcl_lease_table")
    @classmethod
    def _check_kcl_table(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        _streams_only(info)
        if _KCL_TABLE.fullmatch(value) is None:
            raise _fail(
                f"{_show(value)} is not a DynamoDB table name: 3 to 255 letters, digits, "
                "'_', '-' and '.'"
            )
        return value

    @field_validator("kpl_deaggregate")
    @classmethod
    def _check_kpl(cls, value: bool, info: ValidationInfo) -> bool:
        source = _source_in(info)
        if value and source is not None and source.record_form != "kinesis":
            raise _fail(
                f"applies only to Kinesis streams (KPL writes to Kinesis), not to "
                f"{source.description}: remove it"
            )
        if value:
            try:
                import aws_kinesis_agg  # noqa: F401
            except ImportError:
                raise _fail("needs the aws-kinesis-agg package: pip install 'esm[kpl]'") from None
        return value

    # Resolved values the daemon uses.

    @property
    def source(self) -> SourceArn:
        return parse_source_arn(self.EventSourceArn)

    @property
    def source_kind(self) -> SourceKind:
        return self.source.kind

    @property
    def region(self) -> str:
        return self.source.region

    @property
    def account(self) -> str:
        return self.source.account

    @property
    def stream_name(self) -> str:
        """The name in the ARN: the Kinesis stream (DynamoDB: the table; SQS: the queue)."""
        return self.source.name

    @property
    def function_name(self) -> str:
        """The key into `EsmConfig.functions` (the NAME of a Lambda function ARN)."""
        return _function_key(self.FunctionName)

    @property
    def mapping_id(self) -> str:
        """Stable across restarts and config edits that keep the function and the source."""
        return str(
            uuid.uuid5(_MAPPING_ID_NAMESPACE, f"{self.function_name}\n{self.EventSourceArn}")
        )

    @property
    def mapping_name(self) -> str:
        """The mapping's readable name, its `mapping` label in metrics and logs: `name`, or
        FUNCTION-SOURCE (the function's key and the stream, table or queue name) when none
        is given. Checkpoints are keyed by `mapping_id`, so renaming keeps them."""
        if self.name is not None:
            return self.name
        return f"{self.function_name}-{self.source.name}"

    @property
    def batch_size(self) -> int:
        return self.BatchSize if self.BatchSize is not None else self.source.default_batch_size

    @property
    def batching_window_seconds(self) -> int:
        return self.MaximumBatchingWindowInSeconds

    @property
    def starting_position(self) -> StartingPositionType | None:
        """None for SQS, which has no starting position."""
        # Validation allowed only the source's positions, so the string is one of the literals.
        return cast(StartingPositionType | None, self.StartingPosition)

    @property
    def starting_position_timestamp(self) -> float | None:
        return self.StartingPositionTimestamp

    @property
    def on_failure_destination(self) -> str | None:
        return self.DestinationConfig.on_failure_arn if self.DestinationConfig else None

    @property
    def filter_patterns(self) -> list[str]:
        return [f.Pattern for f in self.FilterCriteria.Filters] if self.FilterCriteria else []

    def label(self) -> str:
        return f"{self.FunctionName} <- {self.EventSourceArn}"


# --------------------------------------------------------------------------- the whole file

_SECTIONS = ("aws", "state", "admin", "log", "delivery", "polling", "sqs", "tracing")


def _tagged_union(models: list[type[BaseModel]], tag: str) -> Any:
    if len(models) == 1:
        return models[0]
    # Union[...] of a tuple built at run time: the `|` spelling takes no tuple.
    return Annotated[Union[tuple(models)], Field(discriminator=tag)]  # noqa: UP007


def _function_union() -> Any:
    return _tagged_union(registry.FUNCTION_BACKENDS.settings_models(), "type")


def _functions_type() -> Any:
    """`functions`: a name to the settings of a registered backend, by `type`."""
    key = Annotated[str, AfterValidator(_check_function_key)]
    value = Annotated[_function_union(), BeforeValidator(_check_function_type)]  # type: ignore[valid-type]
    return dict[key, value]  # type: ignore[valid-type]


def _state_type() -> Any:
    """`state`: the settings of a registered checkpoint store, by `backend`."""
    models = registry.CHECKPOINT_STORES.settings_models()
    return Annotated[_tagged_union(models, "backend"), BeforeValidator(_state_backend)]


@functools.cache
def _state_adapter_for(stores: tuple[tuple[str, Any], ...]) -> TypeAdapter[Any]:
    return TypeAdapter(_state_type())


def _state_adapter() -> TypeAdapter[Any]:
    return _state_adapter_for(registry.CHECKPOINT_STORES.fingerprint())


# Plugin settings are the registry's: the unions below are built from it (config_model()
# rebuilds them when a plugin is registered later). For the type checker, every function
# has FunctionSettings' keys and every store StateSettings'.
if TYPE_CHECKING:
    FunctionConfig = FunctionSettings
    StateConfig = StateSettings
    _Functions = dict[str, FunctionSettings]
else:
    FunctionConfig = _function_union()
    StateConfig = _state_type()
    _Functions = _functions_type()


class EsmConfig(_Model):
    """The whole configuration file."""

    aws: AwsConfig = Field(default_factory=AwsConfig)
    state: StateConfig = Field(default_factory=_default_state)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    polling: PollingConfig = Field(default_factory=PollingConfig)
    sqs: SqsConfig = Field(default_factory=SqsConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    functions: _Functions = Field(default_factory=dict)
    mappings: list[MappingConfig]

    @model_validator(mode="before")
    @classmethod
    def _fill_sections(cls, data: Any) -> Any:
        # An empty section (`aws:` with every line commented out) reads as null: use defaults.
        # Sections are always validated so that AwsConfig sees the environment.
        if isinstance(data, dict):
            data = {**data}
            for name in _SECTIONS:
                if data.get(name) is None:
                    data[name] = {}
            if data.get("functions") is None and "functions" in data:
                data["functions"] = {}
        return data

    @model_validator(mode="after")
    def _check_called_functions(self) -> EsmConfig:
        # Functions that hand invocations to others (weighted) name plain functions of
        # this file: no chains, no cycles.
        problems = []
        for name, function in self.functions.items():
            for setting, called in function.functions_called():
                other = self.functions.get(called)
                if other is None:
                    problems.append(
                        f"functions.{name}.{setting}: {called!r} is not a function of this file"
                    )
                elif other.functions_called():
                    problems.append(
                        f"functions.{name}.{setting}: {called!r} is {other.type} itself; "
                        f"{setting} must be plain functions"
                    )
        if problems:
            raise _fail(*problems)
        return self

    @field_validator("mappings")
    @classmethod
    def _check_mappings(cls, value: list[MappingConfig]) -> list[MappingConfig]:
        if not value:
            raise _fail("at least one mapping is required")
        first_seen: dict[str, int] = {}
        first_named: dict[str, int] = {}
        problems = []
        for index, mapping in enumerate(value):
            earlier = first_seen.setdefault(mapping.mapping_id, index)
            if earlier != index:
                problems.append(
                    f"mappings[{index}] ({mapping.label()}) has the same function and "
                    f"EventSourceArn as mappings[{earlier}]: a function takes one mapping per "
                    "source (AWS: ResourceConflictException)"
                )
                continue
            name = mapping.mapping_name
            earlier = first_named.setdefault(name, index)
            if earlier != index:
                how = "" if mapping.name is not None else " (derived from function and source)"
                problems.append(
                    f"mappings[{index}] ({mapping.label()}): name {name!r}{how} is already "
                    f"the name of mappings[{earlier}]: give each mapping its own `name`"
                )
        if problems:
            raise _fail(*problems)
        return value

    @model_validator(mode="after")
    def _check_kcl_tables(self) -> EsmConfig:
        problems = [
            _join(
                f"mappings[{index}] ({mapping.label()})",
                f"kcl_lease_table: {mapping.kcl_lease_table!r} needs state.backend dynamodb "
                f"(it is {self.state.backend}): leases are shared through DynamoDB",
            )
            for index, mapping in enumerate(self.mappings)
            if mapping.kcl_lease_table is not None and self.state.backend != "dynamodb"
        ]
        if problems:
            raise _fail(*problems)
        return self

    @model_validator(mode="after")
    def _check_references(self) -> EsmConfig:
        # parse_config already checks this per mapping; this covers direct construction.
        problems = [
            f"mappings[{index}] ({mapping.label()}): FunctionName: function "
            f"{mapping.function_name!r} is not defined under functions"
            for index, mapping in enumerate(self.mappings)
            if mapping.function_name not in self.functions
        ]
        if problems:
            raise _fail(*problems)
        return self


def _plugins_now() -> tuple[Any, ...]:
    return (registry.FUNCTION_BACKENDS.fingerprint(), registry.CHECKPOINT_STORES.fingerprint())


_BUILT_FOR = _plugins_now()
_REBUILT: dict[tuple[Any, ...], type[EsmConfig]] = {}


def config_model() -> type[EsmConfig]:
    """EsmConfig with the function types and checkpoint stores registered now: EsmConfig
    itself, unless plugins were registered since it was built (an installed package's
    entry point, a test's backend); then a subclass with the unions rebuilt."""
    key = _plugins_now()
    if key == _BUILT_FOR:
        return EsmConfig
    if key not in _REBUILT:
        if len(_REBUILT) >= 8:  # registrations come and go in tests only: keep a few
            del _REBUILT[next(iter(_REBUILT))]
        _REBUILT[key] = create_model(
            "EsmConfig",
            __base__=EsmConfig,
            __module__=__name__,
            __doc__=EsmConfig.__doc__,
            functions=(_functions_type(), Field(default_factory=dict)),
            state=(_state_type(), Field(default_factory=_default_state)),
        )
    return _REBUILT[key]


def _discover_backends(data: Mapping[str, Any]) -> None:
    """Register the installed backend plugins this file's functions name (and only those:
    loading a plugin runs its package's code)."""
    functions = data.get("functions")
    if not isinstance(functions, dict):
        return
    for function in functions.values():
        kind = function.get("type") if isinstance(function, dict) else None
        if isinstance(kind, str):
            registry.discover_backend(kind)


# --------------------------------------------------------------------------- environment

_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|(?P<bad>\{))"
)


def _expand(text: str, environ: Mapping[str, str], source: str, problems: _Problems) -> str:
    """Replace ${VAR}, ${VAR:-default} and $$ in `text`; unset variables go to `problems`."""
    lines = []
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        # A full-line comment is left alone: commented-out examples must not need variables.
        if line.lstrip().startswith("#"):
            lines.append(line)
            continue

        def replace(match: re.Match[str], number: int = number) -> str:
            if match["escaped"]:
                return "$"
            if match["bad"]:
                problems.append(
                    f"{source}:{number}: malformed variable reference: "
                    "write ${NAME} or ${NAME:-default} (and $$ for a literal $)"
                )
                return ""
            value = environ.get(match["name"])
            if match["default"] is not None:
                return value if value else match["default"]
            if value is None:
                problems.append(
                    f"{source}:{number}: environment variable {match['name']} is not set "
                    f"(set it, or give a default: ${{{match['name']}:-default}})"
                )
                return ""
            return value

        lines.append(_REFERENCE.sub(replace, line))
    return "".join(lines)


# --------------------------------------------------------------------------- YAML


def _duplicate_keys(
    constructor: yaml.constructor.SafeConstructor, node: yaml.MappingNode, source: str
) -> list[str]:
    """A problem for each key given twice in `node` (YAML would silently keep the last)."""
    first_line: dict[Any, int] = {}
    problems = []
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
            continue
        key = constructor.construct_object(key_node)
        line = key_node.start_mark.line + 1
        if key in first_line:
            problems.append(
                f"{source}:{line}: duplicate key {_show(key)} "
                f"(first given on line {first_line[key]}; YAML would keep only the last)"
            )
        else:
            first_line[key] = line
    return problems


class _PyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, except that a key given twice in one mapping is a problem."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source
        self.duplicates = _Problems()

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.duplicates.extend(_duplicate_keys(self, node, self.source))
        return super().construct_mapping(node, deep=deep)


# PyYAML's wheels bundle libyaml; an installation built without it still works, slower.
if TYPE_CHECKING or yaml.__with_libyaml__:

    class _CLoader(yaml.CSafeLoader):
        """_PyLoader over libyaml's parser: many times faster, and it bounds nesting itself."""

        def __init__(self, stream: str, source: str) -> None:
            super().__init__(stream)
            self.source = source
            self.duplicates = _Problems()

        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            self.duplicates.extend(_duplicate_keys(self, node, self.source))
            return super().construct_mapping(node, deep=deep)

    _YAML_LOADER: type[_PyLoader | _CLoader] = _CLoader
else:
    _YAML_LOADER = _PyLoader


def _load_yaml(
    text: str, source: str, loader_class: type[_PyLoader | _CLoader] = _YAML_LOADER
) -> tuple[Any, _Problems]:
    loader = loader_class(text, source)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        if "maximum nesting depth" in what:
            what = "nested too deeply"  # libyaml's words: "while increasing flow level ..."
        raise ConfigError([f"{where}: invalid YAML: {what}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: invalid YAML: {' '.join(str(exc).split())}"]) from None
    except RecursionError:
        # PyYAML's own parser recurses once per level of nesting (libyaml's stops at 1000).
        line = getattr(loader, "line", None)
        where = source if line is None else f"{source}:{line + 1}"
        raise ConfigError([f"{where}: invalid YAML: nested too deeply"]) from None
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        # PyYAML's constructors fail this way on values that parse but cannot be built: an
        # impossible date, an integer of thousands of digits, a tag on the wrong kind of node.
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if len(reason) > 200:
            reason = reason[:197] + "..."
        raise ConfigError([f"{source}: invalid YAML: a value cannot be read: {reason}"]) from None
    finally:
        loader.dispose()
    return data, loader.duplicates


# --------------------------------------------------------------------------- error messages


def _strip_annotated(node: Any) -> Any:
    while get_origin(node) is Annotated:
        node = get_args(node)[0]
    return node


def _model_at(path: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class that validated the object at `path` (a pydantic error location)."""
    node: Any = config_model()
    parts = list(path)
    while True:
        node = _strip_annotated(node)
        origin = get_origin(node)
        if origin in (Union, types.UnionType):
            members = [_strip_annotated(m) for m in get_args(node) if m is not type(None)]
            if len(members) == 1:
                node = members[0]
                continue
            # A tagged union: the location names the tag next.
            tag = parts.pop(0) if parts else None
            node = next((m for m in members if _union_tag(m) == tag), None)
            continue
        if not parts:
            break
        part = parts.pop(0)
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = _field_by_key(node, part)
            if field is None:
                return None
            node = field
        elif origin is list:
            node = get_args(node)[0]
        elif origin is dict:
            node = get_args(node)[1]
        else:
            return None
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


def _union_tag(model: Any) -> str | None:
    """The tag a plugin's settings answer to in a tagged union (`type` or `backend`)."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    for name in ("type", "backend"):
        field = model.model_fields.get(name)
        args = get_args(field.annotation) if field is not None else ()
        if args:
            return str(args[0])
    return None


def _field_at(loc: tuple[str | int, ...]) -> FieldInfo | None:
    """The field a pydantic error location ends at, to read its declared range."""
    if not loc or not isinstance(loc[-1], str):
        return None
    model = _model_at(loc[:-1])
    if model is None:
        return None
    return model.model_fields.get(loc[-1])


def _keys_of(model: type[BaseModel]) -> list[str]:
    # A model's own keys first, then the ones every model of its kind shares (a function's
    # timeout, memory_size, max_concurrency): what tells models apart reads first.
    # A rebuilt EsmConfig (config_model) declares only the plugin unions: read it as EsmConfig.
    own = set((EsmConfig if issubclass(model, EsmConfig) else model).__annotations__)
    fields = sorted(model.model_fields.items(), key=lambda item: item[0] not in own)
    keys: list[str] = []
    for name, field in fields:
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            keys.extend(str(choice) for choice in alias.choices)
        else:
            keys.append(name)
    return keys


def _field_by_key(model: type[BaseModel], key: str | int) -> Any:
    for name, field in model.model_fields.items():
        if key == name or (
            isinstance(field.validation_alias, AliasChoices)
            and key in field.validation_alias.choices
        ):
            return field.annotation
    return None


def _unknown_key(key: str | int, parent: tuple[str | int, ...]) -> str:
    if isinstance(key, str) and key in _FOREIGN_PARAMETERS:
        return f"{key} {_FOREIGN_PARAMETERS[key]}"
    model = _model_at(parent)
    if model is None:
        return f"unknown key {_show(key)}"
    known = _keys_of(model)
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    if close:
        return f"unknown key {_show(key)} (did you mean {close[0]}?)"
    if len(known) <= 10:
        return f"unknown key {_show(key)} (known keys: {', '.join(known)})"
    return f"unknown key {_show(key)} (see docs/configuration.md for the known keys)"


def _mapping_label(index: int, raw: Any) -> str:
    items = raw.get("mappings") if isinstance(raw, dict) else None
    item = items[index] if isinstance(items, list) and index < len(items) else None
    if not isinstance(item, dict):
        return f"mappings[{index}]"
    function = _one_line(item.get("FunctionName", item.get("FunctionArn", "?")))
    source = _one_line(item.get("EventSourceArn", "?"))
    return f"mappings[{index}] ({function} <- {source})"


def _one_line(value: Any) -> str:
    """A value as a label shows it: short, and with no line break to split a problem."""
    text = value if isinstance(value, str) else _show(value)
    text = " ".join(text.splitlines()) if text else text
    return text if len(text) <= 120 else text[:117] + "..."


def _path_text(parts: tuple[str | int, ...]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _locate(loc: tuple[str | int, ...], raw: Any) -> tuple[str, tuple[str | int, ...]]:
    """Split an error location into the thing the user recognises and the path inside it."""
    if len(loc) >= 2 and loc[0] == "mappings" and isinstance(loc[1], int):
        return _mapping_label(loc[1], raw), loc[2:]
    if len(loc) >= 2 and loc[0] == "functions":
        rest = loc[2:]
        if rest and rest[0] in registry.FUNCTION_BACKENDS.names():
            rest = rest[1:]
        if rest == ("[key]",):
            return "", ("functions",)
        return "", ("functions", loc[1], *rest)
    if len(loc) >= 2 and loc[0] == "state" and loc[1] in registry.CHECKPOINT_STORES.names():
        return "", ("state", *loc[2:])
    return "", loc


# pydantic's errors for a value outside a `Field(ge=, gt=, le=, lt=)` range.
_RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})


def _range_problem(loc: tuple[str | int, ...], value: Any) -> str | None:
    """esm's words for a value out of its field's range: the whole range, with its unit."""
    field = _field_at(loc)
    allowed = range_text(field) if field is not None else None
    if allowed is None:
        return None
    return f"{_show(value)} is out of range: must be {allowed}"


def _add_problems(exc: ValidationError, raw: Any, problems: _Problems) -> None:
    for error in exc.errors(include_url=False):
        kind = error["type"]
        if problems.full:
            # Counted, not described: describing (difflib on every unknown key) is the cost.
            problems.omitted += (error["msg"].count("\n") + 1) if kind == "esm_config" else 1
            continue
        loc = tuple(error["loc"])
        if kind == "extra_forbidden":
            owner, path = _locate(loc[:-1], raw)
            message = _unknown_key(loc[-1], loc[:-1])
            where = _join(owner, _path_text(path))
        else:
            owner, path = _locate(loc, raw)
            where = _join(owner, _path_text(path))
            if kind == "esm_config":
                message = error["msg"]
                at = (error.get("ctx") or {}).get("at")
                if at:
                    where = _join(owner, _path_text((*path, at)))
            elif kind in _RANGE_ERRORS and (found := _range_problem(loc, error["input"])):
                message = found
            elif kind == "missing":
                message = "is required"
            else:
                message = error["msg"].replace("Input should be", "must be", 1)
                message = f"{message}, got {_show(error['input'])}"
        for line in redact(message).splitlines():
            # A message that names its own place (duplicates) needs no prefix.
            problems.append(line if line.startswith("mappings[") else _join(where, line))


def _join(where: str, what: str) -> str:
    if where and what:
        return f"{where}: {what}"
    return where or what


# --------------------------------------------------------------------------- public API


def parse_config(
    text: str, environ: Mapping[str, str] | None = None, source: str = "<config>"
) -> EsmConfig:
    """Expand, parse and validate a configuration; raises ConfigError listing the problems
    (the first MAX_PROBLEMS of them; it counts the others)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise _too_large(source)
    env = os.environ if environ is None else environ
    problems = _Problems()
    expanded = _expand(text, env, source, problems)
    if problems:
        raise problems.error()
    data, problems = _load_yaml(expanded, source)
    if data is None:
        problems.append(f"{source}: the configuration is empty: mappings required")
        raise problems.error()
    if not isinstance(data, dict):
        problems.append(f"{source}: must be a mapping of sections, got {type(data).__name__}")
        raise problems.error()
    # Function names are known before validation so that each mapping can check its own.
    functions = data.get("functions") or {}
    context = {
        "environ": env,
        "now": time.time(),
        "functions": frozenset(k for k in functions if isinstance(k, str))
        if isinstance(functions, dict)
        else None,
    }
    _discover_backends(data)
    try:
        config = config_model().model_validate(data, context=context)
    except ValidationError as exc:
        _add_problems(exc, data, problems)
        raise problems.error() from None
    if problems:
        raise problems.error()
    return config


def load_config(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> EsmConfig:
    """Read and validate the configuration file at `path`."""
    source = os.fspath(path)
    try:
        with open(path, "rb") as file:
            # Never more than the limit: the path may name a device or an endless pipe.
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read the configuration: {exc.strerror}"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise _too_large(source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: not UTF-8 text: {exc.reason}"]) from None
    return parse_config(text, environ, source)


def _too_large(source: str) -> ConfigError:
    return ConfigError(
        [
            f"{source}: larger than 1 MiB: a configuration may be at most {MAX_CONFIG_BYTES} "
            "bytes (what a Kubernetes ConfigMap holds)"
        ]
    )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def describe_config(config: EsmConfig) -> str:
    """The summary `esm validate` prints for a valid configuration."""
    lines = [
        f"{len(config.mappings)} mapping{'s' * (len(config.mappings) != 1)}, "
        f"{len(config.functions)} function{'s' * (len(config.functions) != 1)}"
    ]
    for mapping in config.mappings:
        source = mapping.source
        what = {"kinesis": "stream", "dynamodb": "table stream", "sqs": "queue"}[source.kind]
        start = ""
        if mapping.starting_position is not None:
            start = f", start {mapping.starting_position}"
            if mapping.starting_position_timestamp is not None:
                start += f" {_iso(mapping.starting_position_timestamp)}"
        lines.append(
            f"mapping {mapping.mapping_name} ({mapping.mapping_id}): "
            f"{source.kind} {what} {source.name} "
            f"({source.region}) -> function {mapping.function_name}, "
            f"batch size {mapping.batch_size}, window {mapping.batching_window_seconds}s"
            f"{start}, {'enabled' if mapping.Enabled else 'disabled'}"
        )
    for name, function in config.functions.items():
        what = " ".join(part for part in (function.type, function.target()) if part)
        lines.append(
            f"function {name}: {what} "
            f"(timeout {function.timeout:g}s, memory {function.memory_size} MB)"
        )
    lines.append(f"state: {config.state.summary()}")
    endpoints = config.aws.endpoint_url or "AWS"
    if config.aws.endpoints:
        endpoints += ", " + ", ".join(f"{k}={v}" for k, v in sorted(config.aws.endpoints.items()))
    lines.append(redact(f"aws: region {config.aws.region}, endpoints {endpoints}"))
    admin = config.admin
    lines.append(f"admin: {'listening on ' + admin.listen if admin.enabled else 'disabled'}")
    lines.append(redact(f"tracing: {config.tracing.summary()}"))
    return "\n".join(lines)
