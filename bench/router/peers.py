"""The router's peers besides nginx: vllm-router (vLLM's router, Rust, PyPI `vllm-router`) and
LiteLLM's proxy (Python, PyPI `litellm[proxy]`). Installed from PyPI, pinned, each into its own
virtual environment outside the project's, and started as an OpenAI-compatible proxy that
splits one model's requests at random between the benchmark's two backends.

Install: ``${XDG_CACHE_HOME:-~/.cache}/inferops/bench/<peer>-<version>-<lock hash>/`` is a
virtual environment made with this interpreter's `venv`, into which pip installs the pinned
requirement under a constraints file (`locks/<peer>.txt`: every dependency at the exact
version it was measured with; LiteLLM alone brings about 120 packages and 750 MB, which stay
out of the project's environment). Changing a pin or the lock installs a new environment
beside the old one. pip's progress is shown and logged to `install.log` in that directory;
a failure stops the benchmark with the log's tail. A marker file is written last, so an
interrupted install is started over, and a file lock keeps two runs from installing at once.

After installing, every `.pth` file in the environment is checked: LiteLLM's PyPI releases
1.82.7 and 1.82.8 were published by an attacker, and one hid a credential stealer in a `.pth`
file that runs at every interpreter start. An unexpected `.pth` with code stops the run.
The peers also run with a minimal environment (no variables of the caller's, a HOME in the
run's work directory): they need none, and a proxy that reads its settings from the
environment or a dotenv file must not pick up the caller's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from testsupport import paths

from bench.router.config import MODEL

log = logging.getLogger("bench.router")

LOCKS = Path(__file__).resolve().parent / "locks"
MARKER = ".installed.json"

# `.pth` files that may run code at start-up and are known to be harmless: setuptools' shim.
ALLOWED_PTH = frozenset({"distutils-precedence.pth"})


@dataclass(frozen=True)
class Peer:
    """One peer: what pip installs, and the console script that starts it."""

    name: str
    """The benchmark path's name."""
    package: str
    """The distribution whose version is reported."""
    requirement: str
    script: str

    @property
    def version(self) -> str:
        return self.requirement.rpartition("==")[2]

    @property
    def lock(self) -> Path:
        return LOCKS / f"{self.name}.txt"


VLLM_ROUTER = Peer("vllm-router", "vllm-router", "vllm-router==0.1.17", "vllm-router")
"""vLLM's router (a Rust binary in a Python wheel), the newest release at the time of pinning."""

LITELLM = Peer("litellm", "litellm", "litellm[proxy]==1.108.7", "litellm")
"""LiteLLM's proxy. 1.108.7, not the newest release (1.110.2 when pinned): the `proxy` extra
of every release after 1.108.7 pins a companion package (`litellm-enterprise`,
`litellm-proxy-extras` or `litellm-proxy`) at a version that PyPI does not have, so pip
cannot install it; 1.108.7 is the newest whose proxy extra resolves."""

PEERS = {peer.name: peer for peer in (VLLM_ROUTER, LITELLM)}


class InstallError(RuntimeError):
    """pip failed, or the installed environment is not what was asked for."""


def cache_root() -> Path:
    return paths.cache_root() / "bench"


def home(peer: Peer) -> Path:
    """The peer's virtual environment, keyed by its version and its lock file."""
    digest = hashlib.sha256(peer.lock.read_bytes()).hexdigest()[:10]
    return cache_root() / f"{peer.name}-{peer.version}-{digest}"


def executable(peer: Peer, venv: Path) -> Path:
    return venv / "bin" / peer.script


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    lock = cache_root() / f".{name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure(peer: Peer) -> Path:
    """The peer's virtual environment, installed first if missing or incomplete."""
    venv = home(peer)
    if (venv / MARKER).is_file():
        return venv
    with _locked(venv.name):
        if (venv / MARKER).is_file():  # another run installed it meanwhile
            return venv
        log.info(
            "installing %s into %s (first use; LiteLLM takes a few minutes and ~750 MB)",
            peer.requirement,
            venv,
        )
        shutil.rmtree(venv, ignore_errors=True)
        _install(peer, venv)
    log.info("%s installed", peer.requirement)
    return venv


def _install(peer: Peer, venv: Path) -> None:
    # `python -m venv` run from a virtual environment builds on the base interpreter.
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install_log = venv / "install.log"
    cmd = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar=off",
        f"--constraint={peer.lock}",
        peer.requirement,
    ]
    with install_log.open("w") as out:
        out.write(" ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            # pip's own progress, one line per package: enough to see it is moving.
            if line.startswith(("Collecting", "Installing", "Successfully", "ERROR")):
                log.info("  [%s] %s", peer.name, line.rstrip())
        code = proc.wait()
    if code != 0:
        raise InstallError(
            f"pip install {peer.requirement} failed (exit {code}); log {install_log}:\n"
            + _tail(install_log, 30)
        )
    script = executable(peer, venv)
    if not script.is_file():
        raise InstallError(f"{peer.requirement} installed no {script}")
    _check_pth(venv)
    frozen = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    marker = {"requirement": peer.requirement, "lock": peer.lock.name, "freeze": frozen}
    (venv / MARKER).write_text(json.dumps(marker, indent=1) + "\n")


def _check_pth(venv: Path) -> None:
    """Fails on a `.pth` file that runs code and is not on the allow-list (see the module's
    docstring)."""
    for pth in sorted(venv.glob("lib/python*/site-packages/*.pth")):
        if pth.name in ALLOWED_PTH:
            continue
        lines = pth.read_text(errors="replace").splitlines()
        if any(line.lstrip().startswith(("import ", "import\t")) for line in lines):
            raise InstallError(
                f"{pth} runs code at every interpreter start and is not expected in this "
                "environment; inspect it (and the package that installed it) before running "
                f"the benchmark again. The environment was left in place: {venv}"
            )


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def installed_version(peer: Peer, venv: Path) -> str:
    """The version of the peer's package in its environment (from the install marker)."""
    marker = json.loads((venv / MARKER).read_text())
    prefix = f"{peer.package}=="
    for entry in marker.get("freeze", []):
        if entry.lower().startswith(prefix):
            return str(entry[len(prefix) :])
    return "unknown"


def environment(workdir: Path, venv: Path, name: str) -> dict[str, str]:
    """The minimal environment a peer runs with (see the module's docstring)."""
    peer_home = workdir / f"{name}-home"
    peer_home.mkdir(exist_ok=True)
    return {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(peer_home),
        "LANG": "C.UTF-8",
        "TMPDIR": str(peer_home),
    }


def vllm_router_command(
    venv: Path, port: int, metrics_port: int, backend_ports: tuple[int, int]
) -> list[str]:
    """vllm-router in front of the two backends, each request to one of them at random.

    Everything else is left at its defaults (retries, circuit breaker, health checks every
    60 s, a concurrency limit of 32,768 requests with a queue), except: worker readiness is
    checked every second at start instead of every 30 s; its Prometheus exporter, which is on
    by default, gets a free port instead of the fixed 29000 (two runs at once would collide);
    logging is at `warning` instead of `info`. Its start-up check asks each worker for
    `/health` (vLLM's health path), which the backend stand-in answers.
    """
    return [
        str(executable(VLLM_ROUTER, venv)),
        "--host=127.0.0.1",
        f"--port={port}",
        "--worker-urls",
        *(f"http://127.0.0.1:{p}" for p in backend_ports),
        "--policy=random",
        "--worker-startup-check-interval=1",
        "--worker-startup-timeout-secs=60",
        "--prometheus-host=127.0.0.1",
        f"--prometheus-port={metrics_port}",
        "--log-level=warning",
    ]


def litellm_config(backend_ports: tuple[int, int]) -> dict[str, Any]:
    """LiteLLM's config.yaml: two deployments of the benchmark's model, one per backend (the
    OpenAI provider, which speaks the OpenAI API to any base URL), split at random
    (`simple-shuffle`, LiteLLM's default and cheapest routing strategy).

    Kept at its defaults: retries, timeouts, the per-request logging object LiteLLM builds
    internally. Switched off or left out, because they cost time per request and the other
    proxies do none of it: a database (no DATABASE_URL: no spend logs, keys or budgets),
    callbacks (none), verbose logging. Changed because the proxy would not start otherwise:
    without a master key LiteLLM refuses to start unless
    `dangerously_permit_weak_or_unset_master_key` is set; with a master key every request
    would also pay for an authentication check, which the other proxies do not do.
    """
    deployments = [
        {
            "model_name": MODEL,
            "litellm_params": {
                "model": f"openai/{MODEL}",
                "api_base": f"http://127.0.0.1:{port}/v1",
                "api_key": "unused",
            },
        }
        for port in backend_ports
    ]
    return {
        "model_list": deployments,
        "router_settings": {"routing_strategy": "simple-shuffle"},
        "litellm_settings": {"set_verbose": False, "callbacks": []},
        "general_settings": {
            "disable_spend_logs": True,
            "dangerously_permit_weak_or_unset_master_key": True,
        },
    }


LITELLM_ENV = {
    # Settings from the environment only, never from a .env file in the working directory.
    "LITELLM_MODE": "PRODUCTION",
    # The model cost map bundled with the package, not a download at start (no internet).
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOG": "ERROR",
}


def litellm_command(venv: Path, config: Path, port: int) -> list[str]:
    """LiteLLM's proxy as its CLI starts it by default (uvicorn, with uvloop, which the
    `proxy` extra installs), one worker process: the proxy core is one core."""
    return [
        str(executable(LITELLM, venv)),
        f"--config={config}",
        "--host=127.0.0.1",
        f"--port={port}",
        "--num_workers=1",
    ]


def write_litellm_config(path: Path, backend_ports: tuple[int, int]) -> None:
    path.write_text(yaml.safe_dump(litellm_config(backend_ports), sort_keys=False))


__all__ = [
    "LITELLM",
    "LITELLM_ENV",
    "PEERS",
    "VLLM_ROUTER",
    "InstallError",
    "Peer",
    "cache_root",
    "ensure",
    "environment",
    "executable",
    "home",
    "installed_version",
    "litellm_command",
    "litellm_config",
    "vllm_router_command",
    "write_litellm_config",
]
