"""deploy/kubernetes holds manifests rendered from the chart: they must be what it renders now,
and valid."""

from __future__ import annotations

import pytest
import yaml

from ._helm import validate
from .render_examples import DEPLOY, EXAMPLES, render_example

pytestmark = pytest.mark.helm


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_rendered_manifests_are_up_to_date(name: str) -> None:
    expected = render_example(name)
    assert (DEPLOY / name).read_text() == expected, (
        f"deploy/kubernetes/{name} is out of date: run `.venv/bin/python -m "
        "tests.helm.render_examples`"
    )
    for obj in yaml.safe_load_all(expected):
        if obj:
            validate(obj)
