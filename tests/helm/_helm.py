"""Rendering the chart with Helm's own engine, and validating what it renders.

helm_python (helm-python-sdk) bundles the Helm SDK: it lints and renders charts without a helm
binary or a cluster. kubernetes_validate checks Kubernetes' own kinds against the API's schema;
the custom resources (ServiceMonitor, PodMonitor, PrometheusRule, ScaledObject) are checked
against their definitions' schemas in crds/.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "esm"
EXAMPLE = ROOT / "deploy" / "examples" / "orders-app"
CRDS = Path(__file__).parent / "crds"
RELEASE = "shop"
NAMESPACE = "orders"
# The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion), and the newest schema
# kubernetes-validate has.
KUBE_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

helm_python.disable_logging()


@functools.cache
def load(path: Path) -> helm_python.Chart:
    return helm_python.Chart.load(str(path))


def render(path: Path, values: Mapping[str, Any] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every object the chart renders with `values`, by template (NOTES.txt left out)."""
    rendered = load(path).render(dict(values or {}), name=RELEASE, namespace=NAMESPACE)
    out: dict[str, list[dict[str, Any]]] = {}
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        docs = [doc for doc in yaml.safe_load_all(text) if doc]
        if docs:
            out[template] = docs
    return out


def notes(path: Path, values: Mapping[str, Any] | None = None) -> str:
    rendered = load(path).render(dict(values or {}), name=RELEASE, namespace=NAMESPACE)
    return next(text for template, text in rendered.items() if template.endswith("NOTES.txt"))


def objects(rendered: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [doc for docs in rendered.values() for doc in docs]


def one(rendered: Mapping[str, list[dict[str, Any]]], kind: str, name: str | None = None) -> Any:
    found = [
        doc
        for doc in objects(rendered)
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} objects rendered"
    return found[0]


def kinds(rendered: Mapping[str, list[dict[str, Any]]]) -> set[str]:
    return {doc["kind"] for doc in objects(rendered)}


def merge(base: Mapping[str, Any], *overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in, maps recursively (as Helm merges values)."""
    out = copy.deepcopy(dict(base))
    for override in overrides:
        for key, value in override.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


# --------------------------------------------------------------------------- validation


def _strict(schema: Any) -> Any:
    """A CRD's structural schema, refusing fields it does not name (as the API server
    prunes them, a typo would silently vanish)."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def _crd_validators() -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    validators = {}
    for path in CRDS.glob("*.json"):
        crd = json.loads(path.read_text())
        api_version = f"{crd['group']}/{crd['version']}"
        validators[(api_version, crd["kind"])] = jsonschema.Draft7Validator(_strict(crd["schema"]))
    return validators


def validate(obj: Mapping[str, Any]) -> None:
    """Raise AssertionError naming the object and the field when `obj` is not valid."""
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    crd = _crd_validators().get((obj["apiVersion"], obj["kind"]))
    if crd is not None:
        errors = sorted(crd.iter_errors(obj), key=lambda e: list(e.absolute_path))
        assert not errors, f"{name}: " + "; ".join(
            f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
        )
        return
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(dict(obj), version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            raise AssertionError(f"{name} (Kubernetes {version}): {path}: {exc.message}") from None
        except kubernetes_validate.SchemaNotFoundError as exc:
            raise AssertionError(f"{name}: {exc.message}") from None


def validate_all(rendered: Mapping[str, list[dict[str, Any]]]) -> None:
    for obj in objects(rendered):
        validate(obj)


# --------------------------------------------------------------------------- tools


def tool(name: str, install: str) -> str:
    """The path of a command-line tool the checks need; a missing tool fails the test."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        message = f"{name} is not installed ({install}); .ci/run installs it"
        if os.environ.get("CI"):
            # CI must run every check: a missing tool there is a failure, never a skip.
            pytest.fail(message, pytrace=False)
        # On a developer's machine the README's test command still passes, and the summary
        # says which checks did not run and why.
        pytest.skip(message)
    return found


def promtool() -> str:
    return tool("promtool", "apt-get install prometheus")


def run(args: Iterable[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=60, check=False, **kwargs
    )


def esm_validate(config_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`esm validate` on a configuration, as the container would read it."""
    path = tmp_path / "esm.yaml"
    path.write_text(config_text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return run([sys.executable, "-m", "esm", "validate", "-c", str(path)], env=env, cwd=tmp_path)


# --------------------------------------------------------------------------- PromQL


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_KEYWORDS |= {"and", "or", "unless", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords, label names, label
    values and durations left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and other strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    grouping = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
    text = re.sub(grouping, "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        following = text[match.end() :].lstrip()
        if following.startswith("(") or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def exported_metric_names() -> set[str]:
    """Every sample name esm's /metrics can show (counters with _total, histograms with
    _bucket, _sum and _count, info metrics with _info), process and Python metrics included."""
    from esm.metrics import Metrics

    names = set()
    for family in Metrics().registry.collect():
        kind = family.type
        if kind == "counter":
            names.add(f"{family.name}_total")
        elif kind == "histogram":
            names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
        elif kind == "info":
            names.add(f"{family.name}_info")
        else:
            names.add(family.name)
    return names
