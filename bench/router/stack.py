"""The system under test: two backend stand-ins, and in front of them the inferops router and
its peers (nginx, vllm-router, LiteLLM's proxy), each proxy one process (nginx: one worker)
pinned to the proxy core; and, when asked for, the router as two workers (`router-2w`,
pinned to two cores: `Config.cpus_of`).

Every proxy splits one consumer's requests 50/50 at random between the two backends: the
router through its routing table (engines vllm and ollama, consumer weight 50), nginx with
`split_clients` on `$request_id`, vllm-router with its `random` policy, LiteLLM with two
deployments of one model and `simple-shuffle` (see peers.py). The direct path picks a backend
at random in the client. A proxy that does not start stops the run with its log's tail.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bench.router import peers
from bench.router.config import HOST, MODEL, ROUTER_WORKERS, WEIGHT, Config
from bench.router.procs import Service, StartError, free_port, memory_kib, tree_memory_kib
from inferops.api.routing import Consumer, Engine, Engines, RoutingTable

log = logging.getLogger("bench.router")

REPO = Path(__file__).resolve().parents[2]


def routing_table(backend_ports: tuple[int, int]) -> RoutingTable:
    """The router's table: one consumer at weight 50 over two engines, one per backend."""
    vllm, ollama = (Engine(url=f"http://127.0.0.1:{port}") for port in backend_ports)
    return RoutingTable(
        model=MODEL,
        engines=Engines(vllm=vllm, ollama=ollama),
        consumers=[Consumer(name=HOST, hosts=[HOST], weight=WEIGHT)],
    )


def nginx_config(workdir: Path, port: int, backend_ports: tuple[int, int]) -> str:
    """nginx as a streaming reverse proxy doing the same random 50/50 split as the router."""
    a, b = backend_ports
    temp = "\n".join(
        f"  {kind}_temp_path {workdir}/nginx-{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
worker_processes 1;
daemon off;
master_process on;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_timeout 60s;
  keepalive_requests 1000000;
{temp}
  upstream engine_a {{ server 127.0.0.1:{a}; keepalive 1024; keepalive_requests 1000000; }}
  upstream engine_b {{ server 127.0.0.1:{b}; keepalive 1024; keepalive_requests 1000000; }}
  split_clients "$request_id" $engine {{ {WEIGHT}% engine_a; * engine_b; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://$engine;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 600s;
    }}
  }}
}}
"""


def get_json(url: str, timeout: float = 5.0) -> dict[str, int]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        doc: dict[str, int] = json.load(response)
        return doc


def wait_ok(url: str, timeout: float = 20.0) -> None:
    """Polls `url` until it answers 200; raises the last error after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


START_TIMEOUT_S = {"litellm": 240.0}
"""Seconds a proxy may take to answer after its start (20 s unless given): LiteLLM imports
for 20 to 60 s on a busy core."""


@dataclass
class Stack:
    """Starts and stops every process the benchmark measures; knows their URLs."""

    config: Config
    workdir: Path
    tool_paths: dict[str, str]
    """Programs by name: nginx (when measured)."""
    peer_venvs: dict[str, Path] = field(default_factory=dict)
    """The installed peers' virtual environments by path name (peers.ensure)."""
    backends: tuple[Service, Service] | None = None
    proxies: dict[str, Service] = field(default_factory=dict)
    """The started proxies by path name."""

    def start(self) -> None:
        ports = (free_port(), free_port())
        self.backends = (self._backend("a", ports[0]), self._backend("b", ports[1]))
        for backend in self.backends:
            backend.start()
        starters: dict[str, Callable[[tuple[int, int]], tuple[Service, str]]] = {
            "router": self._router,
            "router-2w": partial(self._router, path="router-2w"),
            "nginx": self._nginx,
            "vllm-router": self._vllm_router,
            "litellm": self._litellm,
        }
        for path in self.config.proxies:
            service, ready = starters[path](ports)
            self.proxies[path] = service
            timeout = START_TIMEOUT_S.get(path, 20.0)
            began = time.monotonic()
            service.start(timeout)
            try:
                wait_ok(f"http://127.0.0.1:{service.port}{ready}", timeout)
            except OSError as err:
                tail = service.log_tail(40)
                service.stop()
                raise StartError(f"{path} did not answer {ready}: {err}\n{tail}") from None
            log.info("%s ready in %.1f s (port %d)", path, time.monotonic() - began, service.port)

    def _proxy_service(
        self, name: str, cmd: list[str], port: int, env: dict[str, str] | None = None
    ) -> Service:
        return Service(
            name,
            cmd,
            set(self.config.cpus_of(name)),
            port,
            self.workdir / f"{name}.log",
            cwd=self.workdir if env is not None else REPO,
            env=env,
        )

    def _router(self, ports: tuple[int, int], path: str = "router") -> tuple[Service, str]:
        table = self.workdir / "routes.json"  # the same for both router paths
        table.write_text(json.dumps(routing_table(ports).dump()))
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "inferops.router",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--table-file={table}",
            "--log-level=WARNING",
            "--grace-seconds=2",
            f"--workers={ROUTER_WORKERS[path]}",
        ]
        # /readyz: the table is loaded after the port opens.
        return self._proxy_service(path, cmd, port), "/readyz"

    def _nginx(self, ports: tuple[int, int]) -> tuple[Service, str]:
        port = free_port()
        conf = self.workdir / "nginx.conf"
        conf.write_text(nginx_config(self.workdir, port, ports))
        workdir = str(self.workdir)
        cmd = [
            self.tool_paths["nginx"],
            "-p",
            workdir,
            "-e",
            str(self.workdir / "nginx-error.log"),
            "-c",
            str(conf),
        ]
        return self._proxy_service("nginx", cmd, port), "/v1/models"

    def _vllm_router(self, ports: tuple[int, int]) -> tuple[Service, str]:
        venv = self.peer_venvs["vllm-router"]
        port = free_port()
        cmd = peers.vllm_router_command(venv, port, free_port(), ports)
        env = peers.environment(self.workdir, venv, "vllm-router")
        # It opens its port once a worker answered /health.
        return self._proxy_service("vllm-router", cmd, port, env), "/v1/models"

    def _litellm(self, ports: tuple[int, int]) -> tuple[Service, str]:
        venv = self.peer_venvs["litellm"]
        port = free_port()
        config = self.workdir / "litellm.yaml"
        peers.write_litellm_config(config, ports)
        env = {**peers.environment(self.workdir, venv, "litellm"), **peers.LITELLM_ENV}
        cmd = peers.litellm_command(venv, config, port)
        return self._proxy_service("litellm", cmd, port, env), "/health/liveliness"

    def _backend(self, name: str, port: int) -> Service:
        profile = self.config.profiles[0]
        cmd = [
            sys.executable,
            "-m",
            "bench.router.backend",
            f"--port={port}",
            f"--ttft-ms={profile.ttft_ms}",
            f"--token-ms={profile.token_ms}",
            f"--tokens={profile.tokens}",
        ]
        log = self.workdir / f"backend-{name}.log"
        return Service(f"backend-{name}", cmd, set(self.config.load_cpus), port, log, cwd=REPO)

    def stop(self) -> None:
        for service in (*reversed(self.proxies.values()), *(self.backends or ())):
            service.stop()

    def backend_services(self) -> tuple[Service, Service]:
        assert self.backends is not None
        return self.backends

    @property
    def router(self) -> Service | None:
        return self.proxies.get("router")

    def proxy(self, path: str) -> Service | None:
        """The proxy process of a path; None for the direct path."""
        return self.proxies.get(path)

    def base_urls(self, path: str) -> list[str]:
        """Where a client of `path` sends requests (the direct path: either backend)."""
        if path == "direct":
            return [f"http://127.0.0.1:{b.port}" for b in self.backend_services()]
        return [f"http://127.0.0.1:{self.proxies[path].port}"]

    def backend_stats(self) -> list[dict[str, int]]:
        return [get_json(f"http://127.0.0.1:{b.port}/stats") for b in self.backend_services()]

    def proxy_memory_kib(self, path: str) -> dict[str, int]:
        """RSS and peak RSS of what does a proxy's work: nginx's one worker (its master only
        reads the configuration); for the others the process with any helper processes."""
        service = self.proxy(path)
        if service is None:
            return {}
        if path == "nginx":
            return memory_kib(service.pids()[-1])
        return tree_memory_kib(service.pid)


__all__ = ["REPO", "Stack", "get_json", "nginx_config", "routing_table", "wait_ok"]
