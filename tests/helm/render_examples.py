"""The manifests in deploy/kubernetes, rendered from the chart, for reading and for clusters
managed without Helm. Regenerate them after changing the chart:

    .venv/bin/python -m tests.helm.render_examples

tests/helm/test_examples.py fails when they are out of date.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ._helm import CHART, EXAMPLE, NAMESPACE, RELEASE, ROOT, load

DEPLOY = ROOT / "deploy" / "kubernetes"

# Each manifest: what renders it, its release and namespace, and what it shows.
EXAMPLES: dict[str, tuple[Path, str | None, str]] = {
    "sidecar.yaml": (
        EXAMPLE,
        None,
        "esm as a sidecar: deploy/examples/orders-app with its default values. The app's pod\n"
        "has the app and esm; esm reads a Kinesis stream and POSTs each batch to the app on\n"
        "127.0.0.1:8080; the app's preStop hook keeps it up until esm has finished.",
    ),
    "sqs-deployment.yaml": (
        CHART,
        "sqs-deployment.values.yaml",
        "esm standalone, reading an SQS queue, scaled by KEDA on the queue's backlog: helm/esm\n"
        "with sqs-deployment.values.yaml.",
    ),
}


def _is_hook(obj: dict[str, Any]) -> bool:
    return "helm.sh/hook" in (obj.get("metadata", {}).get("annotations") or {})


def render_example(name: str) -> str:
    """The manifest as Helm renders it (its own text, comments included), hooks left out."""
    chart, values_file, about = EXAMPLES[name]
    values = yaml.safe_load((DEPLOY / values_file).read_text()) if values_file else {}
    rendered = load(chart).render(values, name=RELEASE, namespace=NAMESPACE)
    header = "\n".join(f"# {line}" for line in about.splitlines())
    parts = [
        f"{header}\n#\n# Rendered by `python -m tests.helm.render_examples` (release {RELEASE}, "
        f"namespace {NAMESPACE}):\n# edit the chart or the values and render again, not this "
        "file.\n"
    ]
    for template, text in sorted(rendered.items()):
        obj = yaml.safe_load(text) if template.endswith(".yaml") else None
        if not obj or _is_hook(obj):
            continue  # NOTES.txt, templates that rendered nothing, helm test's pod
        source = template.split("/", 1)[1]
        parts.append(f"---\n# Source: {source}\n{text.strip()}\n")
    return "".join(parts)


def main() -> None:
    for name in EXAMPLES:
        (DEPLOY / name).write_text(render_example(name))
        print(f"wrote deploy/kubernetes/{name}")


if __name__ == "__main__":
    main()
