"""`make demo`: the local cluster, the CRD, the operator and the example, watched until Ready.

The operator keeps running in the background afterwards so the suggested next steps work;
`make cluster-down` (or `python -m e2e.demo --stop`) stops it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from e2e.harness import REPO, Kubectl, wait_for
from e2e.localcluster import Cluster

NAMESPACE = "inferops-demo"
EXAMPLE = REPO / "examples" / "inferencebackend.yaml"


def _pid_file(cluster: Cluster) -> Path:
    return cluster.state_dir / "operator.pid"


def _running(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def start_operator(cluster: Cluster) -> None:
    pid_file = _pid_file(cluster)
    if pid := _running(pid_file):
        print(f"operator already running (pid {pid})")
        return
    log = cluster.state_dir / "operator.log"
    env = {**cluster.env, "PYTHONPATH": str(REPO / "operator")}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "inferops", "--metrics-host", "127.0.0.1",
             "--liveness", "http://127.0.0.1:8081/healthz"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    pid_file.write_text(str(process.pid))
    print(f"operator started (pid {process.pid}), log: {log}")


def stop_operator(cluster: Cluster) -> None:
    pid_file = _pid_file(cluster)
    if pid := _running(pid_file):
        os.killpg(pid, signal.SIGTERM)
        wait_for("the operator to stop", lambda: _running(pid_file) is None, 20)
        print(f"operator stopped (pid {pid})")
    pid_file.unlink(missing_ok=True)


def watch(kubectl: Kubectl, timeout: float = 300) -> None:
    """Prints the resource and its Deployments whenever they change, until Ready."""
    deadline = time.monotonic() + timeout
    shown = ""
    while time.monotonic() < deadline:
        table = kubectl.run("get", "inferencebackends,deployments", "-n", NAMESPACE).stdout
        if table != shown:
            print(f"\n$ kubectl get inferencebackends,deployments -n {NAMESPACE}\n{table}",
                  flush=True)  # fmt: skip
            shown = table
        phase = kubectl.run("get", "ib", "llama32", "-n", NAMESPACE, "-o",
                            "jsonpath={.status.phase}").stdout  # fmt: skip
        if phase == "Ready":
            return
        time.sleep(1)
    raise SystemExit(f"not Ready after {timeout:.0f}s; see `kubectl describe ib -n {NAMESPACE}`")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stop", action="store_true", help="stop the demo operator")
    args = parser.parse_args()
    cluster = Cluster.default()
    if args.stop:
        stop_operator(cluster)
        return
    started = time.monotonic()
    cluster.up()
    kubectl = Kubectl(str(cluster.kubectl_path), cluster.kubeconfig, cluster.env)
    print(cluster.node_summary())
    kubectl.run("apply", "-f", str(REPO / "e2e" / "manifests" / "local-volumes.yaml"))
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl.run("wait", "--for=condition=Established",
                "crd/inferencebackends.inferops.io", "--timeout=60s")  # fmt: skip
    kubectl.run("create", "namespace", NAMESPACE, check=False)
    # The example reads its Hugging Face token from this Secret. The local cluster's pods are
    # simulated and never read it; on a real cluster, put your own token here.
    kubectl.run("create", "secret", "generic", "hf-token", "-n", NAMESPACE,
                "--from-literal=token=not-a-real-token", check=False)  # fmt: skip
    start_operator(cluster)
    kubectl.run("apply", "-n", NAMESPACE, "-f", str(EXAMPLE))
    print(f"applied {EXAMPLE.relative_to(REPO)} in namespace {NAMESPACE}")
    watch(kubectl)
    ns = f"-n {NAMESPACE}"
    steps = [
        (f"export KUBECONFIG={cluster.kubeconfig} PATH={cluster.bin_dir}:$PATH", ""),
        (f"kubectl get ib {ns}", "model, engines, phase"),
        (f"kubectl describe ib llama32 {ns}", "conditions, consumers and their endpoints"),
        (f"kubectl get configmap llama32-router {ns} -o jsonpath='{{.data.routes\\.json}}'",
         "the router's table"),
        ("kubectl get nodes", "4 GPU nodes, 2 CPU nodes"),
        (f"kubectl patch ib llama32 {ns} --type=json -p "
         "'[{\"op\":\"replace\",\"path\":\"/spec/consumers/1/weight\",\"value\":50}]'",
         "move half of rag to vLLM"),
        (f"kubectl patch ib llama32 {ns} --type=merge "
         "-p '{\"spec\":{\"vllm\":{\"tensorParallelSize\":16}}}'",
         "more GPUs than a node has: Degraded"),
        (f"kubectl delete deployment llama32-vllm {ns}", "it comes back"),
        ("kubectl explain inferencebackend.spec.vllm", "every field, documented"),
        ("make cluster-down", "stop everything"),
    ]  # fmt: skip
    print(f"\nReady in {time.monotonic() - started:.0f}s. Try next:")
    for command, comment in steps:
        print(f"  {command}" + (f"\n      # {comment}" if comment else ""))


if __name__ == "__main__":
    main()
