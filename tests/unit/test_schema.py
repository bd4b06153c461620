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

from esm.cli import main

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
