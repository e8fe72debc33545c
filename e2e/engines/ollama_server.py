"""Real Ollama as a local server process, serving the tiny model under a logical name.

``OllamaServer`` runs the cached build (``ollama.ensure_ollama``) as ``ollama serve`` on
127.0.0.1 and a free port, with ``HOME`` and ``OLLAMA_MODELS`` in its own temporary
directory (nothing touches the user's ``~/.ollama``), registers the tiny model's GGUF
(``tiny_gguf.ensure_tiny_gguf``, the very weights vLLM serves) under each name given with
``ollama create NAME -f Modelfile``, and loads it, so the first request does not pay the
load. It is the project's "Ollama engine" in tests and in the demo.

    with OllamaServer(model_names=["llama3.2"]) as ollama:
        ollama.start()            # serve, create, load; ServerStartError with the log tail
        client = ollama_client.Client(host=ollama.url)
        ...
        ollama.kill()             # a crash, for fallback tests (SIGKILL, server and runner)

The server forks one runner process per loaded model; it runs in its own process group so
that ``stop`` and ``kill`` reach both (``testsupport.process.ManagedProcess``).

CLI: ``python -m e2e.engines.ollama_server [--port P] [--model-name NAME]`` runs one until ^C.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from testsupport.process import (
    LocalServer,
    ManagedProcess,
    ServerStartError,
    serve_until_signalled,
    tail,
)

from .ollama import ensure_ollama
from .tiny_gguf import ensure_tiny_gguf

__all__ = ["DEFAULT_START_TIMEOUT", "OllamaServer", "ServerStartError"]

DEFAULT_START_TIMEOUT = 60.0
"""Seconds ``start`` waits for serve + create + load (measured: well under 2 s)."""

# One access-log line per answered request (gin's logger, on in release mode too), e.g.
# `[GIN] 2026/12/06 - 04:50:01 | 200 |  12.3ms |  127.0.0.1 | POST     "/v1/chat/completions"`.
ACCESS_LINE = re.compile(
    r'^\[GIN\] [^|]*\|\s*(\d{3})\s*\|[^|]*\|[^|]*\|\s*([A-Z]+)\s+"([^"?]*)', re.MULTILINE
)

KEEP_ALIVE = "24h"
"""The model stays loaded for a test session (Ollama's default unloads after 5 idle minutes)."""


class OllamaServer(LocalServer):
    """One real ``ollama serve`` on 127.0.0.1 (a context manager that stops it)."""

    stop_grace = 10.0

    def __init__(
        self,
        *,
        model_names: Sequence[str] = ("tiny-llama",),
        port: int | None = None,
        num_parallel: int = 4,
        extra_env: dict[str, str] | None = None,
        log_path: Path | None = None,
        binary: Path | None = None,
        model_dir: Path | None = None,
    ) -> None:
        """Prepare (not start) a server.

        ``model_names`` are registered (``ollama create``) from the tiny model's Modelfile
        at each start; the first one is loaded before ``start`` returns. ``binary`` and
        ``model_dir`` (holding ``Modelfile``) default to the cached build and GGUF, both
        made on first use. ``num_parallel`` is ``OLLAMA_NUM_PARALLEL``.
        """
        if not model_names:
            raise ValueError("model_names: give at least one name to register the model under")
        self.binary = binary or ensure_ollama()
        self.model_dir = model_dir or ensure_tiny_gguf()
        self.model_names = list(model_names)
        super().__init__("ollama", port, log_path)
        self._home = Path(tempfile.mkdtemp(prefix=f"inferops-ollama-{self._port}-"))
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self._home),
            "OLLAMA_HOST": f"127.0.0.1:{self._port}",
            "OLLAMA_MODELS": str(self._home / "models"),
            "OLLAMA_KEEP_ALIVE": KEEP_ALIVE,
            "OLLAMA_NUM_PARALLEL": str(num_parallel),
            "OLLAMA_NOPRUNE": "1",
            # gin's debug banner and per-route lines are noise in the log.
            "GIN_MODE": "release",
            **(extra_env or {}),
        }
        self._process = ManagedProcess(
            f"Ollama on port {self._port}",
            [str(self.binary), "serve"],
            env=self.env,
            log_path=self.log_path,
            health_url=f"{self.url}/",
            cwd=self._home,
        )
        self.ready_seconds: float | None = None
        """Seconds from spawn to the model loaded (set by ``start``)."""

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> float:
        """Serve, register the model names, load the first; return the seconds it took.

        Raises ``ServerStartError`` with the log's tail if the server exits, a step fails
        or the deadline passes (the process group is killed first). A stopped or killed
        server can be started again (same port and models directory).
        """
        started = time.monotonic()
        self._home.mkdir(parents=True, exist_ok=True)
        self._process.start(timeout)
        try:
            for name in self.model_names:
                self._create(name, deadline=started + timeout)
            self._load(self.model_names[0], deadline=started + timeout)
        except BaseException:
            self._process.kill()
            raise
        self.ready_seconds = time.monotonic() - started
        return self.ready_seconds

    def _create(self, name: str, deadline: float) -> None:
        cmd = [str(self.binary), "create", name, "-f", str(self.model_dir / "Modelfile")]
        try:
            proc = subprocess.run(
                cmd,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServerStartError(f"`ollama create {name}` timed out") from exc
        if proc.returncode != 0:
            raise ServerStartError(
                f"`ollama create {name}` failed ({proc.returncode}): {proc.stderr.strip()}\n"
                f"server log ({self.log_path}):\n{tail(self.log_path)}"
            )

    def _load(self, name: str, deadline: float) -> None:
        # A generate request without a prompt loads the model and returns (Ollama's API).
        body = json.dumps({"model": name, "keep_alive": KEEP_ALIVE}).encode()
        request = urllib.request.Request(
            f"{self.url}/api/generate", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(
                request, timeout=max(1.0, deadline - time.monotonic())
            ) as resp:
                answer = json.loads(resp.read())
        except OSError as exc:
            raise ServerStartError(
                f"loading {name} failed: {exc}\nserver log ({self.log_path}):\n"
                f"{tail(self.log_path)}"
            ) from exc
        if not answer.get("done"):
            raise ServerStartError(f"loading {name}: unexpected answer {answer}")

    def served(self, path_prefix: str = "/v1/") -> int:
        """How many POSTs under ``path_prefix`` Ollama has answered (any status), counted in
        its own access log: where requests went, seen at the engine rather than the router.
        A line is written when the answer ends, so poll for an expected count."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return sum(
            1
            for _status, method, path in ACCESS_LINE.findall(text)
            if method == "POST" and path.startswith(path_prefix)
        )

    def close(self) -> None:
        """Stop and remove the temporary HOME and models directory."""
        self.stop()
        shutil.rmtree(self._home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """CLI: run one server until interrupted (SIGINT/SIGTERM)."""
    parser = argparse.ArgumentParser(prog="python -m e2e.engines.ollama_server")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument(
        "--model-name", action="append", help="name(s) to register (default: tiny-llama)"
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT)
    args = parser.parse_args(argv)
    server = OllamaServer(model_names=args.model_name or ["tiny-llama"], port=args.port)
    return serve_until_signalled(
        server,
        lambda: server.start(timeout=args.timeout),
        lambda seconds: (
            f"Ollama ready in {seconds:.2f}s at {server.url}, "
            f"models {server.model_names} (log: {server.log_path})"
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
