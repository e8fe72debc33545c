"""The Grafana dashboard: the committed JSON is the generator's, its queries parse as PromQL
(Prometheus' own parser, through `promtool check rules`), and its layout is one Grafana
loads. Running the queries against real series is the e2e tier's (e2e/test_dashboard.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from testsupport.monitoring import check_rules

from inferops import dashboard

pytestmark = [pytest.mark.prometheus]

VALUES = {
    "namespace": "shop",
    "backend": "llama32",
    "consumer": "notes",
    "__rate_interval": "1m",
    "__range": "3h",
}
"""What Grafana puts in place of the dashboard's variables before it sends a query."""


def committed() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(dashboard.DASHBOARD_PATH.read_text())
    return data


def test_committed_dashboard_matches_fresh_generation() -> None:
    assert dashboard.DASHBOARD_PATH.read_text() == dashboard.render(), (
        "charts/inferops/files/dashboard.json is stale: run `python -m inferops.dashboard`"
    )


def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    """Each query, its variables substituted, as the expression of a recording rule: promtool
    parses every one with Prometheus' parser and names the rule of any that fails."""
    queries = dashboard.expressions()
    rules = [
        {"record": f"dashboard:query_{i}", "expr": dashboard.substitute(expr, VALUES)}
        for i, (_, expr) in enumerate(queries)
    ]
    result = check_rules([{"name": "dashboard", "rules": rules}], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_promtool_refuses_a_broken_query(tmp_path: Path) -> None:
    """The check above can fail: a query with an unbalanced parenthesis is refused."""
    title, expr = dashboard.expressions()[0]
    rules = [{"record": "dashboard:broken", "expr": dashboard.substitute(expr, VALUES) + ")"}]
    result = check_rules([{"name": "dashboard", "rules": rules}], tmp_path)
    assert result.returncode != 0, f"{title}: a broken query was accepted"
    assert "parse error" in result.stdout + result.stderr


def test_the_panels_cover_the_comparison_per_consumer() -> None:
    """What a migration is judged and steered by, per consumer, with both engines."""
    titles = [panel.title for panel in dashboard.PANELS]
    assert titles == [
        "Requests by engine",
        "Error share by engine",
        "Time to first token p95",
        "Time per output token p95",
        "Weight to vLLM",
        "Step",
        "Phase",
        "Fallbacks to Ollama",
    ]
    for panel in dashboard.PANELS:
        for query in panel.queries:
            assert 'consumer="$consumer"' in query.expr, panel.title
    board = committed()
    rows = [p for p in board["panels"] if p["type"] == "row"]
    assert [r.get("repeat") for r in rows] == [None, "consumer"]


def test_the_json_is_a_dashboard_grafana_loads() -> None:
    board = committed()
    assert board["uid"] == dashboard.UID and board["schemaVersion"] >= 36
    names = [v["name"] for v in board["templating"]["list"]]
    assert names == ["datasource", "namespace", "backend", "consumer"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert exprs == [expr for _, expr in dashboard.expressions()]


def test_substitute_names_a_variable_without_value() -> None:
    assert dashboard.substitute('x{a="$namespace"}', {"namespace": "shop"}) == 'x{a="shop"}'
    with pytest.raises(KeyError, match=r"\$backend"):
        dashboard.substitute('x{a="$backend"}', {"namespace": "shop"})
