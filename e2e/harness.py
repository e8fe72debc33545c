"""Helpers of the e2e tier: kubectl calls, polling with deadlines, the operator as a
subprocess and its metrics. Used by the tests and by `make demo`."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from testsupport import readonly as ro
from testsupport.process import ManagedProcess, free_port, tail
from testsupport.programs import python_command, python_env, scrape, total

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.25
) -> T:
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

    def run(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )
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

    def dry_run(self, *objects: dict[str, Any], force_conflicts: bool = False) -> str:
        """A server-side apply of `objects`, strictly validated, as a dry run: the API
        server's warnings (stderr; e.g. PodSecurity, deprecations). Refused: KubectlError."""
        force = ("--force-conflicts",) if force_conflicts else ()
        text = "\n---\n".join(json.dumps(o) for o in objects)
        args = ("apply", "--server-side", *force, "--dry-run=server", "--validate=strict")
        return self.run(*args, "-f", "-", input=text).stderr

    def events(self, namespace: str, fields: str, *output: str) -> str:
        """`kubectl get events` in `namespace` that the field selector `fields` picks (e.g.
        `involvedObject.name=x`), printed as `output` asks (e.g. `-o json`)."""
        return self.run(
            "get", "events", "-n", namespace, "--field-selector", fields, *output
        ).stdout

    def diagnostics(self, namespace: str) -> str:
        parts = []
        for args in (
            (
                "get",
                "inferencebackends,deployments,services,pvc,pods",
                "-n",
                namespace,
                "-o",
                "wide",
            ),
            ("get", "events", "-n", namespace, "--sort-by=.lastTimestamp"),
            ("get", "inferencebackends", "-n", namespace, "-o", "yaml"),
        ):
            result = self.run(*args, check=False)
            parts.append(f"$ kubectl {' '.join(args)}\n{result.stdout}{result.stderr}")
        return "\n".join(parts)


CRD_NAME = "inferencebackends.inferops.io"


def install_crd(kubectl: Kubectl) -> str:
    """Applies the CRD and waits until the API server serves it. `kubectl wait` fails at
    once, instead of waiting, on a CRD so new that it has no conditions yet."""
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    deadline = time.monotonic() + 60
    while True:
        waited = kubectl.run(
            "wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s", check=False
        )
        if waited.returncode == 0:
            return CRD_NAME
        if time.monotonic() > deadline:
            raise KubectlError(("wait", "crd"), waited)
        time.sleep(0.5)


class OperatorProcess:
    """The operator run as its own process, the way it runs in a pod. With `readonly` (a
    directory), as on the pod's read-only root filesystem with that directory as its /tmp
    (testsupport/readonly.py)."""

    def __init__(
        self,
        kubectl: Kubectl,
        log: Path,
        metrics_port: int,
        namespaces: tuple[str, ...] = (),
        extra_args: tuple[str, ...] = (),
        readonly: Path | None = None,
    ) -> None:
        self.log = log
        self.metrics_port = metrics_port
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        args = [
            *python_command("inferops", readonly),
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(metrics_port),
            "--liveness",
            liveness,
        ]
        for ns in namespaces:
            args += ["--namespace", ns]
        args += extra_args
        env = python_env(kubectl.env, KUBECONFIG=str(kubectl.kubeconfig))
        if readonly:
            env = ro.environment(env, readonly)
        self.process = ManagedProcess(
            "operator", args, env=env, log_path=log, health_url=liveness, cwd=readonly
        )

    def start(self, timeout: float = 60.0) -> None:
        self.process.start(timeout)

    def stop(self) -> None:
        self.process.stop(grace=20)

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to finish what it was doing."""
        self.process.kill()

    def metrics(self) -> dict[str, float]:
        return scrape(f"http://127.0.0.1:{self.metrics_port}/metrics")

    def writes(self, namespace: str) -> float:
        """Write calls made for resources in `namespace`."""
        return total(self.metrics(), "inferops_kube_writes_total", namespace=namespace) or 0.0

    def reconciles(self, namespace: str) -> float:
        return total(self.metrics(), "inferops_reconciles_total", namespace=namespace) or 0.0

    def log_tail(self, lines: int = 80) -> str:
        return tail(self.log, lines) or "(no log)"
