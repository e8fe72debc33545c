"""Who owns a Deployment's replicas: the operator when the spec sets them, else whoever
scales it (an HPA, `kubectl scale`), with the operator handing them over instead of
resetting them. The end-to-end check with a real HPA is e2e/test_faults.py."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import pytest
from testsupport.memkube import MemKube

from inferops import replicas
from inferops.api.status import InferenceBackendStatus
from inferops.builders import desired_children
from inferops.execute import write_children
from inferops.plan import Plan, changes
from inferops.reconcile import Snapshot, decide
from tests.conftest import OWNER, make_spec

OPERATOR = "inferops-operator"
NOW = datetime(2026, 11, 26, 10, 0, 0)


def deployments(**sections: Any) -> dict[str, dict[str, Any]]:
    spec = make_spec(consumers=[{"name": "notes"}], **sections)
    return {
        o["metadata"]["labels"]["inferops.io/component"]: o
        for o in desired_children(spec, OWNER)
        if o["kind"] == "Deployment"
    }


def live(desired: dict[str, Any], count: int | None, manager: str | None) -> dict[str, Any]:
    """`desired` as the API server returns it: replicas set, owned by `manager`."""
    fields = {"f:spec": {"f:replicas": {}, "f:template": {}}} if manager else {}
    spec = {**desired["spec"], **({} if count is None else {"replicas": count})}
    managed = [{"manager": manager or "kubectl", "operation": "Apply", "fieldsV1": fields}]
    return {**desired, "spec": spec, "metadata": {**desired["metadata"], "managedFields": managed}}


def test_unset_replicas_are_left_out_and_set_ones_applied() -> None:
    unset = deployments()
    assert all("replicas" not in d["spec"] for d in unset.values())
    pinned = deployments(vllm={"model": "m", "replicas": 3}, router={"replicas": 0})
    assert pinned["vllm"]["spec"]["replicas"] == 3
    assert pinned["router"]["spec"]["replicas"] == 0
    assert "replicas" not in pinned["ollama"]["spec"]


@pytest.mark.parametrize(
    ("component", "spec_count", "live_count", "expected"),
    [
        ("vllm", 2, 5, 2),  # the spec's count wins
        ("vllm", None, 5, 5),  # an HPA's or a person's choice
        ("router", None, None, 2),  # not created yet: its initial count
        ("ollama", None, None, 1),
    ],
)
def test_desired_count(
    component: str, spec_count: int | None, live_count: int | None, expected: int
) -> None:
    deployment = None if live_count is None else {"spec": {"replicas": live_count}}
    assert replicas.desired(component, spec_count, deployment) == expected


def test_a_deployment_is_created_with_its_initial_count() -> None:
    router = deployments()["router"]
    assert replicas.as_created(None, router)["spec"]["replicas"] == 2
    assert "replicas" not in router["spec"]  # the desired object itself is left alone
    assert replicas.as_created(live(router, 2, OPERATOR), router) is router
    pinned = deployments(vllm={"model": "m", "replicas": 3})["vllm"]
    assert replicas.as_created(None, pinned) is pinned


@pytest.mark.parametrize(
    ("live_count", "owner", "expected"),
    [
        (3, OPERATOR, 3),  # owned since creation or an earlier spec: handed over as it is
        (0, OPERATOR, 1),  # after a scale-down by the operator: back to the initial count
        (4, "kube-controller-manager", None),  # an HPA owns them already
        (4, None, None),  # nobody applied them: nothing to hand over
    ],
)
def test_handover_before_the_operator_lets_go(
    live_count: int, owner: str | None, expected: int | None
) -> None:
    ollama = deployments()["ollama"]
    patch = replicas.handover(live(ollama, live_count, owner), ollama, OPERATOR)
    if expected is None:
        assert patch is None
    else:
        assert patch == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "llama32-ollama", "namespace": "ai"},
            "spec": {"replicas": expected},
        }


def test_no_handover_when_the_spec_keeps_them_or_nothing_exists() -> None:
    pinned = deployments(vllm={"model": "m", "replicas": 2})["vllm"]
    assert replicas.handover(live(pinned, 2, OPERATOR), pinned, OPERATOR) is None
    assert replicas.handover(None, deployments()["vllm"], OPERATOR) is None


class NoCache:
    """Stands in for the watch cache, which only hears of the operator's writes here."""

    def objects(self, namespace: str, name: str) -> dict[tuple[str, str], Any]:
        return {}

    def wrote(self, namespace: str, name: str, replaced: Any, obj: Any) -> None:
        pass


async def _apply(
    kube: MemKube, desired: list[dict[str, Any]], live: dict[tuple[str, str], Any]
) -> None:
    create, update, delete = changes(desired, live)
    plan = Plan(desired, InferenceBackendStatus(), [], None, create, update, delete)
    await write_children(kube, plan, OWNER, logging.getLogger("test"), NoCache())  # type: ignore[arg-type]


def applied(kube: MemKube) -> list[tuple[str, int | None]]:
    """Who applied which count, in order (None: an apply without replicas)."""
    return [
        (c.manager, (c.body or {})["spec"].get("replicas")) for c in kube.calls if c.verb == "apply"
    ]


def cached(obj: dict[str, Any]) -> dict[tuple[str, str], Any]:
    """`obj` as the operator's watch cache holds it: without managedFields."""
    meta = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
    return {(obj["kind"], obj["metadata"]["name"]): {**obj, "metadata": meta}}


async def test_apply_creates_then_hands_over_once() -> None:
    kube = MemKube(field_manager=OPERATOR)
    vllm = deployments()["vllm"]
    await _apply(kube, [vllm], {})
    assert applied(kube) == [(OPERATOR, 1)]
    # An earlier spec pinned 3 replicas, so the operator owns them; then a spec change (new
    # image) leaves them out: the count goes to the second manager first, then the
    # operator's apply without replicas, which no longer resets them. The cached object
    # has no managedFields: ownership is read from the API server.
    live = await kube.apply({**vllm, "spec": {**vllm["spec"], "replicas": 3}})
    changed = deployments(vllm={"model": "m", "image": "vllm:new"})["vllm"]
    await _apply(kube, [changed], cached(live))
    assert applied(kube)[2:] == [(replicas.HANDOVER_MANAGER, 3), (OPERATOR, None)]
    live = kube.stored(vllm)
    assert live is not None and live["spec"]["replicas"] == 3
    # Once handed over (an HPA or the second manager owns them), no second handover, and
    # an HPA's count stays.
    hpa = {k: live[k] for k in ("apiVersion", "kind")}
    hpa["metadata"] = {"name": "llama32-vllm", "namespace": OWNER.namespace}
    live = await kube.apply(
        {**hpa, "spec": {"replicas": 4}}, field_manager="kube-controller-manager"
    )
    newer = deployments(vllm={"model": "m", "image": "vllm:newer"})["vllm"]
    await _apply(kube, [newer], cached(live))
    assert applied(kube)[5:] == [(OPERATOR, None)]
    live = kube.stored(vllm)
    assert live is not None and live["spec"]["replicas"] == 4
    assert live["spec"]["template"] == newer["spec"]["template"]


def test_status_counts_the_deployments_own_replicas_when_the_spec_leaves_them() -> None:
    spec = make_spec()
    scaled = {
        "kind": "Deployment",
        "metadata": {"name": "llama32-vllm", "generation": 2},
        "spec": {"replicas": 3},
        "status": {"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 3},
    }
    ollama = {
        "kind": "Deployment",
        "metadata": {"name": "llama32-ollama", "generation": 1},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 1},
    }
    snap = Snapshot(
        OWNER,
        1,
        spec,
        None,
        InferenceBackendStatus(),
        {("Deployment", "llama32-vllm"): scaled, ("Deployment", "llama32-ollama"): ollama},
        [],
    )
    status = decide(snap, None, NOW).status
    assert status.vllm is not None and status.vllm.ready == "3/3"
    assert status.phase == "Ready"
