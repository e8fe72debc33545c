"""Helpers of the dashboard's and the alerts' tests (unit and e2e): the alert rules the chart
renders, an alert's condition split from the expression it compares, and `promtool`."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from testsupport.prometheus import promtool

CONDITION = re.compile(
    r"^(?P<series>.*?)\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<threshold>[0-9.]+)\s*$", re.DOTALL
)
"""An alert's expression: PromQL, then one comparison with a number (the chart's rule)."""


def split_condition(expr: str) -> tuple[str, str, float]:
    """(the expression compared, the operator, the threshold) of an alert's expression."""
    match = CONDITION.match(expr.strip())
    if match is None:
        raise ValueError(f"not `<expression> <comparison> <number>`: {expr!r}")
    return match["series"], match["op"], float(match["threshold"])


def rule_groups(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The groups of the one PrometheusRule among a chart's rendered objects."""
    found = [o for o in objects if o["kind"] == "PrometheusRule"]
    assert len(found) == 1, f"{len(found)} PrometheusRule objects"
    groups: list[dict[str, Any]] = found[0]["spec"]["groups"]
    return groups


def alerts(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The alert rules of the rendered PrometheusRule, by name."""
    return {rule["alert"]: rule for group in rule_groups(objects) for rule in group["rules"]}


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60)


def check_rules(groups: list[dict[str, Any]], directory: Path) -> subprocess.CompletedProcess[str]:
    """`promtool check rules` on a rules file holding `groups` (what Prometheus loads)."""
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return run_promtool("check", "rules", str(path))
