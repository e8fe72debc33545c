"""The operator's own Prometheus metrics, served on its metrics port."""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from inferops.api.status import InferenceBackendStatus

KUBE_WRITES = Counter(
    "inferops_kube_writes",
    "Write calls the operator made to the Kubernetes API, by namespace, verb and kind.",
    ["namespace", "verb", "kind"],
)


def count_write(verb: str, obj: dict[str, Any]) -> None:
    """The operator's `Kube` write hook."""
    namespace = obj["metadata"]["namespace"]
    KUBE_WRITES.labels(namespace=namespace, verb=verb, kind=obj["kind"]).inc()


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

CACHE_OBJECTS = Gauge(
    "inferops_cache_objects", "Children and pods held by the operator's watch cache."
)
CACHE_BYTES = Gauge(
    "inferops_cache_bytes", "Size of the watch cache's compact JSON (its objects' memory)."
)

# The migration, per consumer: where it stands and what the analysis said.
MIGRATION_WEIGHT = Gauge(
    "inferops_migration_consumer_weight",
    "Live percent of a consumer's requests sent to vLLM, as decided by the operator.",
    ["namespace", "backend", "consumer"],
)
MIGRATION_STEP = Gauge(
    "inferops_migration_consumer_step",
    "The consumer's current step of spec.migration.steps, counting from 1 as Events and "
    "`kubectl ib` do (a rolled back or aborted consumer keeps the step it stopped at); 0 "
    "before its first step.",
    ["namespace", "backend", "consumer"],
)
MIGRATION_PHASE = Gauge(
    "inferops_migration_consumer_phase",
    "1 for the consumer's current migration phase (Pending, Progressing, Paused, Migrated, "
    "RolledBack, Aborted), absent for the others.",
    ["namespace", "backend", "consumer", "phase"],
)
ANALYSES = Counter(
    "inferops_migration_analyses",
    "Analysis samples taken, by verdict (Pass, Fail, Inconclusive).",
    ["namespace", "backend", "consumer", "verdict"],
)
WATCH_FAILING = Gauge(
    "inferops_migration_watch_failing",
    "1 while a migrated consumer fails its gates (spec.migration.watch), 0 while it passes; "
    "absent for a consumer that is not migrated.",
    ["namespace", "backend", "consumer"],
)
WATCH_FAILURES = Counter(
    "inferops_migration_watch_failures",
    "Failed watch samples of migrated consumers.",
    ["namespace", "backend", "consumer"],
)
ROLLBACKS = Counter(
    "inferops_migration_rollbacks",
    "Automatic rollbacks of a consumer to 0%.",
    ["namespace", "backend", "consumer"],
)


def record_migration(
    namespace: str, backend: str, previous: InferenceBackendStatus, status: InferenceBackendStatus
) -> None:
    """Updates the migration metrics from one reconciliation's old and new status."""
    before = {c.name: c for c in previous.consumers}
    for c in status.consumers:
        labels = (namespace, backend, c.name)
        MIGRATION_WEIGHT.labels(*labels).set(c.weight)
        MIGRATION_STEP.labels(*labels).set(c.step or 0)
        old = before.get(c.name)
        if old is not None and old.phase != c.phase:
            with contextlib.suppress(KeyError):
                MIGRATION_PHASE.remove(*labels, old.phase)
            if c.phase == "RolledBack":
                ROLLBACKS.labels(*labels).inc()
        MIGRATION_PHASE.labels(*labels, c.phase).set(1)
        sample = c.last_analysis
        sampled = sample is not None and (old is None or old.last_sample_at != c.last_sample_at)
        if sample is not None and sampled:
            ANALYSES.labels(*labels, sample.verdict).inc()
            # A watch sample: taken while Migrated (one that rolled back is RolledBack now).
            if old is not None and old.phase == "Migrated" and sample.verdict == "Fail":
                WATCH_FAILURES.labels(*labels).inc()
        if c.phase == "Migrated" and c.watch is not None:
            WATCH_FAILING.labels(*labels).set(1 if c.watch.failing else 0)
        else:
            with contextlib.suppress(KeyError):
                WATCH_FAILING.remove(*labels)
    for name in before.keys() - {c.name for c in status.consumers}:
        with contextlib.suppress(KeyError):
            MIGRATION_WEIGHT.remove(namespace, backend, name)
            MIGRATION_STEP.remove(namespace, backend, name)
            MIGRATION_PHASE.remove(namespace, backend, name, before[name].phase)
        with contextlib.suppress(KeyError):
            WATCH_FAILING.remove(namespace, backend, name)
