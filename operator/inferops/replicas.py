"""Who owns a Deployment's `spec.replicas`: the operator, or whoever scales it. Pure.

With `spec.<component>.replicas` set, the builders put it in the Deployment and the operator
applies it like every other field (server-side apply with force): a `kubectl scale` is
reverted at the next reconciliation. Unset, the builders leave it out, so the operator never
writes it and a HorizontalPodAutoscaler or `kubectl scale` owns it without a fight; the
Deployment is created with the component's initial count (`INITIAL_REPLICAS` on the spec
models), and the status counts the Deployment's own replicas as desired.

Server-side apply deletes a field its manager stops applying when no other manager owns it,
and the Deployment's default (1 pod) would come back: removing `replicas` from the spec, or
the first spec change after creation, would scale the Deployment down. So before an apply
that leaves `replicas` out of a Deployment whose replicas the operator still owns, the
current count is applied by a second field manager (`HANDOVER_MANAGER`) that keeps it, as
the Kubernetes documentation prescribes for handing a field to an autoscaler. An HPA or
`kubectl scale` writing the field later takes it from that manager.
"""

from __future__ import annotations

from typing import Any

from inferops.api.spec import OllamaSpec, RouterSpec, VLLMSpec
from inferops.builders import ollama, router, vllm
from inferops.builders.common import COMPONENT_LABEL

Obj = dict[str, Any]

HANDOVER_MANAGER = "inferops-replicas-handover"
INITIAL = {
    vllm.ENGINE: VLLMSpec.INITIAL_REPLICAS,
    ollama.ENGINE: OllamaSpec.INITIAL_REPLICAS,
    router.COMPONENT: RouterSpec.INITIAL_REPLICAS,
}


def _initial(deployment: Obj) -> int:
    return INITIAL[deployment["metadata"]["labels"][COMPONENT_LABEL]]


def leaves_replicas(desired: Obj) -> bool:
    """Whether `desired` is a Deployment whose replicas the spec leaves to others."""
    return desired["kind"] == "Deployment" and "replicas" not in desired["spec"]


def desired(component: str, spec_replicas: int | None, live: Obj | None) -> int:
    """The pods a component should have: the spec's count, else the Deployment's own (an
    HPA's or a person's choice), else the count it will be created with."""
    if spec_replicas is not None:
        return spec_replicas
    if live is not None:
        return int(live["spec"].get("replicas", 1))
    return INITIAL[component]


def as_created(live: Obj | None, desired_obj: Obj) -> Obj:
    """What to apply: `desired_obj`, with the initial count when it creates a Deployment
    whose replicas are left to others (the next apply hands them over)."""
    if live is not None or not leaves_replicas(desired_obj):
        return desired_obj
    return {**desired_obj, "spec": {**desired_obj["spec"], "replicas": _initial(desired_obj)}}


def owns_replicas(live: Obj, manager: str) -> bool:
    """Whether `manager` applied the live object's `spec.replicas` (its managedFields)."""
    return any(
        entry.get("manager") == manager
        and entry.get("operation") == "Apply"
        and "f:replicas" in (entry.get("fieldsV1") or {}).get("f:spec", {})
        for entry in live["metadata"].get("managedFields") or []
    )


def handover(live: Obj | None, desired_obj: Obj, manager: str) -> Obj | None:
    """The apply patch `HANDOVER_MANAGER` must make before `desired_obj` is applied by
    `manager`, or None when replicas need no new owner. A count of 0 comes from the
    operator's own scale-down (`afterMigration: ScaleDownOllama`) or from a spec that asked
    for 0: handing it over would keep the component at zero pods, so the initial count is
    handed over instead."""
    if live is None or not leaves_replicas(desired_obj) or not owns_replicas(live, manager):
        return None
    count = int(live["spec"].get("replicas", 1)) or _initial(desired_obj)
    meta = desired_obj["metadata"]
    return {
        "apiVersion": desired_obj["apiVersion"],
        "kind": desired_obj["kind"],
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": {"replicas": count},
    }


__all__ = [
    "HANDOVER_MANAGER",
    "INITIAL",
    "as_created",
    "desired",
    "handover",
    "leaves_replicas",
    "owns_replicas",
]
