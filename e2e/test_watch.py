"""After the migration, on real parts (issue 16, items 6 and 7): the comparison of vLLM
against Ollama a migration leaves in status and in `kubectl ib status`, and the watch that
keeps judging a migrated consumer. The data plane is the migration tier's (e2e/dataplane.py):
the router process, real vLLM (CPU build) behind a fault injector, real Ollama, Prometheus.

The case the watch exists for: every consumer migrated, vLLM's pods Ready, and vLLM answering
HTTP 500 to every request. The router falls back to Ollama, so clients see no error, and the
resource used to say Ready and Completed. "Within two analysis intervals" is asserted as a
count of watch samples (one per interval), not as a time.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from testsupport.helm import Helm, find_helm
from testsupport.markers import needs
from testsupport.monitoring import alerts
from testsupport.programs import total

from e2e.dataplane import DataPlane, Traffic
from e2e.harness import Kubectl, OperatorProcess, wait_for
from e2e.localcluster.build import HELM
from e2e.test_backend import NAME, backend, condition
from e2e.test_migration import (
    FAST,
    consumers_of,
    kubectl_ib,
    start,
    wait_back_on_ollama,
    wait_consumer,
)

pytestmark = needs("cluster", "vllm", "ollama", "prometheus", "helm")

STEPS = [{"weight": 50}, {"weight": 100}]
# "TTFT p95 3.1x faster", "... 1.4x slower", "... about the same", or too few samples.
LATENCY = r"(\d+(\.\d)?x (faster|slower)|about the same|: too few samples \(.*?\)|: no data)"
SUMMARY = re.compile(rf"^TTFT p95 ?{LATENCY}, TPOT p95 ?{LATENCY}, errors [\d.]+% vs [\d.]+%$")


@pytest.fixture(scope="module")
def alert_expr(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The watch's alert as the chart renders it."""
    helm = Helm(
        find_helm(HELM),
        tmp_path_factory.mktemp("helm"),
    )
    rules = alerts(helm.render({"prometheusRule": {"enabled": True}}))
    expr: str = rules["InferopsMigratedConsumerFailing"]["expr"]
    return expr


def events_of(kubectl: Kubectl, namespace: str) -> str:
    return kubectl.run(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={NAME}"
    ).stdout


def migrated(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    """The consumer `notes` once Migrated (its traffic runs)."""
    return wait_consumer(kubectl, namespace, "notes", "migrated", 240, phase="Migrated")


def failing_watch(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    notes = consumers_of(kubectl, namespace)["notes"]
    return notes if (notes.get("watch") or {}).get("failing") else None


def test_migrated_consumer_whose_vllm_fails_is_reported_within_two_intervals(
    kubectl: Kubectl,
    migrator: OperatorProcess,
    plane: DataPlane,
    namespace: str,
    alert_expr: str,
) -> None:
    assert plane.faults is not None and plane.prometheus is not None
    prometheus = plane.prometheus
    start(kubectl, plane, namespace, ["notes"], STEPS)
    # The operator's metrics too, for the chart's alert (its series keep their own labels);
    # after `start`, which points Prometheus at this test's routers.
    prometheus.set_targets([*prometheus.targets, (f"127.0.0.1:{migrator.metrics_port}", {})])
    with Traffic(plane, namespace, "notes") as traffic:
        notes = migrated(kubectl, namespace)

        # The comparison the migration leaves: both engines pooled, and its line.
        comparison = notes["comparison"]
        assert isinstance(comparison, dict)
        print(f"\ncomparison: {comparison['summary']}")
        assert SUMMARY.match(comparison["summary"]), comparison["summary"]
        assert comparison["vllm"]["windows"] >= 2  # at 50% and at 100%
        assert comparison["ollama"]["windows"] >= 1  # at 50% only
        assert comparison["vllm"]["requests"] > 0 and comparison["ollama"]["requests"] > 0
        assert comparison["vllm"]["outputTokensPerSecond"] > 0
        shown = kubectl_ib(kubectl, "status", "-n", namespace, NAME)
        assert f"vLLM vs Ollama over the migration: {comparison['summary']}" in shown

        # Healthy: the watch samples and passes; the resource is Ready and Completed.
        watched = wait_consumer(
            kubectl,
            namespace,
            "notes",
            "watched",
            60,
            phase="Migrated",
            message=("migrated; watched: every gate passed"),
        )
        assert watched["watch"]["failing"] is False
        assert condition(backend(kubectl, namespace), "Migrating")["reason"] == "Completed"

        before = consumers_of(kubectl, namespace)["notes"]["watch"]["samples"]
        injected = time.monotonic()
        plane.faults.standin.faults.fail_status = 500
        try:
            failing = wait_for(
                "the watch reports notes", lambda: failing_watch(kubectl, namespace), 90, 0.5
            )
            reported = time.monotonic() - injected
            resource = backend(kubectl, namespace)
            shown = kubectl_ib(kubectl, "status", "-n", namespace, NAME)
            metrics = migrator.metrics()
            firing = wait_for(
                "the chart's alert on the watch holds",
                lambda: [
                    series["metric"]
                    for series in prometheus.query(alert_expr)
                    if series["metric"].get("namespace") == namespace
                ],
                30,
                interval=1,
            )
        finally:
            plane.faults.standin.faults.clear()
    print(f"reported {reported:.1f}s after vLLM began answering 500 (interval 10s)")
    assert failing["watch"]["samples"] - before <= 2, failing["watch"]
    assert failing["phase"] == "Migrated" and failing["weight"] == 100  # Report: kept
    assert "errorRate" in failing["watch"]["message"]
    assert resource["status"]["phase"] == "Degraded"
    assert condition(resource, "Ready")["status"] == "False"
    assert condition(resource, "Degraded")["reason"] == "WatchFailed"
    assert condition(resource, "Migrating")["reason"] == "WatchFailed"
    assert "watch: FAILING for" in shown
    assert "WatchFailed" in events_of(kubectl, namespace)
    labels = {"namespace": namespace, "backend": NAME, "consumer": "notes"}
    assert total(metrics, "inferops_migration_watch_failing", **labels) == 1
    assert (total(metrics, "inferops_migration_watch_failures_total", **labels) or 0) >= 1
    assert [(m["backend"], m["consumer"]) for m in firing] == [(NAME, "notes")]
    assert traffic.errors == []  # the router fell back to Ollama: clients saw nothing
    # The comparison is the migration's: kept as it was through the watch.
    assert failing["comparison"] == comparison


def test_rollback_policy_sends_a_failing_migrated_consumer_back_to_ollama(
    kubectl: Kubectl, migrator: OperatorProcess, plane: DataPlane, namespace: str
) -> None:
    assert plane.faults is not None
    start(
        kubectl,
        plane,
        namespace,
        ["notes"],
        STEPS,
        analysis={**FAST, "failureLimit": 0},
        watch={"onFailure": "Rollback"},
    )
    with Traffic(plane, namespace, "notes") as traffic:
        notes = migrated(kubectl, namespace)
        before = (notes.get("watch") or {}).get("samples", 0)
        plane.faults.standin.faults.fail_status = 500
        try:
            wait_back_on_ollama(plane, "notes", 90)
        finally:
            plane.faults.standin.faults.clear()
    notes = consumers_of(kubectl, namespace)["notes"]
    assert notes["phase"] == "RolledBack" and notes["weight"] == 0
    assert "by the watch after migration" in notes["message"]
    assert notes["watch"]["samples"] - before <= 2, notes["watch"]
    assert condition(backend(kubectl, namespace), "Migrating")["reason"] == "RolledBack"
    assert "RolledBack" in events_of(kubectl, namespace)
    assert traffic.errors == []
