"""The chart over a matrix of values: both modes, KEDA on and off, monitors on and off,
persistence on and off. Every combination lints clean, and every object it renders is valid
for Kubernetes (strictly: no unknown field) or for its custom resource's schema."""

from __future__ import annotations

import itertools
from typing import Any

import helm_python
import pytest
import yaml

from ._helm import (
    CHART,
    EXAMPLE,
    NAMESPACE,
    RELEASE,
    kinds,
    merge,
    notes,
    objects,
    one,
    render,
    validate_all,
)

pytestmark = pytest.mark.helm

SQS = "arn:aws:sqs:us-east-1:123456789012:payments"
KINESIS = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"

# Everything optional switched on, so that the matrix renders (and validates) all of it.
RICH = {
    "serviceAccount": {"irsaRoleArn": "arn:aws:iam::123456789012:role/esm"},
    "secrets": {
        "env": [{"name": "ORDERS_TOKEN", "secretName": "orders-token", "key": "token"}],
        "files": [{"secretName": "orders-ca", "mountPath": "/var/run/secrets/esm/ca"}],
    },
    "env": [{"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"}],
    "podAnnotations": {"example.com/team": "payments"},
    "commonLabels": {"team": "payments"},
    "networkPolicy": {
        "enabled": True,
        "metricsFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
        "egress": {
            "extra": [
                {
                    "to": [{"podSelector": {"matchLabels": {"app": "orders"}}}],
                    "ports": [{"port": 8080, "protocol": "TCP"}],
                }
            ]
        },
    },
    "config": {
        "functions": {
            "orders": {
                "type": "http",
                "url": "http://orders:8080/",
                "headers": {"Authorization": {"env": "ORDERS_TOKEN", "prefix": "Bearer "}},
            }
        },
        "mappings": [{"FunctionName": "orders", "EventSourceArn": SQS, "BatchSize": 10}],
    },
}

_OFF = {"enabled": False}
MONITORS = {
    "off": {"metrics": {"serviceMonitor": _OFF, "podMonitor": _OFF, "prometheusRule": _OFF}},
    "serviceMonitor": {
        "metrics": {
            "serviceMonitor": {"enabled": True},
            "podMonitor": _OFF,
            "prometheusRule": {"enabled": True},
            "grafanaDashboard": {"enabled": True},
        }
    },
    "podMonitor": {
        "metrics": {
            "serviceMonitor": _OFF,
            "podMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
        }
    },
}

MATRIX = list(
    itertools.product(["standalone", "sidecar"], [False, True], list(MONITORS), [False, True])
)


def _values(mode: str, keda: bool, monitors: str, persistence: bool) -> dict[str, Any]:
    return merge(
        RICH,
        MONITORS[monitors],
        {
            "mode": mode,
            "autoscaling": {"keda": {"enabled": keda}},
            "persistence": {"enabled": persistence},
        },
    )


def _render_case(mode: str, values: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    if mode == "sidecar":
        # A sidecar runs inside an application's pod: render the example application chart
        # with these esm values, so that the pod with both containers is validated too.
        return render(EXAMPLE, {"esm": values})
    return render(CHART, values)


@pytest.mark.parametrize(("mode", "keda", "monitors", "persistence"), MATRIX)
def test_every_object_rendered_is_valid(
    mode: str, keda: bool, monitors: str, persistence: bool
) -> None:
    values = _values(mode, keda, monitors, persistence)
    if mode == "standalone" and keda and persistence:
        # A state volume belongs to one process: the chart refuses to autoscale it.
        with pytest.raises(helm_python.HelmRenderError, match=r"autoscaling\.keda: a state volume"):
            render(CHART, values)
        return
    rendered = _render_case(mode, values)
    validate_all(rendered)
    found = kinds(rendered)
    assert {"ConfigMap", "ServiceAccount", "Service", "Pod"} <= found
    workload = "Deployment" if mode == "standalone" else "StatefulSet"
    assert workload in found
    assert ("ScaledObject" in found) == (keda and mode == "standalone")
    assert ("PodDisruptionBudget" in found) == (mode == "standalone")
    assert ("NetworkPolicy" in found) == (mode == "standalone")
    assert ("ServiceMonitor" in found) == (monitors == "serviceMonitor")
    assert ("PodMonitor" in found) == (monitors == "podMonitor")
    assert ("PrometheusRule" in found) == (monitors != "off")
    claims = "PersistentVolumeClaim" in found
    assert claims == (persistence and mode == "standalone")


@pytest.mark.parametrize(("mode", "keda", "monitors", "persistence"), MATRIX)
def test_every_combination_lints_clean(
    mode: str, keda: bool, monitors: str, persistence: bool
) -> None:
    values = _values(mode, keda, monitors, persistence)
    if mode == "standalone" and keda and persistence:
        return  # refused on purpose, above
    path, given = (EXAMPLE, {"esm": values}) if mode == "sidecar" else (CHART, values)
    report = helm_python.lint(str(path), given, strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    # Severity 1 is information ("icon is recommended"); 2 and above are warnings and errors.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_default_values_render_a_hardened_deployment() -> None:
    rendered = render(CHART)
    validate_all(rendered)
    assert kinds(rendered) == {
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Pod",
        "Service",
        "ServiceAccount",
    }
    deployment = one(rendered, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["fsGroup"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    [esm] = pod["containers"]
    context = esm["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert set(esm["resources"]) == {"requests", "limits"}
    assert esm["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "esm-admin"}
    assert esm["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "esm-admin"}
    assert esm["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "esm-admin"}
    mounts = {m["name"]: m["mountPath"] for m in esm["volumeMounts"]}
    assert mounts == {
        "esm-config": "/etc/esm",
        "esm-state": "/var/lib/esm/state",
        "esm-tmp": "/tmp",
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["esm-state"]
    # esm's own shutdown grace (30 s) fits in the pod's.
    assert pod["terminationGracePeriodSeconds"] == 45


def test_service_port_is_named_as_the_docs_scrape_config_expects() -> None:
    rendered = render(CHART)
    [port] = one(rendered, "Service")["spec"]["ports"]
    assert port["name"] == "esm-admin"
    [container] = one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["ports"][0]["name"] == "esm-admin"
    operations = (CHART.parents[1] / "docs" / "operations.md").read_text()
    assert "regex: esm-admin" in operations


def test_a_config_change_rolls_the_pods() -> None:
    def checksum(values: dict[str, Any]) -> str:
        deployment = one(render(CHART, values), "Deployment")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/esm-config"])

    first = checksum({})
    assert checksum({}) == first
    assert checksum({"config": {"log": {"level": "debug"}}}) != first
    # In sidecar mode the application's pod carries the same annotation.
    pod = one(render(EXAMPLE), "StatefulSet")["spec"]["template"]["metadata"]
    example = render(EXAMPLE, {"esm": {"config": {"log": {"level": "debug"}}}})
    changed = one(example, "StatefulSet")["spec"]["template"]["metadata"]
    key = "checksum/esm-config"
    assert pod["annotations"][key] != changed["annotations"][key]


def test_the_config_sets_the_admin_port_and_a_state_path_on_the_volume() -> None:
    rendered = render(CHART, {"admin": {"port": 9500}, "config": {"admin": {"enabled": False}}})
    config = yaml.safe_load(one(rendered, "ConfigMap")["data"]["esm.yaml"])
    assert config["admin"] == {"listen": "0.0.0.0:9500"}
    assert config["state"] == {"backend": "sqlite", "path": "/var/lib/esm/state/esm-state.db"}
    [container] = one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["ports"][0]["containerPort"] == 9500
    memory = render(CHART, {"config": {"state": {"backend": "memory"}}})
    assert yaml.safe_load(one(memory, "ConfigMap")["data"]["esm.yaml"])["state"] == {
        "backend": "memory"
    }


def test_functions_no_mapping_uses_are_left_out() -> None:
    # Helm merges maps: the example function of the default values would stay beside the
    # user's functions, so esm.yaml keeps only those a mapping uses.
    values = {
        "config": {
            "functions": {
                "pay": {"type": "weighted", "targets": [{"function": "a", "weight": 1}]},
                "a": {"type": "http", "url": "http://a:8080/"},
                "spare": {"type": "http", "url": "http://spare:8080/"},
                "real": {"type": "lambda"},
            },
            "mappings": [
                {"FunctionName": "pay", "EventSourceArn": SQS},
                {
                    "FunctionName": "arn:aws:lambda:us-east-1:123456789012:function:real:live",
                    "EventSourceArn": KINESIS,
                    "StartingPosition": "LATEST",
                },
            ],
        }
    }
    config = yaml.safe_load(one(render(CHART, values), "ConfigMap")["data"]["esm.yaml"])
    assert sorted(config["functions"]) == ["a", "pay", "real"]


def test_secrets_come_from_existing_secrets() -> None:
    rendered = render(CHART, RICH)
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert {
        "name": "ORDERS_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "orders-token", "key": "token"}},
    } in container["env"]
    mount = next(
        m for m in container["volumeMounts"] if m["mountPath"] == "/var/run/secrets/esm/ca"
    )
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"] == {"secretName": "orders-ca"}
    assert mount["readOnly"] is True
    assert not [o for o in objects(rendered) if o["kind"] == "Secret"], "no Secret is created"


def test_service_account_takes_the_irsa_role() -> None:
    account = one(render(CHART, RICH), "ServiceAccount")
    assert account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/esm"
    }
    assert account["automountServiceAccountToken"] is False


def test_persistence_uses_a_claim_and_never_two_pods_at_once() -> None:
    rendered = render(CHART, {"persistence": {"enabled": True, "storageClass": "gp3"}})
    claim = one(rendered, "PersistentVolumeClaim")
    assert claim["metadata"]["name"] == f"{RELEASE}-esm-state"
    assert claim["spec"]["storageClassName"] == "gp3"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    deployment = one(rendered, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["esm-state"]["persistentVolumeClaim"] == {"claimName": f"{RELEASE}-esm-state"}
    existing = render(CHART, {"persistence": {"enabled": True, "existingClaim": "kept"}})
    assert "PersistentVolumeClaim" not in kinds(existing)
    volumes = {
        v["name"]: v for v in one(existing, "Deployment")["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["esm-state"]["persistentVolumeClaim"] == {"claimName": "kept"}


def test_stream_mappings_run_in_one_pod_at_a_time() -> None:
    streams = {"config": {"mappings": [{"FunctionName": "orders", "EventSourceArn": KINESIS,
                                        "StartingPosition": "LATEST"}]}}  # fmt: skip
    deployment = one(render(CHART, streams), "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["spec"]["replicas"] == 1
    with pytest.raises(helm_python.HelmRenderError, match="replicaCount: 2 replicas would each"):
        render(CHART, merge(streams, {"replicaCount": 2}))
    with pytest.raises(helm_python.HelmRenderError, match=r"autoscaling\.keda: the configuration"):
        render(CHART, merge(streams, {"autoscaling": {"keda": {"enabled": True}}}))


def test_stream_mappings_on_leases_run_in_several_pods_and_roll() -> None:
    # With the dynamodb lease backend the replicas share the shards, and a rolling update
    # hands each one over after its final checkpoint.
    values = {
        "replicaCount": 3,
        "config": {
            "state": {"backend": "dynamodb", "table": "esm-leases"},
            "mappings": [
                {"FunctionName": "orders", "EventSourceArn": KINESIS, "StartingPosition": "LATEST"}
            ],
        },
    }
    rendered = render(CHART, values)
    validate_all(rendered)
    deployment = one(rendered, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    config = yaml.safe_load(one(rendered, "ConfigMap")["data"]["esm.yaml"])
    assert config["state"] == {"backend": "dynamodb", "table": "esm-leases"}  # no sqlite path


def test_sqs_mappings_scale_on_their_backlog_with_keda() -> None:
    rendered = render(CHART, {"replicaCount": 3, "autoscaling": {"keda": {"enabled": True}}})
    deployment = one(rendered, "Deployment")
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    scaled = one(rendered, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert scaled["spec"]["minReplicaCount"] == 1
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    # Each replica reports the whole queue: max per mapping, not a sum over pods.
    assert trigger["metadata"]["query"] == (
        f'sum(max by (mapping) (esm_queue_messages{{namespace="{NAMESPACE}",'
        f'job="{RELEASE}-esm",state="visible"}}))'
    )
    assert trigger["metadata"]["threshold"] == "100"


def test_stream_triggers_wait_for_shared_shards() -> None:
    # Once replicas can share a stream's shards (the dynamodb lease backend), KEDA scales
    # streams on shards and lag per replica.
    values = {
        "config": {
            "state": {"backend": "dynamodb"},
            "mappings": [
                {"FunctionName": "orders", "EventSourceArn": KINESIS, "StartingPosition": "LATEST"}
            ],
        },
        "autoscaling": {"keda": {"enabled": True}},
    }
    rendered = render(CHART, values)
    validate_all(rendered)
    triggers = {t["name"]: t for t in one(rendered, "ScaledObject")["spec"]["triggers"]}
    assert set(triggers) == {"stream-shards", "stream-lag"}
    assert triggers["stream-lag"]["metricType"] == "Value"


def test_monitors_are_one_or_the_other() -> None:
    both = {"metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}}
    with pytest.raises(helm_python.HelmRenderError, match="not both"):
        render(CHART, both)


def test_sidecar_mode_renders_no_workload_of_its_own() -> None:
    rendered = render(CHART, {"mode": "sidecar", "persistence": {"enabled": True}})
    assert kinds(rendered) == {"ConfigMap", "Pod", "Service", "ServiceAccount"}
    service = one(rendered, "Service")
    assert service["spec"]["selector"] == {"esm-sidecar": f"{RELEASE}-esm"}


def test_helm_test_pod_asks_readyz_through_the_service() -> None:
    pod = one(render(CHART), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "app.kubernetes.io/name" not in pod["metadata"]["labels"], "not one of esm's pods"
    script = pod["spec"]["containers"][0]["command"][-1]
    assert f"http://{RELEASE}-esm.{NAMESPACE}.svc:9464/readyz" in script
    compile(script, "readyz", "exec")


def test_network_policy_opens_the_admin_port_and_restricts_egress() -> None:
    policy = one(render(CHART, RICH), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    [ingress] = policy["ingress"]
    assert ingress["ports"] == [{"port": "esm-admin", "protocol": "TCP"}]
    test_pod = {"app.kubernetes.io/instance": RELEASE, "app.kubernetes.io/component": "test"}
    assert {"podSelector": {"matchLabels": test_pod}} in ingress["from"]
    ports = [p["port"] for rule in policy["egress"] for p in rule.get("ports", [])]
    assert {53, 443, 80, 8080} <= set(ports)


def test_sidecar_stop_order_the_app_outlives_esm() -> None:
    statefulset = one(render(EXAMPLE), "StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    app, esm = pod["containers"]
    assert (app["name"], esm["name"]) == ("app", "esm")
    assert "lifecycle" not in esm, "esm gets SIGTERM at once and drains"
    grace = 30  # config.delivery.shutdown_grace_seconds of the example
    assert app["lifecycle"]["preStop"] == {"sleep": {"seconds": grace + 5}}
    assert pod["terminationGracePeriodSeconds"] == grace + 5 + 10
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert labels["esm-sidecar"] == f"{RELEASE}-esm"
    assert pod["serviceAccountName"] == f"{RELEASE}-esm"
    assert pod["securityContext"]["fsGroup"] == 10001
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "esm-state"
    assert "esm-state" not in {v["name"] for v in pod["volumes"]}

    longer = render(
        EXAMPLE,
        {"esm": {"config": {"delivery": {"shutdown_grace_seconds": 90}}, "sidecar": {
            "preStop": "exec", "preStopExtraSeconds": 10, "appShutdownSeconds": 20}}},
    )  # fmt: skip
    pod = one(longer, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["containers"][0]["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "100"]}}
    assert pod["terminationGracePeriodSeconds"] == 120


def test_sidecar_without_persistence_keeps_its_state_on_an_empty_dir() -> None:
    rendered = render(EXAMPLE, {"esm": {"persistence": {"enabled": False}}})
    statefulset = one(rendered, "StatefulSet")
    assert "volumeClaimTemplates" not in statefulset["spec"]
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["esm-state"]


def test_notes_say_how_to_check_and_warn_about_lost_checkpoints() -> None:
    text = notes(CHART)
    assert "esm 0.1.0 (standalone): 1 mapping(s), 1 function(s)." in text
    assert f"port-forward service/{RELEASE}-esm 9464" in text
    assert "/readyz" in text
    assert "WARNING" not in text, "SQS mappings keep no checkpoints"
    streams = {"config": {"mappings": [{"FunctionName": "example", "EventSourceArn": KINESIS,
                                        "StartingPosition": "LATEST"}]}}  # fmt: skip
    assert "checkpoints on an emptyDir" in notes(CHART, streams)
    assert "WARNING" not in notes(CHART, merge(streams, {"persistence": {"enabled": True}}))
    memory = merge(streams, {"config": {"state": {"backend": "memory"}}})
    assert "state.backend is memory" in notes(CHART, memory)
