"""The local data plane of a migration: what runs in pods on a real cluster, run here as
processes on loopback (the cluster's pods are simulated).

- vLLM: the real CPU build serving the tiny generated model, behind a fault injector so a
  test can make the canary bad (errors, latency) without touching vLLM;
- Ollama: the real thing, built from its Go module, serving a GGUF of the same tiny model
  under the same logical name (e2e/engines/ollama_server.py);
- the router: a real router process watching one InferenceBackend's routing-table ConfigMap
  in the cluster, always on the same port, so an operator started with `--router-url` probes
  it and reads the revision it serves;
- Prometheus: the real server scraping the router every second, its target labelled with
  the namespace and a pod name of the backend, as Kubernetes service discovery would.

Used by the migration e2e tests and by `make demo`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import ollama
from openai import OpenAI
from testsupport.process import free_port
from testsupport.programs import RouterProcess
from testsupport.prometheus import Prometheus
from testsupport.repeat import Repeating
from testsupport.standin import FaultProxy, InThread

from e2e.engines.ollama_server import OllamaServer
from e2e.engines.tiny_model import ensure_tiny_model
from e2e.engines.vllm_cpu import ensure_vllm_env
from e2e.engines.vllm_server import VLLMServer
from e2e.harness import Kubectl

MODEL = "llama3.2"


class FixedPortRouter(RouterProcess):
    """A router on a given port (the operator was told where to find it)."""

    def __init__(
        self,
        port: int,
        source: list[str],
        log: Path,
        env: dict[str, str],
        engine_urls: dict[str, str],
    ) -> None:
        super().__init__(source, log, env=env, engine_urls=engine_urls)
        self.port = port
        self.process.cmd[self.process.cmd.index("--port") + 1] = str(port)
        self.process.health_url = f"{self.url}/readyz"


class DataPlane:
    def __init__(self, workdir: Path, kubectl: Kubectl) -> None:
        self.workdir = workdir
        self.kubectl = kubectl
        self.router_port = free_port()
        self.vllm: VLLMServer | None = None
        self.faults: InThread[FaultProxy] | None = None
        self.ollama: OllamaServer | None = None
        self.prometheus: Prometheus | None = None
        self.prometheus_faults: InThread[FaultProxy] | None = None
        self.router: FixedPortRouter | None = None

    @property
    def router_url(self) -> str:
        return f"http://127.0.0.1:{self.router_port}"

    def operator_args(self) -> tuple[str, ...]:
        """The operator reaches the router here, and Prometheus through its fault injector."""
        assert self.prometheus_faults is not None
        return ("--router-url", self.router_url, "--prometheus-url", self.prometheus_faults.url)

    def start(self) -> None:
        """Engines and Prometheus; vLLM takes about a minute to load."""
        ensure_vllm_env()
        self.vllm = VLLMServer(
            ensure_tiny_model(), served_model_name=MODEL, log_path=self.workdir / "vllm.log"
        )
        self.vllm.start()
        self.faults = InThread(FaultProxy(self.vllm.url))
        self.faults.start()
        self.ollama = OllamaServer(model_names=[MODEL], log_path=self.workdir / "ollama.log")
        self.ollama.start()
        self.prometheus = Prometheus(self.workdir / "prometheus")
        self.prometheus.start()
        self.prometheus_faults = InThread(FaultProxy(self.prometheus.url))
        self.prometheus_faults.start()

    def serve(self, namespace: str, backend: str) -> FixedPortRouter:
        """(Re)starts the router on the fixed port for `namespace/backend`'s table."""
        assert self.faults is not None and self.ollama is not None
        assert self.prometheus is not None
        self.stop_router()
        self.router = FixedPortRouter(
            self.router_port,
            ["--configmap", f"{namespace}/{backend}-router"],
            self.workdir / f"router-{namespace}.log",
            env={**self.kubectl.env, "KUBECONFIG": str(self.kubectl.kubeconfig)},
            engine_urls={"vllm": self.faults.url, "ollama": self.ollama.url},
        )
        self.router.start(timeout=60)
        labels = {"namespace": namespace, "pod": f"{backend}-router-local"}
        self.prometheus.set_targets([(f"127.0.0.1:{self.router_port}", labels)])
        return self.router

    def stop_router(self) -> None:
        if self.router is not None:
            self.router.stop()
            self.router = None

    def stop(self) -> None:
        self.stop_router()
        if self.ollama is not None:
            with contextlib.suppress(Exception):
                self.ollama.close()  # stops it and removes its temporary models directory
        parts = (self.prometheus_faults, self.prometheus, self.faults, self.vllm)
        for part in parts:
            if part is not None:
                with contextlib.suppress(Exception):
                    part.stop()


@dataclass(frozen=True)
class Request:
    """One request of a `Traffic` loop: when it started and ended (monotonic clock), and
    the exception the client raised, if any."""

    start: float
    end: float
    error: BaseException | None


class RouterEndpoint(Protocol):
    """Where consumers reach the router: a `DataPlane`, or the demo's background one."""

    @property
    def router_url(self) -> str: ...


class Traffic(Repeating):
    """A consumer's own requests in a loop from a thread, through its endpoint: the
    official `openai` client (streaming) or the official `ollama` client. `max_retries`
    and `timeout` are the clients' own settings (the `openai` client's default retries are
    2, this loop's 0, so that every failure shows); `temperature` 0 asks greedily, which
    makes the answers comparable at a shadow step."""

    def __init__(
        self,
        plane: RouterEndpoint,
        namespace: str,
        consumer: str,
        api: str = "openai",
        pause: float = 0.1,
        backend: str = "llama32",
        max_retries: int = 0,
        timeout: float | None = None,
        temperature: float | None = None,
    ) -> None:
        host = f"{backend}-{consumer}.{namespace}.svc"
        self.temperature = temperature
        limit = {} if timeout is None else {"timeout": timeout}
        self.openai = OpenAI(
            base_url=f"{plane.router_url}/v1",
            api_key="unused",
            max_retries=max_retries,
            default_headers={"Host": host},
            **limit,
        )
        self.ollama = ollama.Client(host=plane.router_url, headers={"Host": host}, **limit)
        self.api = api
        self.ok = 0
        self.errors: list[str] = []
        self.requests: list[Request] = []
        super().__init__(pause)

    def _one(self) -> None:
        # One of the prompts both engines answer alike when greedy (test_engines_agree).
        messages = [{"role": "user", "content": "Summarise my notes in one line."}]
        if self.api == "openai":
            stream = self.openai.chat.completions.create(
                model=MODEL,
                messages=messages,
                max_tokens=8,
                stream=True,  # type: ignore[arg-type]
                stream_options={"include_usage": True},
                **({} if self.temperature is None else {"temperature": self.temperature}),
            )
            assert any(True for _ in stream)
        else:
            options: dict[str, float] = {"num_predict": 8}
            if self.temperature is not None:
                options["temperature"] = self.temperature
            parts = list(
                self.ollama.chat(model=MODEL, messages=messages, stream=True, options=options)
            )
            assert parts and parts[-1].done

    def step(self) -> None:
        start = time.monotonic()
        try:
            self._one()
            self.ok += 1
            failure: BaseException | None = None
        except Exception as error:  # every client-visible failure is counted
            self.errors.append(repr(error))
            failure = error
        self.requests.append(Request(start, time.monotonic(), failure))
