"""The JSON output of `aws lambda list-event-source-mappings`: the API's own field names,
with the read-only fields that describe a mapping's life in AWS dropped."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from esm.importer.functions import function_named
from esm.importer.model import ImportedMapping
from esm.importer.notes import Notes
from esm.importer.parameters import foreign_source, translate_parameters

__all__ = ["OUTPUT_ONLY", "read_listing"]

# What AWS reports about a mapping and nobody sets: never copied.
OUTPUT_ONLY = frozenset(
    {
        "UUID",
        "State",
        "StateTransitionReason",
        "LastModified",
        "LastProcessingResult",
        "EventSourceMappingArn",
        "FilterCriteriaError",
        "FunctionArn",
        "FunctionName",
    }
)
_DISABLED_STATES = ("Disabled", "Disabling")


def read_listing(document: Mapping[str, Any], notes: Notes) -> tuple[int, list[ImportedMapping]]:
    """How many mappings the listing has, and those that translate."""
    items = document.get("EventSourceMappings")
    if not isinstance(items, list):
        return 0, []
    mappings = []
    for index, item in enumerate(items):
        mapping = _mapping(item, f"EventSourceMappings[{index}]", notes)
        if mapping is not None:
            mappings.append(mapping)
    return len(items), mappings


def _mapping(item: Any, where: str, notes: Notes) -> ImportedMapping | None:
    if not isinstance(item, Mapping):
        notes.add(where, "skipped: not a mapping object")
        return None
    state = item.get("State")
    if state == "Deleting":
        notes.add(where, "skipped: AWS is deleting it")
        return None
    foreign = foreign_source(item)
    if foreign is not None:
        notes.add(where, f"skipped: {foreign}: esm reads Kinesis, DynamoDB Streams and SQS")
        return None
    function = item.get("FunctionArn", item.get("FunctionName"))
    if not isinstance(function, str) or not function:
        notes.add(where, "skipped: no FunctionArn")
        return None
    parameters = translate_parameters(item, where, notes, skip=OUTPUT_ONLY)
    if "EventSourceArn" not in parameters:
        notes.add(where, "skipped: no EventSourceArn")
        return None
    if state in _DISABLED_STATES:
        # Enabled comes right after EventSourceArn in esm.yaml's order.
        parameters = {
            "EventSourceArn": parameters.pop("EventSourceArn"),
            "Enabled": False,
            **parameters,
        }
    return ImportedMapping(where, function_named(function), parameters)
