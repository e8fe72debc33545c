"""Run a real Kubernetes control plane with kwok-simulated nodes as local processes.

``Cluster.up()`` starts etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok on 127.0.0.1 only, creates the simulated nodes, and returns
once the API is ready, the ``default`` ServiceAccount exists and every node is
Ready. It never sleeps for a fixed time: each step polls with one overall deadline,
and a component that exits or does not become healthy makes ``up`` fail with the
reason and the tail of that component's log, after stopping what it started.

State (PKI, etcd data, logs, kubeconfigs, pids) lives in one directory, by default
``<checkout>/.cluster``; ``state.json`` there records pids and ports so another
process (the CLI, a later test session) can find and stop the cluster.

Loopback only: every listener binds 127.0.0.1, nodes advertise 127.0.0.1, and pod
IPs/ClusterIPs are fake values that nothing may dial.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from . import build, kube, nodes, paths, pki, procs

log = logging.getLogger(__name__)

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
# Fake pod IPs handed out by kwok; never contacted. Not loopback, because the
# EndpointSlice validation rejects loopback addresses.
POD_CIDR = "10.244.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
CONTEXT_NAME = "inferops-local"
DEFAULT_STARTUP_TIMEOUT = 120.0
STOP_GRACE_SECONDS = 10.0
STATE_FILE = "state.json"
KWOK_NODE_LEASE_SECONDS = 40

# Start order.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
STOP_STAGES = (
    ("kwok", "kube-scheduler", "kube-controller-manager"),
    ("kube-apiserver",),
    ("etcd",),
)
PORT_NAMES = (
    "etcd-client",
    "etcd-peer",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
)

# Entries `down` removes; an INFEROPS_CLUSTER_DIR pointing at a directory with other
# content must never be wiped wholesale.
_STATE_ENTRIES = ("pki", "etcd", "logs", "kubeconfigs", "run", "kubeconfig", STATE_FILE)


class ClusterError(RuntimeError):
    """The cluster could not be started or stopped.

    ``component`` names the failing component (if one is to blame) and ``log_tail``
    holds the end of its log; both are also part of the message so that a test that
    fails on this exception shows them without extra work.
    """

    def __init__(self, message: str, component: str | None = None, log_tail: str = "") -> None:
        full = message if not log_tail else f"{message}\n{log_tail}"
        super().__init__(full)
        self.component = component
        self.log_tail = log_tail


@dataclass(frozen=True)
class ComponentStatus:
    """One component as `status` reports it."""

    name: str
    running: bool
    pid: int | None
    port: int | None
    healthy: bool
    detail: str


class Cluster:
    """A local control plane with simulated nodes, rooted at one state directory.

    Typical use in a pytest fixture::

        cluster = Cluster.default()
        cluster.up()            # builds binaries on first use, then starts
        run([cluster.kubectl_path, "--kubeconfig", cluster.kubeconfig, "get", "nodes"])
        cluster.down()
    """

    def __init__(
        self,
        state_dir: Path | str | None = None,
        layout: nodes.NodeLayout | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        extra_args: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """`extra_args`: more flags per component (e.g. the operator benchmark's audit log
        and client rate limits), by component name."""
        self.state_dir = (
            Path(state_dir).resolve() if state_dir is not None else paths.default_state_dir()
        )
        self.layout = layout if layout is not None else nodes.NodeLayout()
        self.startup_timeout = startup_timeout
        self.extra_args = {name: list(args) for name, args in (extra_args or {}).items()}
        self.tools = build.toolset()
        self._records: dict[str, procs.ProcessRecord] = {}

    @classmethod
    def default(cls, **overrides: Any) -> Cluster:
        """Return the cluster of this checkout: state dir and node layout from the environment."""
        overrides.setdefault("layout", nodes.NodeLayout.from_env())
        return cls(**overrides)

    # ----------------------------------------------------------------- locations
    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (client cert in group system:masters, certs embedded)."""
        return self.state_dir / "kubeconfig"

    @property
    def bin_dir(self) -> Path:
        """Directory with kubectl, helm, kwok, etcd and the control-plane binaries, for PATH."""
        return self.tools.bin_dir

    @property
    def kubectl_path(self) -> Path:
        return self.tools.kubectl

    @property
    def helm_path(self) -> Path:
        return self.tools.helm

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pki_files(self) -> pki.PKI:
        """Locations of the cluster's CA, certificates and keys."""
        return pki.PKI(self.state_dir / "pki")

    @property
    def server(self) -> str:
        """The apiserver URL, e.g. ``https://127.0.0.1:40123`` (only while state exists)."""
        ports = self._load_state().get("ports", {})
        if "kube-apiserver" not in ports:
            raise ClusterError(f"no cluster state in {self.state_dir}; run up first")
        return f"https://127.0.0.1:{ports['kube-apiserver']}"

    @property
    def recorded_layout(self) -> nodes.NodeLayout | None:
        """The node layout the running (or kept) cluster was started with, if any."""
        raw = self._load_state().get("layout")
        if not isinstance(raw, dict):
            return None
        try:
            return nodes.NodeLayout(**raw)
        except (TypeError, ValueError):
            return None

    @property
    def env(self) -> dict[str, str]:
        """os.environ plus KUBECONFIG and PATH (built binaries first), for subprocesses."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl on this cluster; raise CalledProcessError if ``check`` fails."""
        return subprocess.run(
            [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    # ------------------------------------------------------------------ lifecycle
    def build(self, force: bool = False) -> build.Toolset:
        """Build missing binaries into the cache (all of them if ``force``)."""
        self.tools = build.ensure_built(force=force)
        return self.tools

    def up(self) -> bool:
        """Start the cluster, building binaries first if needed.

        Returns True if this call started it and False if it was already running and
        healthy (then nothing is changed), so a test fixture can leave a cluster that a
        developer started by hand running. Raises ClusterError with the failing
        component's log tail if start-up fails; no process is left behind then.
        """
        self.build()
        with self._lock():
            return self._up_locked()

    def _up_locked(self) -> bool:
        state = self._load_state()
        self._records = self._recorded_processes(state)
        if self._records and self._all_healthy(state):
            recorded_layout = state.get("layout")
            if recorded_layout and recorded_layout != asdict(self.layout):
                log.warning(
                    "cluster already running with node layout %s (requested %s); "
                    "run `down` first to change it",
                    recorded_layout,
                    asdict(self.layout),
                )
            log.info("cluster in %s is already running", self.state_dir)
            return False
        running = [r for r in self._records.values() if procs.is_running(r)]
        if running:
            log.warning(
                "stopping leftovers of an unhealthy cluster: %s", ", ".join(r.name for r in running)
            )
            _stop_in_stages(running)
        self._records = {}
        started = time.monotonic()
        try:
            self._start(state)
        except BaseException as exc:
            # Leave no process behind on any failure, but keep logs for diagnosis.
            self._stop_recorded(quiet=True)
            if isinstance(exc, ClusterError):
                raise
            if isinstance(exc, Exception):
                raise ClusterError(f"cluster start failed: {exc}\n{self.diagnostics()}") from exc
            raise
        log.info("cluster ready in %.1fs (%d nodes)", time.monotonic() - started, self.layout.total)
        return True

    def down(self, keep_state: bool = False) -> None:
        """Stop every process the cluster started; remove the state dir unless ``keep_state``."""
        with self._lock():
            self._down_locked(keep_state)

    def _down_locked(self, keep_state: bool) -> None:
        state = self._load_state()
        self._records = self._recorded_processes(state)
        self._stop_recorded(quiet=False)
        orphans = self._orphans()
        if orphans:
            log.warning(
                "stopping unrecorded processes of this cluster: %s",
                ", ".join(r.name for r in orphans),
            )
            _stop_in_stages(orphans)
        if not keep_state:
            for entry in _STATE_ENTRIES:
                target = self.state_dir / entry
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
            # Fails if not empty (foreign files) or already gone; both are fine.
            with contextlib.suppress(OSError):
                self.state_dir.rmdir()
        elif state:
            state["processes"] = []
            self._save_state(state)

    def restart(self, name: str, down_seconds: float = 0.0) -> float:
        """Stop one running component (SIGTERM, as a supervisor would) and start it again,
        `down_seconds` later, with the same arguments and ports; return the seconds until
        it is healthy again.

        For fault tests: clients of the component see it go away and come back. The other
        components keep running; the cluster's state (etcd data, PKI) is untouched.
        """
        if name not in COMPONENTS:
            raise ValueError(f"unknown component {name!r}; one of {', '.join(COMPONENTS)}")
        with self._lock():
            state = self._load_state()
            self._records = self._recorded_processes(state)
            record = self._records.get(name)
            if record is None or not procs.is_running(record):
                raise ClusterError(f"{name} is not running in {self.state_dir}; run up first")
            began = time.monotonic()
            try:
                procs.stop([record], grace=STOP_GRACE_SECONDS)
            except RuntimeError as exc:
                raise ClusterError(str(exc), name) from exc
            time.sleep(down_seconds)  # an outage of a chosen length
            # argv[0] is the binary; _launch puts the cached one back in front.
            self._launch(name, record.argv[1:], state)
            deadline = time.monotonic() + self.startup_timeout
            ports = state.get("ports", {})
            self._wait(name, f"{name} health", deadline, lambda: self._probe(name, ports))
            return time.monotonic() - began

    def status(self) -> list[ComponentStatus]:
        """Return which components run and whether their health endpoints answer."""
        state = self._load_state()
        records = self._recorded_processes(state)
        ports = state.get("ports", {})
        result = []
        for name in COMPONENTS:
            rec = records.get(name)
            running = rec is not None and procs.is_running(rec)
            healthy, detail = (False, "not running")
            if running:
                healthy, detail = self._probe(name, ports)
            result.append(
                ComponentStatus(
                    name=name,
                    running=running,
                    pid=rec.pid if rec is not None and running else None,
                    port=ports.get("etcd-client" if name == "etcd" else name),
                    healthy=healthy,
                    detail=detail,
                )
            )
        return result

    def pids(self) -> dict[str, int]:
        """The component processes this object started, by name (for measuring them)."""
        return {name: record.pid for name, record in self._records.items()}

    def is_running(self) -> bool:
        """Return whether every component runs and answers its health check."""
        return all(s.running and s.healthy for s in self.status())

    def node_summary(self) -> str:
        """Return e.g. ``6/6 nodes Ready`` (for status output)."""
        try:
            items = self._client().get("/api/v1/nodes").json().get("items", [])
        except (OSError, ValueError, ClusterError) as exc:
            return f"nodes: unknown ({exc})"
        ready = sum(1 for n in items if _node_ready(n))
        return f"{ready}/{len(items)} nodes Ready"

    def diagnostics(self, lines: int = 40) -> str:
        """Return the tail of every component log (for a failing test's report)."""
        parts = []
        for name in COMPONENTS:
            path = self.logs_dir / f"{name}.log"
            if path.exists():
                parts.append(procs.tail(path, lines))
        return "\n".join(parts) if parts else f"(no logs in {self.logs_dir})"

    def __enter__(self) -> Cluster:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ------------------------------------------------------------------- start-up
    def _start(self, previous: dict[str, Any]) -> None:
        for sub in ("logs", "kubeconfigs", "run", "etcd"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        (self.state_dir / "etcd").chmod(0o700)  # etcd refuses a data dir others can read
        the_pki = pki.ensure_pki(self.state_dir / "pki")
        ports = self._choose_ports(previous.get("ports", {}))
        server = f"https://127.0.0.1:{ports['kube-apiserver']}"
        self._write_kubeconfigs(the_pki, server)
        state: dict[str, Any] = {
            "format": 1,
            "server": server,
            "ports": ports,
            "layout": asdict(self.layout),
            "versions": {c.name: c.version for c in build.COMPONENTS},
            "processes": [],
        }
        self._save_state(state)
        deadline = time.monotonic() + self.startup_timeout

        self._launch("etcd", self._etcd_args(ports), state)
        etcd_url = f"http://127.0.0.1:{ports['etcd-client']}/health"
        self._wait("etcd", "etcd /health", deadline, lambda: _etcd_healthy(etcd_url))

        self._launch("kube-apiserver", self._apiserver_args(the_pki, ports), state)
        client = self._client(server)
        self._wait(
            "kube-apiserver", "apiserver /readyz", deadline, lambda: _get_ok(client, "/readyz")
        )

        # Create nodes before kwok starts, so kwok's first list already has them.
        self._create_nodes(client)
        self._launch(
            "kube-controller-manager", self._controller_manager_args(the_pki, ports), state
        )
        self._launch("kube-scheduler", self._scheduler_args(ports), state)
        self._launch("kwok", self._kwok_args(ports), state)

        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            probe = functools.partial(self._probe, name, ports)
            self._wait(name, f"{name} health", deadline, probe)
        self._wait(
            "kube-controller-manager",
            "ServiceAccount default/default",
            deadline,
            lambda: _get_ok(client, "/api/v1/namespaces/default/serviceaccounts/default"),
        )
        expected = set(self.layout.node_names())
        self._wait(
            "kwok", f"{len(expected)} nodes Ready", deadline, lambda: _nodes_ready(client, expected)
        )

    def _launch(self, name: str, args: list[str], state: dict[str, Any]) -> None:
        binary = {
            "etcd": self.tools.etcd,
            "kube-apiserver": self.tools.kube_apiserver,
            "kube-controller-manager": self.tools.kube_controller_manager,
            "kube-scheduler": self.tools.kube_scheduler,
            "kwok": self.tools.kwok,
        }[name]
        env = dict(os.environ)
        # Keep every Go HTTP client here off any proxy for loopback and fake addresses.
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,10.0.0.0/8"
        env.pop("KUBECONFIG", None)
        record = procs.start(
            name,
            [str(binary), *args, *self.extra_args.get(name, [])],
            self.logs_dir / f"{name}.log",
            cwd=self.state_dir / "run",
            env=env,
        )
        self._records[name] = record
        # Record before waiting, so `down` finds it even if this process dies now.
        state["processes"] = [r.to_json() for r in self._records.values()]
        self._save_state(state)
        log.info("started %s (pid %d)", name, record.pid)

    def _wait(
        self,
        component: str,
        what: str,
        deadline: float,
        check: Callable[[], tuple[bool, str]],
        interval: float = 0.2,
    ) -> None:
        """Poll ``check`` until it passes; fail fast if any started process exits."""
        started = time.monotonic()
        reason = "not checked yet"
        while True:
            for rec in self._records.values():
                if not procs.is_running(rec):
                    code = procs.exit_code(rec)
                    how = f"exited with code {code}" if code is not None else "is no longer running"
                    raise ClusterError(
                        f"{rec.name} {how} while waiting for {what}", rec.name, procs.tail(rec.log)
                    )
            ok, reason = check()
            if ok:
                log.info("%s ok after %.1fs", what, time.monotonic() - started)
                return
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"timed out after {self.startup_timeout:.0f}s waiting for {what} "
                    f"(last: {reason})",
                    component,
                    procs.tail(self.logs_dir / f"{component}.log"),
                )
            time.sleep(interval)

    def _create_nodes(self, client: kube.APIClient) -> None:
        for manifest in self.layout.manifests():
            resp = client.post("/api/v1/nodes", manifest)
            if resp.status == 409:
                continue  # kept state from an earlier run
            if resp.status not in (200, 201):
                raise ClusterError(
                    f"creating node {manifest['metadata']['name']} failed: "
                    f"HTTP {resp.status} {resp.text}"
                )
        log.info(
            "created %d GPU node(s) with %d x nvidia.com/gpu and %d CPU node(s)",
            self.layout.gpu_nodes,
            self.layout.gpus_per_node,
            self.layout.cpu_nodes,
        )

    # --------------------------------------------------------------- process args
    def _etcd_args(self, ports: dict[str, int]) -> list[str]:
        client_url = f"http://127.0.0.1:{ports['etcd-client']}"
        peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
        return [
            "--name=local",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            # The peer listener defaults to all interfaces on :2380; pin it to loopback.
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=local={peer_url}",
            # A throw-away test cluster: fsync only costs time here.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]

    def _apiserver_args(self, the_pki: pki.PKI, ports: dict[str, int]) -> list[str]:
        return [
            f"--etcd-servers=http://127.0.0.1:{ports['etcd-client']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['kube-apiserver']}",
            # No endpoints for the `kubernetes` Service: nothing should dial a ClusterIP.
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={the_pki.apiserver_cert}",
            f"--tls-private-key-file={the_pki.apiserver_key}",
            f"--client-ca-file={the_pki.ca_cert}",
            # Published in kube-system/extension-apiserver-authentication for the
            # controller manager's and scheduler's delegated authentication.
            f"--requestheader-client-ca-file={the_pki.front_proxy_ca_cert}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={the_pki.sa_pub}",
            f"--service-account-signing-key-file={the_pki.sa_key}",
            "--authorization-mode=Node,RBAC",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            f"--cert-dir={self.state_dir / 'run'}",
            "--profiling=false",
        ]

    def _controller_manager_args(self, the_pki: pki.PKI, ports: dict[str, int]) -> list[str]:
        kubeconfig = self.state_dir / "kubeconfigs" / "kube-controller-manager.kubeconfig"
        return [
            f"--kubeconfig={kubeconfig}",
            # Delegated authn/authz of its own /metrics; without them it logs errors.
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-controller-manager']}",
            f"--service-account-private-key-file={the_pki.sa_key}",
            f"--root-ca-file={the_pki.ca_cert}",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={the_pki.ca_cert}",
            f"--cluster-signing-key-file={the_pki.ca_key}",
            "--leader-elect=false",
            "--profiling=false",
        ]

    def _scheduler_args(self, ports: dict[str, int]) -> list[str]:
        kubeconfig = self.state_dir / "kubeconfigs" / "kube-scheduler.kubeconfig"
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-scheduler']}",
            "--leader-elect=false",
            "--profiling=false",
        ]

    def _kwok_args(self, ports: dict[str, int]) -> list[str]:
        return [
            f"--kubeconfig={self.state_dir / 'kubeconfigs' / 'kwok.kubeconfig'}",
            # kwok v0.8 ships no built-in stages; this file is assembled at build time.
            f"--config={self.tools.kwok_stages}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={nodes.KWOK_ANNOTATION}={nodes.KWOK_ANNOTATION_VALUE}",
            # Defaults would be a non-loopback node IP; keep everything on loopback.
            "--node-ip=127.0.0.1",
            f"--cidr={POD_CIDR}",
            # Its health server only; without it kwok opens no port at all, and with a
            # bare port it would listen on 0.0.0.0.
            f"--server-address=127.0.0.1:{ports['kwok']}",
            f"--node-lease-duration-seconds={KWOK_NODE_LEASE_SECONDS}",
            # INFO logs every lease renewal of every node; warnings and errors are
            # what a failing test needs.
            "--v=WARN",
        ]

    # ------------------------------------------------------------------- helpers
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise up/down of one state dir across processes (e.g. parallel test runs).

        The lock file lives in the cache, keyed by the state dir, so that `down` can
        remove the state dir completely.
        """
        key = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:16]
        lock_path = paths.cache_root() / "locks" / f"cluster-{key}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as fh:
            fh.write(f"{self.state_dir}\n")
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _probe(self, name: str, ports: dict[str, int]) -> tuple[bool, str]:
        port = ports.get(name)
        if name == "etcd":
            return _etcd_healthy(f"http://127.0.0.1:{ports.get('etcd-client')}/health")
        if port is None:
            return False, "no port recorded"
        if name == "kube-apiserver":
            try:
                return _get_ok(self._client(f"https://127.0.0.1:{port}"), "/readyz")
            except (OSError, ValueError) as exc:
                return False, str(exc)
        if name == "kwok":
            return kube.probe(f"http://127.0.0.1:{port}/healthz")
        return kube.probe(f"https://127.0.0.1:{port}/healthz", insecure=True)

    def _all_healthy(self, state: dict[str, Any]) -> bool:
        ports = state.get("ports", {})
        for name in COMPONENTS:
            rec = self._records.get(name)
            if rec is None or not procs.is_running(rec) or not self._probe(name, ports)[0]:
                return False
        return self.kubeconfig.is_file()

    def _client(self, server: str | None = None) -> kube.APIClient:
        the_pki = self.pki_files
        return kube.APIClient(
            server or self.server,
            the_pki.ca_cert,
            the_pki.client_cert(pki.ADMIN),
            the_pki.client_key(pki.ADMIN),
        )

    def _choose_ports(self, previous: dict[str, int]) -> dict[str, int]:
        """Reuse the previous ports if all are free (kubeconfigs stay valid), else pick new ones."""
        if (
            previous
            and set(previous) == set(PORT_NAMES)
            and all(_port_free(p) for p in previous.values())
        ):
            return dict(previous)
        socks = []
        try:
            for _ in PORT_NAMES:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind(("127.0.0.1", 0))
                socks.append(s)
            return {name: s.getsockname()[1] for name, s in zip(PORT_NAMES, socks, strict=True)}
        finally:
            for s in socks:
                s.close()

    def _write_kubeconfigs(self, the_pki: pki.PKI, server: str) -> None:
        admin = _kubeconfig(
            server,
            ca=_b64(the_pki.ca_cert),
            cert=_b64(the_pki.client_cert(pki.ADMIN)),
            key=_b64(the_pki.client_key(pki.ADMIN)),
            user="admin",
            embed=True,
        )
        _write_private(self.kubeconfig, yaml.safe_dump(admin, sort_keys=False))
        for ident in (pki.CONTROLLER_MANAGER, pki.SCHEDULER, pki.KWOK):
            conf = _kubeconfig(
                server,
                ca=str(the_pki.ca_cert),
                cert=str(the_pki.client_cert(ident)),
                key=str(the_pki.client_key(ident)),
                user=ident.stem,
                embed=False,
            )
            _write_private(
                self.state_dir / "kubeconfigs" / f"{ident.stem}.kubeconfig",
                yaml.safe_dump(conf, sort_keys=False),
            )

    def _load_state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.state_dir / STATE_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_state(self, state: dict[str, Any]) -> None:
        path = self.state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(path)

    @staticmethod
    def _recorded_processes(state: dict[str, Any]) -> dict[str, procs.ProcessRecord]:
        records = {}
        for raw in state.get("processes", []):
            try:
                rec = procs.ProcessRecord.from_json(raw)
            except (KeyError, TypeError, ValueError):
                continue
            records[rec.name] = rec
        return records

    def _stop_recorded(self, quiet: bool) -> None:
        ordered = [self._records[n] for n in reversed(COMPONENTS) if n in self._records]
        running = [r for r in ordered if procs.is_running(r)]
        if running and not quiet:
            log.info("stopping %s", ", ".join(f"{r.name} ({r.pid})" for r in running))
        _stop_in_stages(ordered)
        self._records = {}

    def _orphans(self) -> list[procs.ProcessRecord]:
        """Find processes of our binaries whose arguments point into this state dir.

        A safety net for a launcher that was killed between starting a process and
        recording it; the match is on this exact state dir, so other clusters and
        unrelated processes are never touched.
        """
        binaries = {str(self.tools.etcd), str(self.tools.kwok)} | {
            str(build.KUBERNETES.path(b)) for b in build.KUBERNETES.binaries
        }
        marker = f"{self.state_dir}/"
        found = []
        for proc_dir in Path("/proc").iterdir():
            if not proc_dir.name.isdigit() or int(proc_dir.name) == os.getpid():
                continue
            try:
                argv = (proc_dir / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            args = [a.decode(errors="replace") for a in argv if a]
            if not args or args[0] not in binaries or not any(marker in a for a in args[1:]):
                continue
            stat = procs._stat(int(proc_dir.name))
            if stat is None:
                continue
            found.append(
                procs.ProcessRecord(
                    name=Path(args[0]).name,
                    pid=int(proc_dir.name),
                    start_ticks=stat[1],
                    argv=args,
                    log="",
                )
            )
        return found


def _stop_in_stages(records: Sequence[procs.ProcessRecord]) -> None:
    """Stop kwok/scheduler/controller-manager, then the apiserver, then etcd.

    An apiserver stopped together with etcd (or while its clients are still connected)
    hangs for 10s+ in its shutdown path and ends up SIGKILLed; in stages it takes ~1s.
    """
    try:
        for stage in STOP_STAGES:
            group = [r for r in records if r.name in stage]
            if group:
                began = time.monotonic()
                procs.stop(group, grace=STOP_GRACE_SECONDS)
                log.debug("stopped %s in %.1fs", "/".join(stage), time.monotonic() - began)
    except RuntimeError as exc:
        raise ClusterError(str(exc)) from exc
    if not procs.wait_reaped(records):
        log.debug("some stopped processes are still <defunct>, waiting to be reaped by init")


def _kubeconfig(
    server: str, *, ca: str, cert: str, key: str, user: str, embed: bool
) -> dict[str, Any]:
    suffix = "-data" if embed else ""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT_NAME,
                "cluster": {"server": server, f"certificate-authority{suffix}": ca},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {f"client-certificate{suffix}": cert, f"client-key{suffix}": key},
            }
        ],
        "contexts": [{"name": CONTEXT_NAME, "context": {"cluster": CONTEXT_NAME, "user": user}}],
        "current-context": CONTEXT_NAME,
        "preferences": {},
    }


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _write_private(path: Path, text: str) -> None:
    # Kubeconfigs hold private keys.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _etcd_healthy(url: str) -> tuple[bool, str]:
    ok, detail = kube.probe(url)
    return ok and '"health":"true"' in detail.replace(" ", ""), detail


def _get_ok(client: kube.APIClient, path: str) -> tuple[bool, str]:
    try:
        resp = client.get(path)
    except OSError as exc:
        return False, str(getattr(exc, "reason", exc))
    return resp.status == 200, f"HTTP {resp.status} {resp.text[:300]}"


def _node_ready(node: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in node.get("status", {}).get("conditions", [])
    )


def _nodes_ready(client: kube.APIClient, expected: set[str]) -> tuple[bool, str]:
    selector = urllib.parse.quote("type=kwok")
    try:
        resp = client.get(f"/api/v1/nodes?labelSelector={selector}")
    except OSError as exc:
        return False, str(exc)
    if resp.status != 200:
        return False, f"HTTP {resp.status}"
    items = resp.json().get("items", [])
    ready = {n["metadata"]["name"] for n in items if _node_ready(n)}
    missing = sorted(expected - ready)
    return not missing, f"not Ready yet: {', '.join(missing)}" if missing else "all Ready"


def format_status(statuses: Sequence[ComponentStatus]) -> str:
    """Render `status` as an aligned table."""
    rows = [("COMPONENT", "STATE", "PID", "PORT", "HEALTH")]
    for s in statuses:
        state = "running" if s.running else "stopped"
        health = "ok" if s.healthy else (s.detail if s.running else "-")
        rows.append((s.name, state, str(s.pid or "-"), str(s.port or "-"), health[:60]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
