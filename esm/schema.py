"""The JSON Schema of esm.yaml, for editors that complete and check it as it is typed.

It is generated from the configuration models, with every registered plugin's settings
(function types, checkpoint stores), so it names every setting, its type, its range and
what it does. The rules that depend on other settings (a range that differs between Kinesis
and SQS, a parameter that applies to one source only) stay with `esm validate`.
"""

from __future__ import annotations

from typing import Any

from esm import registry
from esm.config import config_model

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def config_schema() -> dict[str, Any]:
    # Every installed backend plugin that declares its settings, not only those a file uses.
    for name in registry.backend_entry_points():
        registry.discover_backend(name)
    schema = config_model().model_json_schema()
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "esm configuration (esm.yaml)",
        **{key: value for key, value in schema.items() if key != "title"},
    }
