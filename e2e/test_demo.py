"""What `make demo` prints to try next works as printed, from a new shell.

The demo leaves its data plane running in the background (`e2e.demoplane`) and prints
commands: the shell set-up, `kubectl ib`, the official clients and curl against consumers'
endpoints. Here the same background data plane serves the example in a test namespace, and
each printed command runs in `bash` with only the system PATH, exactly as printed after the
set-up line. The demo's migration itself is not rerun: `test_migration.py` covers it.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from testsupport.markers import needs

from e2e.demo import next_steps
from e2e.demoplane import BackgroundPlane
from e2e.harness import REPO, Kubectl, OperatorProcess, wait_for

pytestmark = needs("cluster", "vllm", "ollama", "prometheus")

EXAMPLE = yaml.safe_load((REPO / "examples" / "inferencebackend.yaml").read_text())
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
"""A new shell's PATH: neither the project's virtual environment nor the cluster's tools."""


@pytest.fixture
def demo_plane(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> Iterator[BackgroundPlane]:
    manifest: dict[str, Any] = copy.deepcopy(EXAMPLE)
    del manifest["spec"]["migration"]  # weights stay as applied: notes 100% on vLLM
    manifest["spec"]["consumers"][0]["weight"] = 100
    kubectl.apply(manifest, namespace)
    plane = BackgroundPlane(tmp_path / "plane")
    plane.start(kubectl, namespace, manifest["metadata"]["name"])
    try:
        plane.wait("the router", "router_url", 600)
        yield plane
    finally:
        plane.stop()
    assert plane.running() is None


def run_printed(setup: str, command: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": SYSTEM_PATH, "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(
        ["bash", "-c", f"set -o pipefail; {setup}; {command}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_printed_commands_work_from_a_new_shell(
    kubectl: Kubectl, demo_plane: BackgroundPlane, namespace: str
) -> None:
    steps = next_steps(kubectl, demo_plane.state.router_url, namespace)
    setup, *commands = [command for command, _ in steps]
    assert setup.startswith("export ")
    ran = 0
    for command in commands:
        if command.startswith("make "):
            continue  # cluster-down would stop this test's own cluster
        result = run_printed(setup, command)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        ran += 1
        if "chat/completions" in command:
            answer = json.loads(result.stdout)
            assert answer["choices"][0]["message"]["content"], result.stdout
        elif command.startswith("python -c"):
            assert result.stdout.strip(), f"{command}: no answer printed"
        elif command.startswith("kubectl ib status"):
            assert "notes" in result.stdout and "rag" in result.stdout, result.stdout
        elif "/metrics" in command:
            assert 'consumer="notes"' in result.stdout, result.stdout
    assert ran == len(commands) - 1
    # The clients' requests went through the consumers' endpoints, as their Host headers say.
    metrics = run_printed(setup, f"curl -s {demo_plane.state.router_url}/metrics").stdout
    assert 'consumer="rag"' in metrics


def test_stopping_the_demo_plane_stops_every_part(
    kubectl: Kubectl, demo_plane: BackgroundPlane
) -> None:
    state = demo_plane.state
    demo_plane.stop()
    assert demo_plane.running() is None
    for what, url in (
        ("router", state.router_url),
        ("Prometheus", state.prometheus_url),
        ("fault control", state.control_url),
    ):

        def refused(url: str = url) -> bool:
            return run_printed("true", f"curl -s -m 2 {url}/").returncode != 0

        wait_for(f"the {what} to stop", refused, 30)
