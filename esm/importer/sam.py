"""The Kinesis, DynamoDB and SQS events of a SAM template's `AWS::Serverless::Function`s.

SAM generates one `AWS::Lambda::EventSourceMapping` per such event, passing its properties
through under the same names, except the source: SAM's `Stream` (Kinesis, DynamoDB) and
`Queue` (SQS) are the mapping's EventSourceArn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from esm.importer.cloudformation import included
from esm.importer.functions import template_function
from esm.importer.intrinsics import SAMPLE_ACCOUNT, SAMPLE_REGION, Resolver, as_mapping
from esm.importer.model import FunctionSpec, ImportedMapping
from esm.importer.notes import Notes
from esm.importer.parameters import translate_parameters
from esm.importer.values import Text

__all__ = ["SERVERLESS_FUNCTION", "read_sam_events"]

SERVERLESS_FUNCTION = "AWS::Serverless::Function"

_ACCOUNT = f"{SAMPLE_REGION}:{SAMPLE_ACCOUNT}"
# Per event type: the property naming the source, and an ARN of that kind to check the
# rest of the output with when the source is left as a variable.
_EVENT_SOURCES: dict[str, tuple[str, str]] = {
    "Kinesis": ("Stream", f"arn:aws:kinesis:{_ACCOUNT}:stream/sample"),
    "DynamoDB": (
        "Stream",
        f"arn:aws:dynamodb:{_ACCOUNT}:table/sample/stream/2024-01-01T00:00:00.000",
    ),
    "SQS": ("Queue", f"arn:aws:sqs:{_ACCOUNT}:sample"),
}
# SAM event types that make event source mappings of sources esm does not read.
_OTHER_MAPPINGS = {
    "MQ": "an Amazon MQ",
    "MSK": "an Amazon MSK",
    "SelfManagedKafka": "a self-managed Apache Kafka",
    "DocumentDB": "an Amazon DocumentDB",
}


def read_sam_events(
    template: Mapping[str, Any], resolver: Resolver, notes: Notes
) -> tuple[int, list[ImportedMapping]]:
    """How many events the template's functions have, and the mappings that translate."""
    globals_function = as_mapping(as_mapping(template.get("Globals")).get("Function"))
    found = 0
    mappings: list[ImportedMapping] = []
    for logical_id, resource in as_mapping(template.get("Resources")).items():
        resource = as_mapping(resource)
        if resource.get("Type") != SERVERLESS_FUNCTION:
            continue
        where = f"Resources.{logical_id}"
        properties = as_mapping(resource.get("Properties"))
        events = as_mapping(properties.get("Events"))
        if not events or not included(resource, where, resolver, notes):
            continue
        # Globals.Function gives every function the properties it does not set itself.
        function = template_function(logical_id, {**globals_function, **properties}, resolver)
        for event_id, event in events.items():
            found += 1
            at = f"{where}.Properties.Events.{event_id}"
            mapping = _event(as_mapping(event), function, at, resolver, notes)
            if mapping is not None:
                mappings.append(mapping)
    return found, mappings


def _event(
    event: Mapping[str, Any],
    function: FunctionSpec,
    where: str,
    resolver: Resolver,
    notes: Notes,
) -> ImportedMapping | None:
    kind = event.get("Type")
    if kind in _OTHER_MAPPINGS:
        notes.add(
            where,
            f"skipped: {_OTHER_MAPPINGS[kind]} source: esm reads Kinesis, DynamoDB Streams and SQS",
        )
        return None
    if not isinstance(kind, str) or kind not in _EVENT_SOURCES:
        notes.add(
            where,
            f"skipped: event type {kind} is not an event source mapping "
            "(esm reads Kinesis, DynamoDB and SQS events)",
        )
        return None
    source_property, sample = _EVENT_SOURCES[kind]
    at = f"{where}.Properties"
    properties = as_mapping(resolver.resolve(as_mapping(event.get("Properties")), at))
    source = properties.get(source_property)
    if source is None:
        notes.add(where, f"skipped: no {source_property}")
        return None
    renamed = {
        "EventSourceArn": _with_sample(source, sample, resolver),
        **{key: value for key, value in properties.items() if key != source_property},
    }
    parameters = translate_parameters(renamed, at, notes, skip=frozenset())
    if "EventSourceArn" not in parameters:
        return None
    return ImportedMapping(where, function, parameters)


def _with_sample(source: Any, sample: str, resolver: Resolver) -> Any:
    """The source, its variable given an ARN of the event's kind as sample when it had none
    (the event type says what the ARN is, where `!GetAtt X.StreamArn` alone does not)."""
    variable = source.sole_variable if isinstance(source, Text) else None
    if variable is None or variable.sample is not None:
        return source
    known = replace(variable, sample=sample)
    resolver.variables[variable.name] = known
    return Text((known,))
