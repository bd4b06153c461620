"""docs/configuration.md's tables of plugin settings agree with the models they describe."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field

from esm import reference, registry
from esm.backends.http_plugin import HttpFunctionConfig

from .test_registry import COUNTING

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_committed_reference_is_what_the_models_generate() -> None:
    text = PAGE.read_text(encoding="utf-8")
    assert reference.rewrite(text) == text, (
        "docs/configuration.md is stale: run python -m esm.reference docs/configuration.md"
    )
    assert reference.main([str(PAGE), "--check"]) == 0


def test_a_field_added_without_docs_makes_the_reference_stale() -> None:
    class WiderHttp(HttpFunctionConfig):
        retries: int = Field(0, ge=0, le=5, description="Tries after the first.")

    documented = reference.field_table(HttpFunctionConfig, list(HttpFunctionConfig.model_fields))
    widened = reference.field_table(WiderHttp, list(WiderHttp.model_fields))
    assert documented != widened
    assert "| `retries` | integer | `0` | between 0 and 5 | Tries after the first. |" in widened


def test_every_table_states_types_defaults_and_ranges() -> None:
    text = PAGE.read_text(encoding="utf-8")
    assert "| `timeout` | number (seconds) | `3` | greater than 0 and at most 900 seconds |" in text
    assert "| `memory_size` | integer (MB) | `128` | between 128 and 10240 MB |" in text
    assert "| `workers` | integer | `1` | between 1 and 1000 |" in text
    assert "| `targets[].weight` | number | required | greater than 0 |" in text
    assert "| `sqlite` | `path` | string | `esm-state.db` |" in text


def test_a_built_in_plugin_without_a_section_is_reported() -> None:
    text = PAGE.read_text(encoding="utf-8")
    family = registry.FUNCTION_BACKENDS
    with family.registered(COUNTING), pytest.MonkeyPatch.context() as patch:
        patch.setattr(family, "built_in", (*family.built_in, COUNTING.name))
        with pytest.raises(reference.StaleReference, match="function test-counting"):
            reference.rewrite(text)
    broken = text.replace("<!-- generated: function python -->", "<!-- generated: function py -->")
    with pytest.raises(reference.StaleReference, match="function py"):
        reference.rewrite(broken)
