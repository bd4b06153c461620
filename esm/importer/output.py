"""esm.yaml from imported mappings: its `functions` and `mappings`, checked against esm's
own configuration model, and written as YAML people can read."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from esm.config import MappingConfig, config_model
from esm.importer.errors import ImportFailure
from esm.importer.model import FunctionSpec, ImportedMapping
from esm.importer.notes import Notes
from esm.importer.values import Text, Unquoted, Variable, variable_name

__all__ = ["FUNCTION_TYPES", "FunctionOptions", "build_config", "dump_config", "variables_in"]

# The backends an imported function can become; each needs settings the input cannot give
# for the others (a weighted function splits between functions it would have to invent).
FUNCTION_TYPES = ("http", "python", "command", "lambda", "runtime")
DEFAULT_URL = "http://127.0.0.1:8080/"
_RUNTIME_FIRST_PORT = 9001


@dataclass(frozen=True)
class FunctionOptions:
    """How imported functions are run: `{function}` in a setting is the function's name."""

    type: str = "http"
    url: str = DEFAULT_URL
    handler: str | None = None
    command: str | None = None


_NOT_KEY = re.compile(r"[^A-Za-z0-9_-]+")
_NOT_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


class _Functions:
    """The `functions` section, one key per distinct function of the input."""

    def __init__(self, options: FunctionOptions, notes: Notes) -> None:
        self._options = options
        self._notes = notes
        self._keys: dict[FunctionSpec, str] = {}
        self.settings: dict[str, dict[str, Any]] = {}

    def key_for(self, spec: FunctionSpec) -> str:
        known = self._keys.get(spec)
        if known is not None:
            return known
        base = _NOT_KEY.sub("-", spec.name).strip("-")[:60] or "function"
        key, number = base, 2
        # Two functions that clean up to the same key are told apart by a number.
        while key in self.settings:
            key, number = f"{base}-{number}", number + 1
        self._keys[spec] = key
        self.settings[key] = self._settings(key, spec)
        return key

    def _settings(self, key: str, spec: FunctionSpec) -> dict[str, Any]:
        kind = self._options.type
        if kind == "lambda":
            # Lambda applies the function's own timeout, memory and concurrency.
            return {"type": "lambda", **self._lambda_target(key, spec)}
        settings: dict[str, Any] = {"type": kind, **self._backend(key, spec)}
        if spec.timeout is not None:
            settings["timeout"] = spec.timeout
        if spec.memory_size is not None:
            settings["memory_size"] = spec.memory_size
        if spec.reserved_concurrency:
            settings["max_concurrency"] = spec.reserved_concurrency
        elif spec.reserved_concurrency == 0:
            self._notes.add(
                f"functions.{key}",
                "ReservedConcurrentExecutions 0 (the function is throttled) not translated",
            )
        return settings

    def _backend(self, key: str, spec: FunctionSpec) -> dict[str, Any]:
        options = self._options
        if options.type == "http":
            return {"url": options.url.replace("{function}", key)}
        if options.type == "runtime":
            # Each runtime function serves its own Runtime API, so each needs its own port.
            return {"listen": f"127.0.0.1:{_RUNTIME_FIRST_PORT + len(self.settings)}"}
        if options.type == "python":
            handler = options.handler or _colon_handler(spec.handler)
            return {
                "handler": handler.replace("{function}", key)
                if handler
                else self._unknown(
                    key, "HANDLER", f"the Python handler of {key} (module:function)", "mod:handle"
                )
            }
        command = options.command
        return {
            "command": command.replace("{function}", key)
            if command
            else self._unknown(key, "COMMAND", f"the command that runs {key}", "true")
        }

    def _lambda_target(self, key: str, spec: FunctionSpec) -> dict[str, Any]:
        if spec.target is None:
            origin = f"the name CloudFormation gives {spec.name} (it has no FunctionName)"
            return {"function_name": self._unknown(key, "FUNCTION_NAME", origin, key)}
        return {} if spec.target == key else {"function_name": spec.target}

    def _unknown(self, key: str, what: str, origin: str, sample: str) -> Text:
        return Text((Variable(variable_name(key, what), origin, sample),))


def _colon_handler(handler: str | None) -> str | None:
    """Lambda's `package.module.function` as esm writes it, `package.module:function`."""
    if handler is None or "." not in handler:
        return None
    module, _, function = handler.rpartition(".")
    return f"{module}:{function}"


def build_config(
    mappings: Sequence[ImportedMapping], options: FunctionOptions, notes: Notes
) -> dict[str, Any]:
    """esm.yaml's content: every mapping esm accepts, and the functions they call."""
    functions = _Functions(options, notes)
    entries: list[tuple[str, dict[str, Any]]] = []
    seen: set[tuple[str, str]] = set()
    for mapping in mappings:
        key = functions.key_for(mapping.function)
        source = mapping.parameters["EventSourceArn"]
        identity = (key, source.rendered() if isinstance(source, Text) else str(source))
        if identity in seen:
            # AWS refuses a second mapping of one function and source (ResourceConflict).
            notes.add(mapping.where, "skipped: the same function and EventSourceArn as another")
            continue
        seen.add(identity)
        entries.append((mapping.where, {"FunctionName": key, **mapping.parameters}))
    checked = _named_apart(_accepted(entries, frozenset(functions.settings), notes))
    used = {entry["FunctionName"] for entry in checked}
    return {
        "functions": {k: v for k, v in functions.settings.items() if k in used},
        "mappings": checked,
    }


# ---------------------------------------------------------------------- checking


def _sampled(value: Any) -> Any:
    """`value` with each variable replaced by a sample of its shape, for esm's model to
    check; None where a variable has no sample (that part cannot be checked)."""
    if isinstance(value, Text):
        return value.sampled()
    if isinstance(value, Unquoted):
        return None
    if isinstance(value, Mapping):
        items = {key: _sampled(item) for key, item in value.items()}
        return {key: item for key, item in items.items() if item is not None}
    if isinstance(value, list):
        return [item for item in (_sampled(item) for item in value) if item is not None]
    return value


def _accepted(
    entries: list[tuple[str, dict[str, Any]]], functions: frozenset[str], notes: Notes
) -> list[tuple[str, dict[str, Any]]]:
    kept = []
    for where, entry in entries:
        fitted = _fitted(entry, where, functions, notes)
        if fitted is not None:
            kept.append((where, fitted))
    return kept


def _derived_name(entry: Mapping[str, Any]) -> str | None:
    """The name esm gives a mapping without `name` (function-source), when the source's
    name is known before esm runs."""
    source = entry["EventSourceArn"]
    text = source if isinstance(source, str) else source.rendered()
    resource = text.split(":", 5)[-1]
    if resource.split("/")[0] in ("stream", "table") and "/" in resource:
        resource = resource.split("/")[1]
    return None if "${" in resource else f"{entry['FunctionName']}-{resource}"


def _named_apart(entries: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The mappings, with a `name` from the input (the event's or resource's id) where the
    name esm would derive is shared with another or cannot be known yet: esm refuses two
    mappings of one name (one function reading a stream and a table of the same name)."""
    derived = [_derived_name(entry) for _, entry in entries]
    per_function: dict[str, int] = {}
    for _, entry in entries:
        per_function[entry["FunctionName"]] = per_function.get(entry["FunctionName"], 0) + 1
    named = []
    for (where, entry), name in zip(entries, derived, strict=True):
        shared = derived.count(name) > 1 if name else per_function[entry["FunctionName"]] > 1
        if shared:
            label = _NOT_NAME.sub("-", where.rsplit(".", 1)[-1]).strip("-")
            entry = {**entry, "name": f"{entry['FunctionName']}-{label}"[:128]}
        named.append(entry)
    return named


def _fitted(
    entry: dict[str, Any], where: str, functions: frozenset[str], notes: Notes
) -> dict[str, Any] | None:
    """The mapping without the parameters esm refuses, by esm's own rules; None when
    esm refuses the mapping itself. A mapping whose source is a variable without a sample
    is kept as it is: esm validate checks it once the variable is set."""
    for _ in range(len(entry) + 1):
        sample = _sampled(entry)
        if "EventSourceArn" not in sample:
            return entry
        try:
            MappingConfig.model_validate(sample, context={"functions": functions})
        except ValidationError as exc:
            refused = _refused_parameters(exc)
        else:
            return entry
        for name, message in refused.items():
            culprits = _culprits(name, message, entry)
            if not culprits:
                notes.add(where, f"skipped: esm refuses it: {name or 'mapping'}: {message}")
                return None
            for culprit in culprits:
                notes.add(f"{where}.{culprit}", f"not translated: esm refuses it: {message}")
            entry = {key: value for key, value in entry.items() if key not in culprits}
    return entry


_ESSENTIAL = ("EventSourceArn", "FunctionName")


def _culprits(name: str, message: str, entry: Mapping[str, Any]) -> list[str]:
    """The parameters to drop for esm to accept the mapping: the one refused, or, when the
    rule is about a parameter left at its default (the batching window that a BatchSize
    over 10 needs), those the rule names; none when the mapping itself is refused."""
    if name in entry and name not in _ESSENTIAL:
        return [name]
    if name in _ESSENTIAL or not name:
        return []
    return [key for key in entry if key not in _ESSENTIAL and key in message]


def _refused_parameters(exc: ValidationError) -> dict[str, str]:
    refused: dict[str, str] = {}
    for error in exc.errors():
        location = error.get("loc") or ("",)
        refused.setdefault(str(location[0]), " ".join(str(error.get("msg", "")).split()))
    return refused


def check_functions(config: Mapping[str, Any]) -> None:
    """The functions section as esm reads it.

    :raises ImportFailure: a setting given on the command line is refused (a bad --url).
    """
    try:
        config_model().model_validate(
            {"functions": _sampled(config["functions"]), "mappings": []},
            context={"functions": frozenset(config["functions"])},
        )
    except ValidationError as exc:
        for error in exc.errors():
            location = error.get("loc") or ()
            if location and location[0] == "functions":
                where = ".".join(str(part) for part in location[:3])
                raise ImportFailure(f"{where}: {' '.join(str(error['msg']).split())}") from None


# ---------------------------------------------------------------------- writing


def variables_in(value: Any) -> dict[str, Variable]:
    """The variables the output leaves for esm's environment, by name, in order."""
    found: dict[str, Variable] = {}
    if isinstance(value, Text):
        found.update((v.name, v) for v in value.variables)
    elif isinstance(value, Unquoted):
        found[value.variable.name] = value.variable
    elif isinstance(value, Mapping):
        for item in value.values():
            found.update(variables_in(item))
    elif isinstance(value, list):
        for item in value:
            found.update(variables_in(item))
    return found


class _Dumper(yaml.SafeDumper):
    """YAML for esm.yaml: `$` doubled in literal text, since esm expands `${...}` in the
    file's text before parsing it."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value.replace("$", "$$"))


def _represent_text(dumper: yaml.SafeDumper, value: Text) -> yaml.Node:
    # Quoted, so that what esm substitutes stays a string whatever it looks like.
    return dumper.represent_scalar("tag:yaml.org,2002:str", value.rendered(), style="'")


def _represent_unquoted(dumper: yaml.SafeDumper, value: Unquoted) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", f"${{{value.variable.name}}}")


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(Text, _represent_text)
_Dumper.add_representer(Unquoted, _represent_unquoted)


def dump_config(config: Mapping[str, Any], header: Sequence[str]) -> str:
    """The configuration as YAML, after `header` as comment lines."""
    body = yaml.dump(dict(config), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header)
    return comments + body
