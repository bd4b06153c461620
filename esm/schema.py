"""The JSON Schema of esm.yaml, for editors that complete and check it as it is typed.

It is generated from the configuration models, so it names every setting and its type. The
rules that depend on other settings (a range that differs between Kinesis and SQS, a
parameter that applies to one source only) stay with `esm validate`.
"""

from __future__ import annotations

from typing import Any

from esm.config import EsmConfig

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def config_schema() -> dict[str, Any]:
    schema = EsmConfig.model_json_schema()
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "esm configuration (esm.yaml)",
        **{key: value for key, value in schema.items() if key != "title"},
    }
