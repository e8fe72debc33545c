"""`python -m bench.operator`: the operator at 100, 300 and 1,000 InferenceBackends.

For each size, on a fresh local cluster (a real API server, etcd, controller manager and
scheduler, kwok-simulated GPU and CPU nodes sized for the pods): start the operator as its
own process, create the backends (the example's shape, 3 consumers each, over 10 namespaces)
and measure
- the time until every one is Ready, the operator's CPU time and its peak RSS;
- its API requests per new backend and per reconciliation, by verb (and per backend by verb
  and resource), from the API server's audit log;
- its writes per minute at rest, once all are Ready (audit log again);
- the time from one spec change to the child that reflects it, with all N present (repeated).
Writes bench/results/operator.json and operator.png and prints the table with the targets.

The cluster's own controllers get generous client rate limits (`--kube-api-qps`): their
defaults (20 requests/s for the controller manager) would make the cluster, not the
operator, the bottleneck of creating thousands of pods.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from e2e.harness import Kubectl, OperatorProcess, install_crd
from e2e.localcluster.cluster import Cluster
from testsupport.process import free_port
from testsupport.programs import scrape, total

from bench.operator import audit, floor, profile, workload
from inferops.api import GROUP, PLURAL, VERSION
from inferops.kube import Kube, KubeError

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
TARGETS = {
    "ready_seconds": 120.0,
    "peak_rss_mib": 256.0,
    "writes_per_minute_at_rest": 0.0,
    "change_seconds": 2.0,
    "requests_per_backend": 12.0,
}
log = logging.getLogger("bench.operator")

CLUSTER_ARGS = {
    "kube-controller-manager": [
        "--kube-api-qps=1000",
        "--kube-api-burst=2000",
        "--concurrent-deployment-syncs=20",
        "--concurrent-replicaset-syncs=20",
    ],
    "kube-scheduler": ["--kube-api-qps=1000", "--kube-api-burst=2000"],
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.operator", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--rest", type=float, default=60.0, help="seconds measured at rest")
    parser.add_argument("--changes", type=int, default=5, help="spec changes timed per size")
    parser.add_argument("--timeout", type=float, default=900.0, help="per size, until Ready")
    parser.add_argument("--quick", action="store_true", help="sizes 20 and 60, 15 s at rest")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the operator while the largest size is created",
    )
    parser.add_argument(
        "--profile-apiserver",
        type=int,
        default=0,
        metavar="SECONDS",
        help="a CPU profile of the API server over the first SECONDS of "
        "creating the largest size (go tool pprof)",
    )
    parser.add_argument("--workdir", type=Path, default=REPO / ".bench-operator")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--floor",
        type=int,
        nargs="*",
        default=[],
        metavar="SIZE",
        help="for these sizes, also the cluster's floor: the same objects written with no "
        "operator, on a fresh cluster (bench/operator/floor.py)",
    )
    parser.add_argument(
        "--rerender",
        type=Path,
        metavar="JSON",
        help="no run: plot and table of an earlier run's results",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.rest, args.changes = [20, 60], 15.0, 3
    return args


class ProcessStats:
    """CPU seconds and peak RSS of one process, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.tick = os.sysconf("SC_CLK_TCK")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick  # utime + stime

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM")


async def create_all(kube: Kube, n: int) -> None:
    """Creates the backends, 20 at a time (as a GitOps tool applying a directory would)."""
    limit = asyncio.Semaphore(20)

    async def one(index: int) -> None:
        async with limit:
            for attempt in range(5):
                try:
                    await kube.create(workload.backend(index))
                    return
                except KubeError as error:
                    if error.status == 409 and attempt:  # the timed-out try got through
                        return
                    if error.status not in (0, 429, 500, 503, 504) or attempt == 4:
                        raise
                    log.warning("creating backend %d: %s; again", index, error)
                    await asyncio.sleep(1.0 + attempt)

    await asyncio.gather(*(one(i) for i in range(n)))


async def ready_count(kube: Kube) -> int:
    items, _ = await kube.list_versioned(f"/apis/{GROUP}/{VERSION}/{PLURAL}")
    return sum((o.get("status") or {}).get("phase") == "Ready" for o in items)


async def wait_ready(kube: Kube, n: int, started: float, timeout: float) -> float:
    last = ready = -1
    while True:
        try:
            ready = await ready_count(kube)
        except KubeError as error:  # an API server busy with thousands of pods: ask again
            log.warning("counting Ready backends: %s", error)
        elapsed = time.time() - started
        if ready != last:
            log.info("%5.1fs  %d/%d Ready", elapsed, ready, n)
            last = ready
        if ready == n:
            return elapsed
        if elapsed > timeout:
            raise TimeoutError(f"{ready}/{n} Ready after {timeout:.0f}s")
        await asyncio.sleep(1.0)


async def time_spec_change(kube: Kube, attempt: int) -> float:
    """Changes one backend's vLLM max model length; the time until its Deployment has it."""
    body = workload.backend(0)
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    value = 4096 + attempt
    deployment = f"/apis/apps/v1/namespaces/{ns}/deployments/{name}-vllm"
    started = time.perf_counter()
    await kube.merge_patch(body, {"spec": {"vllm": {"maxModelLen": value}}})
    while time.perf_counter() - started < 60:
        current = await kube.get(deployment)
        if current and str(value) in json.dumps(current["spec"]["template"]["spec"]):
            return time.perf_counter() - started
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{name}-vllm did not get maxModelLen {value} within 60 s")


async def restart_at_rest(n: int, operator: OperatorProcess, audit_log: Path) -> dict[str, Any]:
    """Restarts the operator with every backend Ready: how long until it has looked at each
    one again (kopf's resume), and what that cost in requests and writes."""
    await asyncio.to_thread(operator.stop)
    started = time.time()
    await asyncio.to_thread(operator.start)
    while reconciles(operator) < n:
        if time.time() - started > 600:
            raise TimeoutError(f"{reconciles(operator):.0f}/{n} resumed after a restart")
        await asyncio.sleep(0.5)
    done = time.time()
    await asyncio.sleep(5.0)  # late child-event runs, then the audit log's flush
    requests = audit.operator_requests(audit_log, started, time.time() - 2.0)
    return {
        "seconds": round(done - started, 1),
        "requests_by_verb": requests,
        "writes": audit.writes(requests),
    }


def reconciles(operator: OperatorProcess) -> float:
    return (
        total(
            scrape(f"http://127.0.0.1:{operator.metrics_port}/metrics"), "inferops_reconciles_total"
        )
        or 0.0
    )


async def measure(
    n: int,
    args: argparse.Namespace,
    kubeconfig: Path,
    operator: OperatorProcess,
    stats: ProcessStats,
    audit_log: Path,
    cluster: dict[str, ProcessStats],
    kubectl: str,
) -> dict[str, Any]:
    kube = Kube.connect(field_manager="inferops-bench", config_file=str(kubeconfig))
    try:
        cpu_before, reconciles_before = stats.cpu_seconds(), reconciles(operator)
        cluster_before = {name: p.cpu_seconds() for name, p in cluster.items()}
        profiler = None
        if args.profile and n == max(args.sizes):
            profiler = profile.Profiler(stats.pid, args.workdir / f"operator-{n}.stacks")
        apiserver = None
        if args.profile_apiserver and n == max(args.sizes):
            apiserver = profile.ApiserverProfile(
                kubectl,
                kubeconfig,
                args.profile_apiserver,
                args.workdir / f"apiserver-{n}.pprof",
            )
        started = time.time()
        await create_all(kube, n)
        created = time.time() - started
        ready = await wait_ready(kube, n, started, args.timeout)
        if profiler is not None:
            profiler.stop()
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "operator-profile.txt").write_text(profile.summary(profiler.raw))
        ready_at = time.time()
        if apiserver is not None:
            pprof = await asyncio.to_thread(apiserver.wait)
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "apiserver-profile.txt").write_text(profile.pprof_top(pprof))
        cpu = stats.cpu_seconds() - cpu_before
        cluster_cpu = {
            name: round(p.cpu_seconds() - cluster_before[name], 1) for name, p in cluster.items()
        }
        rss_ready = stats.peak_rss_mib()
        page = scrape(f"http://127.0.0.1:{operator.metrics_port}/metrics")
        cache = {
            "objects": int(page.get("inferops_cache_objects", 0)),
            "mib": round(page.get("inferops_cache_bytes", 0) / 2**20, 1),
        }
        runs = reconciles(operator) - reconciles_before
        await asyncio.sleep(2.0)  # the audit log is written asynchronously
        requests = audit.operator_requests(audit_log, started, ready_at)
        by_resource = audit.operator_requests_by_resource(audit_log, started, ready_at)
        log.info("at rest for %.0f s", args.rest)
        await asyncio.sleep(10.0)  # the last status writes of the final pods
        rest_start = time.time()
        await asyncio.sleep(args.rest)
        rest_end = time.time()
        await asyncio.sleep(2.0)
        at_rest = audit.operator_requests(audit_log, rest_start, rest_end)
        changes = [await time_spec_change(kube, i) for i in range(args.changes)]
        peak_rss = stats.peak_rss_mib()  # of this process: the restart makes another
        # The changed backend's rollout first: its status would change during the restart.
        await wait_ready(kube, n, time.time(), args.timeout)
        await asyncio.sleep(5.0)
        restart = await restart_at_rest(n, operator, audit_log)
    finally:
        await kube.__aexit__()
    return {
        "backends": n,
        "created_seconds": round(created, 2),
        "ready_seconds": round(ready, 2),
        "operator_cpu_seconds": round(cpu, 2),
        "cluster_cpu_seconds": cluster_cpu,
        "peak_rss_mib": round(peak_rss, 1),
        "peak_rss_mib_at_ready": round(rss_ready, 1),
        "cache": cache,
        "reconciles": int(runs),
        "requests_by_verb": requests,
        "requests_per_reconcile": {v: round(c / runs, 3) for v, c in requests.items()}
        if runs
        else {},
        "requests_per_backend": round(sum(requests.values()) / n, 2),
        "requests_per_backend_by_resource": {k: round(c / n, 2) for k, c in by_resource.items()},
        "rest_seconds": round(rest_end - rest_start, 1),
        "requests_at_rest": at_rest,
        "writes_per_minute_at_rest": round(audit.writes(at_rest) * 60 / (rest_end - rest_start), 2),
        "restart": restart,
        "change_seconds": {
            "min": round(min(changes), 3),
            "median": round(statistics.median(changes), 3),
            "max": round(max(changes), 3),
        },
    }


def start_cluster(n: int, args: argparse.Namespace, name: str) -> tuple[Cluster, Kubectl]:
    """A fresh local cluster for `n` backends, with the CRD and the namespaces."""
    state = args.workdir / name
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    layout = workload.layout(n)
    # Profiling on (the local cluster turns it off), for --profile-apiserver.
    extra = {**CLUSTER_ARGS, "kube-apiserver": [*audit.apiserver_args(state), "--profiling=true"]}
    cluster = Cluster(state_dir=state, layout=layout, extra_args=extra)
    log.info(
        "%d backends: cluster with %d GPU and %d CPU nodes", n, layout.gpu_nodes, layout.cpu_nodes
    )
    cluster.up()
    try:
        kubectl = Kubectl(str(cluster.kubectl_path), cluster.kubeconfig, cluster.env)
        install_crd(kubectl)
        for i in range(workload.NAMESPACES):
            kubectl.run("create", "namespace", workload.namespace(i))
    except BaseException:
        cluster.down()
        raise
    return cluster, kubectl


def run_floor(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """The cluster alone (`bench.operator.floor`): its time and CPU for N backends' objects."""
    cluster, _ = start_cluster(n, args, f"floor-{n}")
    try:
        components = {name: ProcessStats(pid) for name, pid in cluster.pids().items()}
        before = {name: p.cpu_seconds() for name, p in components.items()}

        async def run() -> tuple[float, float]:
            kube = Kube.connect(field_manager="inferops-bench", config_file=str(cluster.kubeconfig))
            try:
                started = time.time()
                await floor.write_all(kube, n)
                written = time.time() - started
                return written, await floor.wait_pods_ready(kube, n, started, args.timeout)
            finally:
                await kube.__aexit__()

        written, ready = asyncio.run(run())
        return {
            "written_seconds": round(written, 2),
            "ready_seconds": round(ready, 2),
            "cluster_cpu_seconds": {
                name: round(p.cpu_seconds() - before[name], 1) for name, p in components.items()
            },
        }
    finally:
        cluster.down()


def run_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    cluster, kubectl = start_cluster(n, args, f"cluster-{n}")
    state = args.workdir / f"cluster-{n}"
    layout = workload.layout(n)
    operator = None
    try:
        operator = OperatorProcess(kubectl, state / "operator.log", free_port())
        operator.start()
        assert operator.process.pid is not None
        stats = ProcessStats(operator.process.pid)
        # Where the rest of the time goes: the control plane's own processes.
        components = {name: ProcessStats(pid) for name, pid in cluster.pids().items()}
        result = asyncio.run(
            measure(
                n,
                args,
                cluster.kubeconfig,
                operator,
                stats,
                state / "audit.log",
                components,
                kubectl.binary,
            )
        )
        result["nodes"] = {"gpu": layout.gpu_nodes, "cpu": layout.cpu_nodes}
        log.info("%s", json.dumps(result))
        return result
    finally:
        if operator is not None:
            operator.stop()
        cluster.down()


def table(results: list[dict[str, Any]]) -> str:
    def verdict(value: float, target: float) -> str:
        return "PASS" if value <= target else "MISS"

    smallest = results[0]
    lines = [
        "| backends | Ready (s) | per backend vs smallest | operator CPU (s) | peak RSS (MiB) "
        "| requests per new backend | requests per reconcile | writes/min at rest "
        "| spec change -> child (s, median) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        per = (r["ready_seconds"] / r["backends"]) / (
            smallest["ready_seconds"] / smallest["backends"]
        )
        verbs = ", ".join(f"{v} {c}" for v, c in r["requests_per_reconcile"].items())
        # Runs from before the field: the same figure from their counts.
        per_backend = r.get("requests_per_backend") or round(
            sum(r["requests_by_verb"].values()) / r["backends"], 2
        )
        # The cluster alone, with the same objects and no operator (--floor).
        floor_note = f" (cluster floor {r['floor']['ready_seconds']})" if "floor" in r else ""
        lines.append(
            f"| {r['backends']} | {r['ready_seconds']} "
            f"{verdict(r['ready_seconds'], TARGETS['ready_seconds'])}{floor_note} | {per:.2f}x "
            f"| {r['operator_cpu_seconds']} | {r['peak_rss_mib']} "
            f"{verdict(r['peak_rss_mib'], TARGETS['peak_rss_mib'])} "
            f"| {per_backend} {verdict(per_backend, TARGETS['requests_per_backend'])} | {verbs} "
            f"| {r['writes_per_minute_at_rest']} "
            f"{verdict(r['writes_per_minute_at_rest'], TARGETS['writes_per_minute_at_rest'])} "
            f"| {r['change_seconds']['median']} "
            f"{verdict(r['change_seconds']['median'], TARGETS['change_seconds'])} |"
        )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["backends"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(sizes, [r["ready_seconds"] for r in results], "o-", label="all Ready (s)")
    left.plot(sizes, [r["operator_cpu_seconds"] for r in results], "s-", label="operator CPU (s)")
    left.axhline(TARGETS["ready_seconds"], color="grey", linestyle=":", label="target 120 s")
    left.set_xlabel("InferenceBackends (3 consumers each)")
    left.set_ylabel("seconds")
    left.legend()
    right.plot(
        sizes,
        [r["peak_rss_mib"] for r in results],
        "o-",
        color="#d62728",
        label="operator peak RSS",
    )
    right.axhline(TARGETS["peak_rss_mib"], color="grey", linestyle=":", label="target 256 MiB")
    right.set_xlabel("InferenceBackends (3 consumers each)")
    right.set_ylabel("MiB")
    right.legend()
    fig.suptitle("inferops operator on the local cluster (2 cores, kwok nodes)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args(argv)
    if args.rerender:
        results = json.loads(args.rerender.read_text())["results"]
        plot(results, args.rerender.with_suffix(".png"))
        print(table(results))
        return 0
    results = []
    args.out.mkdir(parents=True, exist_ok=True)
    name = "operator-quick" if args.quick else "operator"
    for n in args.sizes:
        results.append(run_size(n, args))
        if n in args.floor:
            results[-1]["floor"] = run_floor(n, args)
        # Written after every size: a later failure keeps what was measured.
        document = {"targets": TARGETS, "cpus": os.cpu_count(), "results": results}
        (args.out / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    plot(results, args.out / f"{name}.png")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
