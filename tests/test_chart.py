"""The Helm chart, rendered without a cluster: `helm lint --strict`, the objects each main
value combination renders, the values schema refusing unknown and mistyped values, and the
chart agreeing with the operator (its CRD, its RBAC rules, its default images).

Needs the helm binary the project's tooling builds (`make prepare` caches it under
~/.cache/inferops/bin), or a helm on PATH; without either these tests fail, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.localcluster.build import HELM
from testsupport.helm import CHART, NAMESPACE, RELEASE, Helm, find_helm
from testsupport.monitoring import alerts, check_rules, rule_groups, run_promtool, split_condition

from inferops import dashboard, registry
from inferops.__main__ import parse_args
from inferops.builders.common import DEFAULT_IMAGES
from inferops.builders.network_policy import NetworkPolicyConfig, parse_peers

pytestmark = [pytest.mark.helm, pytest.mark.prometheus]

REPO = Path(__file__).resolve().parents[1]
CRD_SOURCE = REPO / "crds" / "inferencebackends.yaml"
RULES = yaml.safe_load((CHART / "files" / "rules.yaml").read_text())

CLUSTER_SCOPED = ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition")

Objects = list[dict[str, Any]]


def helm_binary() -> str:
    """The helm the project builds (pinned version), else one on PATH."""
    return find_helm(HELM)


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary(), tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="module")
def render(helm: Helm) -> Iterator[Callable[..., Objects]]:
    yield helm.render


def only(objects: Objects, kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def container(objects: Objects) -> dict[str, Any]:
    containers = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env(objects: Objects) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(objects)["env"]}


def kinds(objects: Objects) -> list[str]:
    return sorted(o["kind"] for o in objects)


# ---------------------------------------------------------------- lint and metadata


def test_helm_lint_strict_passes(helm: Helm) -> None:
    for values in (
        [],
        [
            "--set",
            "watchNamespaces={a,b}",
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "dashboard.enabled=true",
            "--set",
            "prometheusRule.enabled=true",
        ],
    ):
        result = helm.run("lint", "--strict", str(CHART), *values)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == "0.1.0"
    assert chart["appVersion"] == "0.1.0"
    assert chart["kubeVersion"] == ">=1.29.0-0"  # the CRD's CEL rules


# ---------------------------------------------------------------- the default install


def test_defaults_render_the_operator_cluster_wide(render: Callable[..., Objects]) -> None:
    objects = render()
    assert kinds(objects) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    for obj in objects:
        scoped = obj["kind"] not in CLUSTER_SCOPED
        assert obj["metadata"].get("namespace") == (NAMESPACE if scoped else None), obj["kind"]


def test_every_object_carries_the_recommended_labels(render: Callable[..., Objects]) -> None:
    for values in (
        {},
        {
            "watchNamespaces": ["a"],
            "serviceMonitor": {"enabled": True},
            "networkPolicy": {"enabled": True},
        },
    ):
        for obj in render(values):
            labels = obj["metadata"]["labels"]
            assert labels["app.kubernetes.io/name"] == "inferops", obj["kind"]
            assert labels["app.kubernetes.io/instance"] == RELEASE
            assert labels["app.kubernetes.io/version"] == "0.1.0"
            assert labels["app.kubernetes.io/managed-by"] == "Helm"
            assert labels["app.kubernetes.io/part-of"] == "inferops"
            assert labels["helm.sh/chart"] == "inferops-0.1.0"


def test_the_deployment_is_one_replica_replaced_with_recreate(
    render: Callable[..., Objects],
) -> None:
    deployment = only(render(), "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "inferops", "app.kubernetes.io/instance": RELEASE}
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["serviceAccountName"] == only(render(), "ServiceAccount")["metadata"]["name"]


def test_the_pod_meets_the_restricted_pod_security_standard(
    render: Callable[..., Objects],
) -> None:
    objects = render()
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532  # the image's user
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container(objects)["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 65532
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in security and "hostNetwork" not in pod
    # HOME (/tmp in the image) is the only writable place.
    mounts = {m["mountPath"]: m["name"] for m in container(objects)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_probes_and_ports_match_the_operators_endpoints(render: Callable[..., Objects]) -> None:
    main = container(render())
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert "--liveness=http://0.0.0.0:8081/healthz" in main["args"]
    assert "--metrics-port=8080" in main["args"]
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}


def test_resources_come_from_values(render: Callable[..., Objects]) -> None:
    assert container(render())["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "512Mi"},
    }
    custom = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": 2, "memory": "2Gi"}}
    assert container(render({"resources": custom}))["resources"] == custom


def test_default_images_are_the_operators_pinned_defaults(render: Callable[..., Objects]) -> None:
    objects = render()
    assert container(objects)["image"] == DEFAULT_IMAGES.router  # one image, two entrypoints
    assert env(objects) == {
        "INFEROPS_VLLM_IMAGE": DEFAULT_IMAGES.vllm,
        "INFEROPS_OLLAMA_IMAGE": DEFAULT_IMAGES.ollama,
        "INFEROPS_ROUTER_IMAGE": DEFAULT_IMAGES.router,
    }
    for image in env(objects).values():
        assert ":" in image and not image.endswith(":latest"), image


def test_custom_images(render: Callable[..., Objects]) -> None:
    objects = render({"image": {"repository": "registry.example/inferops", "tag": "dev-1"}})
    assert container(objects)["image"] == "registry.example/inferops:dev-1"
    # The router follows the operator's image unless set: they are the same package.
    assert env(objects)["INFEROPS_ROUTER_IMAGE"] == "registry.example/inferops:dev-1"
    images = {"vllm": "vllm/vllm-openai:cpu", "ollama": "ollama/ollama:x", "router": "r:1"}
    objects = render({"image": {"tag": "e2e"}, "defaultImages": images})
    assert container(objects)["image"] == "inferops/inferops:e2e"
    assert env(objects) == {
        "INFEROPS_VLLM_IMAGE": "vllm/vllm-openai:cpu",
        "INFEROPS_OLLAMA_IMAGE": "ollama/ollama:x",
        "INFEROPS_ROUTER_IMAGE": "r:1",
    }
    assert container(render({"image": {"pullPolicy": "Always"}}))["imagePullPolicy"] == "Always"


def test_prometheus_url_and_selector(render: Callable[..., Objects]) -> None:
    selector = 'job="routers",namespace="{namespace}",pod=~"{backend}-router-.+"'
    objects = render(
        {"prometheus": {"url": "http://prometheus.monitoring.svc:9090", "selector": selector}}
    )
    assert env(objects)["INFEROPS_PROMETHEUS_URL"] == "http://prometheus.monitoring.svc:9090"
    assert f"--prometheus-selector={selector}" in container(objects)["args"]
    # Without a URL the operator scrapes the router pods itself.
    assert "INFEROPS_PROMETHEUS_URL" not in env(render())
    assert not any(a.startswith("--prometheus") for a in container(render())["args"])


# ---------------------------------------------------------------- NetworkPolicies

MONITORING = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}


def operator_config(objects: Objects) -> NetworkPolicyConfig | None:
    """The NetworkPolicy configuration the operator reads from the Deployment the chart
    renders (its args and env, the way the pod starts it)."""
    main = container(objects)
    env_ = {e["name"]: e["value"] for e in main["env"]}
    original = {k: os.environ.get(k) for k in env_}
    try:
        os.environ.update(env_)
        config: NetworkPolicyConfig | None = parse_args(main["args"]).network_policy_config
        return config
    finally:
        for key, value in original.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value


def test_no_network_policies_by_default(render: Callable[..., Objects]) -> None:
    objects = render()
    assert "NetworkPolicy" not in kinds(objects)
    assert not any(name.startswith("INFEROPS_NETWORK_POLICY") for name in env(objects))
    assert operator_config(objects) is None


def test_network_policies_for_the_engines_and_the_operator(
    render: Callable[..., Objects],
) -> None:
    objects = render(
        {"networkPolicy": {"enabled": True, "metricsFrom": [MONITORING]}, "metrics": {"port": 9090}}
    )
    # The engines': the operator builds one per InferenceBackend, told so by its env.
    assert env(objects)["INFEROPS_NETWORK_POLICY"] == "true"
    assert [
        p.dump() for p in parse_peers(env(objects)["INFEROPS_NETWORK_POLICY_METRICS_FROM"])
    ] == [MONITORING]
    config = operator_config(objects)
    assert config is not None and [p.dump() for p in config.metrics_from] == [MONITORING]
    # The operator's own: only the scrapers, only to its metrics port; egress left open.
    policy = only(objects, "NetworkPolicy")
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["metadata"]["namespace"] == NAMESPACE
    pod_labels = only(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [
        {"from": [MONITORING], "ports": [{"port": 9090, "protocol": "TCP"}]}
    ]
    assert {p["name"]: p["containerPort"] for p in container(objects)["ports"]}["metrics"] == 9090


def test_network_policies_without_scrapers_admit_nobody(render: Callable[..., Objects]) -> None:
    objects = render({"networkPolicy": {"enabled": True}})
    # Not an ingress rule without `from` (everybody): no rule at all.
    assert only(objects, "NetworkPolicy")["spec"]["ingress"] == []
    assert env(objects)["INFEROPS_NETWORK_POLICY_METRICS_FROM"] == "[]"
    assert operator_config(objects) == NetworkPolicyConfig()


# ---------------------------------------------------------------- RBAC


def test_rules_file_is_the_registrys() -> None:
    assert registry.rbac_rules() == RULES


def test_cluster_wide_rbac_grants_exactly_the_registrys_rules(
    render: Callable[..., Objects],
) -> None:
    objects = render()
    role, binding = only(objects, "ClusterRole"), only(objects, "ClusterRoleBinding")
    assert role["rules"] == RULES
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    account = only(objects, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}
    ]
    assert not any(a.startswith("--namespace") for a in container(objects)["args"])


def test_watch_namespaces_gives_a_role_in_each_and_nothing_cluster_wide(
    render: Callable[..., Objects],
) -> None:
    objects = render({"watchNamespaces": ["team-a", "team-b"]})
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = {o["metadata"]["namespace"]: o for o in objects if o["kind"] == "Role"}
    bindings = {o["metadata"]["namespace"]: o for o in objects if o["kind"] == "RoleBinding"}
    assert set(roles) == set(bindings) == {"team-a", "team-b"}
    for namespace, role in roles.items():
        assert role["rules"] == RULES
        binding = bindings[namespace]
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] == role["metadata"]["name"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "inferops", "namespace": NAMESPACE}
        ]
    args = container(objects)["args"]
    assert [a for a in args if a.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]


def test_rbac_and_service_account_can_be_left_out(render: Callable[..., Objects]) -> None:
    objects = render(
        {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "mine"}}
    )
    assert kinds(objects) == ["CustomResourceDefinition", "Deployment", "Service"]
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "mine"


# ---------------------------------------------------------------- the CRD


def test_the_charts_crd_file_is_the_generated_one() -> None:
    assert (CHART / "files" / "crd.yaml").read_text() == CRD_SOURCE.read_text(), (
        "charts/inferops/files/crd.yaml differs from crds/inferencebackends.yaml: run `make crd`"
    )


def test_the_rendered_crd_is_crds_plus_labels_and_the_keep_policy(
    render: Callable[..., Objects],
) -> None:
    crd = only(render(), "CustomResourceDefinition")
    source = yaml.safe_load(CRD_SOURCE.read_text())
    assert {k: v for k, v in crd.items() if k != "metadata"} == {
        k: v for k, v in source.items() if k != "metadata"
    }
    assert crd["metadata"]["name"] == source["metadata"]["name"]
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert crd["metadata"]["labels"]["app.kubernetes.io/name"] == "inferops"


def test_crds_enabled_false_leaves_the_crd_out(render: Callable[..., Objects]) -> None:
    assert "CustomResourceDefinition" not in kinds(render({"crds": {"enabled": False}}))


# ---------------------------------------------------------------- metrics


def test_metrics_service_selects_the_operator(render: Callable[..., Objects]) -> None:
    objects = render()
    service = only(objects, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = only(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert "ServiceMonitor" not in kinds(objects)


def test_service_monitor_scrapes_the_metrics_service(render: Callable[..., Objects]) -> None:
    objects = render(
        {
            "serviceMonitor": {
                "enabled": True,
                "interval": "15s",
                "labels": {"release": "kube-prometheus"},
            }
        }
    )
    monitor = only(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    service_labels = only(objects, "Service")["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    endpoint = {
        "port": "metrics",
        "path": "/metrics",
        "interval": "15s",
        "scrapeTimeout": "10s",
        "honorLabels": True,
    }
    assert monitor["spec"]["endpoints"] == [endpoint]


# ---------------------------------------------------------------- dashboard and alerts


def test_no_dashboard_or_alerts_by_default(render: Callable[..., Objects]) -> None:
    objects = render()
    assert "ConfigMap" not in kinds(objects) and "PrometheusRule" not in kinds(objects)


def test_the_dashboard_configmap_carries_the_generated_json_and_the_sidecar_label(
    render: Callable[..., Objects],
) -> None:
    objects = render({"dashboard": {"enabled": True}})
    config = only(objects, "ConfigMap")
    assert config["metadata"]["name"] == "inferops-dashboard"
    assert config["metadata"]["namespace"] == NAMESPACE
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert list(config["data"]) == ["inferops-migration.json"]
    assert json.loads(config["data"]["inferops-migration.json"]) == dashboard.build_dashboard()


def test_the_dashboard_label_namespace_and_annotations_are_configurable(
    render: Callable[..., Objects],
) -> None:
    objects = render(
        {
            "dashboard": {
                "enabled": True,
                "label": "team.example.com/dashboard",
                "labelValue": "llm",
                "labels": {"team": "ml"},
                "annotations": {"grafana_folder": "LLM"},
                "namespace": "monitoring",
            }
        }
    )
    meta = only(objects, "ConfigMap")["metadata"]
    assert meta["labels"]["team.example.com/dashboard"] == "llm"
    assert meta["labels"]["team"] == "ml" and "grafana_dashboard" not in meta["labels"]
    assert meta["annotations"] == {"grafana_folder": "LLM"}
    assert meta["namespace"] == "monitoring"


ALERTS = [
    "InferopsConsumerRolledBack",
    "InferopsMigratedConsumerFailing",
    "InferopsMigrationStepStalled",
    "InferopsHighFallbackRate",
    "InferopsRoutingTableStale",
]


def test_the_prometheus_rule_has_its_alerts_and_promtool_accepts_them(
    render: Callable[..., Objects], tmp_path: Path
) -> None:
    objects = render(
        {
            "prometheusRule": {
                "enabled": True,
                "labels": {"release": "kps"},
                "alertLabels": {"team": "llm"},
            }
        }
    )
    rule = only(objects, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kps"
    found = alerts(objects)
    assert list(found) == ALERTS
    for name, alert in found.items():
        assert alert["labels"]["team"] == "llm", name
        assert alert["labels"]["severity"] in ("warning", "critical"), name
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], name
        split_condition(alert["expr"])  # ends in one comparison: the e2e test runs the rest
    # Prometheus' own parser, on the expressions and the annotations' templates.
    result = check_rules(rule_groups(objects), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_alert_thresholds_and_durations_come_from_values(render: Callable[..., Objects]) -> None:
    found = alerts(
        render(
            {
                "prometheusRule": {
                    "enabled": True,
                    "stalledStepAfter": "3h",
                    "staleTableFor": "2m",
                    "fallbackRate": {"threshold": 0.2, "window": "15m", "for": "1m"},
                }
            }
        )
    )
    assert found["InferopsMigrationStepStalled"]["for"] == "3h"
    assert found["InferopsRoutingTableStale"]["for"] == "2m"
    fallback = found["InferopsHighFallbackRate"]
    assert fallback["for"] == "1m" and "[15m]" in fallback["expr"]
    assert split_condition(fallback["expr"])[1:] == (">", 0.2)
    assert "for" not in found["InferopsConsumerRolledBack"]  # it stays rolled back until retried


# What each alert must do, on series written out minute by minute (promtool's unit tests of
# rules: `promtool test rules`), with the chart's default thresholds. `_` is a missing sample,
# `AxN` N more samples of A, `A+BxN` N more samples rising by B.
OPERATOR = 'namespace="shop",backend="llama32"'
ROUTER = 'namespace="shop",pod="llama32-router-5d8f-x2k4q",route="chat"'


def series(name: str, labels: str, values: str) -> dict[str, str]:
    """One input series of a promtool test: ``name{labels}`` and its samples."""
    return {"series": f"{name}{{{labels}}}", "values": values}


def alert_case(
    alert: str, quiet_at: str, fires_at: str, labels: dict[str, str], *inputs: dict[str, str]
) -> dict[str, Any]:
    """A promtool test: on ``inputs``, ``alert`` is quiet at ``quiet_at`` and fires once,
    with ``labels``, at ``fires_at``."""
    return {
        "interval": "1m",
        "input_series": list(inputs),
        "alert_rule_test": [
            {"eval_time": quiet_at, "alertname": alert, "exp_alerts": []},
            {"eval_time": fires_at, "alertname": alert, "exp_alerts": [{"exp_labels": labels}]},
        ],
    }


PHASE = "inferops_migration_consumer_phase"
STEP = "inferops_migration_consumer_step"
STALE = "inferops_router_table_stale"
ON_NOTES = {"severity": "warning", "namespace": "shop", "backend": "llama32", "consumer": "notes"}
ALERT_CASES: list[dict[str, Any]] = [
    alert_case(
        "InferopsConsumerRolledBack",
        "3m",
        "10m",
        ON_NOTES,
        series(PHASE, f'{OPERATOR},consumer="notes",phase="RolledBack"', "_x4 1x20"),
        series(PHASE, f'{OPERATOR},consumer="rag",phase="Progressing"', "1x24"),
    ),
    alert_case(
        "InferopsMigratedConsumerFailing",
        "5m",
        "12m",
        ON_NOTES,
        # notes, migrated, passes its watch, then fails it from 10m; rag always passes.
        series("inferops_migration_watch_failing", f'{OPERATOR},consumer="notes"', "0x9 1x10"),
        series("inferops_migration_watch_failing", f'{OPERATOR},consumer="rag"', "0x20"),
    ),
    alert_case(
        "InferopsMigrationStepStalled",
        "90m",
        "110m",
        ON_NOTES,
        # notes moves to step 2 at 30m, then stays there: stalled an hour after that
        # step began counting as unchanged (10 minutes without a change).
        series(PHASE, f'{OPERATOR},consumer="notes",phase="Progressing"', "1x200"),
        series(STEP, f'{OPERATOR},consumer="notes"', "1x29 2x170"),
        # rag steps every 20 minutes: never stalled.
        series(PHASE, f'{OPERATOR},consumer="rag",phase="Progressing"', "1x200"),
        series(
            STEP,
            f'{OPERATOR},consumer="rag"',
            "1x19 2x19 3x19 4x19 5x19 6x19 7x19 8x19 9x19 10x30",
        ),
        # ner waits for a promote (Paused) at the same step: a human's hold, not a stall.
        series(PHASE, f'{OPERATOR},consumer="ner",phase="Paused"', "1x200"),
        series(STEP, f'{OPERATOR},consumer="ner"', "1x200"),
    ),
    alert_case(
        "InferopsHighFallbackRate",
        "3m",
        "30m",
        ON_NOTES,
        # notes: 1 in 10 vLLM attempts falls back (10% > 5%); rag: 1 in 50 (2%).
        series(
            "inferops_router_requests_total",
            f'{ROUTER},consumer="notes",engine="vllm",code="200"',
            "0+10x40",
        ),
        series(
            "inferops_router_fallbacks_total",
            f'{ROUTER},consumer="notes",engine="vllm",reason="status_503"',
            "0+1x40",
        ),
        series(
            "inferops_router_requests_total",
            f'{ROUTER},consumer="rag",engine="vllm",code="200"',
            "0+50x40",
        ),
        series(
            "inferops_router_fallbacks_total",
            f'{ROUTER},consumer="rag",engine="vllm",reason="status_503"',
            "0+1x40",
        ),
    ),
    alert_case(
        "InferopsRoutingTableStale",
        "9m",
        "12m",
        {"severity": "critical", "namespace": "shop", "pod": "llama32-router-a-1"},
        series(STALE, 'namespace="shop",pod="llama32-router-a-1"', "0x5 1x20"),
        series(STALE, 'namespace="shop",pod="llama32-router-a-2"', "0x25"),
    ),
]


def promtool_test_rules(
    render: Callable[..., Objects], tmp_path: Path, cases: list[dict[str, Any]]
) -> subprocess.CompletedProcess[str]:
    """`promtool test rules` of ``cases`` on the chart's default rules."""
    groups = rule_groups(render({"prometheusRule": {"enabled": True}}))
    for group in groups:
        for rule in group["rules"]:
            # promtool compares annotations too; theirs are checked by `check rules` above.
            del rule["annotations"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    spec = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": cases}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return run_promtool("test", "rules", str(tmp_path / "tests.yaml"))


def test_each_alert_fires_when_it_should_and_not_before(
    render: Callable[..., Objects], tmp_path: Path
) -> None:
    tested = {t["alertname"] for case in ALERT_CASES for t in case["alert_rule_test"]}
    assert tested == set(ALERTS)
    result = promtool_test_rules(render, tmp_path, ALERT_CASES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules_can_fail(render: Callable[..., Objects], tmp_path: Path) -> None:
    """The test above can fail: the rollback alert expected for the wrong consumer."""
    case = json.loads(json.dumps(ALERT_CASES[0]))
    case["alert_rule_test"][1]["exp_alerts"][0]["exp_labels"]["consumer"] = "rag"
    result = promtool_test_rules(render, tmp_path, [case])
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr


# ---------------------------------------------------------------- values and schema


def scrapers(*peers: dict[str, Any]) -> dict[str, Any]:
    return {"networkPolicy": {"enabled": True, "metricsFrom": list(peers)}}


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"imagee": {"tag": "x"}}, "imagee"),  # unknown top-level key
        ({"image": {"tags": "x"}}, "tags"),  # unknown nested key
        ({"prometheus": {"url": "http://p:9090", "query": "x"}}, "query"),
        ({"crds": {"enabled": "yes"}}, "/crds/enabled"),  # mistyped
        ({"metrics": {"port": "8080"}}, "/metrics/port"),
        ({"image": {"tag": 1.5}}, "/image/tag"),
        ({"watchNamespaces": "team-a"}, "/watchNamespaces"),
        ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),  # not a namespace name
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"resources": {"requests": {"cpu": "lots"}}}, "/resources/requests/cpu"),
        ({"networkPolicy": {"enabled": "yes"}}, "/networkPolicy/enabled"),
        ({"networkPolicy": {"metricsFrom": {"podSelector": {}}}}, "/networkPolicy/metricsFrom"),
        ({"dashboard": {"labelValue": 1}}, "/dashboard/labelValue"),  # a label value is a string
        ({"dashboard": {"label": "grafana dashboard"}}, "/dashboard/label"),
        ({"dashboard": {"namespace": "Monitoring"}}, "/dashboard/namespace"),
        (
            {"prometheusRule": {"fallbackRate": {"threshold": 5}}},
            "/prometheusRule/fallbackRate/threshold",
        ),  # a share, not a percent
        ({"prometheusRule": {"stalledStepAfter": "1 hour"}}, "/prometheusRule/stalledStepAfter"),
        ({"prometheusRule": {"rollback": {}}}, "rollback"),
        (scrapers({}), "/networkPolicy/metricsFrom/0"),  # would be refused by the API server
        (scrapers({"ipBlock": {"cidr": "10.0.0.0/8"}}), "ipBlock"),
        (
            scrapers({"podSelector": {"matchLabels": {"app": "-x"}}}),
            "/networkPolicy/metricsFrom/0/podSelector/matchLabels/app",
        ),
        (
            scrapers({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}),
            "/networkPolicy/metricsFrom/0/namespaceSelector/matchExpressions/0/operator",
        ),
    ],
)
def test_the_schema_refuses_unknown_and_mistyped_values(
    helm: Helm, values: dict[str, Any], named: str
) -> None:
    result = helm.template(values)
    assert result.returncode != 0, f"{values} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert named in result.stderr, result.stderr


def test_the_schema_closes_every_object() -> None:
    """additionalProperties at every level: false for records, a value schema for maps."""
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(node: dict[str, Any], where: str) -> Iterator[str]:
        if node.get("type") == "object" and where != "/global":  # Helm's, for parent charts
            extra = node.get("additionalProperties")
            if extra is not False and not isinstance(extra, dict):
                yield where or "/"
        for key, child in node.get("properties", {}).items():
            yield from walk(child, f"{where}/{key}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                yield from walk(node[key], f"{where}/{key}")

    assert list(walk(schema, "")) == []


def schema_leaves(node: dict[str, Any], value: Any, where: str = "") -> Iterator[str]:
    """Paths of the values users set: fields of records, down to scalars, lists and maps."""
    properties = node.get("properties")
    if properties is None or not isinstance(value, dict):
        yield where
        return
    for key in sorted(set(properties) & set(value)):
        yield from schema_leaves(properties[key], value[key], f"{where}/{key}")


def test_values_yaml_and_the_schema_describe_the_same_keys() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())

    def mismatches(node: dict[str, Any], value: Any, where: str) -> Iterator[str]:
        properties = node.get("properties")
        if properties is None or not isinstance(value, dict):
            return
        for key in sorted((set(properties) - {"global"}) ^ set(value)):
            yield f"{where}/{key}"
        for key in sorted(set(properties) & set(value)):
            assert "description" in properties[key], f"{where}/{key} has no description"
            yield from mismatches(properties[key], value[key], f"{where}/{key}")

    assert list(mismatches(schema, values, "")) == []


def test_every_value_is_documented_in_values_yaml() -> None:
    """Every value has a `# --` comment right above its key, or above a parent's key (a map
    such as `resources` is documented as a whole), as helm-docs reads them."""
    text = (CHART / "values.yaml").read_text()
    documented: set[str] = set()
    stack: list[tuple[int, str]] = []  # (indentation, key) of the enclosing keys
    comment: list[str] = []  # the comment lines right above the current line
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped)
            continue
        key = stripped.split(":", 1)[0]
        if stripped and not stripped.startswith("-") and ":" in stripped:
            indent = len(line) - len(line.lstrip())
            stack = [(i, k) for i, k in stack if i < indent] + [(indent, key)]
            path = "/" + "/".join(k for _, k in stack)
            if any(c.startswith("# --") for c in comment):
                documented.add(path)
        comment = []
    values = yaml.safe_load(text)
    schema = json.loads((CHART / "values.schema.json").read_text())
    undocumented = [
        leaf
        for leaf in schema_leaves(schema, values)
        if not any(leaf == d or leaf.startswith(d + "/") for d in documented)
    ]
    assert undocumented == []


# ---------------------------------------------------------------- NOTES.txt


def test_notes_say_what_to_do_next(helm: Helm, tmp_path: Path) -> None:
    """NOTES.txt, rendered through a copy of the chart that prints it (`helm template` skips
    NOTES.txt, and `helm install --dry-run` needs a cluster)."""
    chart = tmp_path / "inferops"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "NOTES.txt").rename(chart / "files" / "notes.txt")
    (chart / "templates" / "notes.yaml").write_text(
        'notes: {{ tpl (.Files.Get "files/notes.txt") . | toJson }}\n'
    )
    for values, scope, ns in (
        ({}, "watches every namespace", ""),
        (
            {"watchNamespaces": ["team-a", "team-b"], "crds": {"enabled": False}},
            "watches only these namespaces: team-a, team-b",
            " -n team-a",
        ),
    ):
        flags = [f"--set-json={key}={json.dumps(value)}" for key, value in values.items()]
        result = helm.run(
            "template",
            RELEASE,
            str(chart),
            "--namespace",
            NAMESPACE,
            "--show-only",
            "templates/notes.yaml",
            *flags,
        )
        assert result.returncode == 0, result.stderr
        notes = yaml.safe_load(result.stdout)["notes"]
        for step in (
            scope,
            f"kubectl -n {NAMESPACE} rollout status deployment/inferops",
            f"kubectl{ns} create secret generic hf-token",
            f"kubectl{ns} apply -f examples/inferencebackend.yaml",
            f"kubectl{ns} get ib",
            f"kubectl{ns} wait --for=condition=Ready ib/llama32",
            f"kubectl ib status llama32{ns}",
            "docs/setup.md",
        ):
            assert step in notes, f"{step!r} not in NOTES.txt:\n{notes}"
