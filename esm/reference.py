"""The tables of docs/configuration.md that describe plugin settings, generated from the
registry's models, so that the reference cannot drift from what `esm validate` accepts.

The page marks each generated table:

    <!-- generated: function http -->
    ...
    <!-- end generated -->

`python -m esm.reference docs/configuration.md` rewrites the marked tables in place;
`--check` only says whether they are current (tests/unit/test_reference.py runs it).
Everything outside the markers is written by hand.
"""

from __future__ import annotations

import argparse
import re
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Union, cast, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from esm import registry
from esm.settings import DestinationSettings, FunctionSettings, bounds, range_text

_MARKED = re.compile(
    r"(?P<open><!-- generated: (?P<name>[^>]*?) -->\n)"
    r"(?P<body>.*?)"
    r"(?P<close><!-- end generated -->)",
    re.S,
)


class StaleReference(Exception):
    """The page lacks a section the registry needs documented, or marks an unknown one."""


# --------------------------------------------------------------------------- one field


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _type_text(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [m for m in get_args(annotation) if m is not type(None)]
        texts = list(dict.fromkeys(_type_text(m) for m in members))
        return " or ".join(texts)
    if origin is Literal:
        return "string"
    if origin is list:
        return "list"
    if origin is dict:
        return "map"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    names = {str: "string", int: "integer", float: "number", bool: "bool"}
    return names.get(annotation, str(annotation))


def _value_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{'true' if value else 'false'}`"
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, dict | list) and not value:
        return f"`{'{}' if isinstance(value, dict) else '[]'}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"


def _default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        factory = cast(Callable[[], Any], field.default_factory)
        return _value_text(factory())
    if field.default is PydanticUndefined:
        return "required"
    return _value_text(field.default)


def _allowed_text(field: FieldInfo) -> str:
    choices = _literal_choices(field.annotation)
    if choices:
        return ", ".join(f"`{choice}`" for choice in choices)
    text = range_text(field)
    return text or ""


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a field that holds one (`tls`) or a list of them (`targets`)."""
    if get_origin(annotation) is list:
        annotation = get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _literal_choices(annotation: Any) -> list[str]:
    if get_origin(annotation) is Literal:
        return [str(choice) for choice in get_args(annotation)]
    return []


def _field_rows(model: type[BaseModel], names: Sequence[str], prefix: str = "") -> list[str]:
    rows = []
    for name in names:
        field = model.model_fields[name]
        annotation = field.annotation
        unit = bounds(field).get("unit")
        kind = _type_text(annotation) + (f" ({unit})" if unit else "")
        rows.append(
            f"| `{prefix}{name}` | {kind} | {_default_text(field)} | "
            f"{_cell(_allowed_text(field))} | {_cell(field.description or '')} |"
        )
        nested, path = _nested_model(annotation), f"{prefix}{name}."
        if nested is not None:
            path = path if nested is annotation else f"{prefix}{name}[]."
            rows += _field_rows(nested, list(nested.model_fields), path)
    return rows


_HEADER = ["| key | type | default | allowed | notes |", "|---|---|---|---|---|"]


def field_table(model: type[BaseModel], names: Sequence[str]) -> str:
    """A markdown table of `names` of `model`: type, default, range or choices, description."""
    return "\n".join([*_HEADER, *_field_rows(model, names)]) + "\n"


# --------------------------------------------------------------------------- sections


def _own_fields(model: type[BaseModel]) -> list[str]:
    """A backend's fields beyond those every function has, and those it gives another
    default (lambda's timeout)."""
    common = FunctionSettings.model_fields
    return [
        name
        for name, field in model.model_fields.items()
        if name not in common or field.default != common[name].default
    ]


def _function_types() -> str:
    rows = ["| type | what runs the batch |", "|---|---|"]
    for name in registry.FUNCTION_BACKENDS.built_in:
        plugin = registry.FUNCTION_BACKENDS.get(name)
        if plugin.written:
            rows.append(f"| `{name}` | {_cell(plugin.summary)} |")
    rows.append(
        "| a plugin's name | a backend from another package "
        "([adding-a-backend.md](adding-a-backend.md), [plugins.md](plugins.md)) |"
    )
    return "\n".join(rows) + "\n"


def _state() -> str:
    stores = registry.CHECKPOINT_STORES
    rows = ["| backend | key | type | default | allowed | notes |", "|---|---|---|---|---|---|"]
    for name in stores.built_in:
        model = stores.get(name).settings_model()
        for line in _field_rows(model, [key for key in model.model_fields if key != "backend"]):
            rows.append(f"| `{name}` {line}")
    choices = ", ".join(f"`{name}`: {stores.get(name).summary}" for name in stores.built_in)
    return f"`backend` (default `{registry.DEFAULT_CHECKPOINT_STORE}`): {choices}.\n\n" + (
        "\n".join(rows) + "\n"
    )


def _destinations() -> str:
    rows = ["| service | destination | ARN |", "|---|---|---|"]
    for name in registry.DESTINATIONS.built_in:
        plugin = registry.DESTINATIONS.get(name)
        model = cast(type[DestinationSettings], plugin.settings_model())
        form = model.arn_form.partition("(")[2].rstrip(")")
        rows.append(f"| `{name}` | {_cell(plugin.summary)} | `{form}` |")
    return "\n".join(rows) + "\n"


def sections() -> dict[str, str]:
    """Every generated section of the page, by the name its marker gives."""
    found = {
        "function types": _function_types(),
        "function common": field_table(
            FunctionSettings, [name for name in FunctionSettings.model_fields if name != "type"]
        ),
        "state": _state(),
        "destinations": _destinations(),
    }
    for name in registry.FUNCTION_BACKENDS.built_in:
        model = registry.FUNCTION_BACKENDS.get(name).settings_model()
        found[f"function {name}"] = field_table(model, _own_fields(model))
    return found


def rewrite(text: str) -> str:
    """`text` with every marked section regenerated.

    :raises StaleReference: a section the registry needs is not marked in `text`, or a
        marker names no section.
    """
    wanted = sections()
    marked = {match["name"] for match in _MARKED.finditer(text)}
    missing = sorted(set(wanted) - marked)
    unknown = sorted(marked - set(wanted))
    if missing or unknown:
        raise StaleReference(
            f"sections not marked in the page: {missing or 'none'}; "
            f"markers naming no section: {unknown or 'none'}"
        )
    return _MARKED.sub(lambda m: m["open"] + wanted[m["name"]] + m["close"], text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esm.reference", description=__doc__)
    parser.add_argument("page", type=Path, help="docs/configuration.md")
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when stale")
    args = parser.parse_args(argv)
    text = args.page.read_text(encoding="utf-8")
    try:
        fresh = rewrite(text)
    except StaleReference as exc:
        print(f"{args.page}: {exc}", file=sys.stderr)
        return 1
    if fresh == text:
        return 0
    if args.check:
        print(f"{args.page}: tables differ from the models; run python -m esm.reference")
        return 1
    args.page.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
