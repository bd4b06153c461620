"""`esm schema`: the JSON Schema of esm.yaml, checked against the README's example."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from esm import registry
from esm.cli import main

from .test_registry import COUNTING

README = Path(__file__).resolve().parents[2] / "README.md"


def _schema() -> dict[str, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["schema"]) == 0
    schema: dict[str, Any] = json.loads(out.getvalue())
    return schema


def _readme_config() -> dict[str, Any]:
    block = re.search(r"```yaml\n(aws:.*?)```", README.read_text(), re.S)
    assert block, "the README shows a full configuration"
    config: dict[str, Any] = yaml.safe_load(block[1])
    return config


def test_the_schema_is_a_valid_json_schema() -> None:
    schema = _schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["properties"]) >= {"aws", "state", "admin", "functions", "mappings"}


def test_the_readme_configuration_passes_the_schema() -> None:
    jsonschema.Draft202012Validator(_schema()).validate(_readme_config())


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda c: c["mappings"][0].update(BatchSize="ten"), "a number as text"),
        (lambda c: c.update(polling_typo={}), "an unknown top-level key"),
        (lambda c: c["mappings"][0].update(BatchSise=10), "a misspelt parameter"),
        (lambda c: c["functions"]["orders"].update(type="carrier-pigeon"), "an unknown type"),
    ],
)
def test_the_schema_rejects_what_validate_rejects(change: Any, why: str) -> None:
    config = _readme_config()
    change(config)
    errors = list(jsonschema.Draft202012Validator(_schema()).iter_errors(config))
    assert errors, why


def test_every_plugin_model_is_in_the_schema_with_its_ranges_and_descriptions() -> None:
    definitions = _schema()["$defs"]
    for family in (registry.FUNCTION_BACKENDS, registry.CHECKPOINT_STORES):
        for model in family.settings_models():
            assert model.__name__ in definitions, model
    timeout = definitions["HttpFunctionConfig"]["properties"]["timeout"]
    assert (timeout["exclusiveMinimum"], timeout["maximum"], timeout["unit"]) == (0, 900, "seconds")
    assert "Lambda" in timeout["description"]
    workers = definitions["CommandFunctionConfig"]["properties"]["workers"]
    assert (workers["minimum"], workers["maximum"]) == (1, 1000)
    assert workers["description"]
    # A plugin from an installed package, with its own settings, is in it too.
    jsonl = definitions["JsonLinesSettings"]["properties"]
    assert (jsonl["max_line_bytes"]["minimum"], jsonl["max_line_bytes"]["maximum"]) == (
        1024,
        6_291_456,
    )


def test_a_test_registered_backend_is_in_the_schema() -> None:
    with registry.FUNCTION_BACKENDS.registered(COUNTING):
        definitions = _schema()["$defs"]
    step = definitions["CountingSettings"]["properties"]["step"]
    assert (step["minimum"], step["maximum"]) == (1, 5)
    assert "CountingSettings" not in _schema()["$defs"]
