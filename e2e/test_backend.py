"""An InferenceBackend against a real API server: children, scheduling, status, printer
columns, validation, cascade delete, drift repair, and no writes when nothing changed."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from testsupport.markers import needs

from e2e.harness import REPO, Kubectl, OperatorProcess, free_port, wait_for

pytestmark = needs("cluster")

EXAMPLE = yaml.safe_load((REPO / "examples" / "inferencebackend.yaml").read_text())
INVALID = sorted((REPO / "e2e" / "invalid").glob("*.yaml"))
NAME = EXAMPLE["metadata"]["name"]


def backend(kubectl: Kubectl, namespace: str, name: str = NAME) -> dict[str, Any]:
    obj = kubectl.get("inferencebackend", name, namespace)
    assert obj is not None, f"InferenceBackend {name} is gone"
    return obj


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == ctype), {})


def wait_phase(
    kubectl: Kubectl, namespace: str, phase: str, name: str = NAME, timeout: float = 90
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = backend(kubectl, namespace, name)
        status = obj.get("status", {})
        current = status.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if current and status.get("phase") == phase else None

    return wait_for(f"{name} phase {phase}", probe, timeout)


def routing_table(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    config_map = kubectl.get("configmap", "llama32-router", namespace)
    assert config_map is not None, "no routing table"
    return dict(json.loads(config_map["data"]["routes.json"]))


def resource_versions(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    """resourceVersion of the resource and of every child: any write by anyone changes one."""
    return {
        f"{kind}/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
        for kind in (
            "inferencebackends",
            "deployments",
            "services",
            "pvc",
            "configmaps",
            "serviceaccounts",
            "roles",
            "rolebindings",
        )
        for o in kubectl.items(kind, namespace)
    }


def printed_rows(table: str) -> list[dict[str, str]]:
    """`kubectl get` output as rows by column name; cells are cut at the header's column
    starts, so an empty cell stays empty instead of shifting the others."""
    header, *lines = table.splitlines()
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [{header[a:b].strip(): line[a:b].strip() for a, b in bounds} for line in lines]


def apply_example(kubectl: Kubectl, namespace: str, **spec_changes: Any) -> dict[str, Any]:
    """The example with manual weights (notes at 10%, no spec.migration), as these tests
    exercise the engines and the routing table; test_migration.py drives the migration."""
    manifest = copy.deepcopy(EXAMPLE)
    del manifest["spec"]["migration"]
    manifest["spec"]["consumers"][0]["weight"] = 10
    for key, value in spec_changes.items():
        manifest["spec"][key] = value
    kubectl.apply(manifest, namespace)
    return manifest


def test_example_creates_engines_on_the_right_nodes(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    apply_example(kubectl, namespace)
    ready = wait_phase(kubectl, namespace, "Ready")
    assert ready["status"]["vllm"]["ready"] == "1/1"
    assert ready["status"]["ollama"]["ready"] == "1/1"
    assert ready["status"]["vllm"]["url"] == f"http://llama32-vllm.{namespace}.svc:8000"
    assert condition(ready, "Ready")["status"] == "True"
    assert ready["status"]["observedGeneration"] == ready["metadata"]["generation"]

    vllm = kubectl.get("deployment", "llama32-vllm", namespace)
    assert vllm is not None
    container = vllm["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "1"
    args = container["args"]
    assert args[args.index("--served-model-name") + 1] == "llama3.2"
    assert container["ports"][0]["containerPort"] == 8000
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
    ollama = kubectl.get("deployment", "llama32-ollama", namespace)
    assert ollama is not None
    ollama_env = {
        e["name"]: e.get("value")
        for e in ollama["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert ollama_env["OLLAMA_CONTEXT_LENGTH"] == "8192"
    assert ollama_env["INFEROPS_SERVED_MODEL"] == "llama3.2"
    for service, port in (("llama32-vllm", 8000), ("llama32-ollama", 11434)):
        svc = kubectl.get("service", service, namespace)
        assert svc is not None and svc["spec"]["ports"][0]["port"] == port
    for consumer in ("notes", "rag", "ner"):
        svc = kubectl.get("service", f"llama32-{consumer}", namespace)
        assert svc is not None, consumer
        assert svc["spec"]["selector"]["inferops.io/component"] == "router"
        assert [p["port"] for p in svc["spec"]["ports"]] == [80, 11434]
    router = kubectl.get("deployment", "llama32-router", namespace)
    assert router is not None and router["status"].get("readyReplicas") == 2
    table = routing_table(kubectl, namespace)
    assert [(c["name"], c["weight"]) for c in table["consumers"]] == [
        ("notes", 10),
        ("rag", 0),
        ("ner", 0),
    ]
    # The router's admission: vLLM's default batch size per replica, Ollama's parallel slots
    # per replica with 4 times as many waiting (docs/router.md, "Overload").
    # What vLLM is started for, read from the spec as vLLM reads it: the generation runner
    # (no embeddings), no tool-call parser, the spec's max model length.
    assert table["engines"]["vllm"] == {
        "url": f"http://llama32-vllm.{namespace}.svc:8000",
        "ready": True,
        "admission": {"maxConcurrent": 256, "maxWaiting": 256, "maxWaitSeconds": 10.0},
        "kinds": ["chat", "completions"],
        "toolCalling": False,
        "maxModelLen": EXAMPLE["spec"]["vllm"]["maxModelLen"],
    }
    assert table["engines"]["ollama"]["kinds"] == ["chat", "completions", "embeddings"]
    slots = EXAMPLE["spec"]["ollama"].get("numParallel", 4)
    assert table["engines"]["ollama"]["admission"] == {
        "maxConcurrent": slots,
        "maxWaiting": 4 * slots,
        "maxWaitSeconds": 10.0,
    }
    assert [(c["name"], c["weight"], c["endpoint"]) for c in ready["status"]["consumers"]] == [
        (name, weight, f"http://llama32-{name}.{namespace}.svc")
        for name, weight in (("notes", 10), ("rag", 0), ("ner", 0))
    ]
    claims = kubectl.items("pvc", namespace)
    assert {c["metadata"]["name"] for c in claims} == {"llama32-vllm-cache", "llama32-ollama-cache"}

    nodes = {n["metadata"]["name"]: n for n in kubectl.items("nodes", "default")}
    for engine, on_gpu_node in (("vllm", True), ("ollama", False)):
        pods = kubectl.items("pods", namespace, f"inferops.io/component={engine}")
        assert len(pods) == 1
        node = nodes[pods[0]["spec"]["nodeName"]]
        has_gpus = "nvidia.com/gpu" in node["status"].get("allocatable", {})
        assert has_gpus == on_gpu_node, f"{engine} pod landed on {node['metadata']['name']}"
        assert any(
            c["type"] == "Ready" and c["status"] == "True" for c in pods[0]["status"]["conditions"]
        )

    table = kubectl.run("get", "inferencebackends", "-n", namespace).stdout
    assert table.split("\n", 1)[0].split() == [
        "NAME",
        "PHASE",
        "MIGRATED",
        "CURRENT",
        "VLLM",
        "OLLAMA",
        "AGE",
    ]
    row = printed_rows(table)[0]
    # Manual weights: no migration to show.
    assert [row[c] for c in ("NAME", "PHASE", "MIGRATED", "CURRENT", "VLLM", "OLLAMA")] == [
        "llama32",
        "Ready",
        "",
        "",
        "1/1",
        "1/1",
    ]
    assert (
        kubectl.run("get", "ib", "-n", namespace).stdout.split("\n", 1)[0]
        == (table.split("\n", 1)[0])
    )
    wide = printed_rows(kubectl.run("get", "ib", "-n", namespace, "-o", "wide").stdout)[0]
    assert (wide["MODEL"], wide["REASON"]) == ("llama3.2", "EnginesReady")


@pytest.mark.parametrize("manifest", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_resources_are_rejected_with_the_field(
    kubectl: Kubectl, crd: str, namespace: str, manifest: Path
) -> None:
    expected = manifest.read_text().splitlines()[0].removeprefix("# expect: ")
    result = kubectl.run("apply", "-n", namespace, "-f", str(manifest), check=False)
    assert result.returncode != 0, f"{manifest.name} was accepted"
    assert expected in result.stderr, result.stderr
    assert kubectl.items("inferencebackends", namespace) == []


# Fields whose description carries a generated default, range, list bound or pattern.
EXPLAINED = (
    "spec.vllm.gpuMemoryUtilization",
    "spec.migration.analysis.errorRate",
    "spec.ollama.keepAlive",
    "spec.vllm.extraArgs",
    "spec.consumers.weight",
    "spec.migration.steps.shadow.percent",
)


def _schema(path: str) -> dict[str, Any]:
    crd = yaml.safe_load((REPO / "crds" / "inferencebackends.yaml").read_text())
    node = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for name in path.split("."):
        node = node.get("items", node)["properties"][name]
    return node


def test_kubectl_explain_shows_each_fields_default_and_range(kubectl: Kubectl, crd: str) -> None:
    """kubectl explain prints descriptions, not the schema's default or bounds: the CRD's
    descriptions carry them, and the API server publishes them whole."""
    for path in EXPLAINED:
        description = " ".join(_schema(path)["description"].split())
        assert "Default: " in description or "Items: " in description, description

        def explained(path: str = path) -> str | None:
            # The API server publishes a new CRD's OpenAPI a moment after it is established.
            result = kubectl.run("explain", f"inferencebackends.{path}", check=False)
            return result.stdout if result.returncode == 0 else None

        shown = " ".join(wait_for(f"kubectl explain {path}", explained, timeout=30).split())
        assert description in shown, f"{path}: {shown}"
    dtype = kubectl.run("explain", "inferencebackends.spec.vllm.dtype").stdout
    # Enum values are kubectl's to list; the description states only the default.
    assert "ENUM:" in dtype and "Default: auto." in " ".join(dtype.split()), dtype


def test_deleting_the_resource_removes_every_child(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    def children() -> list[str]:
        kinds = (
            "deployments",
            "replicasets",
            "services",
            "pvc",
            "pods",
            "configmaps",
            "serviceaccounts",
            "roles",
            "rolebindings",
        )
        selector = f"inferops.io/backend={NAME}"
        return [
            f"{kind}/{o['metadata']['name']}"
            for kind in kinds
            for o in kubectl.items(kind, namespace, selector)
        ]

    apply_example(kubectl, namespace)
    wait_phase(kubectl, namespace, "Ready")
    assert len(children()) >= 14, children()
    kubectl.run("delete", "inferencebackend", NAME, "-n", namespace, "--wait=true")
    wait_for("every child to be garbage-collected", lambda: children() == [] or None, 90)


def test_deleted_or_edited_children_are_restored(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    # replicas set: the operator owns them, so a scale is reverted (unset, they are left to
    # an HPA or a person: e2e/test_faults.py).
    apply_example(kubectl, namespace, vllm={**EXAMPLE["spec"]["vllm"], "replicas": 1})
    wait_phase(kubectl, namespace, "Ready")
    old = kubectl.get("service", "llama32-vllm", namespace)
    assert old is not None
    kubectl.run("delete", "service", "llama32-vllm", "-n", namespace)

    def recreated() -> bool:
        svc = kubectl.get("service", "llama32-vllm", namespace)
        return svc is not None and svc["metadata"]["uid"] != old["metadata"]["uid"]

    wait_for("the deleted Service to come back", recreated, 30)

    kubectl.run("scale", "deployment", "llama32-vllm", "--replicas=3", "-n", namespace)
    kubectl.run("set", "env", "deployment/llama32-ollama", "OLLAMA_NUM_PARALLEL=1", "-n", namespace)

    def restored() -> bool:
        vllm = kubectl.get("deployment", "llama32-vllm", namespace)
        ollama = kubectl.get("deployment", "llama32-ollama", namespace)
        assert vllm is not None and ollama is not None
        env = {
            e["name"]: e.get("value")
            for e in ollama["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        return vllm["spec"]["replicas"] == 1 and env["OLLAMA_NUM_PARALLEL"] == "4"

    wait_for("hand edits to be reverted", restored, 30)
    wait_phase(kubectl, namespace, "Ready")


def test_more_gpus_than_any_node_has_is_reported(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    vllm = {**EXAMPLE["spec"]["vllm"], "tensorParallelSize": 16}
    apply_example(kubectl, namespace, vllm=vllm)
    degraded = wait_phase(kubectl, namespace, "Degraded")
    ready = condition(degraded, "Ready")
    assert ready["status"] == "False"
    assert ready["reason"] == "VLLMUnschedulable"
    assert "Insufficient nvidia.com/gpu" in ready["message"]
    assert condition(degraded, "Degraded")["status"] == "True"

    def row() -> dict[str, str] | None:
        cells = printed_rows(kubectl.run("get", "ib", NAME, "-n", namespace, "-o", "wide").stdout)[
            0
        ]
        # Ollama keeps starting meanwhile: the resource stays Degraded, with Ollama ready.
        shown = [cells[c] for c in ("PHASE", "VLLM", "OLLAMA", "REASON")]
        return cells if shown == ["Degraded", "0/1", "1/1", "VLLMUnschedulable"] else None

    wait_for("the printer columns to show the fallback serving alone", row, 30)


def test_spec_changes_are_rolled_out_and_disabled_fallback_removed(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    apply_example(kubectl, namespace)
    wait_phase(kubectl, namespace, "Ready")
    vllm = {**EXAMPLE["spec"]["vllm"], "tensorParallelSize": 2, "maxModelLen": 4096}
    apply_example(
        kubectl, namespace, vllm=vllm, ollama={**EXAMPLE["spec"]["ollama"], "enabled": False}
    )

    def rolled_out() -> bool:
        deployment = kubectl.get("deployment", "llama32-vllm", namespace)
        assert deployment is not None
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        gone = kubectl.get("deployment", "llama32-ollama", namespace) is None
        return container["resources"]["limits"]["nvidia.com/gpu"] == "2" and gone

    wait_for("the new spec to reach the Deployment", rolled_out, 30)
    ready = wait_phase(kubectl, namespace, "Ready")
    assert "ollama" not in ready["status"]
    assert kubectl.get("service", "llama32-ollama", namespace) is None


def test_weight_change_reaches_the_routing_table(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    apply_example(kubectl, namespace)
    wait_phase(kubectl, namespace, "Ready")
    consumers = copy.deepcopy(EXAMPLE["spec"]["consumers"])
    consumers[1]["weight"] = 50
    started = time.monotonic()
    apply_example(kubectl, namespace, consumers=consumers)

    def rag_weight() -> bool:
        return routing_table(kubectl, namespace)["consumers"][1]["weight"] == 50

    wait_for("rag's new weight in the routing table", rag_weight, 10, interval=0.05)
    # How fast is measured by bench/operator (spec change -> child, with 1,000 backends).
    print(f"\nthe routing table changed {time.monotonic() - started:.2f}s after the spec")
    status = wait_for(
        "rag's weight in status",
        lambda: [
            c
            for c in backend(kubectl, namespace)["status"]["consumers"]
            if c["name"] == "rag" and c["weight"] == 50
        ],
        10,
    )
    assert status


def test_existing_object_of_the_same_name_is_not_taken_over(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    foreign = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "llama32-ollama", "labels": {"team": "other"}},
        "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 80}]},
    }
    kubectl.apply(foreign, namespace)
    before = kubectl.get("service", "llama32-ollama", namespace)
    apply_example(kubectl, namespace)
    invalid = wait_phase(kubectl, namespace, "InvalidSpec")
    message = condition(invalid, "InvalidSpec")["message"]
    assert "Service llama32-ollama already exists and is not owned" in message
    after = kubectl.get("service", "llama32-ollama", namespace)
    assert before is not None and after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert kubectl.items("deployments", namespace) == []


def test_reconciling_an_unchanged_resource_writes_nothing(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    apply_example(kubectl, namespace)
    wait_phase(kubectl, namespace, "Ready")

    def counters() -> tuple[float, float]:
        return operator.writes(namespace), operator.reconciles(namespace)

    def quiet() -> tuple[float, float] | None:
        # Settled when two seconds pass without a write or a reconciliation.
        before = counters()
        time.sleep(2)
        return before if before == counters() else None

    writes, reconciles = wait_for("the operator to settle", quiet, 60)
    versions = resource_versions(kubectl, namespace)

    # A child event: an unrelated label added by hand triggers a reconciliation.
    kubectl.run("label", "service", "llama32-vllm", "team=ml", "-n", namespace)
    wait_for(
        "a reconciliation after the child event",
        lambda: operator.reconciles(namespace) > reconciles,
        30,
    )
    assert operator.writes(namespace) == writes

    # An operator restart: a fresh process resumes the resource and must not write either.
    second = OperatorProcess(kubectl, tmp_path / "second.log", free_port(), (namespace,))
    second.start()
    try:
        wait_for(
            "the restarted operator to resume the resource",
            lambda: second.reconciles(namespace) >= 1,
            30,
        )
        assert second.writes(namespace) == 0, second.metrics()
    finally:
        second.stop()
    versions_after = resource_versions(kubectl, namespace)
    labelled = "services/llama32-vllm"
    assert versions_after[labelled] != versions[labelled]  # our own label edit
    versions[labelled] = versions_after[labelled]
    assert versions_after == versions


def test_a_child_the_api_server_refuses_changes_nothing_and_names_the_field(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    """The schema cannot know every rule of every child: a claim's access mode, say, is
    immutable once created. Such an edit is InvalidSpec, naming the child, its field and the
    API server's reason; no child changes (not even the Deployment the same edit changes),
    the operator does not retry it with a traceback, and undoing the edit makes it Ready."""
    apply_example(kubectl, namespace)
    wait_phase(kubectl, namespace, "Ready")
    before = resource_versions(kubectl, namespace)
    log_start = operator.log.stat().st_size
    vllm = copy.deepcopy(EXAMPLE["spec"]["vllm"])
    vllm["cache"]["accessMode"] = "ReadWriteMany"
    vllm["maxModelLen"] = 4096  # also changes the vLLM Deployment
    apply_example(kubectl, namespace, vllm=vllm)
    invalid = wait_phase(kubectl, namespace, "InvalidSpec")
    message = condition(invalid, "Ready")["message"]
    assert message.startswith(
        "spec.vllm: the API server refuses PersistentVolumeClaim llama32-vllm-cache built from "
        "it (422)"
    ), message
    assert "spec: Forbidden: spec is immutable after creation" in message, message
    after = resource_versions(kubectl, namespace)
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed == {f"inferencebackends/{NAME}"}, changed  # its spec and status only
    time.sleep(3)  # the child events of the undone creations, handled
    assert operator.process.returncode is None
    with operator.log.open("rb") as log:
        log.seek(log_start)
        written = log.read().decode(errors="replace")
    assert "Traceback" not in written, written[-4000:]
    apply_example(kubectl, namespace)
    wait_phase(kubectl, namespace, "Ready")
