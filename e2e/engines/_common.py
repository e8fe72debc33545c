"""Shared helpers for the engine tooling: cache paths, a file lock, progress lines.

Everything expensive (the vLLM virtual environment, generated models) lives outside the
checkout in ``${XDG_CACHE_HOME:-~/.cache}/inferops/`` so that every checkout and every test
run shares one copy.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from testsupport.paths import cache_root


def repo_root() -> Path:
    """Return the checkout root (this file is ``<root>/e2e/engines/_common.py``)."""
    return Path(__file__).resolve().parents[2]


MARKER_FILE = ".inferops-complete.json"
"""Written into a cached tool's directory only once its build has finished."""


def read_marker(directory: Path) -> dict[str, Any]:
    """What a cached tool's build recorded (durations, size, versions); {} if not built."""
    try:
        data: dict[str, Any] = json.loads((directory / MARKER_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data


def progress(message: str) -> None:
    """Print one progress line to stderr (long builds must show they are alive)."""
    print(f"[e2e.engines] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def file_lock(name: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<cache>/locks/<name>.lock`` for the block.

    Two processes (parallel test sessions, a CLI and a test) that want to build the same
    cached artefact serialise here; the second one then finds the artefact complete.
    The kernel drops the lock when the holder dies, so a crashed build never wedges it.
    """
    path = cache_root() / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"another process holds {path}; waiting for it to finish")
            start = time.monotonic()
            fcntl.flock(fh, fcntl.LOCK_EX)
            progress(f"lock {path.name} acquired after {time.monotonic() - start:.0f}s")
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def dir_size(path: Path) -> int:
    """Return the apparent size in bytes of all regular files under ``path``."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, name))
                total += st.st_size
    return total


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for build steps: the child gets SIGKILL when its parent dies.

    A builder stopped with SIGTERM (not a terminal's ^C, which reaches the whole group)
    would otherwise leave pip running into a directory the next builder removes.
    Linux only; a no-op where ``prctl`` is unavailable.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
