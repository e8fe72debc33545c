"""Pure builders: an InferenceBackend's spec in, the Kubernetes objects it needs out."""

from __future__ import annotations

from inferops.api.spec import InferenceBackendSpec
from inferops.builders import ollama, vllm
from inferops.builders.common import Obj, Owner

# Kinds of the objects the operator may create; anything of these kinds that it owns but no
# longer builds is deleted (e.g. the Ollama Deployment after `ollama.enabled: false`).
CHILD_KINDS = (
    ("v1", "PersistentVolumeClaim"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
)


def desired_children(spec: InferenceBackendSpec, owner: Owner) -> list[Obj]:
    """Every object the resource should own, claims first so pods never wait on a claim
    created after them."""
    objects = vllm.children(spec, owner) + ollama.children(spec, owner)
    order = {kind: i for i, (_, kind) in enumerate(CHILD_KINDS)}
    return sorted(objects, key=lambda o: (order[o["kind"]], o["metadata"]["name"]))


__all__ = ["CHILD_KINDS", "Obj", "Owner", "desired_children"]
