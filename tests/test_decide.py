"""The pure middle of a reconciliation: what was read in, what to write out."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from inferops.api.spec import InferenceBackendSpec
from inferops.api.status import ConsumerStatus, InferenceBackendStatus, MigrationStatus
from inferops.builders import router
from inferops.builders.common import COMPONENT_LABEL, child_name
from inferops.migration.planner import Observations, spec_hash
from inferops.reconcile import Snapshot, decide
from tests.conftest import OWNER

NOW = datetime(2026, 11, 26, 10, 0, 0)
MIGRATION = {"steps": [{"weight": 10}, {"weight": 100}], "analysis": {"interval": "10s"}}


def spec(**extra: Any) -> InferenceBackendSpec:
    return InferenceBackendSpec.model_validate(
        {
            "model": "llama3.2",
            "vllm": {"model": "x"},
            "ollama": {"model": "llama3.2:3b"},
            "consumers": [{"name": "notes", "weight": 30}, {"name": "rag"}],
            **extra,
        }
    )


def ready_deployment(component: str, replicas: int = 1) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": child_name(OWNER, component), "generation": 1},
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": 1, "readyReplicas": replicas, "updatedReplicas": replicas},
    }


def snapshot(
    s: InferenceBackendSpec | None,
    previous: InferenceBackendStatus | None = None,
    invalid: str | None = None,
    ready: tuple[str, ...] = ("vllm", "ollama", "router"),
) -> Snapshot:
    live = {
        ("Deployment", child_name(OWNER, c)): ready_deployment(c, 2 if c == "router" else 1)
        for c in ready
    }
    return Snapshot(OWNER, 3, s, invalid, previous or InferenceBackendStatus(), live, [])


def table_weights(desired: list[dict[str, Any]] | None) -> dict[str, int]:
    assert desired is not None
    config_map = next(o for o in desired if o["kind"] == "ConfigMap")
    table = json.loads(config_map["data"][router.ROUTES_KEY])
    return {c["name"]: c["weight"] for c in table["consumers"]}


def test_without_migration_the_spec_weights_apply() -> None:
    decision = decide(snapshot(spec()), None, NOW)
    assert table_weights(decision.desired) == {"notes": 30, "rag": 0}
    assert [(c.name, c.weight, c.phase) for c in decision.status.consumers] == [
        ("notes", 30, "Manual"),
        ("rag", 0, "Manual"),
    ]
    assert decision.status.migration is None
    assert decision.status.phase == "Ready"
    assert [e.reason for e in decision.events] == ["EnginesReady"]  # Pending -> Ready


def test_with_migration_the_operator_owns_the_weights() -> None:
    decision = decide(snapshot(spec(migration=MIGRATION)), Observations(vllm_ready=True), NOW)
    assert table_weights(decision.desired) == {"notes": 10, "rag": 0}  # spec's 30 ignored
    assert decision.status.migration is not None
    assert decision.status.migration.current == "notes@10%"
    migrating = next(c for c in decision.status.conditions if c.type == "Migrating")
    assert (migrating.status, migrating.reason) == ("True", "Progressing")
    assert "StepStarted" in [e.reason for e in decision.events]
    assert decision.requeue_after == 1.0  # waiting for the routers to serve 10%


def test_invalid_spec_keeps_children_and_migration_progress() -> None:
    progress = InferenceBackendStatus(
        consumers=[
            ConsumerStatus(
                name="notes", weight=10, service="s", endpoint="e", phase="Progressing", step=1
            )
        ],
        migration=MigrationStatus(spec_hash="abc", migrated="0/1", current="notes@10%"),
    )
    decision = decide(snapshot(None, progress, invalid="spec.x: bad"), None, NOW)
    assert decision.desired is None
    assert decision.status.consumers == progress.consumers
    assert decision.status.migration == progress.migration
    assert decision.status.phase == "InvalidSpec"
    assert [e.type for e in decision.events] == ["Warning"]


def test_failover_makes_the_resource_degraded_and_every_weight_zero() -> None:
    s = spec(migration=MIGRATION)
    previous = InferenceBackendStatus(
        phase="Ready",
        consumers=[
            ConsumerStatus(
                name="notes", weight=100, service="s", endpoint="e", phase="Migrated", step=2
            ),
            ConsumerStatus(
                name="rag", weight=10, service="s", endpoint="e", phase="Progressing", step=1
            ),
        ],
        migration=MigrationStatus(spec_hash=spec_hash(s.migration)),  # type: ignore[arg-type]
    )
    snap = snapshot(s, previous, ready=("ollama", "router"))
    decision = decide(snap, Observations(vllm_ready=False), NOW)
    assert table_weights(decision.desired) == {"notes": 0, "rag": 0}
    assert decision.status.phase == "Degraded"
    degraded = next(c for c in decision.status.conditions if c.type == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "VLLMFailedOver")
    assert {"FailedOver"} <= {e.reason for e in decision.events}


def test_ollama_scaled_down_once_every_consumer_is_migrated() -> None:
    s = spec(migration={**MIGRATION, "afterMigration": "ScaleDownOllama"})
    done = [
        ConsumerStatus(name=n, weight=100, service="s", endpoint="e", phase="Migrated", step=2)
        for n in ("notes", "rag")
    ]
    previous = InferenceBackendStatus(
        consumers=done,
        migration=MigrationStatus(spec_hash=spec_hash(s.migration)),  # type: ignore[arg-type]
    )
    decision = decide(snapshot(s, previous), Observations(vllm_ready=True), NOW)
    assert decision.desired is not None
    ollama = next(
        o
        for o in decision.desired
        if o["kind"] == "Deployment" and o["metadata"]["labels"][COMPONENT_LABEL] == "ollama"
    )
    assert ollama["spec"]["replicas"] == 0
    assert decision.status.migration is not None
    assert decision.status.migration.migrated == "2/2"


def test_rollout_metrics_follow_the_status() -> None:
    from prometheus_client import REGISTRY

    from inferops.api.status import AnalysisResult
    from inferops.metrics import record_migration

    def value(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"namespace": "m", "backend": "b", **labels})

    running = ConsumerStatus(
        name="notes", weight=50, service="s", endpoint="e", phase="Progressing", step=2
    )
    failed = AnalysisResult(verdict="Fail", time="2026-11-26T10:00:10Z", step=2)
    rolled = running.model_copy(
        update={
            "phase": "RolledBack",
            "weight": 0,
            "last_analysis": failed,
            "last_sample_at": failed.time,
        }
    )
    record_migration(
        "m", "b", InferenceBackendStatus(), InferenceBackendStatus(consumers=[running])
    )
    assert value("inferops_migration_consumer_weight", consumer="notes") == 50
    assert value("inferops_migration_consumer_step", consumer="notes") == 2  # from 1, as status
    record_migration(
        "m",
        "b",
        InferenceBackendStatus(consumers=[running]),
        InferenceBackendStatus(consumers=[rolled]),
    )
    assert value("inferops_migration_consumer_weight", consumer="notes") == 0
    assert value("inferops_migration_consumer_step", consumer="notes") == 2  # still step 2
    assert value("inferops_migration_rollbacks_total", consumer="notes") == 1
    assert value("inferops_migration_analyses_total", consumer="notes", verdict="Fail") == 1
    assert value("inferops_migration_consumer_phase", consumer="notes", phase="RolledBack") == 1
    assert value("inferops_migration_consumer_phase", consumer="notes", phase="Progressing") is None


def test_a_migrated_consumer_failing_its_watch_makes_the_resource_degraded() -> None:
    """Issue 16's case: vLLM's pods Ready, every consumer migrated, vLLM answers 500 (the
    router falls back to Ollama for all of them). The resource said Ready and Completed."""
    from inferops.migration.figures import EngineFigures, Figures

    s = spec(migration=MIGRATION)
    done = [
        ConsumerStatus(name=n, weight=100, service="s", endpoint="e", phase="Migrated", step=2)
        for n in ("notes", "rag")
    ]
    previous = InferenceBackendStatus(
        phase="Ready",
        consumers=done,
        migration=MigrationStatus(spec_hash=spec_hash(s.migration)),  # type: ignore[arg-type]
    )
    failing = Figures(
        vllm=EngineFigures(requests=40, errors=40, ttft_p95=None, tpot_p95=None),
        ollama=EngineFigures(requests=40, errors=0, ttft_p95=0.2, tpot_p95=0.02),
    )
    snap = snapshot(s, previous)
    decision = decide(snap, Observations(vllm_ready=True, figures={"notes": failing}), NOW)
    assert table_weights(decision.desired) == {"notes": 100, "rag": 100}  # Report: kept
    assert decision.status.phase == "Degraded"
    by_type = {c.type: c for c in decision.status.conditions}
    assert (by_type["Degraded"].status, by_type["Degraded"].reason) == ("True", "WatchFailed")
    assert by_type["Ready"].status == "False"
    assert "notes: errorRate 1 > 0.05" in by_type["Degraded"].message
    assert (by_type["Migrating"].reason, by_type["Migrating"].status) == ("WatchFailed", "False")
    assert {"WatchFailed"} <= {e.reason for e in decision.events}


def test_watch_metrics_follow_the_status() -> None:
    from prometheus_client import REGISTRY

    from inferops.api.status import AnalysisResult, WatchStatus
    from inferops.metrics import record_migration

    def value(name: str) -> float | None:
        labels = {"namespace": "w", "backend": "b", "consumer": "notes"}
        return REGISTRY.get_sample_value(name, labels)

    ok = ConsumerStatus(
        name="notes",
        weight=100,
        service="s",
        endpoint="e",
        phase="Migrated",
        step=2,
        watch=WatchStatus(samples=1),
        last_analysis=AnalysisResult(verdict="Pass", time="2026-11-26T10:00:00Z", step=2),
        last_sample_at="2026-11-26T10:00:00Z",
    )
    failed = AnalysisResult(verdict="Fail", time="2026-11-26T10:01:00Z", step=2)
    failing = ok.model_copy(
        update={
            "watch": WatchStatus(failing=True, failed_samples=1, samples=2),
            "last_analysis": failed,
            "last_sample_at": failed.time,
        }
    )
    record_migration("w", "b", InferenceBackendStatus(), InferenceBackendStatus(consumers=[ok]))
    assert value("inferops_migration_watch_failing") == 0
    assert value("inferops_migration_watch_failures_total") is None
    record_migration(
        "w",
        "b",
        InferenceBackendStatus(consumers=[ok]),
        InferenceBackendStatus(consumers=[failing]),
    )
    assert value("inferops_migration_watch_failing") == 1
    assert value("inferops_migration_watch_failures_total") == 1
    rolled = failing.model_copy(update={"phase": "RolledBack", "weight": 0})
    record_migration(
        "w",
        "b",
        InferenceBackendStatus(consumers=[failing]),
        InferenceBackendStatus(consumers=[rolled]),
    )
    assert value("inferops_migration_watch_failing") is None  # not migrated: no watch
