"""The system under test: two backend stand-ins, and the inferops router and nginx in front of
them, each proxy a single process (worker) pinned to the proxy core.

Both proxies split one consumer's requests 50/50 at random between the two backends: the
router through its routing table (engines vllm and ollama, consumer weight 50), nginx with
`split_clients` on `$request_id`. The direct path picks a backend at random in the client.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.router.config import HOST, MODEL, WEIGHT, Config
from bench.router.procs import Service, free_port, memory_kib
from inferops.api.routing import Consumer, Engine, Engines, RoutingTable

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
    """Polls `url` until it answers 200."""
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


@dataclass
class Stack:
    """Starts and stops every process the benchmark measures; knows their URLs."""

    config: Config
    workdir: Path
    nginx_path: str
    backends: tuple[Service, Service] | None = None
    router: Service | None = None
    nginx: Service | None = None

    def start(self) -> None:
        config, workdir = self.config, self.workdir
        proxy = set(config.proxy_cpus)
        ports = (free_port(), free_port())
        self.backends = (self._backend("a", ports[0]), self._backend("b", ports[1]))
        for backend in self.backends:
            backend.start()
        table = workdir / "routes.json"
        table.write_text(json.dumps(routing_table(ports).dump()))
        router_port = free_port()
        self.router = Service(
            "router",
            [
                sys.executable,
                "-m",
                "inferops.router",
                "--host=127.0.0.1",
                f"--port={router_port}",
                f"--table-file={table}",
                "--log-level=WARNING",
                "--grace-seconds=2",
            ],
            proxy,
            router_port,
            workdir / "router.log",
            cwd=REPO,
        )
        self.router.start()
        wait_ok(
            f"http://127.0.0.1:{router_port}/readyz"
        )  # the table is loaded after the port opens
        nginx_port = free_port()
        conf = workdir / "nginx.conf"
        conf.write_text(nginx_config(workdir, nginx_port, ports))
        self.nginx = Service(
            "nginx",
            [
                self.nginx_path,
                "-p",
                str(workdir),
                "-e",
                str(workdir / "nginx-error.log"),
                "-c",
                str(conf),
            ],
            proxy,
            nginx_port,
            workdir / "nginx.log",
        )
        self.nginx.start()

    def _backend(self, name: str, port: int) -> Service:
        config = self.config
        cmd = [
            sys.executable,
            "-m",
            "bench.router.backend",
            f"--port={port}",
            f"--ttft-ms={config.ttft_ms}",
            f"--token-ms={config.token_ms}",
            f"--tokens={config.tokens}",
        ]
        log = self.workdir / f"backend-{name}.log"
        return Service(f"backend-{name}", cmd, set(config.load_cpus), port, log, cwd=REPO)

    def stop(self) -> None:
        for service in (self.nginx, self.router, *(self.backends or ())):
            if service is not None:
                service.stop()

    def backend_services(self) -> tuple[Service, Service]:
        assert self.backends is not None
        return self.backends

    def proxy(self, path: str) -> Service | None:
        """The proxy process of a path; None for the direct path."""
        return {"router": self.router, "nginx": self.nginx}.get(path)

    def base_urls(self, path: str) -> list[str]:
        """Where a client of `path` sends requests (the direct path: either backend)."""
        if path == "direct":
            return [f"http://127.0.0.1:{b.port}" for b in self.backend_services()]
        service = self.proxy(path)
        assert service is not None
        return [f"http://127.0.0.1:{service.port}"]

    def backend_stats(self) -> list[dict[str, int]]:
        return [get_json(f"http://127.0.0.1:{b.port}/stats") for b in self.backend_services()]

    def proxy_memory_kib(self, path: str) -> dict[str, int]:
        """RSS and peak RSS of the process that does a proxy's work: the router's one process,
        nginx's one worker (its master only reads the configuration)."""
        service = self.proxy(path)
        if service is None:
            return {}
        pids = service.pids()
        return memory_kib(pids[-1])


__all__ = ["REPO", "Stack", "get_json", "nginx_config", "routing_table", "wait_ok"]
