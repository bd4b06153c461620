"""`esm import FILE`: which kind of input the file is, and the esm.yaml made from it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from esm import registry
from esm.importer.cloudformation import read_event_source_mappings
from esm.importer.errors import ImportFailure
from esm.importer.intrinsics import Resolver
from esm.importer.lambda_listing import read_listing
from esm.importer.loader import load_document
from esm.importer.model import ImportedMapping
from esm.importer.notes import Notes
from esm.importer.output import (
    FUNCTION_TYPES,
    FunctionOptions,
    build_config,
    check_functions,
    dump_config,
    variables_in,
)
from esm.importer.sam import read_sam_events
from esm.importer.values import Variable

__all__ = ["ImportOptions", "ImportResult", "import_file"]


@dataclass(frozen=True)
class ImportOptions:
    parameters: Mapping[str, str] = field(default_factory=dict)
    """`--param NAME=VALUE`: template parameters and pseudo parameters (AWS::Region)."""
    region: str | None = None
    account: str | None = None
    functions: FunctionOptions = field(default_factory=FunctionOptions)


@dataclass(frozen=True)
class ImportResult:
    text: str
    """esm.yaml."""
    mappings: int
    functions: int
    untranslated: tuple[str, ...]
    """What was not carried over, one line each."""
    variables: tuple[Variable, ...]
    """What the output leaves as ${VAR} for esm's environment."""

    def report_lines(self) -> list[str]:
        """The untranslated items, then the variables to set, one line each."""
        lines = list(self.untranslated)
        lines.extend(
            f"${{{v.name}}}: {v.origin} could not be resolved: set {v.name} when esm runs"
            for v in self.variables
        )
        return lines


def import_file(path: str, options: ImportOptions) -> ImportResult:
    """esm.yaml from a SAM or CloudFormation template (YAML or JSON), or the output of
    `aws lambda list-event-source-mappings`.

    :raises ImportFailure: the file cannot be read or parsed, or nothing in it could be
        imported; its `untranslated` says what was found and not translated.
    """
    _check_function_type(options.functions.type)
    document = load_document(path)
    notes = Notes()
    found, mappings, kind = _read(document, path, options, notes)
    if not found:
        raise ImportFailure(f"{path}: no event source mappings in this {kind}")
    config = build_config(mappings, options.functions, notes)
    if not config["mappings"]:
        raise ImportFailure(
            f"{path}: nothing could be imported: {found} mapping(s) found, none esm can run",
            untranslated=notes.lines,
        )
    check_functions(config)
    variables = tuple(variables_in(config).values())
    header = [
        f"esm.yaml imported from {path} ({kind}) by esm import.",
        *(f"Set {v.name}: {v.origin}" for v in variables),
    ]
    return ImportResult(
        text=dump_config(config, header),
        mappings=len(config["mappings"]),
        functions=len(config["functions"]),
        untranslated=notes.lines,
        variables=variables,
    )


def _check_function_type(kind: str) -> None:
    # Only the built-in backends whose settings an import can fill in, and only when the
    # registry has them (a trimmed build may not).
    if kind not in FUNCTION_TYPES or kind not in registry.FUNCTION_BACKENDS:
        usable = [name for name in FUNCTION_TYPES if name in registry.FUNCTION_BACKENDS]
        raise ImportFailure(f"--function-type {kind!r}: must be one of {', '.join(usable)}")


def _read(
    document: Any, path: str, options: ImportOptions, notes: Notes
) -> tuple[int, list[ImportedMapping], str]:
    if isinstance(document, Mapping) and "EventSourceMappings" in document:
        found, mappings = read_listing(document, notes)
        return found, mappings, "list-event-source-mappings output"
    if not (isinstance(document, Mapping) and isinstance(document.get("Resources"), Mapping)):
        raise ImportFailure(
            f"{path}: neither a SAM or CloudFormation template (no Resources) nor the output "
            "of aws lambda list-event-source-mappings (no EventSourceMappings)"
        )
    given = dict(options.parameters)
    if options.region:
        given.setdefault("AWS::Region", options.region)
    if options.account:
        given.setdefault("AWS::AccountId", options.account)
    resolver = Resolver(document, given)
    sam_found, sam_mappings = read_sam_events(document, resolver, notes)
    found, mappings = read_event_source_mappings(document, resolver, notes)
    kind = "SAM template" if sam_found else "CloudFormation template"
    return sam_found + found, [*sam_mappings, *mappings], kind
