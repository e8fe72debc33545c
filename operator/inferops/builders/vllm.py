"""Builds the vLLM engine: its Deployment, Service and optional cache claim."""

from __future__ import annotations

import math

from inferops.api.spec import InferenceBackendSpec
from inferops.builders import common
from inferops.builders.common import DEFAULT_IMAGES, Images, Obj, Owner

ENGINE = "vllm"
PORT = 8000
HF_HOME = "/root/.cache/huggingface"
# NCCL exchanges tensors through /dev/shm; the container runtime's 64Mi default breaks tensor
# parallelism, so a memory-backed one is sized by default when more than one GPU is used.
DEFAULT_TP_SHM_SIZE = "8Gi"
STARTUP_PROBE_PERIOD = 10


def args(spec: InferenceBackendSpec) -> list[str]:
    """The API server's arguments: the image's entrypoint already is the server."""
    vllm = spec.vllm
    out = [
        "--model",
        vllm.model,
        "--served-model-name",
        spec.model,
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
        "--tensor-parallel-size",
        str(vllm.tensor_parallel_size),
        "--gpu-memory-utilization",
        str(vllm.gpu_memory_utilization),
        "--dtype",
        vllm.dtype,
    ]
    if vllm.max_model_len is not None:
        out += ["--max-model-len", str(vllm.max_model_len)]
    return out + list(vllm.extra_args)


def shm_size(spec: InferenceBackendSpec) -> str | None:
    if spec.vllm.shm_size is not None:
        return str(spec.vllm.shm_size)
    return DEFAULT_TP_SHM_SIZE if spec.vllm.tensor_parallel_size > 1 else None


def probes(spec: InferenceBackendSpec) -> Obj:
    """Startup gets the whole model-loading budget; liveness only starts after it, so a slow
    load is never killed. /health says the server is up, which is all a probe can afford."""
    health = {"httpGet": {"path": "/health", "port": "http"}}
    return {
        "startupProbe": {
            **health,
            "periodSeconds": STARTUP_PROBE_PERIOD,
            "timeoutSeconds": 5,
            "failureThreshold": math.ceil(spec.vllm.startup_timeout_seconds / STARTUP_PROBE_PERIOD),
        },
        "readinessProbe": {
            **health,
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            **health,
            "periodSeconds": 15,
            "timeoutSeconds": 10,
            "failureThreshold": 4,
        },
    }


def deployment(spec: InferenceBackendSpec, owner: Owner, images: Images = DEFAULT_IMAGES) -> Obj:
    vllm = spec.vllm
    gpus = vllm.tensor_parallel_size
    secrets = {}
    if vllm.hf_token_secret_ref:
        secrets["HF_TOKEN"] = (vllm.hf_token_secret_ref.name, vllm.hf_token_secret_ref.key)
    mounts = [{"name": "cache", "mountPath": HF_HOME}]
    volumes = [common.cache_volume(owner, ENGINE, vllm.cache)]
    if size := shm_size(spec):
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": size}})
    container: Obj = {
        "name": ENGINE,
        "image": vllm.image or images.vllm,
        "args": args(spec),
        "env": common.env({"HF_HOME": HF_HOME}, secrets),
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        **probes(spec),
        "volumeMounts": sorted(mounts, key=lambda m: m["name"]),
    }
    if res := common.resources(vllm, gpus):
        container["resources"] = res
    pod_spec: Obj = {
        "containers": [container],
        "volumes": sorted(volumes, key=lambda v: v["name"]),
        **common.scheduling(vllm, gpus),
    }
    # Long enough for in-flight generations to finish after the endpoint is removed.
    return common.deployment(owner, ENGINE, vllm, pod_spec, grace_seconds=60)


def children(
    spec: InferenceBackendSpec, owner: Owner, images: Images = DEFAULT_IMAGES
) -> list[Obj]:
    out = [deployment(spec, owner, images), common.service(owner, ENGINE, PORT)]
    if claim := common.cache_claim(owner, ENGINE, spec.vllm.cache):
        out.insert(0, claim)
    return out
