"""Checks beyond the resource's schema, turned into InvalidSpec messages that name the field
or object and the fix: those the API server cannot make when the resource is applied (Service
name clashes, objects owned by someone else), and its refusal of a child built from a spec
it accepted."""

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
        clauses.append(f"{where}: {item['msg']}")
    return "; ".join(clauses)


def service_name_clashes(spec: InferenceBackendSpec, owner: Owner) -> str:
    """Consumers whose Service would share its name with another child's Service (an
    engine's, or another consumer's default name): one would silently replace the other."""
    taken = {child_name(owner, vllm.ENGINE): "vLLM's", child_name(owner, ollama.ENGINE): "Ollama's"}
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


def _from_earlier_incarnation(existing: Obj, desired: Obj) -> bool:
    """A child of a deleted InferenceBackend of the same name, not yet garbage-collected:
    applying adds the new owner, which is what the user wants after delete-and-recreate."""
    owner_name = desired["metadata"]["ownerReferences"][0]["name"]
    return any(
        ref.get("kind") == KIND and ref.get("name") == owner_name
        for ref in existing["metadata"].get("ownerReferences", [])
    )


async def name_conflicts(kube: Kube, desired: list[Obj], owned: dict[tuple[str, str], Obj]) -> str:
    """Objects the operator would create but that already exist and belong to someone else.

    Applying over them would silently take them over; instead the resource is refused and
    names what to rename or remove. Only objects not already owned are looked up.
    """
    problems = []
    for obj in desired:
        key = (obj["kind"], obj["metadata"]["name"])
        if key in owned:
            continue
        existing = await kube.get(object_path(obj))
        if existing is not None and not _from_earlier_incarnation(existing, obj):
            problems.append(
                f"{obj['kind']} {obj['metadata']['name']} already exists and is not owned by "
                "this InferenceBackend: rename the InferenceBackend or delete that object"
            )
    return "; ".join(problems)


def _refused_for_good(error: KubeError) -> bool:
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


async def refused_children(kube: Kube, desired: list[Obj], live: dict[tuple[str, str], Obj]) -> str:
    """Children the API server refuses although the schema accepted the spec, found by a
    server-side dry run of every child that would be applied, before any is: so such a
    spec changes nothing at all (no partial set of children), and the resource is
    InvalidSpec with a message naming the spec section, the child, its field and the API
    server's reason. Children equal to their live object are not sent (no request for an
    unchanged resource)."""
    changed = [
        obj
        for obj in desired
        if not contains(live.get((obj["kind"], obj["metadata"]["name"])), obj)
    ]

    async def refusal(obj: Obj) -> str:
        try:
            await kube.apply(obj, dry_run=True)
        except KubeError as error:
            if not _refused_for_good(error):
                raise  # not about the object (API server unavailable, ...): retried
            return (
                f"{_section(obj)}: the API server refuses {obj['kind']} "
                f"{obj['metadata']['name']} built from it ({error.status}): {error.message}"
            )
        return ""

    refusals = await asyncio.gather(*(refusal(obj) for obj in changed))
    return "; ".join(r for r in refusals if r)
