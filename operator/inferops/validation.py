"""Checks the API server cannot make, turned into InvalidSpec messages that name the field
or object and the fix."""

from __future__ import annotations

from pydantic import ValidationError

from inferops.api import KIND
from inferops.api.spec import InferenceBackendSpec
from inferops.builders import ollama, router, vllm
from inferops.builders.common import Owner, child_name
from inferops.kube import Kube, Obj, object_path


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
