"""Manifests of the simulated (kwok) nodes: GPU nodes and plain CPU nodes.

The GPU nodes look like what the NVIDIA device plugin and GPU feature discovery
produce on a real cluster: ``nvidia.com/gpu`` in capacity/allocatable, the
``nvidia.com/gpu.*`` labels, and the ``nvidia.com/gpu=present:NoSchedule`` taint that
GPU node pools usually carry. So the scheduler's GPU accounting is real: a pod asking
for more GPUs than any node has stays Pending with ``Insufficient nvidia.com/gpu``.

Only nodes with the ``kwok.x-k8s.io/node: fake`` annotation are managed by kwok;
their addresses are loopback so nothing ever dials a fake non-loopback node IP.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_ANNOTATION_VALUE = "fake"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
GPU_PRODUCT = "NVIDIA-A100-SXM4-80GB"
GPU_INSTANCE_TYPE = "p4de.24xlarge"
CPU_INSTANCE_TYPE = "m6i.4xlarge"

ENV_GPU_NODES = "INFEROPS_GPU_NODES"
ENV_GPUS_PER_NODE = "INFEROPS_GPUS_PER_NODE"
ENV_CPU_NODES = "INFEROPS_CPU_NODES"


@dataclass(frozen=True)
class NodeLayout:
    """How many simulated nodes of each kind the cluster gets."""

    gpu_nodes: int = 4
    gpus_per_node: int = 8
    cpu_nodes: int = 2

    def __post_init__(self) -> None:
        for name in ("gpu_nodes", "gpus_per_node", "cpu_nodes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.gpu_nodes and self.gpus_per_node < 1:
            raise ValueError("gpus_per_node must be >= 1 when there are GPU nodes")

    @classmethod
    def from_env(cls) -> NodeLayout:
        """Return the default layout, overridden by INFEROPS_GPU_NODES/_GPUS_PER_NODE/_CPU_NODES."""
        default = cls()
        return cls(
            gpu_nodes=_env_int(ENV_GPU_NODES, default.gpu_nodes),
            gpus_per_node=_env_int(ENV_GPUS_PER_NODE, default.gpus_per_node),
            cpu_nodes=_env_int(ENV_CPU_NODES, default.cpu_nodes),
        )

    @property
    def total(self) -> int:
        return self.gpu_nodes + self.cpu_nodes

    def node_names(self) -> list[str]:
        return [n["metadata"]["name"] for n in self.manifests()]

    def manifests(self) -> list[dict[str, Any]]:
        """Return the Node objects to create, GPU nodes first."""
        nodes = [self._gpu_node(i) for i in range(self.gpu_nodes)]
        nodes += [self._cpu_node(i) for i in range(self.cpu_nodes)]
        return nodes

    def _cpu_node(self, index: int) -> dict[str, Any]:
        labels = {"node.kubernetes.io/instance-type": CPU_INSTANCE_TYPE}
        return _node(f"cpu-node-{index}", _CPU_CAPACITY, labels, [])

    def _gpu_node(self, index: int) -> dict[str, Any]:
        capacity = dict(_GPU_NODE_BASE_CAPACITY, **{GPU_RESOURCE: str(self.gpus_per_node)})
        labels = {
            "node.kubernetes.io/instance-type": GPU_INSTANCE_TYPE,
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": GPU_PRODUCT,
            "nvidia.com/gpu.count": str(self.gpus_per_node),
            "nvidia.com/gpu.memory": "81920",
        }
        return _node(f"gpu-node-{index}", capacity, labels, [dict(GPU_TAINT)])


_GPU_NODE_BASE_CAPACITY = {
    "cpu": "32",
    "memory": "256Gi",
    "pods": "110",
    "ephemeral-storage": "1Ti",
}
_CPU_CAPACITY = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "500Gi"}


def _node(
    name: str, capacity: dict[str, str], extra_labels: dict[str, str], taints: list[dict[str, str]]
) -> dict[str, Any]:
    labels = {
        "type": "kwok",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/role": "agent",
        **extra_labels,
    }
    spec: dict[str, Any] = {}
    if taints:
        spec["taints"] = taints
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                KWOK_ANNOTATION: KWOK_ANNOTATION_VALUE,
                "node.alpha.kubernetes.io/ttl": "0",
            },
        },
        "spec": spec,
        # The apiserver keeps status on Node create, and kwok's node-initialize stage
        # keeps capacity/allocatable it finds (it only fills in defaults when empty).
        "status": {
            "capacity": dict(capacity),
            "allocatable": dict(capacity),
            # Loopback on purpose: the apiserver dials a node's InternalIP for logs/exec,
            # and nothing here may dial a non-loopback address.
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ],
        },
    }


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
