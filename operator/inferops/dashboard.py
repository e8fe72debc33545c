"""The Grafana dashboard the chart ships (charts/inferops/files/dashboard.json), generated.

Its panels are one table below (title, unit, queries); the generator adds Grafana's layout
and boilerplate. Kept as Python because the queries are what matters and what the tests
check: the unit tier hands every query to `promtool` to parse, the e2e tier runs each
against a Prometheus scraping a real router and operator while traffic flows, and a drift
test fails when the committed JSON differs from a fresh generation (as for the CRD). Run
`python -m inferops.dashboard` to rewrite the file, `--check` to fail when it is stale.

Per consumer (a row repeated for each value of `$consumer`): vLLM against Ollama request
rate, error share, time to first token and time per output token (p95), the weight and step
over time, the phase and the fallbacks. The router's series are selected as the operator's
analysis selects them by default: the backend's namespace, and the router pods named
`<backend>-router-...`.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferops.api import generated

DASHBOARD_PATH = Path(__file__).resolve().parents[2] / "charts/inferops/files/dashboard.json"
UID = "inferops-migration"

ROUTER = 'namespace="$namespace",pod=~"$backend-router-.+",consumer="$consumer"'
"""The router's series of one consumer (its pods' labels, as Kubernetes discovery sets)."""
OPERATOR = 'namespace="$namespace",backend="$backend",consumer="$consumer"'
"""The operator's series of one consumer (labels of the metrics themselves)."""
ENGINES = f'{ROUTER},engine!="none"'
WINDOW = "$__rate_interval"


def _rate(metric: str, selector: str, by: str) -> str:
    return f"sum by ({by}) (rate({metric}{{{selector}}}[{WINDOW}]))"


def _p95(histogram: str) -> str:
    return f"histogram_quantile(0.95, {_rate(histogram + '_bucket', ROUTER, 'engine, le')})"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    queries: tuple[Query, ...]
    description: str
    kind: str = "timeseries"


PANELS: tuple[Panel, ...] = (
    Panel(
        "Requests by engine",
        "reqps",
        (Query(_rate("inferops_router_requests_total", ENGINES, "engine"), "{{engine}}"),),
        "Engine attempts per second: a request that fell back counts on both engines.",
    ),
    Panel(
        "Error share by engine",
        "percentunit",
        (
            Query(
                f"{_rate('inferops_router_errors_total', ROUTER, 'engine')} / "
                f"{_rate('inferops_router_requests_total', ENGINES, 'engine')}",
                "{{engine}}",
            ),
        ),
        "Failed attempts / attempts, as the analysis' error-rate gate compares them; vLLM's "
        "failures count here even when a fallback hid them from the client.",
    ),
    Panel(
        "Time to first token p95",
        "s",
        (Query(_p95("inferops_router_time_to_first_token_seconds"), "{{engine}}"),),
        "95th percentile from the request's arrival to the first byte of a stream.",
    ),
    Panel(
        "Time per output token p95",
        "s",
        (Query(_p95("inferops_router_time_per_output_token_seconds"), "{{engine}}"),),
        "95th percentile of the time between output tokens of a stream.",
    ),
    Panel(
        "Weight to vLLM",
        "percent",
        (
            Query(
                f"max by (consumer) (inferops_migration_consumer_weight{{{OPERATOR}}})",
                "decided (operator)",
            ),
            Query(
                f'min by (consumer) (inferops_router_consumer_weight{{{ROUTER},kind="effective"}})',
                "served (lowest router)",
            ),
        ),
        "Percent of the consumer's requests for vLLM: as the operator decided, and as the "
        "routers apply it (0 while vLLM has no ready endpoint).",
    ),
    Panel(
        "Step",
        "none",
        (Query(f"max by (consumer) (inferops_migration_consumer_step{{{OPERATOR}}})", "step"),),
        "The migration step, counting from 1; 0 before the first.",
    ),
    Panel(
        "Phase",
        "none",
        (Query(f"max by (phase) (inferops_migration_consumer_phase{{{OPERATOR}}})", "{{phase}}"),),
        "The consumer's migration phase (Pending, Progressing, Paused, Migrated, RolledBack, "
        "Aborted).",
        kind="state-timeline",
    ),
    Panel(
        "Fallbacks to Ollama",
        "reqps",
        (
            Query(
                _rate("inferops_router_fallbacks_total", ROUTER, "engine, reason"),
                "{{engine}}: {{reason}}",
            ),
        ),
        "Requests retried on Ollama per second, by the failed engine and the reason.",
    ),
)

OVERVIEW: tuple[Panel, ...] = (
    Panel(
        "Routing table stale",
        "none",
        (
            Query(
                'max by (pod) (inferops_router_table_stale{namespace="$namespace",'
                'pod=~"$backend-router-.+"})',
                "{{pod}}",
            ),
        ),
        "1 while a router serves its last good table because the ConfigMap is gone or "
        "invalid: weight changes do not reach it.",
    ),
    Panel(
        "Migration rollbacks",
        "none",
        (
            Query(
                "sum by (consumer) (increase(inferops_migration_rollbacks_total"
                '{namespace="$namespace",backend="$backend"}[$__range]))',
                "{{consumer}}",
            ),
        ),
        "Automatic rollbacks in the dashboard's time range, by consumer.",
        kind="stat",
    ),
)


@dataclass(frozen=True)
class Variable:
    name: str
    label: str
    metric: str
    """The series whose label values are offered (Grafana's `label_values(metric, name)`)."""
    label_name: str
    regex: str = ""
    multi: bool = False


VARIABLES: tuple[Variable, ...] = (
    Variable("namespace", "Namespace", "inferops_router_requests_total", "namespace"),
    # The backend is the router pods' name prefix (`<backend>-router-<hash>-<id>`).
    Variable(
        "backend",
        "InferenceBackend",
        'inferops_router_requests_total{namespace="$namespace"}',
        "pod",
        regex="/(.+)-router-.+/",
    ),
    Variable(
        "consumer",
        "Consumer",
        'inferops_router_requests_total{namespace="$namespace",pod=~"$backend-router-.+"}',
        "consumer",
        multi=True,
    ),
)


def expressions() -> list[tuple[str, str]]:
    """Every panel's queries as (panel title, PromQL with Grafana's variables)."""
    return [(p.title, q.expr) for p in (*OVERVIEW, *PANELS) for q in p.queries]


def substitute(expr: str, values: dict[str, str]) -> str:
    """`expr` with Grafana's `$name` variables replaced as Grafana does before sending it,
    e.g. `{"namespace": "shop", "__rate_interval": "1m", "__range": "1h"}`. A variable
    without a value is an error naming it."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"no value for the dashboard variable ${name}")
        return values[name]

    return re.sub(r"\$(\w+)", one, expr)


def _panel(panel: Panel, panel_id: int, x: int, y: int, width: int) -> dict[str, Any]:
    refs = "ABCDEFGH"
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.kind == "timeseries":
        defaults["custom"] = {"lineWidth": 1, "fillOpacity": 0, "showPoints": "never"}
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "refId": refs[i],
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": q.expr,
                "legendFormat": q.legend,
            }
            for i, q in enumerate(panel.queries)
        ],
    }


def _variable(v: Variable) -> dict[str, Any]:
    query = f"label_values({v.metric}, {v.label_name})"
    return {
        "name": v.name,
        "label": v.label,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "regex": v.regex,
        "refresh": 2,  # on time range change: new consumers appear
        "sort": 1,
        "multi": v.multi,
        "includeAll": v.multi,
        "current": {},
        "options": [],
        "hide": 0,
    }


def build_dashboard() -> dict[str, Any]:
    """The dashboard's JSON model (Grafana 10+), for the sidecar or an import."""
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    width = 12
    sections = ((OVERVIEW, "Overview", None), (PANELS, "Consumer $consumer", "consumer"))
    for rows, title, repeat in sections:
        row: dict[str, Any] = {
            "id": next_id,
            "type": "row",
            "title": title,
            "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            "panels": [],
        }
        if repeat:
            row["repeat"] = repeat
        panels.append(row)
        next_id += 1
        y += 1
        for i, panel in enumerate(rows):
            panels.append(_panel(panel, next_id, (i % 2) * width, y + (i // 2) * 8, width))
            next_id += 1
        y += ((len(rows) + 1) // 2) * 8
    datasource = {
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
    }
    return {
        "uid": UID,
        "title": "inferops: migration by consumer",
        "description": "vLLM against Ollama per consumer, as the inferops router measures "
        "them, and the migration's weight, step and phase as the operator decides them.",
        "tags": ["inferops", "vllm", "ollama"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "timezone": "",
        "templating": {"list": [datasource, *(_variable(v) for v in VARIABLES)]},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build_dashboard(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    return generated.main(argv, "inferops.dashboard", __doc__, DASHBOARD_PATH, render)


if __name__ == "__main__":
    sys.exit(main())
