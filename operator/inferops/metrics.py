"""The operator's own Prometheus metrics, served on its metrics port."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

KUBE_WRITES = Counter(
    "inferops_kube_writes",
    "Write calls the operator made to the Kubernetes API, by namespace, verb and kind.",
    ["namespace", "verb", "kind"],
)
RECONCILES = Counter(
    "inferops_reconciles",
    "Reconciliations of an InferenceBackend, by namespace and outcome.",
    ["namespace", "outcome"],
)
RECONCILE_SECONDS = Histogram(
    "inferops_reconcile_seconds",
    "Duration of one reconciliation.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
