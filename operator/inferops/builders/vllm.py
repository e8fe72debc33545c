"""Builds the vLLM engine: its Deployment, Service and optional cache claim, and those of
the optional embeddings deployment (vLLM's pooling runner, spec.vllm.embeddings)."""

from __future__ import annotations

import math

from inferops.api.spec import InferenceBackendSpec, SecretKeyRef, VLLMServerSpec
from inferops.builders import common
from inferops.builders.common import DEFAULT_IMAGES, Images, Obj, Owner

ENGINE = "vllm"
EMBEDDINGS = "vllm-embeddings"
"""The component of the embeddings deployment (spec.vllm.embeddings)."""
PORT = 8000
HF_HOME = "/root/.cache/huggingface"
# NCCL exchanges tensors through /dev/shm; the container runtime's 64Mi default breaks tensor
# parallelism, so a memory-backed one is sized by default when more than one GPU is used.
DEFAULT_TP_SHM_SIZE = "8Gi"
STARTUP_PROBE_PERIOD = 10


def server_args(server: VLLMServerSpec, served_name: str, runner: list[str]) -> list[str]:
    """A vLLM API server's arguments: the image's entrypoint already is the server. The
    user's extraArgs come last (vLLM keeps the last value of a flag; the managed ones are
    refused in them)."""
    out = [
        "--model",
        server.model,
        "--served-model-name",
        served_name,
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
        "--tensor-parallel-size",
        str(server.tensor_parallel_size),
        "--gpu-memory-utilization",
        str(server.gpu_memory_utilization),
        "--dtype",
        server.dtype,
    ]
    if server.max_model_len is not None:
        out += ["--max-model-len", str(server.max_model_len)]
    return out + runner + list(server.extra_args)


def args(spec: InferenceBackendSpec) -> list[str]:
    """The main vLLM's arguments."""
    return server_args(spec.vllm, spec.model, [])


def shm_size(spec: InferenceBackendSpec) -> str | None:
    if spec.vllm.shm_size is not None:
        return str(spec.vllm.shm_size)
    return DEFAULT_TP_SHM_SIZE if spec.vllm.tensor_parallel_size > 1 else None


def probes(server: VLLMServerSpec) -> Obj:
    """Startup gets the whole model-loading budget; liveness only starts after it, so a slow
    load is never killed. /health says the server is up, which is all a probe can afford."""
    health = {"httpGet": {"path": "/health", "port": "http"}}
    return {
        "startupProbe": {
            **health,
            "periodSeconds": STARTUP_PROBE_PERIOD,
            "timeoutSeconds": 5,
            "failureThreshold": math.ceil(server.startup_timeout_seconds / STARTUP_PROBE_PERIOD),
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


def server_deployment(
    owner: Owner,
    component: str,
    server: VLLMServerSpec,
    server_args: list[str],
    shm: str | None,
    token: SecretKeyRef | None,
    images: Images,
) -> Obj:
    """The Deployment of one vLLM API server (the main one or the embeddings one)."""
    gpus = server.tensor_parallel_size
    secrets = {}
    if token:
        secrets["HF_TOKEN"] = (token.name, token.key)
    mounts = [{"name": "cache", "mountPath": HF_HOME}]
    volumes = [common.cache_volume(owner, component, server.cache)]
    if shm:
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}})
    container: Obj = {
        "name": ENGINE,
        "image": server.image or images.vllm,
        "args": server_args,
        "env": common.env({"HF_HOME": HF_HOME}, secrets),
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        **probes(server),
        "volumeMounts": sorted(mounts, key=lambda m: m["name"]),
    }
    if res := common.resources(server, gpus):
        container["resources"] = res
    pod_spec: Obj = {
        "containers": [container],
        "volumes": sorted(volumes, key=lambda v: v["name"]),
        **common.scheduling(server, gpus),
    }
    # Long enough for in-flight generations to finish after the endpoint is removed.
    return common.deployment(owner, component, server, pod_spec, grace_seconds=60)


def deployment(spec: InferenceBackendSpec, owner: Owner, images: Images = DEFAULT_IMAGES) -> Obj:
    return server_deployment(
        owner, ENGINE, spec.vllm, args(spec), shm_size(spec), spec.vllm.hf_token_secret_ref, images
    )


def embeddings_args(spec: InferenceBackendSpec) -> list[str]:
    """The embeddings deployment's arguments: vLLM's pooling runner, which serves
    `/v1/embeddings` (and no generation), under the same served model name."""
    assert spec.vllm.embeddings is not None
    return server_args(spec.vllm.embeddings, spec.model, ["--runner", "pooling"])


def embeddings_children(spec: InferenceBackendSpec, owner: Owner, images: Images) -> list[Obj]:
    """The embeddings deployment (spec.vllm.embeddings), its Service and cache claim; none
    when it is not declared."""
    server = spec.vllm.embeddings
    if server is None:
        return []
    shm = DEFAULT_TP_SHM_SIZE if server.tensor_parallel_size > 1 else None
    token = spec.vllm.hf_token_secret_ref
    out = [
        server_deployment(owner, EMBEDDINGS, server, embeddings_args(spec), shm, token, images),
        common.service(owner, EMBEDDINGS, PORT),
    ]
    if claim := common.cache_claim(owner, EMBEDDINGS, server.cache):
        out.insert(0, claim)
    return out


def children(
    spec: InferenceBackendSpec, owner: Owner, images: Images = DEFAULT_IMAGES
) -> list[Obj]:
    out = [deployment(spec, owner, images), common.service(owner, ENGINE, PORT)]
    if claim := common.cache_claim(owner, ENGINE, spec.vllm.cache):
        out.insert(0, claim)
    return out + embeddings_children(spec, owner, images)
