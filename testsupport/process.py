"""Run a local server process for tests: own process group, log file, health polling.

The e2e tier's one way to run a server: the operator, the router, the real vLLM server and
the Ollama stand-in (when run as a process) all use it. Each
server gets its own session/process group so that ``stop()`` and ``kill()`` reach every
child it spawns (vLLM's API server forks an engine-core process) and nothing else.

A SIGKILLed vLLM leaves its POSIX shared memory behind (``/dev/shm/psm_*`` of ~400 MB
apparent size and ``sem.mp-*``, measured): for a process started with ``clean_shm=True``
(vLLM's), after the group is gone, entries that appeared in ``/dev/shm`` while it ran and that
no live process maps or holds open are removed. Only for those: a semaphore a vLLM starting
in another session has created but its worker not yet opened looks just like a leak.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Self

from testsupport.paths import cache_root


def free_port(host: str = "127.0.0.1") -> int:
    """Return a port that is free right now, chosen by the kernel (ephemeral range).

    The kernel's ephemeral range (32768+ on Linux) keeps clear of fixed service ports such
    as a local control plane's. There is a small window before the caller binds it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


class ServerStartError(RuntimeError):
    """The server exited or did not become healthy in time; carries the log's tail."""


class StopsOnExit:
    """``with obj:`` ends in ``obj.stop()``: the context-manager half of every server class.

    A class that should also start on entry overrides ``__enter__`` to call its ``start``.
    """

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ManagedProcess(StopsOnExit):
    """One server process (group) with a log file and an HTTP health URL."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        *,
        env: dict[str, str],
        log_path: Path,
        health_url: str,
        cwd: Path | None = None,
        clean_shm: bool = False,
    ) -> None:
        """``clean_shm=True`` only for a server that leaks POSIX shared memory (vLLM): the
        clean-up cannot tell whose an entry is, so each stop of another server (a router,
        Prometheus, Ollama) would remove the semaphore of a vLLM starting in another test
        session at that moment (its worker then fails in ``SemLock._rebuild``, seen here)."""
        self.name = name
        self.cmd = cmd
        self.env = env
        self.log_path = log_path
        self.health_url = health_url
        self.cwd = cwd
        self.clean_shm = clean_shm
        self._proc: subprocess.Popen[bytes] | None = None
        self._shm_before: set[str] = set()
        self.start_seconds: float | None = None
        """Seconds from spawn to the first healthy answer (set by ``start``)."""

    @property
    def pid(self) -> int | None:
        """The process id (also its process group id), or None before ``start``."""
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        """The exit code if the process has exited, else None."""
        return self._proc.poll() if self._proc else None

    def spawn(self) -> None:
        """Start the process without waiting for it to be healthy."""
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError(f"{self.name} is already running (pid {self._proc.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._shm_before = _shm_entries()
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== {time.strftime('%H:%M:%S')} {' '.join(self.cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # own process group: stop/kill reach the children
            )

    def start(self, timeout: float) -> float:
        """Spawn and poll the health URL until it answers 200; return the seconds it took.

        Raises ``ServerStartError`` with the log's tail if the process exits first or the
        deadline passes (the process is killed in both cases).
        """
        started = time.monotonic()
        self.spawn()
        deadline = started + timeout
        delay = 0.05
        while True:
            code = self.returncode
            if code is not None:
                raise ServerStartError(
                    f"{self.name} exited with code {code} during start-up "
                    f"(log: {self.log_path}):\n{tail(self.log_path)}"
                )
            if self.healthy(timeout=2.0):
                self.start_seconds = time.monotonic() - started
                return self.start_seconds
            if time.monotonic() >= deadline:
                self.kill()
                raise ServerStartError(
                    f"{self.name} not healthy at {self.health_url} after {timeout:.0f}s "
                    f"(log: {self.log_path}):\n{tail(self.log_path)}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def healthy(self, timeout: float = 2.0) -> bool:
        """Return whether the health URL answers 200 right now."""
        try:
            with urllib.request.urlopen(self.health_url, timeout=timeout) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM the process group, wait up to ``grace`` seconds, then SIGKILL it."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                proc.wait()
        # Children that ignored SIGTERM (or outlived their parent) go too.
        self._signal_group(signal.SIGKILL)
        self._remove_leaked_shm()
        return proc.returncode

    def kill(self) -> int | None:
        """SIGKILL the whole process group at once (a crash, for fallback tests)."""
        proc = self._proc
        if proc is None:
            return None
        self._signal_group(signal.SIGKILL)
        proc.wait()
        self._remove_leaked_shm()
        return proc.returncode

    def _remove_leaked_shm(self) -> None:
        if not self.clean_shm:
            return
        new = _shm_entries() - self._shm_before
        if not new:
            return
        # The group's other members die asynchronously after SIGKILL; give them a moment
        # so that their mappings are gone before we decide what is orphaned.
        deadline = time.monotonic() + 5.0
        while self._group_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        in_use = _shm_in_use()
        for name in new - in_use:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(SHM_DIR, name))

    def _group_alive(self) -> bool:
        assert self._proc is not None
        try:
            os.killpg(self._proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        # Zombies still count for killpg; they hold no mappings, so ignore them.
        return any(_state(pid) not in ("Z", "X", None) for pid in _group_pids(self._proc.pid))

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        # The group id is our child's pid (start_new_session), so only what we started.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)


class LocalServer(StopsOnExit):
    """A server on 127.0.0.1 that a ``ManagedProcess`` runs: what the engine classes share.

    Real vLLM, real Ollama and the Ollama stand-in run as a process subclass it; their
    ``__init__`` calls this one's, then sets ``_process``. ``with`` ends in ``close()``,
    which is ``stop()`` unless a subclass has more to remove.
    """

    _process: ManagedProcess
    stop_grace: float = 15.0
    """Seconds ``stop()`` waits after SIGTERM before SIGKILL."""

    def __init__(self, kind: str, port: int | None, log_path: Path | None) -> None:
        """``port`` defaults to a free one, ``log_path`` to a new file named after ``kind``
        in the cache's ``logs/`` dir."""
        self._port = port or free_port()
        self.log_path = log_path or (
            cache_root() / "logs" / f"{kind}-{self._port}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        )

    def start(self, timeout: float) -> float:
        """Start the process and wait until its health URL answers 200; return the seconds."""
        return self._process.start(timeout)

    def stop(self, grace: float | None = None) -> int | None:
        """SIGTERM the server's process group, SIGKILL it after ``grace`` seconds."""
        return self._process.stop(self.stop_grace if grace is None else grace)

    def kill(self) -> int | None:
        """SIGKILL the server's whole process group at once (simulates a crash)."""
        return self._process.kill()

    def close(self) -> None:
        """Stop the server and remove what it was given to run in."""
        self.stop()

    def healthy(self) -> bool:
        """Return whether the health URL answers 200 right now."""
        return self._process.healthy()

    @property
    def url(self) -> str:
        """Base URL without a path, e.g. ``http://127.0.0.1:41234``."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1."""
        return self._port

    @property
    def pid(self) -> int | None:
        """The server's pid (also its process group id); None before ``start``."""
        return self._process.pid

    @property
    def start_seconds(self) -> float | None:
        """Seconds from spawn to healthy of the last successful ``start``."""
        return self._process.start_seconds

    @property
    def returncode(self) -> int | None:
        """Exit code once the server has exited, else None."""
        return self._process.returncode

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_until_signalled(
    server: LocalServer, start: Callable[[], float], ready: Callable[[float], str]
) -> int:
    """A server's CLI: start it, print ``ready(seconds)``, run until SIGINT/SIGTERM or until
    it exits by itself (then 1), and close it in every case."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        try:
            seconds = start()
        except ServerStartError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(ready(seconds), flush=True)
        while not done.wait(1.0):
            if server.returncode is not None:
                print(f"{server._process.name} exited with {server.returncode}", file=sys.stderr)
                return 1
    finally:
        server.close()
    return 0


SHM_DIR = "/dev/shm"


def _shm_entries() -> set[str]:
    try:
        return set(os.listdir(SHM_DIR))
    except OSError:
        return set()


def _shm_in_use() -> set[str]:
    """Names in /dev/shm that some live process maps or has open (any user we can see)."""
    used: set[str] = set()
    prefix = SHM_DIR + "/"
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as fh:
            for line in fh:
                idx = line.find(prefix)
                if idx >= 0:
                    used.add(line[idx + len(prefix) :].split()[0])
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith(prefix):
                        used.add(target[len(prefix) :].split()[0])
    return used


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    pids.append(int(entry))
    return pids


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
