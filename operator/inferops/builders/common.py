"""Pieces shared by the builders of every component (vLLM, Ollama, router): names, labels,
owner references, the spec hash, and the pod fields they all set the same way.

Everything here is pure: the same input always gives the same, sorted output.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from inferops.api import API_VERSION, GROUP, KIND
from inferops.api.spec import GPU, CacheSpec, WorkloadSpec

Obj = dict[str, Any]

SPEC_HASH_ANNOTATION = f"{GROUP}/spec-hash"
BACKEND_LABEL = f"{GROUP}/backend"
COMPONENT_LABEL = f"{GROUP}/component"
MANAGED_BY = "inferops-operator"
# What each component is, for the app.kubernetes.io/component label ("engines": the
# NetworkPolicy in front of both engines).
ROLES = {
    "vllm": "inference-engine",
    "ollama": "inference-engine",
    "vllm-embeddings": "inference-engine",
    "router": "router",
    "engines": "inference-engine",
}


# Default images, pinned: the operator's configuration (set by the Helm chart) overrides them,
# and an image written in a resource overrides both.
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.32.0"
DEFAULT_OLLAMA_IMAGE = "ollama/ollama:0.12.6"
DEFAULT_ROUTER_IMAGE = "inferops/inferops:0.1.0"


@dataclass(frozen=True)
class Images:
    """The images of resources that name none: operator configuration, not API defaults, so
    an operator upgrade moves every such resource to its new images."""

    vllm: str = DEFAULT_VLLM_IMAGE
    ollama: str = DEFAULT_OLLAMA_IMAGE
    router: str = DEFAULT_ROUTER_IMAGE


DEFAULT_IMAGES = Images()


@dataclass(frozen=True)
class Owner:
    """The InferenceBackend that owns the children being built."""

    name: str
    namespace: str
    uid: str


def child_name(owner: Owner, component: str) -> str:
    return f"{owner.name}-{component}"


def selector_labels(owner: Owner, component: str) -> dict[str, str]:
    """The labels a Deployment selects its pods by; never change them (selectors are
    immutable)."""
    return {BACKEND_LABEL: owner.name, COMPONENT_LABEL: component}


def labels(owner: Owner, component: str) -> dict[str, str]:
    return dict(
        sorted(
            {
                **selector_labels(owner, component),
                "app.kubernetes.io/name": component,
                "app.kubernetes.io/instance": owner.name,
                "app.kubernetes.io/component": ROLES[component],
                "app.kubernetes.io/part-of": "inferops",
                "app.kubernetes.io/managed-by": MANAGED_BY,
            }.items()
        )
    )


def owner_reference(owner: Owner) -> Obj:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(owner: Owner, name: str, component: str) -> Obj:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner, component),
        "ownerReferences": [owner_reference(owner)],
    }


def spec_hash(obj: Obj) -> str:
    """A stable digest of everything the operator sets on an object."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def with_spec_hash(obj: Obj) -> Obj:
    """The object with its own spec hash as an annotation, so an unchanged object is
    recognised without comparing it field by field."""
    annotations = obj["metadata"].setdefault("annotations", {})
    annotations.pop(SPEC_HASH_ANNOTATION, None)
    annotations[SPEC_HASH_ANNOTATION] = spec_hash(obj)
    obj["metadata"]["annotations"] = dict(sorted(annotations.items()))
    return obj


def env(values: dict[str, str], secrets: dict[str, tuple[str, str]] | None = None) -> list[Obj]:
    """Container env sorted by name; `secrets` maps a variable to (secret name, key) and is
    injected with valueFrom so the value never passes through the operator."""
    entries: dict[str, Obj] = {name: {"name": name, "value": v} for name, v in values.items()}
    for name, (secret, key) in (secrets or {}).items():
        entries[name] = {
            "name": name,
            "valueFrom": {"secretKeyRef": {"name": secret, "key": key}},
        }
    return [entries[name] for name in sorted(entries)]


def resources(workload: WorkloadSpec, gpus: int) -> Obj:
    """The container's resources; GPUs are requested and limited equally, as the device plugin
    requires."""
    requests = {k: str(v) for k, v in sorted(workload.resources.requests.items())}
    limits = {k: str(v) for k, v in sorted(workload.resources.limits.items())}
    if gpus:
        requests[GPU] = limits[GPU] = str(gpus)
    out: Obj = {}
    if limits:
        out["limits"] = dict(sorted(limits.items()))
    if requests:
        out["requests"] = dict(sorted(requests.items()))
    return out


def tolerations(workload: WorkloadSpec, gpus: int) -> list[Obj]:
    """The user's tolerations, plus one for the taint GPU nodes usually carry when the pod
    needs GPUs (clusters rarely enable the ExtendedResourceToleration admission plugin)."""
    out = [t.dump() for t in workload.tolerations]
    gpu_toleration = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
    if gpus and gpu_toleration not in out:
        out.append(gpu_toleration)
    return out


def scheduling(workload: WorkloadSpec, gpus: int) -> Obj:
    """Pod-spec placement fields; only the ones that are set, so the API server's defaults
    stay the API server's."""
    out: Obj = {}
    if workload.node_selector:
        out["nodeSelector"] = dict(sorted(workload.node_selector.items()))
    if tolerations_ := tolerations(workload, gpus):
        out["tolerations"] = tolerations_
    if workload.affinity is not None:
        out["affinity"] = workload.affinity.dump()
    if workload.runtime_class_name:
        out["runtimeClassName"] = workload.runtime_class_name
    return out


def cache_claim_name(owner: Owner, component: str) -> str:
    return f"{owner.name}-{component}-cache"


def cache_volume(owner: Owner, component: str, cache: CacheSpec | None) -> Obj:
    """The volume holding downloaded models: the user's claim, the operator's claim, or an
    emptyDir that is lost with the pod."""
    if cache is None:
        return {"name": "cache", "emptyDir": {}}
    claim = cache.existing_claim or cache_claim_name(owner, component)
    return {"name": "cache", "persistentVolumeClaim": {"claimName": claim}}


def cache_claim(owner: Owner, component: str, cache: CacheSpec | None) -> Obj | None:
    """The PersistentVolumeClaim the operator owns, when the user asked for one by size."""
    if cache is None or cache.size is None:
        return None
    spec: Obj = {
        "accessModes": [cache.access_mode],
        "resources": {"requests": {"storage": str(cache.size)}},
    }
    if cache.storage_class_name is not None:
        # "" is Kubernetes' "no class" (only volumes without one), not the cluster default.
        spec["storageClassName"] = cache.storage_class_name
    return with_spec_hash(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": metadata(owner, cache_claim_name(owner, component), component),
            "spec": spec,
        }
    )


def service(owner: Owner, component: str, port: int) -> Obj:
    return with_spec_hash(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(owner, child_name(owner, component), component),
            "spec": {
                "type": "ClusterIP",
                "selector": selector_labels(owner, component),
                "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
            },
        }
    )


def service_url(owner: Owner, component: str, port: int) -> str:
    return f"http://{child_name(owner, component)}.{owner.namespace}.svc:{port}"


def deployment(
    owner: Owner, component: str, workload: WorkloadSpec, pod_spec: Obj, grace_seconds: int
) -> Obj:
    """A Deployment around a component's pod spec. Rolling updates never remove a Ready pod
    before its replacement is Ready: capacity is never lost during an update. Without
    `replicas` in the spec, the Deployment's replicas are left to whoever scales it (see
    `inferops.replicas`)."""
    pod_metadata: Obj = {"labels": labels(owner, component)}
    if workload.pod_annotations:
        pod_metadata["annotations"] = dict(sorted(workload.pod_annotations.items()))
    size = {} if workload.replicas is None else {"replicas": workload.replicas}
    return with_spec_hash(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata(owner, child_name(owner, component), component),
            "spec": {
                **size,
                "selector": {"matchLabels": selector_labels(owner, component)},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
                },
                "template": {
                    "metadata": pod_metadata,
                    "spec": {
                        # Service links would inject e.g. VLLM_PORT=tcp://... for a Service
                        # named "vllm", which vLLM reads as its own setting and fails on.
                        "enableServiceLinks": False,
                        "terminationGracePeriodSeconds": grace_seconds,
                        **pod_spec,
                    },
                },
            },
        }
    )
