"""`make demo`: the product's job on the local cluster. The CRD, the operator and the example
until Ready; then the local data plane (the router, vLLM's CPU build, real Ollama,
Prometheus) with three consumers sending requests, and the migration moving them from Ollama
to vLLM step by step, shown live: `kubectl get ib` and the router's per-engine latency. One
canary is made bad on purpose and rolled back; `kubectl ib retry` starts it over.

The operator and the data plane (`e2e.demoplane`) keep running in the background afterwards,
so the commands printed at the end work as printed: the official clients and curl against a
consumer's endpoint, `kubectl ib`, and new migrations. `make cluster-down` (or
`python -m e2e.demo --stop`) stops them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from e2e.dataplane import MODEL, Traffic
from e2e.demoplane import BackgroundPlane
from e2e.harness import REPO, Kubectl, install_crd, wait_for
from e2e.localcluster import Cluster
from inferops.migration.figures import Figures
from inferops.migration.sources import PrometheusSource

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


def start_operator(cluster: Cluster, extra_args: tuple[str, ...] = ()) -> None:
    pid_file = _pid_file(cluster)
    if pid := _running(pid_file):
        if not extra_args:
            print(f"operator already running (pid {pid})")
            return
        stop_operator(cluster)  # restarted, told where the data plane is
    log = cluster.state_dir / "operator.log"
    env = {**cluster.env, "PYTHONPATH": str(REPO / "operator")}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inferops",
                "--metrics-host",
                "127.0.0.1",
                "--liveness",
                "http://127.0.0.1:8081/healthz",
                *extra_args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
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
            print(
                f"\n$ kubectl get inferencebackends,deployments -n {NAMESPACE}\n{table}", flush=True
            )
            shown = table
        phase = kubectl.run(
            "get", "ib", "llama32", "-n", NAMESPACE, "-o", "jsonpath={.status.phase}"
        ).stdout
        if phase == "Ready":
            return
        time.sleep(1)
    raise SystemExit(f"not Ready after {timeout:.0f}s; see `kubectl describe ib -n {NAMESPACE}`")


# Demo speed: 10 s analysis windows instead of the example's minutes. The first step is a
# shadow step: vLLM's answers compared with Ollama's on mirrored requests before any live
# weight (the consumers ask greedily, so the answers are comparable).
DEMO_MIGRATION = {
    "steps": [
        {"shadow": {"percent": 100, "minSamples": 6, "minNoiseSamples": 3}},
        {"weight": 20},
        {"weight": 50},
        {"weight": 100},
    ],
    "analysis": {
        "interval": "10s",
        "initialDelay": "0s",
        "minRequests": 3,
        "failureLimit": 0,
        "ttftP95": {"maxRatio": 2, "floor": 2.0},
        "tpotP95": {"maxRatio": 2, "floor": 0.5},
    },
    "probe": {"requests": 4, "maxTokens": 4},
}


def engine_line(plane: BackgroundPlane, consumer: str) -> str:
    """The router's figures for one consumer over the last 10 s, as Prometheus has them."""
    url = plane.state.prometheus_url

    async def read() -> Figures:
        source = PrometheusSource(url)
        try:
            return await source.figures(NAMESPACE, "llama32", consumer, 10)
        finally:
            await source.aclose()

    figures = asyncio.run(read())
    parts = []
    for name, engine in (("vLLM", figures.vllm), ("Ollama", figures.ollama)):
        if engine is None or not engine.requests:
            parts.append(f"{name:>6}: -")
            continue
        ttft = "-" if engine.ttft_p95 is None else f"{engine.ttft_p95 * 1000:.0f} ms"
        parts.append(
            f"{name:>6}: {engine.requests:5.0f} req, {engine.errors:3.0f} err, TTFT p95 {ttft}"
        )
    return f"  {consumer:<6}" + " | ".join(parts)


def status_of(kubectl: Kubectl, consumer: str, field: str) -> str:
    """One field of a consumer's status (`phase`, `comparison.summary`, ...)."""
    path = f"{{.status.consumers[?(@.name=='{consumer}')].{field}}}"
    return kubectl.run("get", "ib", "llama32", "-n", NAMESPACE, "-o", f"jsonpath={path}").stdout


def phase_of(kubectl: Kubectl, consumer: str) -> str:
    return status_of(kubectl, consumer, "phase")


def show_migration(
    kubectl: Kubectl, plane: BackgroundPlane, until: Callable[[], bool], timeout: float
) -> None:
    """Prints `kubectl get ib` when it changes and the per-engine figures every 10 s."""
    deadline = time.monotonic() + timeout
    shown, last_figures = "", 0.0
    while time.monotonic() < deadline:
        table = kubectl.run("get", "ib", "-n", NAMESPACE).stdout
        # Shown when something but the AGE column changed.
        without_age = "\n".join(line.rsplit(None, 1)[0] for line in table.splitlines())
        if without_age != shown:
            print(f"\n$ kubectl get ib -n {NAMESPACE}\n{table}", end="", flush=True)
            shown = without_age
        if time.monotonic() - last_figures >= 10:
            print("router, last 10 s:")
            for consumer in ("notes", "rag", "ner"):
                print(engine_line(plane, consumer), flush=True)
            last_figures = time.monotonic()
        if until():
            return
        time.sleep(1)
    raise SystemExit(
        f"the migration did not get there in {timeout:.0f}s; "
        f"see `kubectl describe ib llama32 -n {NAMESPACE}`"
    )


def migrate(kubectl: Kubectl, plane: BackgroundPlane) -> None:
    endpoint = plane.wait("the router", "router_url", 120)
    print(
        "\nconsumers start calling: notes and ner through the OpenAI client, rag through "
        "the Ollama client"
    )
    with (
        Traffic(endpoint, NAMESPACE, "notes", temperature=0),
        Traffic(endpoint, NAMESPACE, "rag", api="ollama", temperature=0),
        Traffic(endpoint, NAMESPACE, "ner", temperature=0) as ner,
    ):
        shadow: list[str] = []

        def shadow_judged() -> bool:
            # The shadow step's verdict stays in lastAnalysis until the next step's sample.
            last = json.loads(status_of(kubectl, "notes", "lastAnalysis") or "{}")
            if last.get("step") == 1 and last.get("verdict") in ("Pass", "Fail"):
                shadow.append(f"{last['verdict']}: {last.get('message', '')}")
            return bool(shadow) or phase_of(kubectl, "notes") not in ("Progressing", "Pending")

        show_migration(kubectl, plane, shadow_judged, 300)
        judged = shadow[0] if shadow else "not judged"
        print(f"\nnotes' shadow step (answers compared, no live weight): {judged}")
        show_migration(kubectl, plane, lambda: phase_of(kubectl, "notes") == "Migrated", 300)
        print(
            "\nnotes, vLLM against Ollama over its migration: "
            f"{status_of(kubectl, 'notes', 'comparison.summary')} (vLLM's CPU build and a tiny "
            "model here; on GPUs this is the line a migration is for)"
        )
        print(
            "\nnotes is on vLLM. Now rag's canary goes bad: vLLM answers HTTP 500 to it "
            "(injected in front of vLLM); the router falls back to Ollama, so rag sees no "
            "error, and the analysis rolls rag back."
        )
        plane.inject(fail_status=500)
        try:
            show_migration(kubectl, plane, lambda: phase_of(kubectl, "rag") == "RolledBack", 120)
        finally:
            plane.inject()
        events = kubectl.run(
            "get",
            "events",
            "-n",
            NAMESPACE,
            "--field-selector",
            "involvedObject.name=llama32",
            "--sort-by=.lastTimestamp",
        ).stdout
        print("\n$ kubectl get events (tail)\n" + "\n".join(events.splitlines()[-6:]))
        print(f"\nvLLM is healthy again; $ kubectl ib retry llama32 rag -n {NAMESPACE}")
        print(kubectl_ib(kubectl, "retry", "llama32", "rag", "-n", NAMESPACE))
        show_migration(kubectl, plane, lambda: phase_of(kubectl, "ner") == "Migrated", 400)
        print(f"\n$ kubectl ib status llama32 -n {NAMESPACE}")
        print(kubectl_ib(kubectl, "status", "llama32", "-n", NAMESPACE))
        print(f"client-visible errors: {ner.errors[:3] or 'none'}")


def kubectl_ib(kubectl: Kubectl, *args: str) -> str:
    """The plugin as a user runs it: `kubectl ib`, found on PATH."""
    path = os.pathsep.join([str(Path(sys.executable).parent), kubectl.env.get("PATH", "")])
    env = {**kubectl.env, "KUBECONFIG": str(kubectl.kubeconfig), "PATH": path}
    result = subprocess.run(
        [kubectl.binary, "ib", *args], capture_output=True, text=True, env=env, timeout=60
    )
    return result.stdout + result.stderr


def shell_environment(kubectl: Kubectl) -> str:
    """The line that makes the printed commands work in a new shell: the cluster's kubeconfig,
    its kubectl, and this environment's `python` and `kubectl-ib` (`pip install .` put the
    plugin here, not on the system PATH)."""
    python_bin = Path(sys.executable).parent
    kubectl_dir = Path(kubectl.binary).parent
    return f"export KUBECONFIG={kubectl.kubeconfig} PATH={python_bin}:{kubectl_dir}:$PATH"


def consumer_commands(
    router_url: str, namespace: str, backend: str = "llama32"
) -> list[tuple[str, str]]:
    """Ready-to-paste requests to consumers' endpoints from this machine. In the cluster, a
    service calls its own endpoint Service; here the router's local port stands in for it
    and the Host header names the consumer, as the Service's DNS name would."""
    notes, rag = (f"{backend}-{consumer}.{namespace}.svc" for consumer in ("notes", "rag"))
    body = json.dumps(
        {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    )
    openai_code = (
        f"from openai import OpenAI; c = OpenAI(base_url='{router_url}/v1', api_key='unused', "
        f"default_headers={{'Host': '{notes}'}}); print(c.chat.completions.create("
        f"model='{MODEL}', max_tokens=8, messages=[{{'role': 'user', 'content': 'hi'}}])"
        ".choices[0].message.content)"
    )
    ollama_code = (
        f"import ollama; c = ollama.Client(host='{router_url}', headers={{'Host': '{rag}'}}); "
        f"print(c.chat(model='{MODEL}', messages=[{{'role': 'user', 'content': 'hi'}}], "
        "options={'num_predict': 8}).message.content)"
    )
    return [
        (
            f"curl -s {router_url}/v1/chat/completions -H 'Host: {notes}' "
            f"-H 'Content-Type: application/json' -d '{body}'",
            "notes' endpoint, OpenAI API (the Host header names the consumer)",
        ),
        (f'python -c "{openai_code}"', "the same with the official openai client"),
        (f'python -c "{ollama_code}"', "rag's endpoint with the official ollama client"),
        (
            f"curl -s {router_url}/metrics | grep '^inferops_router_requests_total'",
            "the router's per-consumer, per-engine figures",
        ),
    ]


def next_steps(
    kubectl: Kubectl, router_url: str, namespace: str = NAMESPACE
) -> list[tuple[str, str]]:
    """The commands printed at the end of the demo, each with what it shows."""
    ns = f"-n {namespace}"
    return [
        (shell_environment(kubectl), "in a new shell: the local cluster, kubectl and kubectl ib"),
        (f"kubectl get ib {ns} -o wide", "phase, migrated consumers, engines"),
        (f"kubectl ib status llama32 {ns}", "each consumer's step and last analysis"),
        (f"kubectl describe ib llama32 {ns}", "conditions, consumers and their endpoints"),
        *consumer_commands(router_url, namespace),
        (
            f"kubectl get configmap llama32-router {ns} -o jsonpath='{{.data.routes\\.json}}'",
            "the router's table",
        ),
        ("kubectl get nodes", "4 GPU nodes, 2 CPU nodes"),
        (
            f"kubectl patch ib llama32 {ns} --type=merge "
            '-p \'{"spec":{"vllm":{"tensorParallelSize":16}}}\'',
            "more GPUs than a node has: Degraded",
        ),
        (f"kubectl delete deployment llama32-vllm {ns}", "it comes back"),
        ("kubectl explain inferencebackend.spec.vllm", "every field, documented"),
        ("make cluster-down", "stop the cluster, the operator and the data plane"),
    ]


def stop(cluster: Cluster) -> None:
    """Stops what the demo left running: the operator and the data plane."""
    stop_operator(cluster)
    BackgroundPlane(cluster.state_dir / "dataplane").stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--stop", action="store_true", help="stop the demo's operator and data plane"
    )
    args = parser.parse_args()
    cluster = Cluster.default()
    if args.stop:
        stop(cluster)
        return
    started = time.monotonic()
    cluster.up()
    kubectl = Kubectl(str(cluster.kubectl_path), cluster.kubeconfig, cluster.env)
    print(cluster.node_summary())
    kubectl.run("apply", "-f", str(REPO / "e2e" / "manifests" / "local-volumes.yaml"))
    install_crd(kubectl)
    kubectl.run("create", "namespace", NAMESPACE, check=False)
    # The example reads its Hugging Face token from this Secret. The local cluster's pods are
    # simulated and never read it; on a real cluster, put your own token here.
    kubectl.run(
        "create",
        "secret",
        "generic",
        "hf-token",
        "-n",
        NAMESPACE,
        "--from-literal=token=not-a-real-token",
        check=False,
    )
    plane = BackgroundPlane(cluster.state_dir / "dataplane")
    print(
        "starting the local data plane in the background: vLLM's CPU build loads a tiny "
        "model (about a minute), real Ollama (the same model), Prometheus",
        flush=True,
    )
    plane.start(kubectl, NAMESPACE, "llama32")
    state = plane.wait("the engines and Prometheus", "prometheus_url", 600)
    start_operator(cluster, tuple(state.operator_args))
    manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["spec"]["migration"] = DEMO_MIGRATION
    kubectl.apply(manifest, NAMESPACE)
    print(
        f"applied {EXAMPLE.relative_to(REPO)} in namespace {NAMESPACE}, with "
        "spec.migration at demo speed (10 s analysis windows)"
    )
    watch(kubectl)
    migrate(kubectl, plane)
    print(
        f"\nDone in {time.monotonic() - started:.0f}s. The operator and the data plane keep "
        "running until `make cluster-down`. Try next:"
    )
    for command, comment in next_steps(kubectl, plane.state.router_url):
        print(f"  # {comment}\n  {command}")


if __name__ == "__main__":
    main()
