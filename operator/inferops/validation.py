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
        # A message may already name a finer place (`spec.vllm.extraArgs[2]`).
        clauses.append(item["msg"] if item["msg"].startswith(where) else f"{where}: {item['msg']}")
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


def _from_earlier_incarnation(existing: Obj, desired: Obj, skip_uid: str = "") -> bool:
    """A child of a deleted InferenceBackend of the same name, not yet garbage-collected:
    applying adds the new owner, which is what the user wants after delete-and-recreate.
    `skip_uid` leaves out the owner reference the operator itself adds."""
    owner_name = desired["metadata"]["ownerReferences"][0]["name"]
    return any(
        ref.get("kind") == KIND and ref.get("name") == owner_name and ref.get("uid") != skip_uid
        for ref in existing["metadata"].get("ownerReferences", [])
    )


def _conflict(obj: Obj) -> str:
    return (
        f"{obj['kind']} {obj['metadata']['name']} already exists and is not owned by "
        "this InferenceBackend: rename the InferenceBackend or delete that object"
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
            problems.append(_conflict(obj))
    return "; ".join(problems)


async def tried_children(kube: Kube, desired: list[Obj], live: dict[tuple[str, str], Obj]) -> str:
    """What stops a new (or refused) spec's children, found by one server-side dry run of
    every child that would change, before any is applied: so such a spec changes nothing at
    all (no partial set of children), and the resource is InvalidSpec with a message naming
    what to change. Two findings:

    - the API server refuses a child although the schema accepted the spec: the message names
      the spec section, the child, its field and the server's reason;
    - a child the operator does not own yet exists already and belongs to someone else (as
      `name_conflicts`, without a GET per child: the dry run answers whether the object
      exists, and with which owners once the operator's reference is merged in).

    Children equal to their live object are not sent (no request for an unchanged one)."""
    changed = [
        obj
        for obj in desired
        if not contains(live.get((obj["kind"], obj["metadata"]["name"])), obj)
    ]

    async def problem(obj: Obj) -> str:
        owned = (obj["kind"], obj["metadata"]["name"]) in live
        try:
            answer, existed = await kube.try_apply(obj)
        except KubeError as error:
            if not _refused_for_good(error):
                raise  # not about the object (API server unavailable, ...): retried
            # Applied over someone else's object, the merge with its fields can be what is
            # refused (their unnamed port beside ours): then the conflict is the finding.
            conflict = "" if owned else await name_conflicts(kube, [obj], {})
            return conflict or (
                f"{_section(obj)}: the API server refuses {obj['kind']} "
                f"{obj['metadata']['name']} built from it ({error.status}): {error.message}"
            )
        if not existed or owned:
            return ""
        uid = obj["metadata"]["ownerReferences"][0]["uid"]
        if _from_earlier_incarnation(answer, obj, skip_uid=uid):
            return ""
        others = [r for r in answer["metadata"].get("ownerReferences", []) if r.get("uid") != uid]
        if others:
            return _conflict(obj)
        # No owner but this resource's: either nobody's object (a conflict) or already this
        # resource's and not yet in the watch cache; only the stored object tells them apart.
        return await name_conflicts(kube, [obj], {})

    problems = await asyncio.gather(*(problem(obj) for obj in changed))
    return "; ".join(p for p in problems if p)


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
