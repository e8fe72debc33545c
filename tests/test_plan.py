"""The pure parts of a reconciliation's plan: which children to create, change and delete,
when the status is written, which phase changes make an Event; and the latest bodies the
reconciler starts from."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest

from inferops.api.status import InferenceBackendStatus
from inferops.bodies import Bodies
from inferops.builders import desired_children
from inferops.plan import changes, decide, split
from inferops.reconcile import Snapshot
from tests.conftest import OWNER, make_spec
from tests.test_decide import NOW, snapshot, spec

DESIRED = desired_children(make_spec(), OWNER)
KEYS = [(o["kind"], o["metadata"]["name"]) for o in DESIRED]
VLLM = ("Deployment", "llama32-vllm")
OLD = ("Service", "llama32-gone")


def live(
    *,
    drop: tuple[tuple[str, str], ...] = (),
    edit: tuple[tuple[str, str], ...] = (),
    extra: tuple[tuple[str, str], ...] = (),
) -> dict[tuple[str, str], Any]:
    out = {k: o for k, o in zip(KEYS, DESIRED, strict=True) if k not in drop}
    for key in edit:
        out[key] = {**out[key], "metadata": {**out[key]["metadata"], "labels": {}}}
    for kind, name in extra:
        out[(kind, name)] = {"kind": kind, "metadata": {"name": name}}
    return out


@dataclass(frozen=True)
class Row:
    name: str
    live: dict[tuple[str, str], Any]
    create: tuple[tuple[str, str], ...] = ()
    update: tuple[tuple[str, str], ...] = ()
    delete: tuple[tuple[str, str], ...] = ()


ROWS = [
    Row("nothing yet: every child is created", {}, create=tuple(KEYS)),
    Row("all there and equal: no write", live()),
    Row("one gone: only it is created", live(drop=(VLLM,)), create=(VLLM,)),
    Row("one edited: only it is changed", live(edit=(VLLM,)), update=(VLLM,)),
    Row("one no longer wanted: deleted", live(extra=(OLD,)), delete=(OLD,)),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_changes(row: Row) -> None:
    create, update, delete = changes(DESIRED, row.live)
    assert [(o["kind"], o["metadata"]["name"]) for o in create] == list(row.create)
    assert [(o["kind"], o["metadata"]["name"]) for _, o in update] == list(row.update)
    assert [(o["kind"], o["metadata"]["name"]) for o in delete] == list(row.delete)


def test_a_created_deployment_gets_its_initial_replicas() -> None:
    create, _, _ = changes(DESIRED, {})
    vllm = next(o for o in create if (o["kind"], o["metadata"]["name"]) == VLLM)
    assert vllm["spec"]["replicas"] == 1


def test_the_status_is_patched_only_when_it_changed() -> None:
    first = decide(snapshot(make_spec()), None, NOW)
    assert first.status_patch is not None
    again = decide(snapshot(make_spec(), previous=first.status), None, NOW)
    assert again.status_patch is None and again.events == []


@pytest.mark.parametrize(
    ("previous", "ready", "events"),
    [
        (InferenceBackendStatus(), (), []),  # a new resource starting: no Event
        (InferenceBackendStatus(), ("vllm", "ollama", "router"), ["EnginesReady"]),
        (InferenceBackendStatus(observed_generation=1, phase="Ready"), (), ["VLLMCreating"]),
    ],
)
def test_phase_events(
    previous: InferenceBackendStatus, ready: tuple[str, ...], events: list[str]
) -> None:
    plan = decide(snapshot(make_spec(), previous=previous, ready=ready), None, NOW)
    assert [e.reason for e in plan.events] == events, plan.status.phase


def test_an_invalid_spec_plans_no_child_write() -> None:
    snap: Snapshot = snapshot(make_spec(), invalid="spec.x: wrong")
    plan = decide(snap, None, NOW)
    assert plan.desired is None and (plan.create, plan.update, plan.delete) == ([], [], [])


def body(rv: str, phase: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ai", "name": "b", "resourceVersion": rv},
        "status": {"phase": phase},
    }


def test_bodies_keep_the_newest_version() -> None:
    bodies = Bodies()
    bodies.seen(body("10", "Progressing"))
    bodies.seen(body("12", "Ready"))  # our status patch's answer
    bodies.seen(body("11", "Progressing"))  # the watch catching up
    assert bodies.get("ai", "b") == body("12", "Ready")
    bodies.forget("ai", "b")
    assert bodies.get("ai", "b") is None


TABLE = ("ConfigMap", "llama32-router")


@pytest.mark.parametrize(
    ("ready", "table_live", "wanted"),
    [
        ((), False, False),  # new: nothing to route to yet, the routers wait for the table
        (("ollama",), False, True),  # one engine up: written, knowing which
        (("vllm", "ollama"), False, True),
        ((), True, True),  # written once: kept (and updated) whatever the engines do
    ],
    ids=["no engine ready", "ollama ready", "both ready", "none ready, table live"],
)
def test_the_routing_table_waits_for_an_engine_with_a_ready_pod(
    ready: tuple[str, ...], table_live: bool, wanted: bool
) -> None:
    snap = snapshot(spec(), ready=ready)
    if table_live:
        snap = replace(snap, live={**snap.live, TABLE: desired_children(spec(), OWNER)[0]})
    plan = decide(snap, None, NOW)
    assert plan.desired is not None
    assert (TABLE in {(o["kind"], o["metadata"]["name"]) for o in plan.desired}) is wanted
    assert TABLE not in {(o["kind"], o["metadata"]["name"]) for o in plan.delete}


def test_a_routers_own_identity_from_before_the_namespaces_is_deleted() -> None:
    """Earlier versions gave each router its own ServiceAccount, Role and RoleBinding; the
    namespace's identity replaces them, so an upgrade deletes them."""
    ref = {"uid": OWNER.uid}
    old = {
        (kind, "llama32-router"): {
            "kind": kind,
            "metadata": {"name": "llama32-router", "ownerReferences": [ref]},
        }
        for kind in ("ServiceAccount", "Role", "RoleBinding")
    }
    live, _ = split(OWNER, old)
    assert set(live) == set(old)
    _, _, delete = changes(desired_children(spec(), OWNER), live)
    assert {(o["kind"], o["metadata"]["name"]) for o in delete} == set(old)
