"""The Helm chart against a real API server: every rendered manifest accepted by server-side
dry-run; `helm install --wait` as README.md says, the example reconciled by an operator that
holds exactly the chart's ServiceAccount permissions, `kubectl auth can-i --list` for that
ServiceAccount equal to the registry's rules, `helm upgrade` to a namespace-limited install
with NetworkPolicies on, and `helm uninstall` leaving the CRD and the users'
InferenceBackends in place.

The CRD is cluster-scoped and shared with the other e2e tests, so the releases here install
with `crds.enabled=false`, except one that adopts the existing CRD the way docs/setup.md says
and checks that uninstalling keeps it; that test puts the CRD back as crds/ has it. On the
local cluster the operator pod is simulated (kwok), so the operator itself runs as a local
process with a token of the chart's ServiceAccount, configured with the Deployment's own
args and env.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from testsupport.helm import find_helm
from testsupport.markers import needs

from e2e.harness import REPO, Kubectl, OperatorProcess, free_port, wait_for
from e2e.localcluster.build import HELM
from e2e.test_backend import EXAMPLE, printed_rows, wait_phase

pytestmark = needs("cluster", "helm")

CHART = REPO / "charts" / "inferops"
CRD_NAME = "inferencebackends.inferops.io"
RELEASE = "inferops"  # as README.md installs it; the objects and ServiceAccount take its name
RULES = yaml.safe_load((CHART / "files" / "rules.yaml").read_text())
# A values file for every install and upgrade here, e.g. the images a kind cluster in CI has
# loaded (`image.repository`, `image.tag`); the values each test sets still win.
EXTRA_VALUES = os.environ.get("INFEROPS_E2E_CHART_VALUES")
Permission = tuple[str, str]  # ("deployments.apps", "get"), kubectl's spelling


class Helm:
    """helm against the test cluster, with its own config and cache dirs."""

    def __init__(self, kubectl: Kubectl, home: Path) -> None:
        # The pinned helm the project builds (`make prepare`), else one on PATH (kind in CI).
        self.binary = find_helm(HELM)
        self.env = {
            **kubectl.env,
            "KUBECONFIG": str(kubectl.kubeconfig),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def run(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        if args[0] in ("install", "upgrade") and EXTRA_VALUES:
            args = (*args, "-f", EXTRA_VALUES)
        result = subprocess.run(
            [self.binary, *args], capture_output=True, text=True, env=self.env, timeout=timeout
        )
        if check:
            assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}"
        return result

    def chart(
        self, verb: str, release: str, namespace: str, *values: str
    ) -> subprocess.CompletedProcess[str]:
        """`helm install` or `upgrade` of the chart with each of `values` set, waiting (up to
        3 minutes) until its resources are ready."""
        sets = [arg for value in values for arg in ("--set", value)]
        return self.run(
            verb, release, str(CHART), "--namespace", namespace, *sets, "--wait", "--timeout", "3m"
        )

    def template(self, namespace: str, *values: str) -> list[dict[str, Any]]:
        out = self.run("template", RELEASE, str(CHART), "--namespace", namespace, *values).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def helm(kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(kubectl, tmp_path_factory.mktemp("helm"))


@pytest.fixture
def apps(kubectl: Kubectl, namespace: str) -> Iterator[str]:
    """A second fresh namespace: where the users' InferenceBackend lives."""
    name = f"{namespace[:50]}-apps"
    kubectl.run("create", "namespace", name)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


def example() -> dict[str, Any]:
    """examples/inferencebackend.yaml without spec.migration: its analysis would need the
    router pods' metrics, which simulated pods do not serve."""
    manifest = copy.deepcopy(EXAMPLE)
    del manifest["spec"]["migration"]
    return manifest


def create_hf_token(kubectl: Kubectl, namespace: str) -> None:
    kubectl.run(
        "create", "secret", "generic", "hf-token", "--from-literal=token=hf_test", "-n", namespace
    )


def token_kubeconfig(kubectl: Kubectl, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig with a token of `account` and nothing more: the operator pod's identity."""
    token = kubectl.run(
        "create", "token", account, "-n", namespace, "--duration=20m"
    ).stdout.strip()
    cluster = yaml.safe_load(kubectl.kubeconfig.read_text())["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": account,
        "clusters": [cluster],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [
            {
                "name": account,
                "context": {"cluster": cluster["name"], "user": account, "namespace": namespace},
            }
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def can_i_list(kubectl: Kubectl, user: str, namespace: str) -> set[Permission]:
    """`kubectl auth can-i --list` as (resource, verb) pairs; non-resource URLs as
    ("url:/path", verb)."""
    table = kubectl.run("auth", "can-i", "--list", f"--as={user}", "-n", namespace).stdout
    header, *lines = table.splitlines()
    columns = ("Resources", "Non-Resource URLs", "Resource Names", "Verbs")
    starts = [header.index(c) for c in columns]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    allowed: set[Permission] = set()
    for line in lines:
        resource, url, names, verbs = (line[a:b].strip() for a, b in bounds)
        assert names == "[]", f"a grant limited to names: {line}"
        for verb in verbs.strip("[]").split():
            allowed.add((resource or f"url:{url.strip('[]')}", verb))
    return allowed


def expected(rules: list[dict[str, Any]]) -> set[Permission]:
    """The rules as kubectl prints them: resource[.group][/subresource]."""
    allowed = set()
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                plural, _, sub = resource.partition("/")
                name = f"{plural}.{group}" if group else plural
                allowed |= {(f"{name}/{sub}" if sub else name, v) for v in rule["verbs"]}
    return allowed


def service_account(namespace: str, name: str = RELEASE) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def operator_container(kubectl: Kubectl, namespace: str, release: str = RELEASE) -> dict[str, Any]:
    deployment = kubectl.get("deployment", release, namespace)
    assert deployment is not None, "the chart's Deployment is missing"
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


def operator_like_the_pod(
    kubectl: Kubectl, namespace: str, release: str, kubeconfig: Path, log: Path
) -> OperatorProcess:
    """The operator as the chart's pod runs it: the Deployment's args and env, the
    ServiceAccount's token; only the metrics and liveness ports move to free loopback ones."""
    container = operator_container(kubectl, namespace, release)
    args = list(container["args"])
    local = ("--metrics-port=", "--liveness=")
    assert [a for a in args if a.startswith(local)] == [
        "--metrics-port=8080",
        "--liveness=http://0.0.0.0:8081/healthz",
    ]
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    identity = Kubectl(binary=kubectl.binary, kubeconfig=kubeconfig, env={**kubectl.env, **env})
    rest = tuple(a for a in args if not a.startswith(local))
    return OperatorProcess(identity, log, free_port(), extra_args=rest)


def dry_run(kubectl: Kubectl, objects: list[dict[str, Any]]) -> None:
    warnings = kubectl.dry_run(*objects, force_conflicts=True)
    assert "Warning" not in warnings, warnings  # e.g. PodSecurity, deprecations


def test_every_rendered_manifest_is_accepted_by_the_api_server(
    kubectl: Kubectl, helm: Helm, crd: str, namespace: str, apps: str
) -> None:
    # Pod Security warnings for the restricted level, on the Deployment itself.
    kubectl.run("label", "namespace", namespace, "pod-security.kubernetes.io/warn=restricted")
    combinations = {
        "defaults": [],
        "watchNamespaces": ["--set", f"watchNamespaces={{{namespace},{apps}}}"],
        "crds disabled": ["--set", "crds.enabled=false"],
        "prometheus, images, scheduling": [
            "--set",
            "prometheus.url=http://prometheus.monitoring.svc:9090",
            "--set-string",
            "image.tag=e2e",
            "--set",
            "defaultImages.router=r:1",
            "--set",
            "defaultImages.vllm=vllm/vllm-openai:cpu",
            "--set",
            "nodeSelector.kubernetes\\.io/os=linux",
            "--set",
            "priorityClassName=",
            "--set-json",
            'tolerations=[{"key":"dedicated","operator":"Exists"}]',
            "--set-json",
            'imagePullSecrets=[{"name":"regcred"}]',
        ],
        "serviceMonitor": ["--set", "serviceMonitor.enabled=true"],
        # The operator pod's NetworkPolicy (the engines' are the operator's: accepted in
        # e2e/test_network_policy.py), with and without scrapers.
        "networkPolicy": ["--set", "networkPolicy.enabled=true"],
        "networkPolicy, scrapers": [
            "--set",
            "networkPolicy.enabled=true",
            "--set-json",
            'networkPolicy.metricsFrom=[{"namespaceSelector": {"matchLabels": '
            '{"kubernetes.io/metadata.name": "monitoring"}}, "podSelector": {"matchExpressions":'
            ' [{"key": "app", "operator": "In", "values": ["prometheus"]}]}}]',
        ],
    }
    for name, values in combinations.items():
        objects = helm.template(namespace, *values)
        # No prometheus-operator here: the ServiceMonitor's kind is unknown to this cluster
        # (tests/test_chart.py checks its fields).
        monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
        assert len(monitors) == (name == "serviceMonitor"), name
        policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
        assert len(policies) == name.startswith("networkPolicy"), name
        dry_run(kubectl, [o for o in objects if o["kind"] != "ServiceMonitor"])


def cluster_wide_release_name(kubectl: Kubectl) -> str:
    """README's release name, unless a cluster-wide release of that name is already installed
    (kind in CI installs the chart before running this tier): its ClusterRole is taken."""
    return RELEASE if kubectl.get("clusterrole", RELEASE, "default") is None else "inferops-e2e"


def test_install_as_the_readme_says_and_reconcile_with_the_charts_permissions(
    kubectl: Kubectl,
    helm: Helm,
    operator: OperatorProcess,
    namespace: str,
    apps: str,
    tmp_path: Path,
) -> None:
    release = cluster_wide_release_name(kubectl)
    # The operator pod must pass the restricted Pod Security Standard: enforced here, so a
    # violation leaves the Deployment without a pod and `--wait` fails.
    kubectl.run("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    stranger = f"nobody-{uuid.uuid4().hex[:8]}"  # a ServiceAccount name nothing is bound to
    installed = helm.chart("install", release, namespace, "crds.enabled=false")
    released = True
    try:
        # NOTES.txt says what to do next.
        for step in (
            "kubectl create secret generic hf-token",
            "kubectl get ib",
            "kubectl apply -f examples/inferencebackend.yaml",
        ):
            assert step in installed.stdout, installed.stdout
        deployment = kubectl.get("deployment", release, namespace)
        assert deployment is not None and deployment["status"].get("readyReplicas") == 1
        labels = {"app.kubernetes.io/instance": release, "app.kubernetes.io/managed-by": "Helm"}
        assert labels.items() <= deployment["metadata"]["labels"].items()

        # The ServiceAccount may do exactly what the registry says, in every namespace, on
        # top of what any ServiceAccount may do (a ServiceAccount without bindings shows it).
        nobody = {
            where: can_i_list(kubectl, service_account(namespace, stranger), where)
            for where in (apps, namespace, "default")
        }
        sa = service_account(namespace, release)
        for where, baseline in nobody.items():
            assert not expected(RULES) & baseline
            assert can_i_list(kubectl, sa, where) == baseline | expected(RULES), where

        kubeconfig = token_kubeconfig(kubectl, namespace, release, tmp_path / "sa.kubeconfig")
        operator.stop()  # two operators must not drive the same resources
        log = tmp_path / "operator.log"
        mine = operator_like_the_pod(kubectl, namespace, release, kubeconfig, log)
        try:
            mine.start()
            create_hf_token(kubectl, apps)
            kubectl.apply(example(), apps)
            ready = wait_phase(kubectl, apps, "Ready", timeout=120)
            rows = printed_rows(kubectl.run("get", "ib", "-n", apps).stdout)
            assert [(r["NAME"], r["PHASE"], r["VLLM"]) for r in rows] == [
                ("llama32", "Ready", "1/1")
            ]
            assert ready["status"]["vllm"]["ready"] == "1/1"
            assert {c["name"] for c in ready["status"]["consumers"]} == {"notes", "rag", "ner"}
            assert kubectl.get("role", "inferops-router", apps) is not None  # granted onwards
            assert "forbidden" not in mine.log_tail(400).lower(), mine.log_tail()

            # Upgrade to a namespace-limited install: a Role in `apps` instead of the
            # ClusterRole, and the operator told to watch only `apps`; NetworkPolicies on.
            assert kubectl.items("networkpolicies", apps) == []
            helm.chart(
                "upgrade",
                release,
                namespace,
                "crds.enabled=false",
                f"watchNamespaces={{{apps}}}",
                "defaultImages.ollama=ollama/ollama:0.12.7",
                "networkPolicy.enabled=true",
            )
            assert kubectl.get("clusterrole", release, "") is None
            assert kubectl.get("role", release, apps) is not None
            container = operator_container(kubectl, namespace, release)
            assert f"--namespace={apps}" in container["args"]
            env = {e["name"]: e["value"] for e in container["env"]}
            assert env["INFEROPS_OLLAMA_IMAGE"] == "ollama/ollama:0.12.7"
            assert env["INFEROPS_NETWORK_POLICY"] == "true"
            assert kubectl.get("networkpolicy", release, namespace) is not None  # the operator's
            assert can_i_list(kubectl, sa, apps) == nobody[apps] | expected(RULES)
            assert can_i_list(kubectl, sa, namespace) == nobody[namespace]
            assert can_i_list(kubectl, sa, "default") == nobody["default"]

            # The upgraded operator, with the Role only, moves the example to the new image.
            mine.stop()
            log = tmp_path / "operator-upgraded.log"
            mine = operator_like_the_pod(kubectl, namespace, release, kubeconfig, log)
            mine.start()

            def ollama_image() -> str | None:
                found = kubectl.get("deployment", "llama32-ollama", apps)
                image = found and found["spec"]["template"]["spec"]["containers"][0]["image"]
                return image if image == "ollama/ollama:0.12.7" else None

            wait_for("the Ollama Deployment on the chart's new default image", ollama_image, 60)
            # ... and creates the engines' NetworkPolicy, with the Role's permissions.
            wait_for(
                "the engines' NetworkPolicy",
                lambda: kubectl.get("networkpolicy", "llama32-engines", apps),
                60,
            )
            wait_phase(kubectl, apps, "Ready", timeout=120)
            assert "forbidden" not in mine.log_tail(400).lower(), mine.log_tail()
        finally:
            mine.stop()
            operator.start()

        uninstalled = helm.run("uninstall", release, "--namespace", namespace, "--wait")
        released = False
        assert "uninstalled" in uninstalled.stdout
        for kind, where in (
            ("deployment", namespace),
            ("serviceaccount", namespace),
            ("role", apps),
            ("rolebinding", apps),
        ):
            assert kubectl.get(kind, release, where) is None, kind
        # The users' resources are theirs: the InferenceBackend and what it owns stay.
        assert kubectl.get("crd", CRD_NAME, "") is not None
        backend = kubectl.get("inferencebackend", "llama32", apps)
        assert backend is not None and "deletionTimestamp" not in backend["metadata"]
        assert kubectl.get("deployment", "llama32-vllm", apps) is not None
    finally:
        if released:
            helm.run("uninstall", release, "--namespace", namespace, "--wait", check=False)
        assert_no_cluster_objects_left(kubectl, namespace)


def assert_no_cluster_objects_left(kubectl: Kubectl, namespace: str) -> None:
    for kind in ("clusterrole", "clusterrolebinding"):
        items = json.loads(kubectl.run("get", kind, "-o", "json").stdout)["items"]
        left = [
            i["metadata"]["name"]
            for i in items
            if (i["metadata"].get("annotations") or {}).get("meta.helm.sh/release-namespace")
            == namespace
        ]
        for name in left:
            kubectl.run("delete", kind, name, check=False)
        assert not left, f"{kind} {left} left behind by the release in {namespace}"


def test_uninstall_keeps_the_crd_and_the_inferencebackends(
    kubectl: Kubectl, helm: Helm, crd: str, namespace: str, tmp_path: Path
) -> None:
    """A release that owns the CRD: installed over the existing CRD (adopted as
    docs/setup.md says), upgraded, uninstalled; the CRD and the resources stay. Afterwards the
    CRD is put back exactly as it was (the other e2e tests share it)."""
    before = json.loads(kubectl.run("get", "crd", CRD_NAME, "-o", "json").stdout)
    try:
        # Adopt the CRD the session applied from crds/ (docs/setup.md, "CRD already there").
        kubectl.run("label", "crd", CRD_NAME, "--overwrite", "app.kubernetes.io/managed-by=Helm")
        kubectl.run(
            "annotate",
            "crd",
            CRD_NAME,
            "--overwrite",
            f"meta.helm.sh/release-name={RELEASE}",
            f"meta.helm.sh/release-namespace={namespace}",
        )
        # Namespace-limited, so that nothing else cluster-scoped is created.
        limited = f"watchNamespaces={{{namespace}}}"
        helm.chart("install", RELEASE, namespace, limited)
        owned = json.loads(kubectl.run("get", "crd", CRD_NAME, "-o", "json").stdout)
        assert owned["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert owned["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert owned["spec"] == before["spec"]  # the chart's CRD is crds/'s

        create_hf_token(kubectl, namespace)
        backend = example()
        for engine in ("vllm", "ollama"):  # it only has to exist: no claims to bind
            del backend["spec"][engine]["cache"]
        kubectl.apply(backend, namespace)
        helm.chart("upgrade", RELEASE, namespace, limited, "verbose=true")
        assert "--verbose" in operator_container(kubectl, namespace)["args"]

        result = helm.run("uninstall", RELEASE, "--namespace", namespace, "--wait")
        assert "kept due to the resource policy" in result.stdout + result.stderr
        kept = kubectl.get("crd", CRD_NAME, "")
        assert kept is not None and "deletionTimestamp" not in kept["metadata"]
        found = kubectl.get("inferencebackend", "llama32", namespace)
        assert found is not None and "deletionTimestamp" not in found["metadata"]
        assert kubectl.get("deployment", RELEASE, namespace) is None
    finally:
        helm.run("uninstall", RELEASE, "--namespace", namespace, "--wait", check=False)
        restore_crd(kubectl, before)


def restore_crd(kubectl: Kubectl, before: dict[str, Any]) -> None:
    """The CRD back to its labels, annotations and spec from before the test."""
    now = json.loads(kubectl.run("get", "crd", CRD_NAME, "-o", "json").stdout)
    for field, verb in (("labels", "label"), ("annotations", "annotate")):
        old = before["metadata"].get(field) or {}
        added = [k for k in (now["metadata"].get(field) or {}) if k not in old]
        if added:
            kubectl.run(verb, "crd", CRD_NAME, *[f"{k}-" for k in added])
        changed = [
            f"{k}={v}" for k, v in old.items() if (now["metadata"].get(field) or {}).get(k) != v
        ]
        if changed:
            kubectl.run(verb, "crd", CRD_NAME, "--overwrite", *changed)
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    after = json.loads(kubectl.run("get", "crd", CRD_NAME, "-o", "json").stdout)
    assert after["spec"] == before["spec"]
    for field in ("labels", "annotations"):
        assert after["metadata"].get(field) == before["metadata"].get(field), field
