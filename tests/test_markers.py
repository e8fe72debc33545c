"""The markers that say what a test needs: registered (so `--strict-markers` refuses a
misspelt one), on every e2e module, and required of a test using a fixture that starts a
component (testsupport/markers.py; e2e/conftest.py refuses such a test at collection)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest
from testsupport import markers

REPO = Path(__file__).resolve().parents[1]
E2E_MODULES = sorted((REPO / "e2e").glob("test_*.py"))


def registered() -> set[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]
    assert "--strict-markers" in config["ini_options"]["addopts"]
    return {line.split(":")[0] for line in config["ini_options"]["markers"]}


def module_markers(path: Path) -> list[str] | None:
    """The names in the module's `pytestmark = needs(...)`, None without one."""
    for node in ast.parse(path.read_text()).body:
        targets = (
            [t.id for t in node.targets if isinstance(t, ast.Name)]
            if isinstance(node, ast.Assign)
            else []
        )
        if targets == ["pytestmark"]:
            assert isinstance(node.value, ast.Call), f"{path.name}: pytestmark = needs(...)"
            assert ast.unparse(node.value.func) == "needs", f"{path.name}: pytestmark = needs(...)"
            return [ast.literal_eval(a) for a in node.value.args]
    return None


def test_the_markers_are_registered_with_what_they_need() -> None:
    assert registered() == {"e2e", *markers.NEEDS}


@pytest.mark.parametrize("path", E2E_MODULES, ids=lambda p: p.name)
def test_every_e2e_module_says_what_it_starts(path: Path) -> None:
    found = module_markers(path)
    assert found, f"{path.name} has no pytestmark naming what it needs"
    assert set(found) <= set(markers.NEEDS), found


@pytest.mark.parametrize(
    ("fixtures", "declared", "lacking"),
    [
        (["kubectl", "namespace"], ["cluster"], []),
        (["namespace"], [], []),  # not one of the fixtures that start something
        (["kubectl", "operator"], ["helm"], ["cluster"]),
        (["plane", "kubectl"], ["cluster", "vllm"], ["ollama", "prometheus"]),
        (["tmp_path"], ["vllm"], []),  # more than the fixtures say: the test starts it
    ],
)
def test_a_fixture_that_starts_a_component_needs_its_markers(
    fixtures: list[str], declared: list[str], lacking: list[str]
) -> None:
    assert markers.missing(fixtures, declared) == lacking


def test_needs_refuses_an_unknown_marker() -> None:
    assert [m.name for m in markers.needs("cluster", "helm")] == ["cluster", "helm"]
    with pytest.raises(ValueError, match=r"unknown markers \['gpu'\]"):
        markers.needs("cluster", "gpu")


def test_what_the_fixtures_start_is_registered() -> None:
    assert set().union(*markers.STARTED_BY.values()) <= set(markers.NEEDS)
