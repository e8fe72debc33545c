"""A real Prometheus for the migration's e2e tests: Debian's package, run as a plain process.

``ensure_installed()`` installs Debian's ``prometheus`` package when no ``prometheus`` is on
PATH (DESIGN.md section 3: 2.42, about 100 MB, no service needed); the package brings
``promtool`` too (``promtool()``), with which the chart's tests check rules. ``Prometheus``
writes a config with a 1 s scrape interval and static targets on loopback, each with labels
of the test's choosing (so a local router process can carry the ``namespace`` and ``pod``
labels that ``PrometheusSource``'s default selector expects), runs the server as a
``ManagedProcess`` with a temporary TSDB, and waits for ``/-/ready``.

CLI: ``python -m testsupport.prometheus`` installs it if needed (for ``make prepare``) and
prints the binary's path.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import yaml

from testsupport.process import ManagedProcess, StopsOnExit, free_port, tail

PACKAGE = "prometheus"
Target = tuple[str, dict[str, str]]
"""One static scrape target: ``host:port`` and the labels Prometheus attaches to its series."""


class PrometheusUnavailable(RuntimeError):
    """Prometheus is not installed and could not be installed."""


def progress(message: str) -> None:
    """One progress line to stderr: an install takes a while and must show it is alive."""
    print(f"[testsupport.prometheus] {message}", file=sys.stderr, flush=True)


def ensure_installed() -> str:
    """Return the path of ``prometheus``, installing Debian's package first if needed."""
    found = shutil.which("prometheus")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise PrometheusUnavailable(
            "prometheus is not on PATH and there is no apt-get to install it: install "
            "Prometheus (2.x) so that `prometheus` is on PATH"
        )
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            raise PrometheusUnavailable(
                "prometheus is not on PATH; installing it needs root: run "
                "`apt-get install -y --no-install-recommends prometheus` as root"
            )
        prefix = [sudo, "-n"]
    # Wait for another apt run instead of failing on its lock (parallel sessions, CI).
    install = [
        *prefix,
        apt,
        "-o",
        "DPkg::Lock::Timeout=300",
        "install",
        "-y",
        "--no-install-recommends",
        PACKAGE,
    ]
    progress("prometheus is not on PATH: installing Debian's package (about 100 MB)")
    started = time.monotonic()
    result = _run(install)
    if result.returncode != 0:
        # Most often the package lists are missing (fresh image) or stale (404s).
        progress("apt-get install failed; running apt-get update and trying again")
        update = _run([*prefix, apt, "-o", "DPkg::Lock::Timeout=300", "update"])
        if update.returncode != 0:
            raise PrometheusUnavailable(f"apt-get update failed:\n{_tail_of(update)}")
        result = _run(install)
        if result.returncode != 0:
            raise PrometheusUnavailable(
                f"apt-get install {PACKAGE} failed:\n{_tail_of(result)}\n"
                "install Prometheus (2.x) so that `prometheus` is on PATH"
            )
    found = shutil.which("prometheus")
    if not found:
        raise PrometheusUnavailable(
            f"apt-get installed {PACKAGE} but no `prometheus` is on PATH "
            f"(PATH={os.environ.get('PATH', '')})"
        )
    progress(f"installed {version(found)} at {found} in {time.monotonic() - started:.0f}s")
    return found


def promtool() -> str:
    """Return the path of ``promtool`` (Prometheus' rule checker, in the same package),
    installing the package first if needed."""
    prometheus = ensure_installed()
    found = shutil.which("promtool") or str(Path(prometheus).with_name("promtool"))
    if not Path(found).exists():
        raise PrometheusUnavailable(
            f"{prometheus} has no promtool beside it and none is on PATH: install a "
            "Prometheus 2.x distribution that includes promtool"
        )
    return found


def version(binary: str) -> str:
    """The first line of ``prometheus --version``."""
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    lines = (result.stdout or result.stderr).splitlines()
    return lines[0] if lines else "prometheus (unknown version)"


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    progress("$ " + " ".join(cmd))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)


def _tail_of(result: subprocess.CompletedProcess[str], lines: int = 30) -> str:
    return "\n".join((result.stdout + result.stderr).splitlines()[-lines:])


class Prometheus(StopsOnExit):
    """One Prometheus server on 127.0.0.1 scraping static targets every second.

    ``directory`` holds the config, the TSDB and the log. Use as a context manager, or call
    ``start()`` and ``stop()``.
    """

    def __init__(
        self,
        directory: Path,
        targets: Sequence[Target] = (),
        *,
        scrape_interval: str = "1s",
        binary: str | None = None,
    ) -> None:
        self.directory = directory
        self.scrape_interval = scrape_interval
        self.binary = binary
        self.port = free_port()
        self.config_path = directory / "prometheus.yml"
        self.storage = directory / "data"
        self.log_path = directory / "prometheus.log"
        self.targets: list[Target] = list(targets)
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        """The configuration file's content for the current targets."""
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {
                    "job_name": "e2e",
                    "static_configs": [
                        {"targets": [address], "labels": dict(labels)}
                        for address, labels in self.targets
                    ],
                }
            ],
        }

    def _write_config(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=True))

    def start(self, timeout: float = 60.0) -> None:
        """Write the config, start the server and wait until ``/-/ready`` answers 200."""
        binary = self.binary or ensure_installed()
        self._write_config()
        self.storage.mkdir(parents=True, exist_ok=True)
        cmd = [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.storage}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        self.process = ManagedProcess(
            "prometheus",
            cmd,
            env=dict(os.environ),
            log_path=self.log_path,
            health_url=f"{self.url}/-/ready",
            cwd=self.directory,
        )
        self.process.start(timeout)

    def set_targets(self, targets: Sequence[Target], timeout: float = 10.0) -> None:
        """Replace the targets: rewrite the config and reload it (SIGHUP)."""
        self.targets = list(targets)
        self._write_config()
        if self.process is None or self.process.pid is None:
            return
        os.kill(self.process.pid, signal.SIGHUP)
        wanted = {address for address, _ in self.targets}
        deadline = time.monotonic() + timeout
        while {t["scrapeUrl"].split("/")[2] for t in self.active_targets()} != wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus did not reload its targets:\n{self.log_tail()}")
            time.sleep(0.1)

    def api(self, path: str, **params: str) -> Any:
        """GET an API path (``/api/v1/...``) and return its ``data`` (raises on errors)."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}{path}" + (f"?{query}" if query else "")
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result list."""
        data = self.api("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def active_targets(self) -> list[dict[str, Any]]:
        targets: list[dict[str, Any]] = self.api("/api/v1/targets")["activeTargets"]
        return targets

    def wait_for_targets_up(self, timeout: float = 15.0) -> None:
        """Wait until every target has been scraped successfully at least once."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                targets = self.active_targets()
            except (urllib.error.URLError, OSError):
                targets = []
            if len(targets) == len(self.targets) and all(t["health"] == "up" for t in targets):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus targets not up after {timeout:.0f}s: {targets}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=10)

    def __enter__(self) -> Self:
        self.start()
        return self


def main() -> int:
    """CLI entry point: install if needed, print the binary's path."""
    try:
        binary = ensure_installed()
    except PrometheusUnavailable as error:
        print(f"[testsupport.prometheus] {error}", file=sys.stderr)
        return 1
    progress(version(binary))
    print(binary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
