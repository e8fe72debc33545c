"""A local Kubernetes test cluster without containers: real control plane, simulated nodes.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as processes on
127.0.0.1 with their own PKI; kwok simulates nodes (GPU nodes with
``nvidia.com/gpu`` capacity and CPU nodes) and moves pods to Running/Ready. All
binaries, plus a matching kubectl and helm, are built once from Go modules and
cached per version outside the checkout.

Python API (for pytest fixtures)::

    from e2e.localcluster import Cluster, ClusterError

    cluster = Cluster.default()   # state in .cluster/ (or $INFEROPS_CLUSTER_DIR)
    cluster.up()                  # raises ClusterError with the failing log's tail
    cluster.kubeconfig, cluster.bin_dir, cluster.kubectl_path, cluster.helm_path
    cluster.restart("kube-apiserver")   # fault tests: stop and start one component
    cluster.down()

CLI: ``python -m e2e.localcluster up|down|status|build|env|restart``.
"""

from .build import BuildError, Toolset
from .cluster import Cluster, ClusterError, ComponentStatus
from .nodes import NodeLayout
from .pki import PKIError
from .versions import ETCD_VERSION, HELM_VERSION, KUBERNETES_VERSION, KWOK_VERSION

__all__ = [
    "ETCD_VERSION",
    "HELM_VERSION",
    "KUBERNETES_VERSION",
    "KWOK_VERSION",
    "BuildError",
    "Cluster",
    "ClusterError",
    "ComponentStatus",
    "NodeLayout",
    "PKIError",
    "Toolset",
]
