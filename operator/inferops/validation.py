"""Checks the API server cannot make, turned into InvalidSpec messages that name the field
or object and the fix."""

from __future__ import annotations

from pydantic import ValidationError

from inferops.api import KIND
from inferops.kube import Kube, Obj, object_path


def describe_errors(error: ValidationError) -> str:
    """`spec.vllm.tensorParallelSize: Input should be ...; ...`: one clause per problem."""
    clauses = []
    for item in error.errors():
        where = ".".join(["spec", *(str(part) for part in item["loc"])])
        clauses.append(f"{where}: {item['msg']}")
    return "; ".join(clauses)


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
