"""Pure builders: an InferenceBackend's spec in, the Kubernetes objects it needs out."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from inferops.api.routing import Mirror
from inferops.api.spec import InferenceBackendSpec
from inferops.builders import network_policy as netpol
from inferops.builders import ollama, router, vllm
from inferops.builders.common import DEFAULT_IMAGES, Images, Obj, Owner
from inferops.builders.network_policy import NetworkPolicyConfig
from inferops.registry import CHILDREN

# Kinds of the objects the operator may create, in apply order; anything of these kinds that
# it owns but no longer builds is deleted (e.g. the Ollama Deployment after
# `ollama.enabled: false`).
CHILD_KINDS = tuple((k.api_version, k.kind) for k in CHILDREN)

WeightSetter = Callable[
    [
        InferenceBackendSpec,
        Owner,
        Mapping[str, bool],
        Mapping[str, int] | None,
        Mapping[str, Mirror] | None,
        Mapping[str, int] | None,
    ],
    list[Obj],
]
"""`Traffic.set_weights` (inferops.traffic): the objects that carry the consumers' weights."""


def desired_children(
    spec: InferenceBackendSpec,
    owner: Owner,
    ready: Mapping[str, bool] | None = None,
    weights: Mapping[str, int] | None = None,
    images: Images = DEFAULT_IMAGES,
    network_policy: NetworkPolicyConfig | None = None,
    set_weights: WeightSetter = router.weights,
    mirrors: Mapping[str, Mirror] | None = None,
    embeddings: Mapping[str, int] | None = None,
) -> list[Obj]:
    """Every object the resource should own, in apply order. `ready` says which engines have
    Ready pods; the routing table sends traffic only to those. `weights` are the consumers'
    live vLLM weights (a consumer missing from it gets its spec weight). `network_policy`
    (operator configuration) adds the engines' NetworkPolicy. `set_weights` builds what
    carries the weights: the built-in router's ConfigMap unless another traffic backend's.
    `mirrors` names the consumers at a shadow step and what the router mirrors of them;
    `embeddings` each consumer's embeddings weight (spec.vllm.embeddings)."""
    objects = (
        vllm.children(spec, owner, images)
        + ollama.children(spec, owner, images)
        + router.children(spec, owner, images)
        + set_weights(spec, owner, ready or {}, weights, mirrors, embeddings)
        + netpol.children(owner, network_policy)
    )
    order = {kind: i for i, (_, kind) in enumerate(CHILD_KINDS)}
    return sorted(objects, key=lambda o: (order[o["kind"]], o["metadata"]["name"]))


__all__ = [
    "CHILD_KINDS",
    "Images",
    "NetworkPolicyConfig",
    "Obj",
    "Owner",
    "WeightSetter",
    "desired_children",
]
