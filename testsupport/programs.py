"""The project's own programs (the router, the operator) run as processes the way they run in
their pods, optionally under the read-only root guard, and the Prometheus text they serve."""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

from inferops.api.routing import RoutingTable
from testsupport import readonly as ro
from testsupport.process import ManagedProcess, free_port

REPO = Path(__file__).resolve().parents[1]


def scrape(url: str) -> dict[str, float]:
    """A Prometheus text page as {"name{labels}": value}."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


def total(metrics: dict[str, float], name: str, **labels: str) -> float | None:
    """The sum of `name`'s series that carry all `labels` (a series without labels counts
    when none are asked for); None when there is none."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    found = [
        value
        for key, value in metrics.items()
        if (key.startswith(name + "{") or key == name) and all(label in key for label in wanted)
    ]
    return sum(found) if found else None


def python_env(base: dict[str, str], **extra: str) -> dict[str, str]:
    """`base` with this checkout's operator package importable, as in the images."""
    path = os.pathsep.join(filter(None, [str(REPO / "operator"), base.get("PYTHONPATH")]))
    return {**base, "PYTHONPATH": path, **extra}


def python_command(module: str, readonly: Path | None) -> list[str]:
    """`python -m module`, under testsupport/readonly.py's guard when `readonly` is a directory."""
    return ro.command(readonly, module) if readonly else [sys.executable, "-m", module]


def one_consumer_table(path: Path, vllm: str, ollama: str) -> list[str]:
    """Write a routing table for llama3.2 on the engines at ``vllm`` and ``ollama``, with
    one consumer, notes (host ``llama32-notes``), all on vLLM; return the router's arguments
    that read it."""
    table = RoutingTable.model_validate(
        {
            "model": "llama3.2",
            "engines": {"vllm": {"url": vllm}, "ollama": {"url": ollama}},
            "consumers": [{"name": "notes", "hosts": ["llama32-notes"], "weight": 100}],
        }
    )
    path.write_text(table.model_dump_json(by_alias=True))
    return ["--table-file", str(path)]


class RouterProcess:
    """The router run as its own process, fed by a table file or a ConfigMap (`source`, its
    command-line arguments), with `engine_urls` replacing the table's engine URLs."""

    def __init__(
        self,
        source: list[str],
        log: Path,
        env: dict[str, str] | None = None,
        engine_urls: dict[str, str] | None = None,
        readonly: Path | None = None,
    ) -> None:
        self.port = free_port()
        args = [
            *python_command("inferops.router", readonly),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *source,
        ]
        for engine, url in (engine_urls or {}).items():
            args += ["--engine-url", f"{engine}={url}"]
        full_env = python_env(env or dict(os.environ))
        if readonly:
            full_env = ro.environment(full_env, readonly)
        self.process = ManagedProcess(
            "router",
            args,
            env=full_env,
            log_path=log,
            health_url=f"{self.url}/readyz",
            cwd=readonly,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        """Returns once the router has loaded a table (`/readyz`)."""
        self.process.start(timeout)

    def stop(self) -> None:
        self.process.stop(grace=30)

    def metric(self, name: str, **labels: str) -> float | None:
        return total(scrape(f"{self.url}/metrics"), name, **labels)
