"""A mapping's parameters, from CloudFormation's, SAM's or the Lambda API's spelling to
esm.yaml's (CreateEventSourceMapping's names), with values of the types esm.yaml takes.

CloudFormation passes parameter values as strings (`BatchSize: !Ref Size` is "100"), so
numbers and booleans written as strings are converted; a value that stays unknown becomes a
bare `${VAR}`, which esm reads as a number or boolean once it is substituted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

from esm.importer.notes import Notes
from esm.importer.values import Text, Unquoted

__all__ = [
    "PARAMETER_ORDER",
    "REFUSED",
    "Untranslatable",
    "foreign_source",
    "translate_parameters",
]

# Kafka, Amazon MQ and DocumentDB parameters, and those esm refuses: reported, not copied.
_OTHER_SOURCES = "applies only to Kafka, Amazon MQ or DocumentDB sources"
REFUSED: dict[str, str] = {
    "SelfManagedEventSource": f"a self-managed Kafka source: {_OTHER_SOURCES}",
    "AmazonManagedKafkaEventSourceConfig": _OTHER_SOURCES,
    "SelfManagedKafkaEventSourceConfig": _OTHER_SOURCES,
    "DocumentDBEventSourceConfig": _OTHER_SOURCES,
    "SourceAccessConfigurations": _OTHER_SOURCES,
    "Topics": _OTHER_SOURCES,
    "Queues": _OTHER_SOURCES,
    "LoggingConfig": _OTHER_SOURCES,
    "ProvisionedPollerConfig": "provisioned mode is not supported by esm",
    "KmsKeyArn": "esm keeps FilterCriteria in esm.yaml: there is nothing in AWS to encrypt",
    "KMSKeyArn": "esm keeps FilterCriteria in esm.yaml: there is nothing in AWS to encrypt",
}

# esm.yaml's order (that of the configuration reference), for a file people read.
PARAMETER_ORDER = (
    "FunctionName",
    "EventSourceArn",
    "Enabled",
    "BatchSize",
    "MaximumBatchingWindowInSeconds",
    "StartingPosition",
    "StartingPositionTimestamp",
    "ParallelizationFactor",
    "BisectBatchOnFunctionError",
    "MaximumRetryAttempts",
    "MaximumRecordAgeInSeconds",
    "DestinationConfig",
    "FunctionResponseTypes",
    "TumblingWindowInSeconds",
    "FilterCriteria",
    "ScalingConfig",
    "MetricsConfig",
    "Tags",
)


class Untranslatable(ValueError):
    """A value that cannot be written in esm.yaml; the message says why."""


_INTEGER = re.compile(r"-?[0-9]+")


def _string(value: Any, where: str, notes: Notes) -> Any:
    if isinstance(value, str | Text):
        return value
    raise Untranslatable(f"expected a string, got {_kind(value)}")


def _integer(value: Any, where: str, notes: Notes) -> Any:
    if isinstance(value, bool):
        raise Untranslatable(f"expected an integer, got {value}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    return _unknown_scalar(value, "an integer")


def _boolean(value: Any, where: str, notes: Notes) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return _unknown_scalar(value, "true or false")


def _timestamp(value: Any, where: str, notes: Notes) -> Any:
    # esm takes epoch seconds or ISO-8601, as CloudFormation (a Double) and the CLI's
    # output (either, depending on its settings) write it.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return _unknown_scalar(value, "a time")


def _unknown_scalar(value: Any, expected: str) -> Any:
    variable = value.sole_variable if isinstance(value, Text) else None
    if variable is not None:
        return Unquoted(variable)
    shown = value.rendered() if isinstance(value, Text) else repr(value)
    raise Untranslatable(f"expected {expected}, got {shown}")


def _string_list(value: Any, where: str, notes: Notes) -> Any:
    if isinstance(value, list) and all(isinstance(item, str | Text) for item in value):
        return value
    raise Untranslatable(f"expected a list of strings, got {_kind(value)}")


def _destination(value: Any, where: str, notes: Notes) -> Any:
    if not isinstance(value, Mapping):
        raise Untranslatable(f"expected a mapping, got {_kind(value)}")
    for key, item in value.items():
        if key != "OnFailure" and item not in ({}, None):
            notes.add(f"{where}.{key}", "not translated: only OnFailure destinations exist")
    on_failure = value.get("OnFailure")
    # SAM's OnFailure.Type only chooses the permissions SAM adds; the ARN says the kind.
    target = on_failure.get("Destination") if isinstance(on_failure, Mapping) else None
    if target in (None, ""):
        if isinstance(on_failure, Mapping) and on_failure.get("Type"):
            notes.add(f"{where}.OnFailure", "not translated: no Destination (SAM would create it)")
        return None
    if not isinstance(target, str | Text):
        raise Untranslatable(f"OnFailure.Destination: expected an ARN, got {_kind(target)}")
    return {"OnFailure": {"Destination": target}}


def _filters(value: Any, where: str, notes: Notes) -> Any:
    filters = value.get("Filters") if isinstance(value, Mapping) else None
    if not isinstance(filters, list):
        raise Untranslatable("expected {Filters: [{Pattern: ...}]}")
    patterns: list[dict[str, Any]] = []
    for item in filters:
        pattern = item.get("Pattern") if isinstance(item, Mapping) else None
        if isinstance(pattern, Mapping | list):
            # The API takes the pattern as JSON text; a template may write it as YAML.
            pattern = json.dumps(pattern, separators=(",", ":"))
        if not isinstance(pattern, str | Text):
            raise Untranslatable(f"a filter without a Pattern string: {_kind(item)}")
        patterns.append({"Pattern": pattern})
    return {"Filters": patterns} if patterns else None


def _scaling(value: Any, where: str, notes: Notes) -> Any:
    if not isinstance(value, Mapping):
        raise Untranslatable(f"expected a mapping, got {_kind(value)}")
    if "MaximumConcurrency" not in value:
        return None
    return {"MaximumConcurrency": _integer(value["MaximumConcurrency"], where, notes)}


def _metrics(value: Any, where: str, notes: Notes) -> Any:
    metrics = value.get("Metrics") if isinstance(value, Mapping) else None
    return {"Metrics": _string_list(metrics, where, notes)}


def _tags(value: Any, where: str, notes: Notes) -> Any:
    # CloudFormation writes tags as a list of Key/Value pairs; esm.yaml as a map.
    pairs: list[tuple[Any, Any]] | None = (
        list(value.items()) if isinstance(value, Mapping) else None
    )
    if isinstance(value, list):
        pairs = [
            (item.get("Key"), item.get("Value")) for item in value if isinstance(item, Mapping)
        ]
    if pairs is None:
        raise Untranslatable(f"expected Key/Value pairs, got {_kind(value)}")
    tags = {str(key): item for key, item in pairs if isinstance(item, str | Text)}
    return tags or None


_Converter = Callable[[Any, str, Notes], Any]
_CONVERTERS: dict[str, _Converter] = {
    "EventSourceArn": _string,
    "Enabled": _boolean,
    "BatchSize": _integer,
    "MaximumBatchingWindowInSeconds": _integer,
    "StartingPosition": _string,
    "StartingPositionTimestamp": _timestamp,
    "ParallelizationFactor": _integer,
    "BisectBatchOnFunctionError": _boolean,
    "MaximumRetryAttempts": _integer,
    "MaximumRecordAgeInSeconds": _integer,
    "DestinationConfig": _destination,
    "FunctionResponseTypes": _string_list,
    "TumblingWindowInSeconds": _integer,
    "FilterCriteria": _filters,
    "ScalingConfig": _scaling,
    "MetricsConfig": _metrics,
    "Tags": _tags,
}


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def translate_parameters(
    properties: Mapping[str, Any], where: str, notes: Notes, *, skip: frozenset[str]
) -> dict[str, Any]:
    """esm.yaml's parameters from resolved `properties`; those in `skip` are the caller's
    (the function, SAM's own names). What cannot be carried over goes to `notes`."""
    translated: dict[str, Any] = {}
    for name, value in properties.items():
        at = f"{where}.{name}"
        if name in skip:
            continue
        if name in REFUSED:
            notes.add(at, f"not translated: {REFUSED[name]}")
            continue
        convert = _CONVERTERS.get(name)
        if convert is None:
            notes.add(at, "not translated: not a parameter of Kinesis, DynamoDB or SQS mappings")
            continue
        try:
            converted = convert(value, at, notes)
        except Untranslatable as exc:
            notes.add(at, f"not translated: {exc}")
            continue
        if converted is not None:
            translated[name] = converted
    return {name: translated[name] for name in PARAMETER_ORDER if name in translated}


_READ_BY_ESM = ("kinesis", "dynamodb", "sqs")
_OTHER_SERVICES = {
    "kafka": "an Amazon MSK source",
    "mq": "an Amazon MQ broker",
    "rds": "an Amazon DocumentDB source",
    "docdb": "an Amazon DocumentDB source",
}


def foreign_source(properties: Mapping[str, Any]) -> str | None:
    """What the mapping reads when it is not something esm reads, else None."""
    if "SelfManagedEventSource" in properties:
        return "a self-managed Apache Kafka source"
    arn = properties.get("EventSourceArn")
    if not isinstance(arn, str):
        return None  # unknown until esm runs: esm validate will say
    service = arn.split(":")[2] if arn.count(":") >= 2 else ""
    if service in _READ_BY_ESM:
        return None
    return _OTHER_SERVICES.get(service, f"a source of service {service or arn!r}")
