"""The safety net behind the schema: a child the API server refuses (a rule the schema does
not carry, an immutable field of a live child) makes the resource InvalidSpec, naming the
child, its field and the API server's reason, and nothing is applied (no partial set of
children); the handler gives up for good (kopf.PermanentError) instead of retrying."""

from __future__ import annotations

import logging
from typing import Any

import kopf
import pytest

from inferops import handlers
from inferops.api import API_VERSION, KIND
from inferops.builders import desired_children
from inferops.builders.common import Owner
from inferops.kube import KubeError, path
from inferops.reconcile import Reconciler, reconcile
from inferops.validation import tried_children
from tests.conftest import make_spec

OWNER = Owner(name="llama32", namespace="ai", uid="u-1")
REFUSAL = (
    'Deployment.apps "llama32-vllm" is invalid: spec.template.spec.containers[0].resources'
    '.requests: Invalid value: "2": must be less than or equal to cpu limit of 1'
)


def body() -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": OWNER.name, "namespace": OWNER.namespace, "uid": OWNER.uid,
                     "generation": 2},
        "spec": make_spec().dump(),
    }  # fmt: skip


class NoChildren:
    """The watch cache before anything was created."""

    def objects(self, namespace: str, name: str) -> dict[tuple[str, str], Any]:
        return {}

    def wrote(self, namespace: str, name: str, replaced: Any, obj: Any) -> None: ...

    async def synced(self) -> None: ...


class RefusingKube:
    """An API server with no children yet that refuses, even as a dry run, the objects in
    `refuse` (by kind and name) with `status`, and records every call."""

    def __init__(self, refuse: dict[tuple[str, str], tuple[int, str]]) -> None:
        self.refuse = refuse
        self.dry_runs: list[tuple[str, str]] = []
        self.applied: list[tuple[str, str]] = []
        self.statuses: list[dict[str, Any]] = []
        self.events: list[str] = []

    async def get(self, url: str) -> Any:
        return body() if url == path(API_VERSION, KIND, OWNER.namespace, OWNER.name) else None

    async def try_apply(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        key = (obj["kind"], obj["metadata"]["name"])
        self.dry_runs.append(key)
        if key in self.refuse:
            raise KubeError(*self.refuse[key])
        return obj, False

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.applied.append((obj["kind"], obj["metadata"]["name"]))
        return obj

    async def delete(self, obj: dict[str, Any]) -> None:
        raise AssertionError(f"deleted {obj['kind']} {obj['metadata']['name']}")

    async def patch_status(self, obj: dict[str, Any], status: dict[str, Any]) -> Any:
        self.statuses.append(status)
        return obj

    async def post_event(self, obj: Any, type: str, reason: str, message: str, *_: Any) -> None:
        self.events.append(f"{type} {reason}: {message}")


async def test_a_refused_child_makes_the_spec_invalid_and_nothing_is_applied() -> None:
    kube = RefusingKube({("Deployment", "llama32-vllm"): (422, REFUSAL)})
    outcome = await reconcile(kube, body(), NoChildren(), logging.getLogger("test"))  # type: ignore[arg-type]
    assert kube.applied == []  # not even the children the API server would take
    assert len(kube.dry_runs) == len(desired_children(make_spec(), OWNER))
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
    kube = RefusingKube({("Deployment", "llama32-vllm"): (status, message)})
    refused = await tried_children(kube, desired_children(make_spec(), OWNER), {})  # type: ignore[arg-type]
    assert f"Deployment llama32-vllm built from it ({status}): {message}" in refused
    assert kube.applied == []


async def test_every_refused_child_is_named() -> None:
    kube = RefusingKube({
        ("Deployment", "llama32-ollama"): (422, "spec.template.spec.affinity: Invalid"),
        ("PersistentVolumeClaim", "llama32-vllm-cache"): (422, "spec: Forbidden: immutable"),
    })  # fmt: skip
    spec = make_spec(vllm={"model": "m", "cache": {"size": "1Gi"}})
    refused = await tried_children(kube, desired_children(spec, OWNER), {})  # type: ignore[arg-type]
    assert refused.split("; ") == [
        "spec.vllm: the API server refuses PersistentVolumeClaim llama32-vllm-cache built "
        "from it (422): spec: Forbidden: immutable",
        "spec.ollama: the API server refuses Deployment llama32-ollama built from it (422): "
        "spec.template.spec.affinity: Invalid",
    ]


async def test_an_unavailable_api_server_is_no_verdict_on_the_spec() -> None:
    """A 503 (or a 500 of another kind) says nothing about the object: the reconciliation
    fails and is retried, as any failed call; nothing is applied meanwhile."""
    kube = RefusingKube({("Service", "llama32-vllm"): (503, "the server is unavailable")})
    with pytest.raises(KubeError):
        await reconcile(kube, body(), NoChildren(), logging.getLogger("test"))  # type: ignore[arg-type]
    assert kube.applied == [] and kube.statuses == []


async def test_children_equal_to_their_live_objects_are_not_sent() -> None:
    kube = RefusingKube({})
    desired = desired_children(make_spec(), OWNER)
    live = {(o["kind"], o["metadata"]["name"]): o for o in desired}
    assert await tried_children(kube, desired, live) == ""  # type: ignore[arg-type]
    assert kube.dry_runs == []
    changed = dict(live)
    del changed[("Service", "llama32-vllm")]
    assert await tried_children(kube, desired, changed) == ""  # type: ignore[arg-type]
    assert kube.dry_runs == [("Service", "llama32-vllm")]


async def test_the_handler_gives_up_for_good_on_a_refused_child() -> None:
    kube = RefusingKube({("Deployment", "llama32-vllm"): (422, REFUSAL)})
    reconciler = Reconciler(kube, NoChildren(), logging.getLogger("test"))  # type: ignore[arg-type]
    memo = kopf.Memo(reconciler=reconciler, cache=NoChildren())
    with pytest.raises(kopf.PermanentError, match="refuses Deployment llama32-vllm"):
        await handlers.backend_changed(namespace=OWNER.namespace, name=OWNER.name, memo=memo)
    assert kube.applied == []


async def test_a_spec_already_accepted_is_not_tried_again() -> None:
    """Weights and readiness change children of a spec the API server took: no dry runs."""
    kube = RefusingKube({})
    accepted = {**body(), "status": {"observedGeneration": 2, "phase": "Progressing"}}
    await reconcile(kube, accepted, NoChildren(), logging.getLogger("test"))  # type: ignore[arg-type]
    assert kube.dry_runs == [] and kube.applied
    refused = {**body(), "status": {"observedGeneration": 2, "phase": "InvalidSpec"}}
    await reconcile(kube, refused, NoChildren(), logging.getLogger("test"))  # type: ignore[arg-type]
    assert kube.dry_runs  # a refused spec is tried again before anything is applied


# ---------------------------------------------------------------- someone else's objects


class ExistingKube(RefusingKube):
    """An API server where `existing` objects (by kind and name) are stored with the given
    owner references; a dry-run apply answers as the real one does: 200 and the stored
    references merged with the applied ones (a list keyed by uid) for an existing object,
    201 (not existed) for a new one."""

    def __init__(self, existing: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
        super().__init__({})
        self.existing = existing
        self.gets: list[str] = []

    async def try_apply(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        key = (obj["kind"], obj["metadata"]["name"])
        self.dry_runs.append(key)
        if key in self.refuse:
            raise KubeError(*self.refuse[key])
        if key not in self.existing:
            return obj, False
        refs = {r["uid"]: r for r in self.existing[key]}
        refs.update({r["uid"]: r for r in obj["metadata"]["ownerReferences"]})
        merged = {**obj["metadata"], "ownerReferences": list(refs.values())}
        return {**obj, "metadata": merged}, True

    async def get(self, url: str) -> Any:
        self.gets.append(url)
        for (kind, name), refs in self.existing.items():
            if url.endswith(f"/{kind.lower()}s/{name}"):
                return {"metadata": {"name": name, "ownerReferences": refs}}
        return None


def ib_ref(name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": uid}


VLLM_SERVICE = ("Service", "llama32-vllm")


@pytest.mark.parametrize(
    ("refs", "conflict", "gets"),
    [
        # another resource's object: a conflict, told by the dry run alone
        ([ib_ref("other", "u-9")], True, 0),
        ([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "x", "uid": "u-8"}], True, 0),
        # a deleted resource of the same name, not yet collected: taken over
        ([ib_ref("llama32", "u-0")], False, 0),
        # nobody's object (made by hand): only the stored object tells it from ours
        ([], True, 1),
        # already ours, not yet in the watch cache
        ([ib_ref("llama32", OWNER.uid)], False, 1),
    ],
)
async def test_an_existing_object_is_judged_by_its_owners(
    refs: list[dict[str, Any]], conflict: bool, gets: int
) -> None:
    kube = ExistingKube({VLLM_SERVICE: refs})
    found = await tried_children(kube, desired_children(make_spec(), OWNER), {})  # type: ignore[arg-type]
    expected = "Service llama32-vllm already exists and is not owned by this InferenceBackend"
    assert (expected in found) is conflict, found
    assert len(kube.gets) == gets


async def test_someone_elses_object_refused_in_the_merge_is_reported_as_theirs() -> None:
    """Their Service's unnamed port merged with the operator's named one is refused (422):
    the finding is that the object is someone else's, not a fault of the spec."""
    kube = ExistingKube({VLLM_SERVICE: []})
    kube.refuse = {VLLM_SERVICE: (422, "spec.ports[0].name: Required value")}
    found = await tried_children(kube, desired_children(make_spec(), OWNER), {})  # type: ignore[arg-type]
    assert found == (
        "Service llama32-vllm already exists and is not owned by this InferenceBackend: "
        "rename the InferenceBackend or delete that object"
    )


async def test_a_new_spec_costs_one_dry_run_per_child_and_no_get() -> None:
    kube = ExistingKube({})
    outcome = await reconcile(kube, body(), NoChildren(), logging.getLogger("test"))  # type: ignore[arg-type]
    children = desired_children(make_spec(), OWNER)
    assert outcome.invalid is None
    assert len(kube.dry_runs) == len(kube.applied) == len(children)
    assert kube.gets == []  # no look-up of names: the dry runs answered that


async def test_someone_elses_object_makes_a_new_spec_invalid_and_nothing_is_applied() -> None:
    kube = ExistingKube({VLLM_SERVICE: [ib_ref("other", "u-9")]})
    outcome = await reconcile(kube, body(), NoChildren(), logging.getLogger("test"))  # type: ignore[arg-type]
    assert outcome.phase == "InvalidSpec"
    assert "Service llama32-vllm already exists" in (outcome.invalid or "")
    assert kube.applied == []
