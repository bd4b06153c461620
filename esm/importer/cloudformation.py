"""`AWS::Lambda::EventSourceMapping` resources of a CloudFormation (or SAM) template."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from esm.importer.functions import function_named, referenced_function
from esm.importer.intrinsics import Resolver, as_mapping
from esm.importer.model import FunctionSpec, ImportedMapping
from esm.importer.notes import Notes
from esm.importer.parameters import foreign_source, translate_parameters

__all__ = ["EVENT_SOURCE_MAPPING", "included", "read_event_source_mappings"]

EVENT_SOURCE_MAPPING = "AWS::Lambda::EventSourceMapping"


def read_event_source_mappings(
    template: Mapping[str, Any], resolver: Resolver, notes: Notes
) -> tuple[int, list[ImportedMapping]]:
    """How many mapping resources the template has, and those that translate."""
    resources = as_mapping(template.get("Resources"))
    globals_function = as_mapping(as_mapping(template.get("Globals")).get("Function"))
    found = 0
    mappings: list[ImportedMapping] = []
    for logical_id, resource in resources.items():
        if as_mapping(resource).get("Type") != EVENT_SOURCE_MAPPING:
            continue
        found += 1
        where = f"Resources.{logical_id}"
        if not included(as_mapping(resource), where, resolver, notes):
            continue
        properties = as_mapping(as_mapping(resource).get("Properties"))
        function = _function(properties, resources, resolver, globals_function, where)
        mapping = _mapping(properties, function, where, resolver, notes)
        if mapping is not None:
            mappings.append(mapping)
    return found, mappings


def included(resource: Mapping[str, Any], where: str, resolver: Resolver, notes: Notes) -> bool:
    """Whether the resource's Condition lets CloudFormation create it. A condition that
    cannot be evaluated (it depends on a parameter with no value) is taken to hold."""
    condition = resource.get("Condition")
    if not isinstance(condition, str):
        return True
    holds = resolver.condition(condition)
    if holds is False:
        notes.add(where, f"skipped: its Condition {condition} is false")
        return False
    if holds is None:
        notes.add(where, f"Condition {condition} cannot be evaluated: imported as if true")
    return True


def _function(
    properties: Mapping[str, Any],
    resources: Mapping[str, Any],
    resolver: Resolver,
    globals_function: Mapping[str, Any],
    where: str,
) -> FunctionSpec | None:
    value = properties.get("FunctionName")
    if value is None:
        return None
    own = referenced_function(value, resources, resolver, globals_function)
    if own is not None:
        return own
    target = resolver.text(value, f"{where}.Properties.FunctionName")
    if target is None:
        return None
    named = function_named(target)
    # A literal name (or ARN) of one of the template's own functions is that function.
    for logical_id in resources:
        candidate = referenced_function({"Ref": logical_id}, resources, resolver, globals_function)
        if candidate is not None and candidate.name == named.name:
            return candidate
    return named


def _mapping(
    properties: Mapping[str, Any],
    function: FunctionSpec | None,
    where: str,
    resolver: Resolver,
    notes: Notes,
) -> ImportedMapping | None:
    at = f"{where}.Properties"
    resolved = as_mapping(
        resolver.resolve({k: v for k, v in properties.items() if k != "FunctionName"}, at)
    )
    foreign = foreign_source(resolved)
    if foreign is not None:
        notes.add(where, f"skipped: {foreign}: esm reads Kinesis, DynamoDB Streams and SQS")
        return None
    if function is None:
        notes.add(where, "skipped: no FunctionName that names a function")
        return None
    parameters = translate_parameters(resolved, at, notes, skip=frozenset())
    if "EventSourceArn" not in parameters:
        notes.add(where, "skipped: no EventSourceArn")
        return None
    return ImportedMapping(where, function, parameters)
