"""helm for the chart's tests (unit and e2e): a binary found once, run with its own homes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "inferops"
RELEASE, NAMESPACE = "inferops", "inferops"


class HelmBuild(Protocol):
    """The project's pinned helm build (``e2e.localcluster.build.HELM``), which test support
    may not import."""

    version: str

    def is_complete(self) -> bool: ...

    def path(self, binary: str) -> Path: ...


def find_helm(build: HelmBuild) -> str:
    """The project's pinned build of helm when complete, else a helm on PATH; else the test
    fails saying how to get one."""
    if build.is_complete():
        return str(build.path("helm"))
    found = shutil.which("helm")
    if found:
        return found
    pytest.fail(
        "no helm binary: neither the project's build nor one on PATH; run `make prepare` "
        f"(builds helm {build.version} with the local cluster's tools) or install helm",
        pytrace=False,
    )


class Helm:
    def __init__(self, binary: str, home: Path) -> None:
        self.binary = binary
        # helm wants writable config, cache and data dirs: keep it off the user's own.
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        self.values_dir = home

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, *args], capture_output=True, text=True, env=self.env, timeout=120
        )

    def template(
        self, values: dict[str, Any] | None = None, chart: Path = CHART
    ) -> subprocess.CompletedProcess[str]:
        path = self.values_dir / "values.yaml"
        path.write_text(yaml.safe_dump(values or {}))
        return self.run("template", RELEASE, str(chart), "--namespace", NAMESPACE, "-f", str(path))

    def render(self, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        result = self.template(values)
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
