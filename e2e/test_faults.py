"""Faults, each injected into real parts, with what must hold afterwards checked and what it
cost measured (printed with `pytest -s`; docs/reliability.md has the figures).

- the operator SIGKILLed while it creates a resource's children;
- the GPU node that hosts the vLLM pod deleted;
- the engines' replicas owned by an HPA or `kubectl scale`, or by the spec;
- the router restarted (SIGTERM, then SIGKILL) under traffic;
- the routing-table ConfigMap deleted and corrupted;
- the kube-apiserver restarted in the middle of a migration step (local cluster only).

Covered elsewhere, not repeated here: the operator killed in the middle of a migration step
(`test_migration.py::test_operator_killed_mid_step_resumes_exactly`), children deleted or
edited by hand (`test_backend.py::test_deleted_or_edited_children_are_restored`), vLLM
killed under load (`test_router_engines.py`), vLLM losing every pod
(`test_migration.py::test_vllm_lost_fails_over_to_ollama_and_back_after_hold_down`).
"""

from __future__ import annotations

import copy
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
from testsupport.markers import needs
from testsupport.programs import scrape, total
from testsupport.repeat import Repeating

from e2e.dataplane import DataPlane, Request, Traffic
from e2e.harness import Kubectl, OperatorProcess, free_port, wait_for
from e2e.test_backend import EXAMPLE, NAME, backend, condition, wait_phase
from e2e.test_migration import FAST, PROBE, consumers_of, served_weight
from inferops import registry
from inferops.api.spec import InferenceBackendSpec
from inferops.builders import Owner, desired_children
from inferops.builders.common import BACKEND_LABEL, COMPONENT_LABEL

pytestmark = needs("cluster", "vllm", "ollama", "prometheus")

CHILD_PLURALS = ",".join(k.plural for k in registry.CHILDREN)
COMPONENTS = ("vllm", "ollama", "router")


def manifest(name: str = NAME, **spec_changes: Any) -> dict[str, Any]:
    """The example with manual weights (notes at 50%), no migration and no model caches
    (the local cluster's volumes are not reused once released)."""
    out = copy.deepcopy(EXAMPLE)
    out["metadata"]["name"] = name
    spec = out["spec"]
    del spec["migration"], spec["vllm"]["cache"], spec["ollama"]["cache"]
    spec["consumers"][0]["weight"] = 50
    spec.update(spec_changes)
    return out


def children(kubectl: Kubectl, namespace: str, name: str) -> list[tuple[str, str]]:
    """(kind, name) of every object of a child kind labelled for `name`, duplicates kept."""
    listed = kubectl.run(
        "get", CHILD_PLURALS, "-n", namespace, "-l", f"{BACKEND_LABEL}={name}", "-o", "json"
    ).stdout
    return sorted((o["kind"], o["metadata"]["name"]) for o in json.loads(listed)["items"])


def built(kubectl: Kubectl, namespace: str, name: str) -> list[tuple[str, str]]:
    """(kind, name) of what the builders make of the stored resource."""
    body = backend(kubectl, namespace, name)
    owner = Owner(name=name, namespace=namespace, uid=body["metadata"]["uid"])
    spec = InferenceBackendSpec.model_validate(body["spec"])
    return sorted((o["kind"], o["metadata"]["name"]) for o in desired_children(spec, owner))


def deployment(
    kubectl: Kubectl, namespace: str, component: str, name: str = NAME
) -> dict[str, Any]:
    found = kubectl.get("deployment", f"{name}-{component}", namespace)
    assert found is not None, f"no {component} Deployment"
    return found


def replicas_owners(kubectl: Kubectl, namespace: str, component: str) -> list[str]:
    """The field managers that own a Deployment's `spec.replicas`."""
    shown = kubectl.run(
        "get",
        "deployment",
        f"{NAME}-{component}",
        "-n",
        namespace,
        "-o",
        "json",
        "--show-managed-fields",
    ).stdout
    return sorted(
        entry["manager"]
        for entry in json.loads(shown)["metadata"].get("managedFields", [])
        if "f:replicas" in entry.get("fieldsV1", {}).get("f:spec", {})
    )


def scale(kubectl: Kubectl, namespace: str, component: str, replicas: int) -> None:
    """`kubectl scale` of a component's Deployment (as a person or an HPA does)."""
    name = f"{NAME}-{component}"
    kubectl.run("scale", "deployment", name, f"--replicas={replicas}", "-n", namespace)


def wait_replicas(
    kubectl: Kubectl, namespace: str, what: str, replicas: int, timeout: float, **options: float
) -> None:
    """Until vLLM's Deployment asks for `replicas` (`options`: wait_for's)."""

    def asked() -> bool:
        return bool(deployment(kubectl, namespace, "vllm")["spec"]["replicas"] == replicas)

    wait_for(what, asked, timeout, **options)


def deployment_writes(operator: OperatorProcess, namespace: str) -> float:
    return (
        total(
            operator.metrics(), "inferops_kube_writes_total", namespace=namespace, kind="Deployment"
        )
        or 0.0
    )


def reconcile_by_child_events(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, count: int
) -> None:
    """`count` reconciliations, each triggered by an unrelated label put on a child."""
    for i in range(count):
        before = operator.reconciles(namespace)
        kubectl.run("label", "--overwrite", "service", f"{NAME}-vllm", f"poke={i}", "-n", namespace)
        wait_for(
            f"reconciliation {i + 1}/{count}",
            lambda b=before: operator.reconciles(namespace) > b,
            30,
        )


# ---------------------------------------------------------------- the operator, killed


def test_operator_killed_while_creating_children_leaves_exactly_the_built_ones(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    """SIGKILL while the operator creates a new resource's children, some of them created
    and some not: after a restart exactly the children the builders make exist, each once
    (no other object of a child kind, one ReplicaSet per Deployment, as many pods as
    replicas, every Deployment at generation 1: created once and never rolled again), and
    the resource is Ready. The kill lands at the operator's second write of its children;
    when that is not mid-way after all, a new resource is tried. (Killed mid-migration-step:
    test_migration.py::test_operator_killed_mid_step_resumes_exactly; children deleted or
    edited by hand: test_backend.py::test_deleted_or_edited_children_are_restored.)"""
    attempts: list[tuple[str, int, int]] = []
    partial = False
    for attempt in range(6):
        name = f"kill{attempt}"
        # Before its children, a resource's name goes into the routers' Role of the
        # namespace: created with its ServiceAccount and RoleBinding for the first one.
        identity = 1 if kubectl.get("role", "inferops-router", namespace) else 3
        before = operator.writes(namespace) + identity
        kubectl.apply(manifest(name), namespace)
        # The second write for its children: the first child is written, the rest to come.
        wait_for(
            f"the operator's second write for {name}'s children",
            lambda b=before: operator.writes(namespace) > b + 1,
            30,
            interval=0.002,
        )
        operator.kill()
        found, expected = children(kubectl, namespace, name), built(kubectl, namespace, name)
        attempts.append((name, len(found), len(expected)))
        partial = 0 < len(found) < len(expected)
        if partial:
            break
        operator.start()  # not mid-way after all: try again with a new resource
    print(f"\nkilled at: {[f'{n}: {f}/{e} children' for n, f, e in attempts]}")
    assert partial, f"no kill landed mid-way: {attempts}"
    restarted = time.monotonic()
    operator.start()

    for name, _, _ in attempts:
        wait_phase(kubectl, namespace, "Ready", name=name, timeout=120)
    ready_after = time.monotonic() - restarted
    print(
        f"all {len(attempts)} resource(s) Ready {ready_after:.1f}s after the restart; "
        f"the restarted operator made {operator.writes(namespace):.0f} writes"
    )
    for name, _, _ in attempts:
        assert children(kubectl, namespace, name) == built(kubectl, namespace, name), name
        selector = f"{BACKEND_LABEL}={name}"
        sets = kubectl.items("replicasets", namespace, selector)
        pods = kubectl.items("pods", namespace, selector)
        for component, desired in (("vllm", 1), ("ollama", 1), ("router", 2)):
            mine = [o for o in sets if o["metadata"]["labels"][COMPONENT_LABEL] == component]
            assert len(mine) == 1, (name, component, [o["metadata"]["name"] for o in mine])
            running = [p for p in pods if p["metadata"]["labels"][COMPONENT_LABEL] == component]
            assert len(running) == desired, (name, component, len(running))
            made = deployment(kubectl, namespace, component, name)
            assert made["metadata"]["generation"] == 1, (name, component)
        assert condition(backend(kubectl, namespace, name), "Ready")["status"] == "True"


# ------------------------------------------------------------ the GPU node, removed


def recreate_node(kubectl: Kubectl, node: dict[str, Any]) -> None:
    """The deleted node as it was created (the apiserver keeps a created Node's status,
    which holds its GPU capacity; kwok then manages it again)."""
    meta = node["metadata"]
    fresh = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {k: meta[k] for k in ("name", "labels", "annotations") if k in meta},
        "spec": {k: v for k, v in node["spec"].items() if k != "unschedulable"},
        "status": {
            k: node["status"][k]
            for k in ("capacity", "allocatable", "addresses")
            if k in node["status"]
        },
    }
    kubectl.run("create", "-f", "-", input=json.dumps(fresh))
    wait_for(
        f"node {meta['name']} Ready again",
        lambda: any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (kubectl.get("node", meta["name"], "") or {})
            .get("status", {})
            .get("conditions", [])
        ),
        60,
    )


class Sampler(Repeating):
    """Samples, from a thread, the resource's phase next to what Kubernetes says of the
    vLLM pods, so the status can be judged against it afterwards."""

    def __init__(self, kubectl: Kubectl, namespace: str) -> None:
        self.kubectl = kubectl
        self.namespace = namespace
        self.samples: list[dict[str, Any]] = []
        super().__init__(0.25)

    def _sample(self) -> dict[str, Any]:
        at = time.monotonic()
        status = backend(self.kubectl, self.namespace).get("status", {})
        pods = self.kubectl.items("pods", self.namespace, f"{COMPONENT_LABEL}=vllm")
        return {
            "t": at,
            "phase": status.get("phase"),
            "reason": condition({"status": status}, "Ready").get("reason"),
            "pods": [
                (
                    p["metadata"]["name"],
                    p["spec"].get("nodeName"),
                    any(
                        c["type"] == "Ready" and c["status"] == "True"
                        for c in p.get("status", {}).get("conditions", [])
                    ),
                )
                for p in pods
            ],
        }

    def step(self) -> None:
        self.samples.append(self._sample())


def test_gpu_node_removed_vllm_pod_replaced_and_status_follows(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    """The GPU node that hosts the vLLM pod is deleted while no other GPU is free (the
    other GPU nodes cordoned, as in a full cluster). Kubernetes keeps that pod, still Ready,
    until its pod garbage collector removes pods of deleted nodes (after a 40 s
    quarantine), and the status follows Kubernetes: Ready meanwhile (measured; see
    docs/reliability.md). Once the pod is gone and its replacement cannot be scheduled, no
    vLLM pod is Ready and the status says so: Degraded, reason VLLMUnschedulable, vLLM 0/1,
    a phase-change Event. When a GPU node frees up (uncordoned), the replacement runs there
    and the resource is Ready again with vLLM at 1/1."""
    kubectl.apply(manifest(), namespace)
    wait_phase(kubectl, namespace, "Ready")
    (pod,) = kubectl.items("pods", namespace, f"{COMPONENT_LABEL}=vllm")
    gone = pod["spec"]["nodeName"]
    node = kubectl.get("node", gone, "")
    assert node is not None and "nvidia.com/gpu" in node["status"]["allocatable"]
    spares = [
        n["metadata"]["name"]
        for n in kubectl.items("nodes", "")
        if "nvidia.com/gpu" in n["status"].get("allocatable", {}) and n["metadata"]["name"] != gone
    ]
    assert spares, "no other GPU node to replace the pod on"
    for spare in spares:
        kubectl.run("cordon", spare)
    try:
        with Sampler(kubectl, namespace) as sampler:
            deleted = time.monotonic()
            kubectl.run("delete", "node", gone)

            def degraded() -> dict[str, Any] | None:
                status = backend(kubectl, namespace)["status"]
                pods = kubectl.items("pods", namespace, f"{COMPONENT_LABEL}=vllm")
                pending = [
                    p["metadata"]["name"] != pod["metadata"]["name"]
                    and not p["spec"].get("nodeName")
                    for p in pods
                ]
                return status if pending == [True] and status["phase"] == "Degraded" else None

            status = wait_for(
                "the status Degraded while the replacement is Pending", degraded, 180, interval=0.5
            )
            told = time.monotonic()
            kubectl.run("uncordon", spares[0])
            wait_phase(kubectl, namespace, "Ready", timeout=60)
            back = time.monotonic()
    finally:
        for spare in spares:
            kubectl.run("uncordon", spare, check=False)
        recreate_node(kubectl, node)
    samples = sampler.samples
    old_gone = next(
        s["t"]
        for s in samples
        if s["t"] > deleted and all(p[0] != pod["metadata"]["name"] for p in s["pods"])
    )
    orphaned = [s for s in samples if deleted < s["t"] < old_gone]
    print(
        f"\nnode {gone} deleted: its pod stayed (Ready) {old_gone - deleted:.1f}s until the "
        f"pod garbage collector removed it, the status Ready in "
        f"{sum(s['phase'] == 'Ready' for s in orphaned)} of {len(orphaned)} samples "
        f"meanwhile; Degraded ({condition({'status': status}, 'Ready')['reason']}) seen "
        f"{told - old_gone:.1f}s after the pod was gone; Ready again "
        f"{back - told:.1f}s after a GPU node freed up"
    )

    ready_cond = condition({"status": status}, "Ready")
    assert ready_cond["reason"] == "VLLMUnschedulable", ready_cond
    assert status["vllm"]["ready"] == "0/1"
    (new,) = kubectl.items("pods", namespace, f"{COMPONENT_LABEL}=vllm")
    assert new["spec"]["nodeName"] == spares[0]
    ready = backend(kubectl, namespace)["status"]
    assert ready["phase"] == "Ready" and ready["vllm"]["ready"] == "1/1"
    # From the status' first reaction to the pod's deletion on, no sample shows it Ready
    # without a Ready vLLM pod (the sampler sees the reaction at its own pace, so samples
    # before it are not judged).
    reacted = next(i for i, s in enumerate(samples) if s["t"] > old_gone and s["phase"] != "Ready")
    lying = [
        s for s in samples[reacted:] if s["phase"] == "Ready" and not any(p[2] for p in s["pods"])
    ]
    assert lying == [], lying
    events = kubectl.events(namespace, f"involvedObject.name={NAME}", "-o", "json")
    # Timestamps have whole seconds, and the Ready -> Degraded -> Ready changes can fall in
    # one second: within a second, the creation order is the etcd revision's.
    items = sorted(
        json.loads(events)["items"],
        key=lambda e: (e["lastTimestamp"], int(e["metadata"]["resourceVersion"])),
    )
    changes = [(e["reason"], e["message"].split(":")[0]) for e in items if " -> " in e["message"]]
    print("phase changes:", changes)
    assert ("VLLMUnschedulable", "Ready -> Degraded") in changes, changes
    # Back to Ready, directly or through Progressing when a reconciliation saw the new pod
    # scheduled but not yet ready (both true; which one is a matter of timing).
    after = changes[changes.index(("VLLMUnschedulable", "Ready -> Degraded")) + 1 :]
    assert after in (
        [("EnginesReady", "Degraded -> Ready")],
        [("VLLMStarting", "Degraded -> Progressing"), ("EnginesReady", "Progressing -> Ready")],
    ), changes


# ------------------------------------------------------------- replicas: who owns them


def hpa(target: str, minimum: int, maximum: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": target},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": minimum,
            "maxReplicas": maximum,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80},
                    },
                }
            ],
        },
    }


def watch_replicas(
    kubectl: Kubectl, namespace: str, seconds: float
) -> dict[str, set[tuple[int, int]]]:
    """(replicas, generation) seen for each Deployment, polled for `seconds`."""
    seen: dict[str, set[tuple[int, int]]] = {c: set() for c in COMPONENTS}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for d in kubectl.items("deployments", namespace, f"{BACKEND_LABEL}={NAME}"):
            component = d["metadata"]["labels"][COMPONENT_LABEL]
            seen[component].add((d["spec"]["replicas"], d["metadata"]["generation"]))
        time.sleep(0.5)
    return seen


def test_replicas_left_unset_belong_to_an_hpa_or_kubectl_scale(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    """`spec.vllm.replicas` and `spec.ollama.replicas` unset: the operator never writes
    the Deployments' replicas. A real HPA (`autoscaling/v2`, minReplicas 2; no metrics
    server, so it holds the count within its bounds) scales vLLM to 2 and `kubectl scale`
    Ollama to 2; the status counts them (2/2). Then several reconciliations (child events,
    and a spec change that rolls both Deployments) and longer than the HPA's sync period:
    replicas stay 2, each generation moves once (the spec change), the operator writes
    each Deployment once (that change) and owns neither count."""
    kubectl.apply(manifest(), namespace)
    wait_phase(kubectl, namespace, "Ready")
    kubectl.apply(hpa(f"{NAME}-vllm", 2, 3), namespace)
    asked = time.monotonic()
    scale(kubectl, namespace, "ollama", 2)
    wait_replicas(kubectl, namespace, "the HPA to scale vLLM to 2", 2, 60)
    scaled = time.monotonic() - asked

    def counted() -> bool:
        status = backend(kubectl, namespace)["status"]
        return (status["phase"], status["vllm"]["ready"], status["ollama"]["ready"]) == (
            "Ready",
            "2/2",
            "2/2",
        )

    wait_for("the status to count 2/2 for both engines", counted, 30)
    generations = {
        c: deployment(kubectl, namespace, c)["metadata"]["generation"] for c in ("vllm", "ollama")
    }
    writes = deployment_writes(operator, namespace)
    reconciles = operator.reconciles(namespace)

    reconcile_by_child_events(kubectl, operator, namespace, 5)
    vllm = {
        **EXAMPLE["spec"]["vllm"],
        "extraArgs": ["--enable-prefix-caching", "--max-num-seqs=64"],
    }
    ollama = {**EXAMPLE["spec"]["ollama"], "numParallel": 2}
    for spec in (vllm, ollama):
        spec.pop("cache")
    kubectl.apply(manifest(vllm=vllm, ollama=ollama), namespace)
    wait_phase(kubectl, namespace, "Ready")
    seen = watch_replicas(kubectl, namespace, 20)  # the HPA syncs every 15 s
    reconciled = operator.reconciles(namespace) - reconciles
    wrote = deployment_writes(operator, namespace) - writes
    owners = {c: replicas_owners(kubectl, namespace, c) for c in ("vllm", "ollama")}
    print(
        f"\nHPA scaled vLLM to 2 within {scaled:.1f}s; over {reconciled:.0f} reconciliations "
        f"and 20 s: (replicas, generation) seen {seen}; Deployment writes {wrote:.0f}; "
        f"replicas owned by {owners}"
    )

    for component in ("vllm", "ollama"):
        assert seen[component] == {(2, generations[component] + 1)}, (component, seen)
        assert owners[component] and "inferops-operator" not in owners[component], owners
    assert wrote == 2  # the spec change, once per Deployment
    status = backend(kubectl, namespace)["status"]
    assert (status["vllm"]["ready"], status["ollama"]["ready"]) == ("2/2", "2/2")
    assert "2/2" in kubectl.run("get", "ib", NAME, "-n", namespace).stdout


def test_replicas_set_in_the_spec_are_kept_and_handed_over_when_unset(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    """`spec.vllm.replicas: 1`: the operator owns the count, so `kubectl scale
    --replicas=3` is reverted to 1 with one write, and nothing moves over further
    reconciliations. Then `replicas: 3`, and the field removed: the Deployment keeps 3 pods
    (not the Deployment default of 1), owned by the operator's handover manager, and a
    `kubectl scale` after that stays."""
    vllm = {**EXAMPLE["spec"]["vllm"], "replicas": 1}
    del vllm["cache"]
    kubectl.apply(manifest(vllm=vllm), namespace)
    wait_phase(kubectl, namespace, "Ready")
    generation = deployment(kubectl, namespace, "vllm")["metadata"]["generation"]
    writes = deployment_writes(operator, namespace)
    scaled = time.monotonic()
    scale(kubectl, namespace, "vllm", 3)
    wait_replicas(kubectl, namespace, "the scale to be reverted", 1, 30, interval=0.05)
    reverted = time.monotonic() - scaled
    reconcile_by_child_events(kubectl, operator, namespace, 3)
    seen = watch_replicas(kubectl, namespace, 5)["vllm"]
    wrote = deployment_writes(operator, namespace) - writes
    print(
        f"\nkubectl scale reverted after {reverted:.2f}s with {wrote:.0f} write(s); then "
        f"(replicas, generation) seen {seen}"
    )
    assert wrote == 1
    assert seen == {(1, generation + 2)}  # the scale and its revert, nothing since
    assert replicas_owners(kubectl, namespace, "vllm") == ["inferops-operator"]

    kubectl.apply(manifest(vllm={**vllm, "replicas": 3}), namespace)
    wait_for(
        "3 vLLM pods ready",
        lambda: backend(kubectl, namespace)["status"]["vllm"]["ready"] == "3/3",
        30,
    )
    three = watch_replicas(kubectl, namespace, 1)["vllm"]
    del vllm["replicas"]
    kubectl.apply(manifest(vllm=vllm), namespace)
    wait_phase(kubectl, namespace, "Ready")  # the new generation observed
    kept = watch_replicas(kubectl, namespace, 5)["vllm"]
    owners = replicas_owners(kubectl, namespace, "vllm")
    print(
        f"replicas: 3 removed from the spec: (replicas, generation) {three} before, {kept} "
        f"after, owned by {owners}"
    )
    # One new generation: the spec-hash annotation changed (a Deployment counts annotation
    # changes too); the count did not.
    assert kept == {(3, max(g for _, g in three) + 1)}, (three, kept)
    assert owners == ["inferops-replicas-handover"]
    scale(kubectl, namespace, "vllm", 2)
    reconcile_by_child_events(kubectl, operator, namespace, 2)
    assert {count for count, _ in watch_replicas(kubectl, namespace, 3)["vllm"]} == {2}
    wait_for(
        "the status to count 2/2",
        lambda: backend(kubectl, namespace)["status"]["vllm"]["ready"] == "2/2",
        30,
    )


# --------------------------------------------------------- the data plane's faults


# What a client may see when the router goes away: it refused or dropped the connection,
# a stream ended early, or the restarted router answered before its first table was loaded
# (503, and not ready: in a cluster its Service sends it nothing yet). A timeout would be a
# hang.
CLEAN = (openai.APIConnectionError, httpx.TransportError, ConnectionError)
NOT_READY = (openai.APIStatusError, ollama.ResponseError)
HANG = (openai.APITimeoutError, httpx.TimeoutException, TimeoutError)


def clean(error: BaseException) -> bool:
    if isinstance(error, NOT_READY):
        code = getattr(error, "status_code", None)
        return code == 503 and "no routing table loaded" in str(error)
    return isinstance(error, CLEAN) and not isinstance(error, HANG)


def outcomes(requests: list[Request]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in requests:
        key = "ok" if r.error is None else type(r.error).__name__
        out[key] = out.get(key, 0) + 1
    return out


ACCEPTED_AFTER = 0.1
"""Seconds after a request starts by which the router has surely accepted its connection."""


def test_router_restarted_under_traffic_ends_every_request(
    kubectl: Kubectl, operator: OperatorProcess, plane: DataPlane, namespace: str
) -> None:
    """The router is restarted twice while consumers stream through it: first with SIGTERM
    (a rollout: it drains), then with SIGKILL (a crash). Every request either completes or
    ends with a clean client error (connection refused or reset, stream cut), none hangs
    to its timeout (30 s); requests in flight at the SIGTERM complete; the restarted router
    serves again. Consumers: the official `openai` client without retries and with its
    default 2, and the official `ollama` client."""
    kubectl.apply(manifest(), namespace)
    wait_phase(kubectl, namespace, "Ready")
    router = plane.serve(namespace, NAME)
    marks: dict[str, float] = {}
    with (
        Traffic(plane, namespace, "notes", timeout=30, pause=0.02) as raw,
        Traffic(plane, namespace, "notes", timeout=30, pause=0.02, max_retries=2) as retrying,
        Traffic(plane, namespace, "notes", api="ollama", timeout=30, pause=0.02) as native,
    ):
        loops = (raw, retrying, native)

        def served_after(mark: float) -> bool:
            return all(any(r.start > mark and r.error is None for r in t.requests) for t in loops)

        wait_for("traffic through the router", lambda: served_after(0), 60)
        for how in ("SIGTERM", "SIGKILL"):
            marks[how] = time.monotonic()
            if how == "SIGTERM":
                router.process.stop(grace=30)
            else:
                router.process.kill()
            marks[f"{how} down"] = time.monotonic()
            router.start(timeout=60)
            marks[f"{how} up"] = time.monotonic()
            wait_for(
                f"every consumer served after the {how} restart",
                lambda m=marks[f"{how} up"]: served_after(m),
                30,
            )
    assert not any(t.alive for t in loops), "a consumer loop is stuck"

    requests = [r for t in loops for r in t.requests]
    print(
        f"\n{len(requests)} requests; raw openai {outcomes(raw.requests)}, openai with "
        f"retries {outcomes(retrying.requests)}, ollama {outcomes(native.requests)}"
    )
    for how in ("SIGTERM", "SIGKILL"):
        print(
            f"{how}: router down after {marks[f'{how} down'] - marks[how]:.2f}s, serving "
            f"again {marks[f'{how} up'] - marks[f'{how} down']:.2f}s later"
        )
    print(f"longest request {max(r.end - r.start for r in requests):.2f}s")
    hangs = [r for r in requests if isinstance(r.error, HANG)]
    unclean = [r.error for r in requests if r.error is not None and not clean(r.error)]
    assert hangs == [] and unclean == [], (hangs, unclean)
    # A rollout's SIGTERM lets the requests in flight finish.
    # In flight means accepted by the router: a request begun in the last moments before the
    # signal may still be connecting from the client's thread, and then fails cleanly
    # (connection refused, checked above) rather than being drained.
    term = marks["SIGTERM"]
    drained = [r for r in requests if r.start < term - ACCEPTED_AFTER < term < r.end]
    print(f"in flight at SIGTERM: {outcomes(drained)}")
    assert all(r.error is None for r in drained), drained


def stale(router_url: str) -> tuple[float | None, str]:
    """The router's stale-table gauge and its readiness answer (200 or an HTTPError)."""
    gauge = scrape(f"{router_url}/metrics").get("inferops_router_table_stale")
    with urllib.request.urlopen(f"{router_url}/readyz", timeout=5) as answer:
        return gauge, answer.read().decode()


def stale_because(router_url: str, why: str) -> tuple[float | None, str] | None:
    found = stale(router_url)
    return found if "stale: " in found[1] and why in found[1] else None


def test_routing_table_deleted_or_corrupted_keeps_serving_and_is_restored(
    kubectl: Kubectl, operator: OperatorProcess, plane: DataPlane, namespace: str
) -> None:
    """The routing-table ConfigMap is deleted, then corrupted (invalid JSON). The router
    keeps serving its last good table (zero failed requests throughout) and says so: a log
    line, `inferops_router_table_stale` 1 and `/readyz` still 200 with "stale: <why>"; the
    operator restores the ConfigMap with the same table, after which the router serves it
    again (not stale) without reinstalling it. Once with the operator running (restored
    within a second), once with it stopped during the fault (the stale state held, then
    restored when it starts)."""
    kubectl.apply(manifest(), namespace)
    wait_phase(kubectl, namespace, "Ready")
    router = plane.serve(namespace, NAME)
    name = f"{NAME}-router"
    original = kubectl.get("configmap", name, namespace)
    assert original is not None
    table = original["data"]["routes.json"]
    generation = router.metric("inferops_router_table_generation")
    assert generation is not None and generation >= 1
    corrupt = json.dumps({"data": {"routes.json": "{not json"}})
    restored: dict[str, float] = {}

    def restored_since(previous: str) -> bool:
        now = kubectl.get("configmap", name, namespace)
        return (
            now is not None
            and now["metadata"]["resourceVersion"] != previous
            and now["data"].get("routes.json") == table
        )

    with Traffic(plane, namespace, "notes", pause=0.05) as traffic:
        for fault in ("deleted", "corrupted"):
            version = kubectl.get("configmap", name, namespace)["metadata"]["resourceVersion"]  # type: ignore[index]
            began = time.monotonic()
            if fault == "deleted":
                kubectl.run("delete", "configmap", name, "-n", namespace)
            else:
                kubectl.run(
                    "patch", "configmap", name, "-n", namespace, "--type", "merge", "-p", corrupt
                )
            wait_for(
                f"the {fault} ConfigMap restored",
                lambda v=version: restored_since(v),
                30,
                interval=0.05,
            )
            restored[f"{fault}, operator running"] = time.monotonic() - began
            wait_for("the router not stale", lambda: stale(router.url)[0] == 0, 10)

        operator.stop()
        try:
            version = kubectl.get("configmap", name, namespace)["metadata"]["resourceVersion"]  # type: ignore[index]
            kubectl.run(
                "patch", "configmap", name, "-n", namespace, "--type", "merge", "-p", corrupt
            )
            gauge, ready = wait_for(
                "the router to say its table is stale (rejected)",
                lambda: stale_because(router.url, "rejected"),
                10,
            )
            assert gauge == 1 and ready.startswith("ok: table"), ready
            kubectl.run("delete", "configmap", name, "-n", namespace)
            gauge, ready = wait_for(
                "the router to say its table is stale (deleted)",
                lambda: stale_because(router.url, "deleted"),
                10,
            )
            assert gauge == 1 and ready.startswith("ok: table"), ready
            served = traffic.ok
            wait_for("requests served on the stale table", lambda: traffic.ok > served + 5, 30)
        finally:
            began = time.monotonic()
            operator.start()
        wait_for(
            "the ConfigMap restored by the started operator",
            lambda: restored_since(version),
            60,
            interval=0.05,
        )
        restored["deleted and corrupted, operator started"] = time.monotonic() - began
        wait_for("the router not stale", lambda: stale(router.url)[0] == 0, 10)
    log = Path(router.process.log_path).read_text()
    print(
        f"\nrestored after: { {k: round(v, 2) for k, v in restored.items()} }; requests "
        f"{traffic.ok} ok, {len(traffic.errors)} failed; router log: "
        f"{log.count('was deleted; keeping')} deletions, "
        f"{log.count('routing table rejected')} rejections reported"
    )
    assert traffic.errors == []
    assert log.count("was deleted; keeping the current routing table") >= 2
    assert log.count("routing table rejected, keeping the current one") >= 2
    # The same table came back each time: the router never had to install another one.
    assert router.metric("inferops_router_table_generation") == generation


# --------------------------------------------------- the API server, restarted


@pytest.fixture
def migrator(
    kubectl: Kubectl, operator: OperatorProcess, plane: DataPlane, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """An operator told where the local router and Prometheus are, while the session's
    operator pauses: two operators must not drive the same resources."""
    operator.stop()
    mine = OperatorProcess(
        kubectl, tmp_path / "operator.log", free_port(), extra_args=plane.operator_args()
    )
    mine.start()
    yield mine
    mine.stop()
    operator.start()


KEPT = ("step", "weight", "stepStartedAt", "phase", "failedSamples")


def test_apiserver_restarted_mid_migration_step_loses_nothing(
    kubectl: Kubectl, migrator: OperatorProcess, plane: DataPlane, namespace: str
) -> None:
    """The kube-apiserver is restarted (SIGTERM, SIGKILL after 10 s, started again) while
    a consumer is in a migration step under traffic. The router keeps serving meanwhile
    (zero failed requests); after the restart the migration's progress in status is intact
    (same step, weight, step start; samples counted on from where they were, never reset),
    the operator reconnects, and spec changes made after the restart reach the children:
    a Deployment (Ollama's parallelism) and the routing table in the running router
    (a timeout). Needs the local cluster, whose processes the test controls."""
    if os.environ.get("KUBECONFIG"):
        pytest.skip("restarting the API server needs the local cluster (KUBECONFIG is set)")
    from e2e.localcluster import Cluster

    cluster = Cluster.default()
    assert cluster.kubeconfig == kubectl.kubeconfig
    spec = manifest()["spec"]
    spec["consumers"] = [{"name": "notes"}]
    spec["migration"] = {
        "steps": [{"weight": 50, "pause": {"duration": "10m"}}, {"weight": 100}],
        "analysis": {**FAST, "failureLimit": 5},
        "probe": PROBE,
    }
    kubectl.apply({**manifest(), "spec": spec}, namespace)
    wait_phase(kubectl, namespace, "Ready")
    router = plane.serve(namespace, NAME)
    with Traffic(plane, namespace, "notes") as traffic:
        before = wait_for(
            "a first passed sample",
            lambda: (
                (n := consumers_of(kubectl, namespace).get("notes", {})).get("passedSamples", 0)
                >= 1
                and n
            ),
            120,
            interval=0.5,
        )
        down = cluster.restart("kube-apiserver")
        after = consumers_of(kubectl, namespace)["notes"]
        restarted = time.monotonic()
        assert {k: after[k] for k in KEPT} == {k: before[k] for k in KEPT}, (before, after)
        assert after["passedSamples"] >= before["passedSamples"]

        ollama = {**spec["ollama"], "numParallel": 3}
        router_spec = {"timeouts": {"totalSeconds": 300}}
        kubectl.apply(
            {**manifest(), "spec": {**spec, "ollama": ollama, "router": router_spec}}, namespace
        )
        changed = time.monotonic()

        def parallel() -> bool:
            env = deployment(kubectl, namespace, "ollama")["spec"]["template"]["spec"][
                "containers"
            ][0]["env"]
            return {"name": "OLLAMA_NUM_PARALLEL", "value": "3"} in env

        wait_for("the new parallelism in the Ollama Deployment", parallel, 60, interval=0.1)
        deployed = time.monotonic() - changed
        revision = json.loads(
            kubectl.get("configmap", f"{NAME}-router", namespace)["data"]["routes.json"]  # type: ignore[index]
        )["revision"]
        wait_for(
            "the router serving the new table",
            lambda: router.metric("inferops_router_table_revision") == revision,
            60,
            interval=0.1,
        )
        routed = time.monotonic() - changed
        later = wait_for(
            "a sample after the restart",
            lambda: (
                (n := consumers_of(kubectl, namespace)["notes"])["passedSamples"]
                > after["passedSamples"]
                and n
            ),
            90,
            interval=0.5,
        )
        sampled = time.monotonic() - restarted
    print(
        f"\napiserver restart took {down:.1f}s; after it, the spec change reached the "
        f"Deployment in {deployed:.2f}s and the router in {routed:.2f}s; next sample "
        f"{sampled:.1f}s after the restart; notes: samples {before['passedSamples']} "
        f"before, {later['passedSamples']} after; requests {traffic.ok} ok, "
        f"{len(traffic.errors)} failed"
    )
    for key in ("step", "weight", "stepStartedAt", "phase"):
        assert later[key] == before[key], key
    assert served_weight(plane, "notes") == 50
    assert traffic.errors == []
    assert condition(backend(kubectl, namespace), "Migrating")["reason"] == "Progressing"
