"""Shared helpers for the engine tooling: cache paths, a file lock, progress lines.

Everything expensive (the vLLM virtual environment, generated models) lives outside the
checkout in ``${XDG_CACHE_HOME:-~/.cache}/inferops/`` so that every checkout and every test
run shares one copy.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from testsupport.paths import cache_root
from testsupport.process import tail


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


def is_complete(directory: Path) -> bool:
    """Whether a cached tool's build exists and finished successfully."""
    return (directory / MARKER_FILE).is_file()


def write_marker(directory: Path, info: dict[str, Any]) -> None:
    """Record a finished build, last and atomically: its presence means "complete"."""
    tmp = directory / (MARKER_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.rename(directory / MARKER_FILE)


def ensure_built(directory: Path, lock: str, build: Callable[[Path], None], force: bool) -> None:
    """Build a cached tool into ``directory`` unless complete (or again with ``force``).

    Fast when complete: one ``stat``. Otherwise the caller waits for the lock named
    ``lock``, re-checks (another process may have just built it) and builds.
    """
    once(lambda: not force and is_complete(directory), lock, lambda: build(directory))


def once(done: Callable[[], bool], lock: str, build: Callable[[], None]) -> None:
    """``build()`` unless ``done()``: under the lock named ``lock``, checked again first
    (another process may have just built it)."""
    if done():
        return
    with file_lock(lock):
        if not done():
            build()


def build_cli(
    prog: str,
    description: str | None,
    argv: list[str] | None,
    ensure: Callable[[bool], Path],
    error: type[Exception],
    info: Callable[[Path], dict[str, Any]],
) -> int:
    """A cached tool's CLI, ``prog [--force]``: ``report_build`` of ``ensure(force)``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--force", action="store_true", help="rebuild even if complete")
    force = parser.parse_args(argv).force
    return report_build(lambda: ensure(force), error, info)


def report_build(
    ensure: Callable[[], Path], error: type[Exception], info: Callable[[Path], dict[str, Any]]
) -> int:
    """Build a cached tool if needed (``ensure()``), print its path, and what the build
    recorded to stderr; on failure the error and exit code 1."""
    try:
        path = ensure()
    except error as exc:
        print(exc, file=sys.stderr)
        return 1
    print(path)
    print(json.dumps(info(path), indent=2), file=sys.stderr)
    return 0


def fresh_directory(directory: Path) -> None:
    """Remove an incomplete or stale build, so that a build starts from nothing."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    if directory.exists():
        progress(f"removing incomplete or stale build {directory}")
        shutil.rmtree(directory)


HEARTBEAT_SECONDS = 20.0


class BuildSteps:
    """A build's commands, run in order with their output appended to one log file.

    Each ``step`` prints its number and duration (kept in ``seconds`` for the marker) and,
    while it runs, a heartbeat with the log's last line; a failed command raises ``error``
    with the log's tail.
    """

    def __init__(
        self, log: Path, total: int, error: type[Exception], env: Mapping[str, str]
    ) -> None:
        self.log = log
        self.total = total
        self.error = error
        self.env = dict(env)
        self.seconds: dict[str, float] = {}
        log.write_text("")

    def step(self, name: str, cmd: list[str], **kwargs: Any) -> None:
        """Run one numbered step (``run``'s keyword arguments pass through)."""
        started = time.monotonic()
        progress(f"step {len(self.seconds) + 1}/{self.total}: {name}")
        self.run(cmd, name, **kwargs)
        self.seconds[name] = round(time.monotonic() - started, 1)
        progress(
            f"step {len(self.seconds)}/{self.total}: {name}: done in {self.seconds[name]:.0f}s"
        )

    def run(
        self,
        cmd: list[str],
        name: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        hint: str = "",
    ) -> None:
        """Run one command, ``env`` on top of the build's environment."""
        start = time.monotonic()
        with open(self.log, "a") as fh:
            fh.write(f"\n===== {name}: {' '.join(cmd)}\n")
            fh.flush()
            proc = subprocess.Popen(
                cmd,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env={**self.env, **(env or {})},
                cwd=cwd,
                preexec_fn=die_with_parent,
            )
            try:
                while True:
                    try:
                        rc = proc.wait(timeout=HEARTBEAT_SECONDS)
                        break
                    except subprocess.TimeoutExpired:
                        last = tail(self.log, 1).strip()
                        progress(f"  ... {name}: {time.monotonic() - start:.0f}s; {last[:120]}")
            except BaseException:
                # ^C or an exception in this process: never leave a compiler or pip running
                # on its own.
                proc.kill()
                proc.wait()
                raise
        if rc != 0:
            extra = f" ({hint})" if hint else ""
            raise self.error(
                f"{name} failed with exit code {rc}{extra} (full log: {self.log}); last lines:\n"
                f"{tail(self.log, 40)}"
            )


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
