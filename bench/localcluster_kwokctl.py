"""`python -m bench.localcluster_kwokctl`: our local cluster against `kwokctl --runtime binary`.

Both run the same binaries (built from Go modules by e2e/localcluster/build.py) with the
same 6 nodes (4 GPU nodes with `nvidia.com/gpu`, 2 CPU nodes, `e2e/localcluster/nodes.py`)
and an audit log, on fresh state, side by side in one run, alternating which goes first.
For each it measures
- the start until the API is usable as the e2e tier uses it: `/readyz` answers, the
  ServiceAccount `default/default` exists (pods cannot be created before) and every node
  is Ready;
- restarting the kube-apiserver alone (SIGTERM, SIGKILL after 10 s, start it again) until
  `/readyz` answers, and which other components did not survive it;
- the addresses the cluster's processes listen on (loopback only or not);
- the stop, and whether any process or file is left.

kwokctl itself is built once with `go install sigs.k8s.io/kwok/cmd/kwokctl@<kwok version>`
into `${XDG_CACHE_HOME:-~/.cache}/inferops/bin/kwokctl-<version>/`; it is pointed at the
cached binaries by a KwokctlConfiguration file, so it downloads nothing. Writes
bench/results/localcluster-kwokctl.json and .png and prints the table. The verdict is in
docs/local-cluster.md ("Why not kwokctl").
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from e2e.localcluster import build, nodes, paths, versions
from e2e.localcluster.cluster import Cluster
from e2e.localcluster.kube import APIClient

from bench.operator import audit

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
KWOKCTL_PACKAGE = "sigs.k8s.io/kwok/cmd/kwokctl"
# The kwokctl components, named as kwokctl names them (its pid files, `--components`).
KWOKCTL_COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok-controller",
)
# kwokctl authenticates every component (and the admin) as this one user.
KWOKCTL_USER = "kwok-admin"
STOP_GRACE_SECONDS = 10.0  # as e2e/localcluster: the apiserver ignores SIGTERM under watches
TIMEOUT = 120.0
# How long after a restart the other components are checked: a controller that lost its
# leader lease exits a few seconds after the API server is back.
AFTER_RESTART_SECONDS = 5.0
log = logging.getLogger("bench.localcluster_kwokctl")


# ------------------------------------------------------------------------- pure parts
# What e2e/localcluster sets that kwokctl's defaults differ in, as kwokctl's extra arguments
# (component, flag, value, whether it replaces a flag kwokctl passes itself; a replacement
# of a flag it does not pass is dropped with a warning): no leader election (a component
# that loses its lease while the API server restarts exits), no fsync (throw-away data),
# loopback node IPs.
PARITY_PATCHES: tuple[tuple[str, str, str, bool], ...] = (
    ("kube-controller-manager", "leader-elect", "false", False),
    ("kube-scheduler", "leader-elect", "false", False),
    ("etcd", "unsafe-no-fsync", "true", False),
    ("kwok-controller", "node-ip", "127.0.0.1", True),
)


def kwokctl_config(tools: build.Toolset, audit_policy: Path, parity: bool) -> dict[str, Any]:
    """The KwokctlConfiguration that points kwokctl at the cached binaries: with every
    binary given as a local path it downloads nothing (its defaults are release URLs).
    `parity` adds PARITY_PATCHES. Written as JSON, which its YAML reader takes."""
    options = {
        "runtime": "binary",
        # Its default is 0.0.0.0 for every component.
        "bindAddress": "127.0.0.1",
        # The flags kwokctl passes depend on this version; its default is its own newest.
        "kubeVersion": versions.KUBERNETES_VERSION,
        "kubeApiserverBinary": str(tools.kube_apiserver),
        "kubeControllerManagerBinary": str(tools.kube_controller_manager),
        "kubeSchedulerBinary": str(tools.kube_scheduler),
        "kubectlBinary": str(tools.kubectl),
        "etcdBinary": str(tools.etcd),
        "kwokControllerBinary": str(tools.kwok),
        "kubeAuditPolicy": str(audit_policy),
    }
    patches: dict[str, list[dict[str, Any]]] = {}
    for component, key, value, override in PARITY_PATCHES if parity else ():
        patches.setdefault(component, []).append({"key": key, "value": value, "override": override})
    return {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        "options": options,
        "componentsPatches": [{"name": n, "extraArgs": a} for n, a in patches.items()],
    }


def kwokctl_audit_policy() -> str:
    """The benchmark's audit policy (bench/operator/audit.py) for kwokctl's one user. It
    cannot leave the other components out: they authenticate as that user too."""
    return audit.POLICY.replace('"kubernetes-admin"', f'"{KWOKCTL_USER}"')


def _hex_address(text: str) -> str:
    raw = bytes.fromhex(text)
    # /proc/net/tcp{,6} print each 32-bit word of the address in host (little-endian) order.
    ordered = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(ordered))


def parse_listeners(proc_net_tcp: str) -> list[tuple[str, int, int]]:
    """(address, port, socket inode) of every listening socket in a /proc/net/tcp or
    /proc/net/tcp6 text."""
    found = []
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != "0A":  # 0A = TCP_LISTEN
            continue
        address, port = fields[1].split(":")
        found.append((_hex_address(address), int(port, 16), int(fields[9])))
    return found


def is_loopback(address: str) -> bool:
    """Whether an address listened on is reachable only from this machine."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def summary(values: Sequence[float]) -> dict[str, float]:
    """min/median/max of repeated measurements, rounded to 0.1 s."""
    return {
        "min": round(min(values), 1),
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
    }


def table(result: dict[str, Any]) -> str:
    """The printed comparison (seconds as min / median / max over the runs)."""

    def cell(side: dict[str, Any], key: str) -> str:
        s = side[key]
        return f"{s['min']} / {s['median']} / {s['max']}"

    def names(side: dict[str, Any], key: str, empty: str = "none") -> str:
        return ", ".join(side[key]) or empty

    ours, theirs = result["ours"], result["kwokctl"]

    def row(label: str, shown: Callable[..., str], *key: str) -> tuple[str, str, str]:
        """The figure `key` of both sides, as `shown` writes it."""
        return (label, shown(ours, *key), shown(theirs, *key))

    rows = [
        row("start until usable (s)", cell, "start_seconds"),
        (
            "  of which the start command (s)",
            cell(ours, "start_seconds"),
            cell(theirs, "create_seconds"),
        ),
        row("restart kube-apiserver until /readyz (s)", cell, "restart_seconds"),
        row("other components that did not survive it", names, "restart_collateral"),
        row(f"components down {AFTER_RESTART_SECONDS:.0f} s after it", names, "down_after_restart"),
        row("stop until every process is gone (s)", cell, "stop_seconds"),
        row("non-loopback listeners", names, "non_loopback"),
        row("audit log: users recorded", names, "audit_users", ""),
        row("left after stop", names, "leftovers", "nothing"),
    ]
    patched = "with" if result["kwokctl_parity_patches"] else "without"
    heading = f"runs: {result['runs']}; kwokctl {patched} the arguments that match e2e/localcluster"
    if result["ours_admin_controllers"]:
        heading += "; ours with --use-service-account-credentials=false"
    lines = [
        heading,
        "| | e2e/localcluster | kwokctl --runtime binary |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


PLOT_FIGURES = (
    ("start_seconds", "start until usable"),
    ("restart_seconds", "restart kube-apiserver"),
    ("stop_seconds", "stop until gone"),
)


def plot(result: dict[str, Any], path: Path) -> None:
    """Bars: medians over the runs, whiskers min..max (matplotlib, from the `bench` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    for i, (side, label) in enumerate((("ours", "e2e/localcluster"), ("kwokctl", "kwokctl"))):
        figures = [result[side][key] for key, _ in PLOT_FIGURES]
        ax.bar(
            [j + (i - 0.5) * 0.4 for j in range(len(PLOT_FIGURES))],
            [f["median"] for f in figures],
            0.4,
            yerr=[
                [f["median"] - f["min"] for f in figures],
                [f["max"] - f["median"] for f in figures],
            ],
            capsize=3,
            label=label,
        )
    ax.set_xticks(range(len(PLOT_FIGURES)), [label for _, label in PLOT_FIGURES])
    ax.set_ylabel("seconds")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    ax.set_title(table(result).splitlines()[0], fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- the machine
def listening(pids: Iterable[int]) -> list[str]:
    """`address:port` of every TCP socket the given processes listen on."""
    inodes: set[int] = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            for fd in fd_dir.iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
        except OSError:
            continue
    found = []
    for table_file in ("/proc/net/tcp", "/proc/net/tcp6"):
        for address, port, inode in parse_listeners(Path(table_file).read_text()):
            if inode in inodes:
                found.append(f"{address}:{port}")
    return sorted(set(found))


def _alive(pid: int) -> bool:
    """Whether the pid exists and is not a zombie (as e2e/localcluster/procs.py)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return raw[raw.rindex(")") + 2 :].split()[0] not in ("Z", "X")


def _present(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _wait(what: str, check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def _ok(client: APIClient, path: str) -> bool:
    try:
        return client.get(path).status == 200
    except OSError:
        return False


def _nodes_ready(client: APIClient, expected: int) -> bool:
    try:
        resp = client.get("/api/v1/nodes")
    except OSError:
        return False
    if resp.status != 200:
        return False
    ready = [
        n
        for n in resp.json()["items"]
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in n.get("status", {}).get("conditions", [])
        )
    ]
    return len(ready) >= expected


def _audit_users(log_path: Path) -> list[str]:
    users: set[str] = set()
    if log_path.is_file():
        with log_path.open() as lines:
            for line in lines:
                event = json.loads(line)
                agent = event.get("userAgent", "?").split("/")[0]
                users.add(f"{event['user']['username']} ({agent})")
    return sorted(users)


def kwokctl_binary() -> Path:
    return paths.bin_root() / f"kwokctl-{versions.KWOK_VERSION}" / "kwokctl"


def ensure_kwokctl() -> Path:
    """Build kwokctl from the Go module proxy into the cache unless it is there."""
    target = kwokctl_binary()
    if os.access(target, os.X_OK):
        return target
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("the `go` command is not on PATH; it is needed to build kwokctl")
    tmp = target.parent.with_name(f".{target.parent.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    env = {
        **os.environ,
        "GOBIN": str(tmp),
        "CGO_ENABLED": "0",
        "GOTOOLCHAIN": "local",
        "GOWORK": "off",
    }
    started = time.monotonic()
    log.info("building kwokctl %s with go install (once)", versions.KWOK_VERSION)
    subprocess.run(
        [go, "install", "-trimpath", f"{KWOKCTL_PACKAGE}@{versions.KWOK_VERSION}"],
        env=env,
        check=True,
    )
    shutil.rmtree(target.parent, ignore_errors=True)
    tmp.rename(target.parent)
    log.info("kwokctl built in %.0fs", time.monotonic() - started)
    return target


# ---------------------------------------------------------------------- the two clusters
def run_ours(workdir: Path, layout: nodes.NodeLayout, admin_controllers: bool) -> dict[str, Any]:
    state = workdir / "ours"
    state.mkdir(parents=True)
    extra = {"kube-apiserver": audit.apiserver_args(state)}
    if admin_controllers:
        # As kwokctl runs it: every controller with the controller manager's own identity.
        extra["kube-controller-manager"] = ["--use-service-account-credentials=false"]
    cluster = Cluster(state_dir=state / "cluster", layout=layout, extra_args=extra)
    began = time.monotonic()
    cluster.up()
    start = time.monotonic() - began
    all_pids: set[int] = set()
    try:
        pids = cluster.pids()
        all_pids.update(pids.values())
        listeners = listening(pids.values())
        others = {n: p for n, p in pids.items() if n != "kube-apiserver"}
        restart = cluster.restart("kube-apiserver")
        time.sleep(AFTER_RESTART_SECONDS)
        collateral = sorted(n for n, p in others.items() if not _alive(p))
        down = sorted(s.name for s in cluster.status() if not s.running)
    finally:
        all_pids.update(cluster.pids().values())
        began = time.monotonic()
        cluster.down()
        _wait("the cluster's processes gone", lambda: not any(map(_present, all_pids)), 30)
        stop = time.monotonic() - began
    leftovers = [f"{state / 'cluster'}"] if (state / "cluster").exists() else []
    return {
        "start": start,
        "create": start,
        "restart": restart,
        "collateral": collateral,
        "down_after_restart": down,
        "stop": stop,
        "listeners": listeners,
        "audit_users": _audit_users(state / "audit.log"),
        "leftovers": leftovers,
    }


class Kwokctl:
    """One kwokctl cluster in its own KWOK_WORKDIR (never the user's ~/.kwok)."""

    def __init__(
        self, binary: Path, workdir: Path, tools: build.Toolset, parity: bool = True
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.tools = tools
        self.name = "bench"
        self.dir = workdir / "clusters" / self.name
        workdir.mkdir(parents=True)
        policy = workdir / "audit-policy.yaml"
        policy.write_text(kwokctl_audit_policy())
        self.config = workdir / "kwokctl.yaml"
        self.config.write_text(json.dumps(kwokctl_config(tools, policy, parity), indent=2))

    def run(self, *args: str) -> None:
        env = {
            **os.environ,
            "KWOK_WORKDIR": str(self.workdir),
            # kwokctl polls with the first `kubectl` on PATH and ignores kubectlBinary
            # when there is one: make that ours, not whatever the machine has.
            "PATH": f"{self.tools.bin_dir}:{os.environ.get('PATH', '')}",
        }
        argv = [str(self.binary), "-c", str(self.config), "--name", self.name, *args]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT)
        if proc.returncode != 0:
            raise RuntimeError(f"`kwokctl {' '.join(args)}` failed:\n{proc.stderr[-3000:]}")

    def client(self) -> APIClient:
        pki = self.dir / "pki"
        return APIClient(
            f"https://127.0.0.1:{self._port()}",
            pki / "ca.crt",
            pki / "admin.crt",
            pki / "admin.key",
        )

    def _port(self) -> int:
        for line in (self.dir / "kubeconfig.yaml").read_text().splitlines():
            if "server: https://127.0.0.1:" in line:
                return int(line.rsplit(":", 1)[1])
        raise RuntimeError(f"no server in {self.dir / 'kubeconfig.yaml'}")

    def pids(self) -> dict[str, int]:
        found = {}
        for component in KWOKCTL_COMPONENTS:
            pid_file = self.dir / "pids" / f"{component}.pid"
            if pid_file.is_file():
                found[component] = int(pid_file.read_text().strip())
        return found

    def usable(self, layout: nodes.NodeLayout) -> None:
        """Create the nodes (kwokctl creates none) and wait as `Cluster.up` waits."""
        client = self.client()
        _wait("kwokctl's /readyz", lambda: _ok(client, "/readyz"))
        for manifest in layout.manifests():
            resp = client.post("/api/v1/nodes", manifest)
            if resp.status not in (200, 201):
                raise RuntimeError(f"creating a node failed: HTTP {resp.status} {resp.text}")
        _wait(
            "ServiceAccount default/default",
            lambda: _ok(client, "/api/v1/namespaces/default/serviceaccounts/default"),
        )
        _wait("nodes Ready", lambda: _nodes_ready(client, layout.total))

    def restart_apiserver(self) -> float:
        """kwokctl has no per-component restart: stop the process, as our `restart` does,
        then `kwokctl start cluster`, which starts the components whose pid is not alive."""
        pid = self.pids()["kube-apiserver"]
        began = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        # kwokctl checks the pid with a signal 0, which a zombie passes: wait until init
        # has reaped it, or `start cluster` leaves the apiserver stopped.
        _wait("the old apiserver reaped", lambda: not _present(pid), timeout=30)
        self.run("start", "cluster")
        client = self.client()
        _wait("kwokctl's /readyz after the restart", lambda: _ok(client, "/readyz"))
        return time.monotonic() - began


def run_kwokctl(
    workdir: Path, layout: nodes.NodeLayout, binary: Path, tools: build.Toolset, parity: bool
) -> dict[str, Any]:
    cluster = Kwokctl(binary, workdir / "kwokctl", tools, parity)
    all_pids: set[int] = set()
    began = time.monotonic()
    try:
        cluster.run("create", "cluster", "--kubeconfig", str(cluster.workdir / "kubeconfig"))
        create = time.monotonic() - began
        cluster.usable(layout)
        start = time.monotonic() - began
        pids = cluster.pids()
        all_pids.update(pids.values())
        listeners = listening(pids.values())
        others = {n: p for n, p in pids.items() if n != "kube-apiserver"}
        restart = cluster.restart_apiserver()
        time.sleep(AFTER_RESTART_SECONDS)
        collateral = sorted(n for n, p in others.items() if not _alive(p))
        down = sorted(n for n in KWOKCTL_COMPONENTS if not _alive(cluster.pids().get(n, 0)))
        audit_users = _audit_users(cluster.dir / "logs" / "audit.log")
    finally:
        all_pids.update(cluster.pids().values())
        began = time.monotonic()
        cluster.run("delete", "cluster")
        # `delete cluster` sends SIGKILL and returns without waiting; count until all are
        # gone, as `down` does.
        _wait("the cluster's processes gone", lambda: not any(map(_present, all_pids)), 30)
        stop = time.monotonic() - began
    leftovers = [str(cluster.dir)] if cluster.dir.exists() else []
    return {
        "start": start,
        "create": create,
        "restart": restart,
        "collateral": collateral,
        "down_after_restart": down,
        "stop": stop,
        "listeners": listeners,
        "audit_users": audit_users,
        "leftovers": leftovers,
    }


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures over the runs of one side."""
    return {
        "start_seconds": summary([r["start"] for r in runs]),
        "create_seconds": summary([r["create"] for r in runs]),
        "restart_seconds": summary([r["restart"] for r in runs]),
        "stop_seconds": summary([r["stop"] for r in runs]),
        "restart_collateral": sorted({c for r in runs for c in r["collateral"]}),
        "down_after_restart": sorted({c for r in runs for c in r["down_after_restart"]}),
        "listeners": sorted({a for r in runs for a in r["listeners"]}),
        "non_loopback": sorted(
            {a for r in runs for a in r["listeners"] if not is_loopback(a.rsplit(":", 1)[0])}
        ),
        "audit_users": sorted({u for r in runs for u in r["audit_users"]}),
        "leftovers": sorted({x for r in runs for x in r["leftovers"]}),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.localcluster_kwokctl")
    parser.add_argument("--runs", type=int, default=3, help="repeats of each side (default 3)")
    parser.add_argument(
        "--out", type=Path, help="results file (default: bench/results/localcluster-kwokctl*.json)"
    )
    parser.add_argument(
        "--kwokctl-defaults",
        action="store_true",
        help="run kwokctl without the arguments that match e2e/localcluster (PARITY_PATCHES)",
    )
    parser.add_argument(
        "--ours-admin-controllers",
        action="store_true",
        help="run our controller manager without --use-service-account-credentials, as kwokctl",
    )
    parser.add_argument(
        "--write-config",
        type=Path,
        metavar="DIR",
        help="only build kwokctl and write DIR/kwokctl.yaml (with the parity flags unless "
        "--kwokctl-defaults) and DIR/audit-policy.yaml, for trying kwokctl by hand",
    )
    args = parser.parse_args(argv)
    if args.write_config:
        ensure_kwokctl()
        args.write_config.mkdir(parents=True, exist_ok=True)
        policy = args.write_config / "audit-policy.yaml"
        policy.write_text(kwokctl_audit_policy())
        config = kwokctl_config(build.ensure_built(), policy, not args.kwokctl_defaults)
        (args.write_config / "kwokctl.yaml").write_text(json.dumps(config, indent=2) + "\n")
        print(f"kwokctl: {kwokctl_binary()}\nconfiguration: {args.write_config / 'kwokctl.yaml'}")
        return 0
    if args.runs < 1:
        parser.error("--runs: at least 1")
    if args.out is None:
        suffix = "-defaults" if args.kwokctl_defaults else ""
        suffix += "-admin-controllers" if args.ours_admin_controllers else ""
        args.out = RESULTS / f"localcluster-kwokctl{suffix}.json"
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    if importlib.util.find_spec("matplotlib") is None:  # fail now, not after the run
        raise SystemExit("the plot needs matplotlib: .venv/bin/pip install -e '.[bench]'")
    tools = build.ensure_built()
    binary = ensure_kwokctl()
    layout = nodes.NodeLayout()
    sides: dict[str, list[dict[str, Any]]] = {"ours": [], "kwokctl": []}
    with tempfile.TemporaryDirectory(prefix="localcluster-kwokctl-") as tmp:
        for i in range(args.runs):
            # Alternate which goes first, so a slow phase of the machine hits both.
            order = ("ours", "kwokctl") if i % 2 == 0 else ("kwokctl", "ours")
            for side in order:
                workdir = Path(tmp) / f"{side}-{i}"
                log.info("run %d: %s", i + 1, side)
                result = (
                    run_ours(workdir, layout, args.ours_admin_controllers)
                    if side == "ours"
                    else run_kwokctl(workdir, layout, binary, tools, not args.kwokctl_defaults)
                )
                log.info("run %d: %s: %s", i + 1, side, json.dumps(result))
                sides[side].append(result)
    result = {
        "runs": args.runs,
        "kwokctl_parity_patches": not args.kwokctl_defaults,
        "ours_admin_controllers": args.ours_admin_controllers,
        "nodes": {"gpu": layout.gpu_nodes, "cpu": layout.cpu_nodes},
        "versions": {
            "kubernetes": versions.KUBERNETES_VERSION,
            "etcd": versions.ETCD_VERSION,
            "kwok": versions.KWOK_VERSION,
            "kwokctl": versions.KWOK_VERSION,
        },
        "ours": aggregate(sides["ours"]),
        "kwokctl": aggregate(sides["kwokctl"]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(table(result))
    print(f"results: {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
