"""The chart's dashboard and alerts against real series: every panel's query and every
alert's expression, run on the e2e Prometheus while a consumer's traffic flows through the
real router to the real vLLM CPU build and the Ollama stand-in, and the operator (scraped
too, as the chart's ServiceMonitor does) migrates it.

An alert's expression is a condition (`<expression> > 0.05`): a condition that does not hold
returns nothing, which proves nothing about the query. So for each alert the expression
before its final comparison (testsupport/monitoring.py `split_condition`) must return series; the
rollback and fallback-rate alerts, made to hold here (vLLM fails every request until the
canary is rolled back), must return series as written. Whether each alert holds exactly when
it should is promtool's unit test of the rules (tests/test_chart.py).

A series may exist in only part of the run (the Progressing phase before the rollback,
fallbacks after the fault), so each query is asked until it has answered with series once.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from testsupport.helm import Helm, find_helm
from testsupport.markers import needs
from testsupport.monitoring import alerts, split_condition
from testsupport.prometheus import Prometheus

from e2e.dataplane import DataPlane, Traffic
from e2e.harness import Kubectl, OperatorProcess, wait_for
from e2e.localcluster.build import HELM
from e2e.test_backend import NAME
from e2e.test_migration import consumers_of, served_weight, start_held_at_half, wait_consumer
from inferops import dashboard

pytestmark = needs("cluster", "vllm", "ollama", "prometheus", "helm")

CONSUMER = "notes"


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The alert rules as the chart renders them with its default thresholds."""
    helm = Helm(
        find_helm(HELM),
        tmp_path_factory.mktemp("helm"),
    )
    return alerts(helm.render({"prometheusRule": {"enabled": True}}))


class Seen:
    """Queries asked again and again; the label sets each has answered with, kept."""

    def __init__(self, prometheus: Prometheus, queries: dict[str, str]) -> None:
        self.prometheus = prometheus
        self.queries = queries
        self.answers: dict[str, list[dict[str, str]]] = {name: [] for name in queries}

    def ask(self) -> list[str]:
        """Asks every query once; returns those without series so far."""
        for name, expr in self.queries.items():
            for series in self.prometheus.query(expr):
                if series["metric"] not in self.answers[name]:
                    self.answers[name].append(series["metric"])
        return [name for name, answers in self.answers.items() if not answers]

    def until(self, names: list[str], timeout: float) -> None:
        wait_for(
            f"series from {names}", lambda: not set(names) & set(self.ask()), timeout, interval=1
        )

    def labels(self, prefix: str, label: str) -> set[str]:
        """The values of `label` in the answers of the queries named `prefix...`."""
        return {
            metric.get(label, "")
            for name, answers in self.answers.items()
            if name.startswith(prefix)
            for metric in answers
        }


def label_values(
    prometheus: Prometheus, variable: dashboard.Variable, values: dict[str, str]
) -> list[str]:
    """What Grafana's `label_values(metric, label)` offers for a dashboard variable."""
    match = dashboard.substitute(variable.metric, values)
    found: list[str] = prometheus.api(
        f"/api/v1/label/{variable.label_name}/values", **{"match[]": match}
    )
    return found


def test_every_panel_and_alert_returns_series_while_traffic_flows(
    kubectl: Kubectl,
    migrator: OperatorProcess,
    plane: DataPlane,
    namespace: str,
    rules: dict[str, dict[str, Any]],
) -> None:
    assert plane.faults is not None and plane.prometheus is not None
    prometheus = plane.prometheus
    start_held_at_half(kubectl, plane, namespace, 0, CONSUMER)
    # The operator's metrics too, without target labels: its series keep their own
    # `namespace` (the InferenceBackend's), as the chart's ServiceMonitor (honorLabels) does.
    prometheus.set_targets([*prometheus.targets, (f"127.0.0.1:{migrator.metrics_port}", {})])
    values = {
        "namespace": namespace,
        "backend": NAME,
        "consumer": CONSUMER,
        "__rate_interval": "30s",
        "__range": "1h",
    }
    panels = {
        f"panel {title!r} #{i}": dashboard.substitute(expr, values)
        for i, (title, expr) in enumerate(dashboard.expressions())
    }
    # The watch's alert needs a migrated consumer; e2e/test_watch.py runs its expression.
    compared = {
        f"alert {name} without its condition": split_condition(rule["expr"])[0]
        for name, rule in rules.items()
        if name != "InferopsMigratedConsumerFailing"
    }
    firing = {
        f"alert {name}": rules[name]["expr"]
        for name in ("InferopsConsumerRolledBack", "InferopsHighFallbackRate")
    }
    seen = Seen(prometheus, {**panels, **compared, **firing})
    stalled = "alert InferopsMigrationStepStalled without its condition"

    with Traffic(plane, namespace, CONSUMER) as traffic:
        wait_consumer(kubectl, namespace, CONSUMER, "passes at 50%", passedSamples=1)
        # What needs the Progressing phase, before the fault ends it.
        seen.until([stalled], 30)
        answered = sum(1 for answers in seen.answers.values() if answers)
        print(f"\nwhile progressing at 50%: {answered}/{len(seen.queries)} with series")
        plane.faults.standin.faults.fail_status = 500  # vLLM fails every request from now on
        try:
            wait_for(
                f"{CONSUMER} back at 0% in the router",
                lambda: served_weight(plane, CONSUMER) == 0,
                60,
                interval=0.2,
            )
            # Ollama alone for a while: the fallbacks' and the rollback's series settle.
            time.sleep(3)
        finally:
            plane.faults.standin.faults.clear()
        seen.until(list(seen.queries), 60)
        grafana = {v.name: label_values(prometheus, v, values) for v in dashboard.VARIABLES}

    assert consumers_of(kubectl, namespace)[CONSUMER]["phase"] == "RolledBack"
    assert traffic.errors == [] and traffic.ok > 0  # every vLLM failure fell back to Ollama
    for name, answers in seen.answers.items():
        print(f"{name}: {len(answers)} series")
    # The comparisons show both engines, side by side.
    for title in ("Requests by engine", "Time to first token p95", "Time per output token p95"):
        assert seen.labels(f"panel {title!r}", "engine") == {"vllm", "ollama"}, title
    assert seen.labels("alert InferopsConsumerRolledBack", "consumer") == {CONSUMER}
    assert seen.labels("alert InferopsHighFallbackRate", "backend") == {NAME}
    # The dashboard's variables offer this backend (the router pods' name prefix, by the
    # variable's regex, as Grafana applies it) and this consumer.
    assert namespace in grafana["namespace"]
    backend = next(v for v in dashboard.VARIABLES if v.name == "backend")
    prefixes = {
        m[1] for pod in grafana["backend"] if (m := re.fullmatch(backend.regex.strip("/"), pod))
    }
    assert NAME in prefixes
    assert CONSUMER in grafana["consumer"]


def test_another_namespace_selects_nothing(plane: DataPlane) -> None:
    """The check above can fail: the same queries for a namespace without a router return
    no series (on the same Prometheus, after the test above filled it)."""
    assert plane.prometheus is not None
    values = {
        "namespace": "nowhere",
        "backend": NAME,
        "consumer": CONSUMER,
        "__rate_interval": "30s",
        "__range": "1h",
    }
    for title, expr in dashboard.expressions():
        assert plane.prometheus.query(dashboard.substitute(expr, values)) == [], title
