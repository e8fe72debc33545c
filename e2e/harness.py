"""Helpers of the e2e tier: kubectl calls, polling with deadlines, the operator as a
subprocess and its metrics. Used by the tests and by `make demo`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0,
             interval: float = 0.25) -> T:  # fmt: skip
    """Polls `probe` until it returns something truthy; fails naming `what` and the last
    value seen when the deadline passes."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


class KubectlError(AssertionError):
    def __init__(self, args: tuple[str, ...], result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr}")
        self.result = result


@dataclass
class Kubectl:
    """kubectl against one cluster."""

    binary: str
    kubeconfig: Path
    env: dict[str, str]

    def run(self, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 120.0) -> subprocess.CompletedProcess[str]:  # fmt: skip
        result = subprocess.run(
            [self.binary, "--kubeconfig", str(self.kubeconfig), *args],
            input=input, capture_output=True, text=True, env=self.env, timeout=timeout,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise KubectlError(args, result)
        return result

    def apply(self, manifest: dict[str, Any] | str, namespace: str) -> None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        self.run("apply", "-n", namespace, "-f", "-", input=text)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        result = self.run("get", kind, name, "-n", namespace, "-o", "json", check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise KubectlError(("get", kind, name), result)
        return dict(json.loads(result.stdout))

    def items(self, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["get", kind, "-n", namespace, "-o", "json"]
        if selector:
            args += ["-l", selector]
        return list(json.loads(self.run(*args).stdout)["items"])

    def diagnostics(self, namespace: str) -> str:
        parts = []
        for args in (
            ("get", "inferencebackends,deployments,services,pvc,pods", "-n", namespace,
             "-o", "wide"),
            ("get", "events", "-n", namespace, "--sort-by=.lastTimestamp"),
            ("get", "inferencebackends", "-n", namespace, "-o", "yaml"),
        ):  # fmt: skip
            result = self.run(*args, check=False)
            parts.append(f"$ kubectl {' '.join(args)}\n{result.stdout}{result.stderr}")
        return "\n".join(parts)


class OperatorProcess:
    """The operator run as its own process, the way it runs in a pod."""

    def __init__(self, kubectl: Kubectl, log: Path, metrics_port: int,
                 namespaces: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.kubectl = kubectl
        self.log = log
        self.metrics_port = metrics_port
        self.liveness_port = free_port()
        self.namespaces = namespaces
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        args = [sys.executable, "-m", "inferops",
                "--metrics-host", "127.0.0.1", "--metrics-port", str(self.metrics_port),
                "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz"]  # fmt: skip
        for ns in self.namespaces:
            args += ["--namespace", ns]
        env = {**self.kubectl.env, "KUBECONFIG": str(self.kubectl.kubeconfig)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "operator"),
                                                          env.get("PYTHONPATH")]))  # fmt: skip
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)  # fmt: skip
        wait_for("the operator's liveness endpoint", self._alive, timeout)

    def _alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"operator exited {self.process.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1
            ) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def metrics(self) -> dict[str, float]:
        """Counter totals by metric name and labels, e.g. writes by verb and kind."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        values = {}
        for line in text.splitlines():
            if line.startswith("inferops_") and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                values[key] = float(value)
        return values

    def _total(self, metric: str, namespace: str) -> float:
        label = f'namespace="{namespace}"'
        return sum(v for k, v in self.metrics().items()
                   if k.startswith(metric) and label in k)  # fmt: skip

    def writes(self, namespace: str) -> float:
        """Write calls made for resources in `namespace`."""
        return self._total("inferops_kube_writes_total", namespace)

    def reconciles(self, namespace: str) -> float:
        return self._total("inferops_reconciles_total", namespace)

    def log_tail(self, lines: int = 80) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
