"""The safety net behind the schema: a child the API server refuses (a rule the schema does
not carry, an immutable field of a live child) makes the resource InvalidSpec, naming the
child, its field and the API server's reason, and nothing is applied (no partial set of
children); the handler gives up for good (kopf.PermanentError) instead of retrying."""

from __future__ import annotations

import logging
from typing import Any

import kopf
import pytest
from testsupport.memkube import MemKube

from inferops import handlers
from inferops.api import API_VERSION, KIND
from inferops.builders import desired_children
from inferops.builders.common import Owner
from inferops.kube import KubeError
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
        "metadata": {
            "name": OWNER.name,
            "namespace": OWNER.namespace,
            "uid": OWNER.uid,
            "generation": 2,
        },
        "spec": make_spec().dump(),
    }


class NoChildren:
    """The watch cache before anything was created."""

    def objects(self, namespace: str, name: str) -> dict[tuple[str, str], Any]:
        return {}

    def wrote(self, namespace: str, name: str, replaced: Any, obj: Any) -> None: ...

    async def synced(self) -> None: ...


def api(*refusals: tuple[str, str, int, str]) -> MemKube:
    """An API server holding the InferenceBackend and no children yet, refusing (even as a
    dry run) the objects named in `refusals` with the status and message given."""
    kube = MemKube()
    kube.put(body())
    for kind, name, status, message in refusals:
        kube.refuse(kind, name, status, message)
    return kube


def sent(kube: MemKube, verb: str) -> list[str]:
    """The objects (`Kind name`) of the calls of `verb`."""
    return kube.verbs(verb)


def events(kube: MemKube) -> list[str]:
    return [f"{e['type']} {e['reason']}: {e['message']}" for e in kube.events]


async def test_a_refused_child_makes_the_spec_invalid_and_nothing_is_applied() -> None:
    kube = api(("Deployment", "llama32-vllm", 422, REFUSAL))
    outcome = await reconcile(kube, body(), NoChildren(), logging.getLogger("test"))  # type: ignore[arg-type]
    assert sent(kube, "apply") == []  # not even the children the API server would take
    assert len(sent(kube, "dry-run")) == len(desired_children(make_spec(), OWNER))
    assert outcome.phase == "InvalidSpec"
    assert outcome.invalid == (
        f"spec.vllm: the API server refuses Deployment llama32-vllm built from it (422): {REFUSAL}"
    )
    assert len(sent(kube, "patch_status")) == 1
    status = kube.stored(body())["status"]  # type: ignore[index]
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
    kube = api(("Deployment", "llama32-vllm", status, message))
    refused = await tried_children(kube, desired_children(make_spec(), OWNER), {})  # type: ignore[arg-type]
    assert f"Deployment llama32-vllm built from it ({status}): {message}" in refused
    assert sent(kube, "apply") == []


async def test_every_refused_child_is_named() -> None:
    kube = api(
        ("Deployment", "llama32-ollama", 422, "spec.template.spec.affinity: Invalid"),
        ("PersistentVolumeClaim", "llama32-vllm-cache", 422, "spec: Forbidden: immutable"),
    )
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
    kube = api(("Service", "llama32-vllm", 503, "the server is unavailable"))
    with pytest.raises(KubeError):
        await reconcile(kube, body(), NoChildren(), logging.getLogger("test"))  # type: ignore[arg-type]
    assert sent(kube, "apply") == [] and sent(kube, "patch_status") == []


async def test_children_equal_to_their_live_objects_are_not_sent() -> None:
    kube = api()
    desired = desired_children(make_spec(), OWNER)
    live = {(o["kind"], o["metadata"]["name"]): o for o in desired}
    assert await tried_children(kube, desired, live) == ""  # type: ignore[arg-type]
    assert sent(kube, "dry-run") == []
    changed = dict(live)
    del changed[("Service", "llama32-vllm")]
    assert await tried_children(kube, desired, changed) == ""  # type: ignore[arg-type]
    assert sent(kube, "dry-run") == ["Service llama32-vllm"]


async def test_the_handler_gives_up_for_good_on_a_refused_child() -> None:
    kube = api(("Deployment", "llama32-vllm", 422, REFUSAL))
    reconciler = Reconciler(kube, NoChildren(), logging.getLogger("test"))  # type: ignore[arg-type]
    memo = kopf.Memo(reconciler=reconciler, cache=NoChildren())
    with pytest.raises(kopf.PermanentError, match="refuses Deployment llama32-vllm"):
        await handlers.backend_changed(namespace=OWNER.namespace, name=OWNER.name, memo=memo)
    assert sent(kube, "apply") == []


async def test_a_spec_already_accepted_is_not_tried_again() -> None:
    """Weights and readiness change children of a spec the API server took: no dry runs."""
    kube = api()
    accepted = {**body(), "status": {"observedGeneration": 2, "phase": "Progressing"}}
    await reconcile(kube, accepted, NoChildren(), logging.getLogger("test"))  # type: ignore[arg-type]
    assert sent(kube, "dry-run") == [] and sent(kube, "apply")
    refused = {**body(), "status": {"observedGeneration": 2, "phase": "InvalidSpec"}}
    await reconcile(kube, refused, NoChildren(), logging.getLogger("test"))  # type: ignore[arg-type]
    assert sent(kube, "dry-run")  # a refused spec is tried again before anything is applied


# ---------------------------------------------------------------- someone else's objects


def existing(refs: list[dict[str, Any]] | None = None) -> MemKube:
    """An API server (as `api`) where the Service llama32-vllm exists already with these
    owner references (None: no such Service)."""
    kube = api()
    if refs is not None:
        meta = {"name": "llama32-vllm", "namespace": OWNER.namespace, "ownerReferences": refs}
        kube.put(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": meta,
                "spec": {"ports": [{"port": 8000}]},
            }
        )
    return kube


def ib_ref(name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": uid}


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
    kube = existing(refs)
    found = await tried_children(kube, desired_children(make_spec(), OWNER), {})  # type: ignore[arg-type]
    expected = "Service llama32-vllm already exists and is not owned by this InferenceBackend"
    assert (expected in found) is conflict, found
    assert len(sent(kube, "get")) == gets


async def test_someone_elses_object_refused_in_the_merge_is_reported_as_theirs() -> None:
    """Their Service's unnamed port merged with the operator's named one is refused (422):
    the finding is that the object is someone else's, not a fault of the spec."""
    kube = existing([])
    kube.refuse("Service", "llama32-vllm", 422, "spec.ports[0].name: Required value")
    found = await tried_children(kube, desired_children(make_spec(), OWNER), {})  # type: ignore[arg-type]
    assert found == (
        "Service llama32-vllm already exists and is not owned by this InferenceBackend: "
        "rename the InferenceBackend or delete that object"
    )


async def test_a_new_spec_costs_one_dry_run_per_child_and_no_get() -> None:
    kube = existing()
    outcome = await reconcile(kube, body(), NoChildren(), logging.getLogger("test"))  # type: ignore[arg-type]
    children = desired_children(make_spec(), OWNER)
    assert outcome.invalid is None
    assert len(sent(kube, "dry-run")) == len(sent(kube, "apply")) == len(children)
    assert sent(kube, "get") == []  # no look-up of names: the dry runs answered that


async def test_someone_elses_object_makes_a_new_spec_invalid_and_nothing_is_applied() -> None:
    kube = existing([ib_ref("other", "u-9")])
    outcome = await reconcile(kube, body(), NoChildren(), logging.getLogger("test"))  # type: ignore[arg-type]
    assert outcome.phase == "InvalidSpec"
    assert "Service llama32-vllm already exists" in (outcome.invalid or "")
    assert sent(kube, "apply") == []
