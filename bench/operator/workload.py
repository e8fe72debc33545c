"""The InferenceBackends the benchmark creates: the example's shape (vLLM on one GPU, Ollama
on CPU, three consumers, two router pods), with small resource requests so that thousands of
simulated pods fit on the simulated nodes, and no cache claims (the local cluster has only a
few PersistentVolumes)."""

from __future__ import annotations

from typing import Any

from e2e.localcluster.nodes import NodeLayout

from inferops.api import API_VERSION, KIND

NAMESPACES = 10
PODS_PER_BACKEND = 4  # vLLM, Ollama, two routers
PODS_PER_NODE = 110


def namespace(index: int) -> str:
    return f"bench-{index % NAMESPACES}"


def backend(index: int) -> dict[str, Any]:
    small = {"requests": {"cpu": "10m", "memory": "16Mi"}}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": f"llm-{index:04d}", "namespace": namespace(index)},
        "spec": {
            "model": "llama3.2",
            "vllm": {"model": "meta-llama/Llama-3.2-3B-Instruct", "resources": small},
            "ollama": {"model": "llama3.2:3b", "resources": small},
            "router": {"resources": small},
            "consumers": [{"name": "notes"}, {"name": "rag"}, {"name": "ner"}],
        },
    }


def layout(backends: int) -> NodeLayout:
    """Enough simulated nodes: one GPU per vLLM pod, room for every pod, 20% spare."""
    gpu_nodes = -(-backends * 12 // 10 // PODS_PER_NODE) or 1
    cpu_pods = backends * (PODS_PER_BACKEND - 1)
    cpu_nodes = -(-cpu_pods * 12 // 10 // PODS_PER_NODE) or 1
    return NodeLayout(gpu_nodes=gpu_nodes, gpus_per_node=PODS_PER_NODE, cpu_nodes=cpu_nodes)
