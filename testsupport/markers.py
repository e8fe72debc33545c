"""The pytest markers that say what a test needs (registered in pyproject.toml, where
`--strict-markers` refuses any other), and what the e2e tier's shared fixtures start, so a
test using one carries its markers. Markers select (`-m "not vllm"`); they never skip.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

NEEDS: dict[str, str] = {
    "cluster": "a Kubernetes API server: the local cluster (started when missing) or KUBECONFIG's",
    "vllm": "real vLLM: its cached CPU environment, and a server started from it",
    "ollama": "real Ollama: its cached build, and a server started from it",
    "prometheus": "Debian's prometheus package: a Prometheus server or promtool",
    "helm": "the project's pinned helm",
}

STARTED_BY: dict[str, frozenset[str]] = {
    "kubectl": frozenset({"cluster"}),
    "ollama_engine": frozenset({"ollama"}),
    "plane": frozenset({"cluster", "vllm", "ollama", "prometheus"}),
}
"""e2e fixture -> the markers of what it starts (fixtures using these inherit them)."""


def needs(*names: str) -> list[pytest.MarkDecorator]:
    """A module's `pytestmark`: the markers of what its tests start."""
    unknown = sorted(set(names) - set(NEEDS))
    if unknown:
        raise ValueError(f"unknown markers {unknown}: use those of {sorted(NEEDS)}")
    return [getattr(pytest.mark, name) for name in names]


def missing(fixtures: Iterable[str], markers: Iterable[str]) -> list[str]:
    """The markers a test using `fixtures` (their closure) lacks, sorted."""
    wanted: set[str] = set()
    for fixture in fixtures:
        wanted |= STARTED_BY.get(fixture, frozenset())
    return sorted(wanted - set(markers))


__all__ = ["NEEDS", "STARTED_BY", "missing", "needs"]
