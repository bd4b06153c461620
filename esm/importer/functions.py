"""The functions a template's mappings call, as the template declares them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from esm.importer.intrinsics import Resolver, as_mapping
from esm.importer.model import FunctionSpec
from esm.importer.values import Text

__all__ = [
    "FUNCTION_RESOURCE_TYPES",
    "function_named",
    "referenced_function",
    "template_function",
]

FUNCTION_RESOURCE_TYPES = ("AWS::Lambda::Function", "AWS::Serverless::Function")

_LAMBDA_ARN_NAME = re.compile(r"arn:[^:]+:lambda:[^:]*:[^:]*:function:([^:]+)(?::.*)?")


def function_named(target: str | Text) -> FunctionSpec:
    """A function known only by a name or ARN (a literal, a parameter, an export)."""
    if isinstance(target, str):
        found = _LAMBDA_ARN_NAME.fullmatch(target)
        # name:alias is a qualified name; the function is the part before the colon.
        return FunctionSpec(found[1] if found else target.partition(":")[0], target)
    literal = target.literal_text()
    tail = literal.rpartition("function:")[2].partition(":")[0] if "function:" in literal else ""
    variable = target.variables[0]
    return FunctionSpec(tail.strip(":") or variable.name.lower(), target)


def referenced_function(
    value: Any,
    resources: Mapping[str, Any],
    resolver: Resolver,
    globals_function: Mapping[str, Any],
) -> FunctionSpec | None:
    """The template's own function that `!Ref X` or `!GetAtt X.Arn` names, with what its
    properties say; None when `value` names none of the template's functions."""
    logical_id = _reference(value)
    resource = as_mapping(resources.get(logical_id)) if logical_id else {}
    kind = resource.get("Type")
    if logical_id is None or kind not in FUNCTION_RESOURCE_TYPES:
        return None
    own = as_mapping(resource.get("Properties"))
    # SAM's Globals.Function applies to SAM functions only, under their own properties.
    merged = {**globals_function, **own} if kind == "AWS::Serverless::Function" else own
    return template_function(logical_id, merged, resolver)


def template_function(
    logical_id: str, properties: Mapping[str, Any], resolver: Resolver
) -> FunctionSpec:
    """A function resource of the template, from its (merged) properties."""
    where = f"Resources.{logical_id}.Properties"
    declared = properties.get("FunctionName")
    target = None if declared is None else resolver.text(declared, f"{where}.FunctionName")
    name = target if isinstance(target, str) else logical_id
    handler = resolver.resolve(properties.get("Handler"), f"{where}.Handler")
    return FunctionSpec(
        name=name,
        target=target,
        handler=handler if isinstance(handler, str) else None,
        timeout=_number(resolver.resolve(properties.get("Timeout"), f"{where}.Timeout")),
        memory_size=_whole(resolver.resolve(properties.get("MemorySize"), f"{where}.MemorySize")),
        reserved_concurrency=_whole(
            resolver.resolve(
                properties.get("ReservedConcurrentExecutions"),
                f"{where}.ReservedConcurrentExecutions",
            )
        ),
    )


def _reference(value: Any) -> str | None:
    if not (isinstance(value, Mapping) and len(value) == 1):
        return None
    key, argument = next(iter(value.items()))
    if key == "Ref" and isinstance(argument, str):
        return argument
    if key == "Fn::GetAtt":
        parts = argument.split(".", 1) if isinstance(argument, str) else argument
        if isinstance(parts, list) and len(parts) == 2 and parts[1] == "Arn":
            return str(parts[0])
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    try:
        return float(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _whole(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and float(number).is_integer() else None
