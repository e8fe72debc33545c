"""The safety net behind the schema: a child the API server refuses (a rule the schema does
not carry, an immutable field of a live claim) or someone else's object of a child's name
makes the resource InvalidSpec, naming the child and the reason, and leaves no partial set
of children; the handler gives up for good (kopf.PermanentError) instead of retrying. And
what that costs: one apply per new child, a dry run only for a changed claim, a GET only
when a new child's name turns out to be taken."""

from __future__ import annotations

import logging
from typing import Any

import kopf
import pytest

from inferops import handlers
from inferops.api import API_VERSION, KIND
from inferops.bodies import Bodies
from inferops.builders import desired_children
from inferops.builders.common import Owner
from inferops.execute import CREATE_ONLY_VERSION
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


class FakeApi:
    """An API server holding `stored` objects (by kind and name) and refusing, as a dry run
    too, those in `refuse` with (status, message). An apply carrying `CREATE_ONLY_VERSION`
    is answered 409 when the object exists, as the real server answers a resourceVersion
    that does not match. Records every call."""

    def __init__(
        self,
        refuse: dict[Key, tuple[int, str]] | None = None,
        stored: dict[Key, dict[str, Any]] | None = None,
    ) -> None:
        self.refuse = refuse or {}
        self.stored = stored or {}
        self.calls: list[tuple[str, Key]] = []
        self.statuses: list[dict[str, Any]] = []
        self.events: list[str] = []

    async def get(self, url: str) -> Any:
        if url == path(API_VERSION, KIND, OWNER.namespace, OWNER.name):
            return body()
        for (kind, name), obj in self.stored.items():
            if url.endswith(f"/{kind.lower()}s/{name}"):
                self.calls.append(("get", (kind, name)))
                return obj
        return None

    async def try_apply(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        key = (obj["kind"], obj["metadata"]["name"])
        self.calls.append(("dry run", key))
        if key in self.refuse:
            raise KubeError(*self.refuse[key])
        return obj, key in self.stored

    async def apply(self, obj: dict[str, Any], field_manager: str | None = None) -> Any:
        key = (obj["kind"], obj["metadata"]["name"])
        self.calls.append(("apply", key))
        if obj["metadata"].get("resourceVersion") == CREATE_ONLY_VERSION and key in self.stored:
            raise KubeError(409, "the object has been modified")
        if key in self.refuse:
            raise KubeError(*self.refuse[key])
        meta = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
        self.stored[key] = {**obj, "metadata": {**meta, "resourceVersion": "7", "uid": "c"}}
        return self.stored[key]

    async def delete(self, obj: dict[str, Any]) -> None:
        key = (obj["kind"], obj["metadata"]["name"])
        self.calls.append(("delete", key))
        del self.stored[key]

    async def patch_status(self, obj: dict[str, Any], status: dict[str, Any]) -> Any:
        self.statuses.append(status)
        return obj

    async def post_event(self, obj: Any, type: str, reason: str, message: str, *_: Any) -> None:
        self.events.append(f"{type} {reason}: {message}")

    def verbs(self) -> list[str]:
        return [verb for verb, _ in self.calls]


async def run(kube: FakeApi, resource: dict[str, Any], cache: Cache | None = None) -> Any:
    return await reconcile(kube, resource, cache or Cache(), logging.getLogger("test"))  # type: ignore[arg-type]


async def test_a_new_spec_costs_one_apply_per_child_and_nothing_else() -> None:
    kube = FakeApi()
    outcome = await run(kube, body())
    assert outcome.invalid is None
    assert kube.verbs() == ["apply"] * len(desired_children(make_spec(), OWNER))
    # The status waits for the run the creations trigger, which sees the children.
    assert kube.statuses == [] and kube.events == []
    await run(kube, body(), Cache(dict(kube.stored)))
    assert kube.verbs() == ["apply"] * len(desired_children(make_spec(), OWNER))
    assert [s["phase"] for s in kube.statuses] == ["Progressing"]
    assert kube.events == []  # Pending -> Progressing of a new resource: no Event


async def test_a_refused_new_child_leaves_no_child_and_names_the_field() -> None:
    kube = FakeApi({("Deployment", "llama32-vllm"): (422, REFUSAL)})
    outcome = await run(kube, body())
    assert kube.stored == {}  # those created before it were deleted again
    assert kube.verbs().count("delete") == kube.verbs().count("apply") - 1
    assert outcome.phase == "InvalidSpec"
    assert outcome.invalid == (
        f"spec.vllm: the API server refuses Deployment llama32-vllm built from it (422): {REFUSAL}"
    )
    [status] = kube.statuses
    assert status["phase"] == "InvalidSpec"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec" and ready["message"] == outcome.invalid
    assert any(e.startswith("Warning InvalidSpec") for e in kube.events)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "error decoding YAML: error converting YAML to JSON"),
        (500, "failed to create typed patch object (ai/llama32-vllm; apps/v1, Kind=Deployment)"),
    ],
)
async def test_other_refusals_of_the_object_itself_count_too(status: int, message: str) -> None:
    kube = FakeApi({("Deployment", "llama32-vllm"): (status, message)})
    outcome = await run(kube, body())
    assert f"Deployment llama32-vllm built from it ({status}): {message}" in outcome.invalid
    assert kube.stored == {}


async def test_every_refused_child_is_named() -> None:
    kube = FakeApi(
        {
            ("Deployment", "llama32-ollama"): (422, "spec.template.spec.affinity: Invalid"),
            ("PersistentVolumeClaim", "llama32-vllm-cache"): (422, "spec: Forbidden: immutable"),
        }
    )
    spec = {"vllm": {"model": "m", "cache": {"size": "1Gi"}}}
    first = await run(kube, body(**spec))  # stops at the first refusal, undoing the rest
    assert first.invalid.count("refuses") == 1 and kube.stored == {}
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
    kube = FakeApi({("Service", "llama32-vllm"): (503, "the server is unavailable")})
    with pytest.raises(KubeError):
        await run(kube, body())
    assert kube.statuses == []


async def test_a_changed_claim_is_tried_first_and_its_refusal_changes_nothing() -> None:
    """A claim's spec is immutable once created, which the schema cannot know: a spec that
    changes it is dry-run before anything is written, and only that claim is."""
    old = make_spec(vllm={"model": "m", "cache": {"size": "1Gi"}})
    live = {(o["kind"], o["metadata"]["name"]): o for o in desired_children(old, OWNER)}
    cache = Cache(live)
    claim = ("PersistentVolumeClaim", "llama32-vllm-cache")
    kube = FakeApi({claim: (422, "spec: Forbidden: spec is immutable after creation")})
    changed = {
        "model": "m",
        "maxModelLen": 4096,
        "cache": {"size": "1Gi", "accessMode": "ReadWriteMany"},
    }
    outcome = await run(kube, body(vllm=changed), cache)
    assert kube.calls == [("dry run", claim)]  # not even the Deployment the edit changes
    assert outcome.invalid.startswith(
        "spec.vllm: the API server refuses PersistentVolumeClaim llama32-vllm-cache"
    )


async def test_an_accepted_spec_and_unchanged_children_cost_nothing() -> None:
    desired = desired_children(make_spec(), OWNER)
    cache = Cache({(o["kind"], o["metadata"]["name"]): o for o in desired})
    kube = FakeApi()
    await run(kube, body(), cache)
    assert kube.calls == []


async def test_a_refused_spec_is_tried_once_per_generation() -> None:
    kube = FakeApi({("Deployment", "llama32-vllm"): (422, REFUSAL)})
    bodies = Bodies()
    reconciler = Reconciler(kube, Cache(), logging.getLogger("test"), bodies=bodies)  # type: ignore[arg-type]
    memo = kopf.Memo(reconciler=reconciler, cache=Cache(), bodies=bodies, generations=Generations())

    async def event(kind: str, resource: dict[str, Any]) -> None:
        await handlers.backend_event(event={"type": kind, "object": resource}, memo=memo)

    await event("ADDED", body())
    assert kube.stored == {} and kube.calls
    assert kube.statuses[-1]["phase"] == "InvalidSpec"
    assert "refuses Deployment llama32-vllm" in kube.statuses[-1]["conditions"][0]["message"]
    tried = len(kube.calls)
    # Its own status patch comes back as an event of the same generation: not tried again.
    await event("MODIFIED", body(status=kube.statuses[-1]))
    assert len(kube.calls) == tried
    # A spec change is.
    changed = body(status=kube.statuses[-1])
    changed["metadata"]["generation"] = 3
    await event("MODIFIED", changed)
    assert len(kube.calls) > tried


# ---------------------------------------------------------------- someone else's objects


def ib_ref(name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": uid}


VLLM_SERVICE = ("Service", "llama32-vllm")
THEIRS = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "llama32-vllm"},
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
    kube = FakeApi(stored={VLLM_SERVICE: theirs(refs)})
    outcome = await run(kube, body())
    expected = "Service llama32-vllm already exists and is not owned by this InferenceBackend"
    assert (expected in (outcome.invalid or "")) is conflict, outcome.invalid
    assert kube.verbs().count("get") == 1  # read only because its name was taken
    if conflict:
        assert kube.stored == {VLLM_SERVICE: theirs(refs)}  # theirs untouched, ours undone
    else:
        assert len(kube.stored) == len(desired_children(make_spec(), OWNER))


@pytest.mark.parametrize(
    ("refuse", "stored", "finding"),
    [
        ({}, {VLLM_SERVICE: THEIRS}, "Service llama32-vllm already exists"),
        ({("Deployment", "llama32-vllm"): (422, REFUSAL)}, {}, "refuses Deployment llama32-vllm"),
    ],
)
async def test_a_spec_found_invalid_is_tried_again_without_writing(
    refuse: dict[Key, tuple[int, str]], stored: dict[Key, Any], finding: str
) -> None:
    """Child events and restarts run it again: each run finds the problem again with GETs
    and dry runs, rather than creating and deleting the other children every time."""
    kube = FakeApi(refuse, dict(stored))
    first = await run(kube, body())
    assert finding in first.invalid
    kube.calls.clear()
    again = await run(kube, body({"observedGeneration": 2, "phase": "InvalidSpec"}))
    assert finding in again.invalid
    assert {verb for verb, _ in kube.calls} <= {"get", "dry run"}
    assert kube.stored == stored


async def test_a_run_starts_from_the_latest_body_and_keeps_its_status_answer() -> None:
    """With the bodies kopf's watch delivers, a run sends no GET of its resource, and the
    resource its status patch answered is what the next run starts from: it writes nothing."""
    from inferops.bodies import Bodies

    class Answering(FakeApi):
        async def get(self, url: str) -> Any:
            raise AssertionError(f"GET {url}")

        async def patch_status(self, obj: dict[str, Any], status: dict[str, Any]) -> Any:
            self.statuses.append(status)
            return {
                **obj,
                "metadata": {**obj["metadata"], "resourceVersion": "9"},
                "status": status,
            }

    kube = Answering()
    bodies = Bodies()
    bodies.seen({**body(), "metadata": {**body()["metadata"], "resourceVersion": "8"}})
    cache = Cache(
        {(o["kind"], o["metadata"]["name"]): o for o in desired_children(make_spec(), OWNER)}
    )
    reconciler = Reconciler(kube, cache, logging.getLogger("test"), bodies=bodies)  # type: ignore[arg-type]
    await reconciler.run(OWNER.namespace, OWNER.name)
    assert len(kube.statuses) == 1
    await reconciler.run(OWNER.namespace, OWNER.name)
    assert kube.calls == [] and len(kube.statuses) == 1
