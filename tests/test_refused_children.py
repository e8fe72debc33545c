"""The safety net behind the schema: a child the API server refuses (a rule the schema does
not carry, an immutable field of a live claim) or someone else's object of a child's name
makes the resource InvalidSpec, naming the child and the reason, and leaves no partial set
of children; the handler gives up for good (kopf.PermanentError) instead of retrying. And
what that costs: one apply per new child, a dry run only for a changed claim, a GET only
when a new child's name turns out to be taken."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import kopf
import pytest
from testsupport.memkube import MemKube

from inferops import handlers
from inferops.api import API_VERSION, KIND
from inferops.bodies import Bodies
from inferops.builders import desired_children
from inferops.builders.common import Owner
from inferops.kube import KubeError, path
from inferops.reconcile import Reconciler, reconcile
from inferops.triggers import Generations
from tests.conftest import make_spec

OWNER = Owner(name="llama32", namespace="ai", uid="u-1")
REFUSAL = (
    'Deployment.apps "llama32-vllm" is invalid: spec.template.spec.containers[0].resources'
    '.requests: Invalid value: "2": must be less than or equal to cpu limit of 1'
)
Key = tuple[str, str]


def body(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": OWNER.name,
            "namespace": OWNER.namespace,
            "uid": OWNER.uid,
            "generation": 2,
        },
        "spec": make_spec(**spec).dump(),
        "status": status or {},
    }


class Cache:
    """The watch cache: the children in `live`."""

    def __init__(self, live: dict[Key, Any] | None = None) -> None:
        self.live = live or {}

    def objects(self, namespace: str, name: str) -> dict[Key, Any]:
        return dict(self.live)

    def wrote(self, namespace: str, name: str, replaced: Any, obj: Any) -> None: ...

    async def synced(self) -> None: ...


def scene(
    refuse: dict[Key, tuple[int, str]] | None = None, stored: Iterable[dict[str, Any]] = ()
) -> MemKube:
    """The API server holding the resource, and `stored` as someone wrote them, refusing
    (as a dry run too) the objects in `refuse` with (status, message)."""
    kube = MemKube()
    kube.put(body())
    for (kind, name), (status, message) in (refuse or {}).items():
        kube.refuse(kind, name, status, message)
    for obj in stored:
        kube.put(obj)
    return kube


def children(kube: MemKube) -> dict[Key, dict[str, Any]]:
    """The stored objects but the resource, by kind and name."""
    return {(o["kind"], o["metadata"]["name"]): o for o in kube.objects() if o["kind"] != KIND}


def child_calls(kube: MemKube) -> list[str]:
    """The verbs of the calls about children, in order: the resource's own reads, status
    patches and Events left out."""
    own = {f"{KIND} {OWNER.name}", path(API_VERSION, KIND, OWNER.namespace, OWNER.name)}
    return [c.verb for c in kube.calls if c.target not in own]


def statuses(kube: MemKube) -> list[dict[str, Any]]:
    return kube.sent("patch_status")


def events(kube: MemKube) -> list[str]:
    return [f"{e['type']} {e['reason']}: {e['message']}" for e in kube.events]


async def run(kube: MemKube, resource: dict[str, Any], cache: Cache | None = None) -> Any:
    return await reconcile(kube, resource, cache or Cache(), logging.getLogger("test"))  # type: ignore[arg-type]


async def test_a_new_spec_costs_one_apply_per_child_and_nothing_else() -> None:
    kube = scene()
    outcome = await run(kube, body())
    assert outcome.invalid is None
    count = len(desired_children(make_spec(), OWNER))
    assert [c.verb for c in kube.calls] == ["apply"] * count
    # The status waits for the run the creations trigger, which sees the children.
    assert statuses(kube) == [] and kube.events == []
    await run(kube, body(), Cache(children(kube)))
    assert child_calls(kube) == ["apply"] * count
    assert [s["phase"] for s in statuses(kube)] == ["Progressing"]
    assert kube.events == []  # Pending -> Progressing of a new resource: no Event


async def test_a_refused_new_child_leaves_no_child_and_names_the_field() -> None:
    kube = scene({("Deployment", "llama32-vllm"): (422, REFUSAL)})
    outcome = await run(kube, body())
    assert children(kube) == {}  # those created before it were deleted again
    assert child_calls(kube).count("delete") == child_calls(kube).count("apply") - 1
    assert outcome.phase == "InvalidSpec"
    assert outcome.invalid == (
        f"spec.vllm: the API server refuses Deployment llama32-vllm built from it (422): {REFUSAL}"
    )
    [status] = statuses(kube)
    assert status["phase"] == "InvalidSpec"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec" and ready["message"] == outcome.invalid
    assert any(e.startswith("Warning InvalidSpec") for e in events(kube))


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "error decoding YAML: error converting YAML to JSON"),
        (500, "failed to create typed patch object (ai/llama32-vllm; apps/v1, Kind=Deployment)"),
    ],
)
async def test_other_refusals_of_the_object_itself_count_too(status: int, message: str) -> None:
    kube = scene({("Deployment", "llama32-vllm"): (status, message)})
    outcome = await run(kube, body())
    assert f"Deployment llama32-vllm built from it ({status}): {message}" in outcome.invalid
    assert children(kube) == {}


async def test_every_refused_child_is_named() -> None:
    kube = scene(
        {
            ("Deployment", "llama32-ollama"): (422, "spec.template.spec.affinity: Invalid"),
            ("PersistentVolumeClaim", "llama32-vllm-cache"): (422, "spec: Forbidden: immutable"),
        }
    )
    spec = {"vllm": {"model": "m", "cache": {"size": "1Gi"}}}
    first = await run(kube, body(**spec))  # stops at the first refusal, undoing the rest
    assert first.invalid.count("refuses") == 1 and children(kube) == {}
    outcome = await run(kube, body({"observedGeneration": 2, "phase": "InvalidSpec"}, **spec))
    assert sorted(outcome.invalid.split("; ")) == [
        "spec.ollama: the API server refuses Deployment llama32-ollama built from it (422): "
        "spec.template.spec.affinity: Invalid",
        "spec.vllm: the API server refuses PersistentVolumeClaim llama32-vllm-cache built "
        "from it (422): spec: Forbidden: immutable",
    ]


async def test_an_unavailable_api_server_is_no_verdict_on_the_spec() -> None:
    """A 503 (or a 500 of another kind) says nothing about the object: the reconciliation
    fails and is retried, as any failed call; no status is written meanwhile."""
    kube = scene({("Service", "llama32-vllm"): (503, "the server is unavailable")})
    with pytest.raises(KubeError):
        await run(kube, body())
    assert statuses(kube) == []


async def test_a_changed_claim_is_tried_first_and_its_refusal_changes_nothing() -> None:
    """A claim's spec is immutable once created, which the schema cannot know: a spec that
    changes it is dry-run before anything is written, and only that claim is."""
    old = make_spec(vllm={"model": "m", "cache": {"size": "1Gi"}})
    claim = ("PersistentVolumeClaim", "llama32-vllm-cache")
    kube = scene(
        {claim: (422, "spec: Forbidden: spec is immutable after creation")},
        desired_children(old, OWNER),
    )
    before = children(kube)
    changed = {
        "model": "m",
        "maxModelLen": 4096,
        "cache": {"size": "1Gi", "accessMode": "ReadWriteMany"},
    }
    outcome = await run(kube, body(vllm=changed), Cache(before))
    # Not even the Deployment the edit changes.
    own = f"{KIND} {OWNER.name}"
    assert [(c.verb, c.target) for c in kube.calls if c.target != own] == [
        ("dry-run", " ".join(claim))
    ]
    assert outcome.invalid.startswith(
        "spec.vllm: the API server refuses PersistentVolumeClaim llama32-vllm-cache"
    )
    assert children(kube) == before


async def test_an_accepted_spec_and_unchanged_children_cost_nothing() -> None:
    kube = scene(stored=desired_children(make_spec(), OWNER))
    await run(kube, body(), Cache(children(kube)))
    assert child_calls(kube) == []


async def test_a_refused_spec_is_tried_once_per_generation() -> None:
    kube = scene({("Deployment", "llama32-vllm"): (422, REFUSAL)})
    bodies = Bodies()
    reconciler = Reconciler(kube, Cache(), logging.getLogger("test"), bodies=bodies)  # type: ignore[arg-type]
    memo = kopf.Memo(reconciler=reconciler, cache=Cache(), bodies=bodies, generations=Generations())

    async def event(kind: str, resource: dict[str, Any]) -> None:
        await handlers.backend_event(event={"type": kind, "object": resource}, memo=memo)

    await event("ADDED", body())
    assert children(kube) == {} and child_calls(kube)
    assert statuses(kube)[-1]["phase"] == "InvalidSpec"
    assert "refuses Deployment llama32-vllm" in statuses(kube)[-1]["conditions"][0]["message"]
    tried = len(child_calls(kube))
    # Its own status patch comes back as an event of the same generation: not tried again.
    await event("MODIFIED", body(status=statuses(kube)[-1]))
    assert len(child_calls(kube)) == tried
    # A spec change is.
    changed = body(status=statuses(kube)[-1])
    changed["metadata"]["generation"] = 3
    await event("MODIFIED", changed)
    assert len(child_calls(kube)) > tried


# ---------------------------------------------------------------- someone else's objects


def ib_ref(name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": uid}


VLLM_SERVICE = ("Service", "llama32-vllm")
THEIRS = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "llama32-vllm", "namespace": OWNER.namespace},
    "spec": {"ports": [{"port": 80}]},
}


def theirs(refs: list[dict[str, Any]]) -> dict[str, Any]:
    return {**THEIRS, "metadata": {**THEIRS["metadata"], "ownerReferences": refs}}


@pytest.mark.parametrize(
    ("refs", "conflict"),
    [
        ([ib_ref("other", "u-9")], True),  # another resource's object
        ([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "x", "uid": "u-8"}], True),
        ([], True),  # nobody's object (made by hand)
        ([ib_ref("llama32", "u-0")], False),  # a deleted resource of the same name, not
        # yet collected: taken over
        ([ib_ref("llama32", OWNER.uid)], False),  # already ours, not yet in the watch cache
    ],
)
async def test_an_existing_object_is_judged_by_its_owners(
    refs: list[dict[str, Any]], conflict: bool
) -> None:
    kube = scene(stored=[theirs(refs)])
    stored = children(kube)
    outcome = await run(kube, body())
    expected = "Service llama32-vllm already exists and is not owned by this InferenceBackend"
    assert (expected in (outcome.invalid or "")) is conflict, outcome.invalid
    assert child_calls(kube).count("get") == 1  # read only because its name was taken
    if conflict:
        assert children(kube) == stored  # theirs untouched, ours undone
    else:
        assert len(children(kube)) == len(desired_children(make_spec(), OWNER))
        ours = children(kube)[VLLM_SERVICE]["metadata"]["ownerReferences"]
        assert OWNER.uid in {r["uid"] for r in ours}


@pytest.mark.parametrize(
    ("refuse", "stored", "finding"),
    [
        ({}, [THEIRS], "Service llama32-vllm already exists"),
        ({("Deployment", "llama32-vllm"): (422, REFUSAL)}, [], "refuses Deployment llama32-vllm"),
    ],
)
async def test_a_spec_found_invalid_is_tried_again_without_writing(
    refuse: dict[Key, tuple[int, str]], stored: list[dict[str, Any]], finding: str
) -> None:
    """Child events and restarts run it again: each run finds the problem again with GETs
    and dry runs, rather than creating and deleting the other children every time."""
    kube = scene(refuse, stored)
    before = children(kube)
    first = await run(kube, body())
    assert finding in first.invalid
    kube.calls.clear()
    again = await run(kube, body({"observedGeneration": 2, "phase": "InvalidSpec"}))
    assert finding in again.invalid
    assert set(child_calls(kube)) <= {"get", "dry-run"}
    assert children(kube) == before


async def test_a_run_starts_from_the_latest_body_and_keeps_its_status_answer() -> None:
    """With the bodies kopf's watch delivers, a run sends no GET of its resource, and the
    resource its status patch answered is what the next run starts from: it writes nothing."""
    kube = scene(stored=desired_children(make_spec(), OWNER))
    bodies = Bodies()
    stored = kube.stored(body())
    assert stored is not None
    bodies.seen(stored)
    reconciler = Reconciler(kube, Cache(children(kube)), logging.getLogger("test"), bodies=bodies)  # type: ignore[arg-type]
    await reconciler.run(OWNER.namespace, OWNER.name)
    assert len(statuses(kube)) == 1
    await reconciler.run(OWNER.namespace, OWNER.name)
    assert kube.verbs("get") == [] and child_calls(kube) == []
    assert len(statuses(kube)) == 1
