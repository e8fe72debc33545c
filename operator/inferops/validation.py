"""Checks beyond the resource's schema, turned into InvalidSpec messages that name the field
or object and the fix: those the API server cannot make when the resource is applied (Service
name clashes, objects owned by someone else), and its refusal of a child built from a spec
it accepted (found by a dry run where the schema cannot know the rule: `tried_changes`)."""

from __future__ import annotations

import asyncio

from pydantic import ValidationError

from inferops.api import KIND
from inferops.api.spec import InferenceBackendSpec
from inferops.builders import ollama, router, vllm
from inferops.builders.common import COMPONENT_LABEL, Owner, child_name
from inferops.drift import contains
from inferops.kube import Kube, KubeError, Obj, object_path


def describe_errors(error: ValidationError) -> str:
    """`spec.vllm.tensorParallelSize: Input should be ...; ...`: one clause per problem."""
    clauses = []
    for item in error.errors():
        where = ".".join(["spec", *(str(part) for part in item["loc"])])
        # A message may already name a finer place (`spec.vllm.extraArgs[2]`).
        clauses.append(item["msg"] if item["msg"].startswith(where) else f"{where}: {item['msg']}")
    return "; ".join(clauses)


def service_name_clashes(spec: InferenceBackendSpec, owner: Owner) -> str:
    """Consumers whose Service would share its name with another child's Service (an
    engine's, or another consumer's default name): one would silently replace the other."""
    taken = {child_name(owner, vllm.ENGINE): "vLLM's", child_name(owner, ollama.ENGINE): "Ollama's"}
    if spec.vllm.embeddings is not None:
        taken[child_name(owner, vllm.EMBEDDINGS)] = "the embeddings deployment's"
    for consumer in spec.consumers:
        if consumer.service_name is None:
            taken.setdefault(router.service_name(owner, consumer), f"consumer {consumer.name}'s")
    problems = []
    for i, consumer in enumerate(spec.consumers):
        name = consumer.service_name
        if name is not None and name in taken:
            problems.append(
                f"spec.consumers[{i}].serviceName: {name} is the name of {taken[name]} Service; "
                "choose another serviceName"
            )
    return "; ".join(problems)


def from_earlier_incarnation(existing: Obj, desired: Obj) -> bool:
    """A child of a deleted InferenceBackend of the same name, not yet garbage-collected:
    applying adds the new owner, which is what the user wants after delete-and-recreate."""
    owner = desired["metadata"]["ownerReferences"][0]
    return any(
        ref.get("kind") == KIND
        and ref.get("name") == owner["name"]
        and ref.get("uid") != owner["uid"]
        for ref in existing["metadata"].get("ownerReferences", [])
    )


def conflict(obj: Obj) -> str:
    return (
        f"{obj['kind']} {obj['metadata']['name']} already exists and is not owned by "
        "this InferenceBackend: rename the InferenceBackend or delete that object"
    )


DRY_RUN_KINDS = frozenset({"PersistentVolumeClaim"})
"""Kinds whose changes the API server refuses for reasons the resource's schema cannot see:
a claim's spec is immutable once created (but for growing its size), so a changed
`cache.accessMode` or `storageClassName` passes our validation and fails on the claim. The
other children's rules (names, quantities, ports, labels) are the models' own validation,
and their immutable fields (a Deployment's selector, a Service's clusterIP) are never
changed by the builders."""


async def tried_changes(kube: Kube, desired: list[Obj], live: dict[tuple[str, str], Obj]) -> str:
    """What stops a changed spec, found by a server-side dry run of each existing child of
    `DRY_RUN_KINDS` that would change, before anything is applied: so such a spec changes
    nothing at all, and the resource is InvalidSpec with a message naming the spec section,
    the child, its field and the server's reason. Nothing is sent for other children, for
    new ones (their refusal undoes the run's creations: `inferops.execute`) or for
    unchanged ones."""
    changed = [
        obj
        for obj in desired
        if obj["kind"] in DRY_RUN_KINDS
        and (current := live.get((obj["kind"], obj["metadata"]["name"]))) is not None
        and not contains(current, obj)
    ]

    async def problem(obj: Obj) -> str:
        try:
            await kube.try_apply(obj)
        except KubeError as error:
            if not refused_for_good(error):
                raise  # not about the object (API server unavailable, ...): retried
            return refusal(obj, error)
        return ""

    problems = await asyncio.gather(*(problem(obj) for obj in changed))
    return "; ".join(p for p in problems if p)


async def tried_again(kube: Kube, desired: list[Obj], live: dict[tuple[str, str], Obj]) -> str:
    """For a spec already found InvalidSpec at its generation (a child refused, or a name
    taken): every child that would be created is looked up (one GET: someone else's object
    is the conflict again) and dry-run, like every child that would change. Trying it again
    (after a child event, an operator restart) then writes nothing until the problem is
    gone, instead of creating and deleting the new children each time."""
    changed = [o for o in desired if not contains(live.get((o["kind"], o["metadata"]["name"])), o)]

    async def problem(obj: Obj) -> str:
        if (obj["kind"], obj["metadata"]["name"]) not in live:
            existing = await kube.get(object_path(obj))
            uid = obj["metadata"]["ownerReferences"][0]["uid"]
            refs = (existing or {}).get("metadata", {}).get("ownerReferences", [])
            ours = any(ref.get("uid") == uid for ref in refs)
            if existing is not None and not ours and not from_earlier_incarnation(existing, obj):
                return conflict(obj)
        try:
            await kube.try_apply(obj)
        except KubeError as error:
            if not refused_for_good(error):
                raise
            return refusal(obj, error)
        return ""

    problems = await asyncio.gather(*(problem(obj) for obj in changed))
    return "; ".join(p for p in problems if p)


def refusal(obj: Obj, error: KubeError) -> str:
    """The InvalidSpec message for a child the API server refuses."""
    return (
        f"{_section(obj)}: the API server refuses {obj['kind']} "
        f"{obj['metadata']['name']} built from it ({error.status}): {error.message}"
    )


def refused_for_good(error: KubeError) -> bool:
    """The API server refuses the object itself, so sending it again cannot help: 422
    Invalid (a field fails the kind's validation), 400 (the body cannot be read as that
    kind), or server-side apply's 500 for a field of the wrong type."""
    return error.status in (400, 422) or (
        error.status == 500 and "failed to create typed patch object" in error.message
    )


def _section(obj: Obj) -> str:
    """The part of the spec a child is built from, for the InvalidSpec message."""
    component = obj["metadata"].get("labels", {}).get(COMPONENT_LABEL, "")
    if component == router.COMPONENT and obj["kind"] == "Service":
        return "spec.consumers"
    return f"spec.{component}" if component else "spec"
