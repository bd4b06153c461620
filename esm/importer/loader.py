"""Reading the input file: JSON, or YAML with CloudFormation's short-form tags.

The tags become the long form CloudFormation's JSON uses (`!Ref X` is `{"Ref": "X"}`,
`!GetAtt A.B` is `{"Fn::GetAtt": ["A", "B"]}`), so the rest of the importer reads one form.
"""

from __future__ import annotations

import json
import os
from typing import Any

import yaml

from esm.importer.errors import ImportFailure

__all__ = ["MAX_INPUT_BYTES", "load_document"]

# CloudFormation takes templates of at most 1 MB; a listing of thousands of mappings is a
# few MB. Anything far larger is not what this command reads.
MAX_INPUT_BYTES = 16 * 1024 * 1024


class _TemplateLoader(yaml.SafeLoader):
    """SafeLoader that knows every `!Tag` as an intrinsic function."""


def _construct_node(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    raise yaml.constructor.ConstructorError(None, None, "unknown node", node.start_mark)


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    value = _construct_node(loader, node)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        # The short form writes `Resource.Attribute`; the attribute may hold dots itself.
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {f"Fn::{suffix}": value}


_TemplateLoader.add_multi_constructor("!", _construct_tag)


def load_document(path: str) -> Any:
    """The parsed content of `path`.

    :raises ImportFailure: the file cannot be read, is not text, or is neither JSON nor YAML;
        the message is one line naming the file and, where known, the line.
    """
    text = _read_text(path)
    if not text.strip():
        raise ImportFailure(f"{path}: the file is empty")
    if text.lstrip().startswith(("{", "[")):
        return _load_json(text, path)
    return _load_yaml(text, path)


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as file:
            # Never more than the limit: the path may name a device or an endless pipe.
            data = file.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise ImportFailure(f"{path}: cannot read the file: {exc.strerror}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise ImportFailure(f"{path}: larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB")
    if b"\x00" in data:
        raise ImportFailure(f"{path}: not a text file (binary data)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFailure(f"{path}: not UTF-8 text: {exc.reason}") from None


def _load_json(text: str, path: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFailure(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise ImportFailure(f"{path}: invalid JSON: nested too deeply") from None


def _load_yaml(text: str, path: str) -> Any:
    name = os.fspath(path)
    try:
        return yaml.load(text, Loader=_TemplateLoader)  # a SafeLoader: no Python objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        raise ImportFailure(f"{where}: invalid YAML: {what}") from None
    except yaml.YAMLError as exc:
        raise ImportFailure(f"{name}: invalid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ImportFailure(f"{name}: invalid YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:
        # Values that parse but cannot be built: an impossible date, a huge integer.
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ImportFailure(f"{name}: invalid YAML: a value cannot be read: {reason}") from None
