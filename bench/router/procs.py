"""Processes the benchmark starts and measures: spawn pinned to CPUs, wait until they answer,
read their CPU time and memory from `/proc`, stop them (and only them) afterwards.

Every process gets its own session (process group), so a stop reaches its children (nginx's
worker) and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from testsupport.process import free_port

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class StartError(RuntimeError):
    """A process exited or did not answer in time; carries its log's tail."""


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of `pid` (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name, which is in parentheses and may contain spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def core_times() -> dict[int, tuple[int, int, int]]:
    """Per CPU, from /proc/stat: (busy, steal, total) clock ticks since boot. Busy is user,
    nice, system, irq and softirq; steal is time the hypervisor gave to another guest."""
    out: dict[int, tuple[int, int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        user, nice, system, idle, iowait, irq, softirq, steal = (int(f) for f in fields[:8])
        busy = user + nice + system + irq + softirq
        out[int(name[3:])] = (busy, steal, busy + idle + iowait + steal)
    return out


def listen_overflows() -> int:
    """Connections dropped because a listen queue was full (`TcpExt ListenOverflows`, the
    whole machine): the client retries its SYN after a second or more."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(table.get("ListenOverflows", 0))
    return 0


def memory_kib(pid: int) -> dict[str, int]:
    """`VmRSS` (resident now) and `VmHWM` (resident peak) of `pid`, in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def children(pid: int) -> list[int]:
    """Direct children of `pid` (nginx's workers under its master)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = children(todo.pop())
        found.extend(kids)
        todo.extend(kids)
    return sorted(found)


def tree_memory_kib(pid: int) -> dict[str, int]:
    """`memory_kib` summed over `pid` and its descendants (processes gone meanwhile skipped):
    the footprint of a server that runs helper processes."""
    total = {"VmRSS": 0, "VmHWM": 0}
    for member in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):
            for key, value in memory_kib(member).items():
                total[key] += value
    return total


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Returns once 127.0.0.1:`port` accepts connections; raises if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StartError(f"exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise StartError(f"port {port} did not open within {timeout:.0f}s")


@dataclass
class Service:
    """One started process (group): its name, command, CPUs, port and log file."""

    name: str
    cmd: Sequence[str]
    cpus: set[int]
    port: int
    log_path: Path
    cwd: Path | None = None
    env: dict[str, str] | None = None
    """The whole environment of the process (None: this process's)."""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not started"
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> None:
        cpus = self.cpus
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                list(self.cmd),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
                # Set in the child before exec, so every thread and child inherits it.
                preexec_fn=lambda: os.sched_setaffinity(0, cpus),
            )
        try:
            wait_port(self.port, self.proc, timeout)
        except StartError as err:
            self.stop()
            raise StartError(f"{self.name}: {err}\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def pids(self) -> list[int]:
        """The process and its descendants."""
        return [self.pid, *descendants(self.pid)]

    def cpu_seconds(self) -> float:
        """CPU time of the process and its descendants, in seconds."""
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the group, SIGKILL after `timeout`; safe to call twice."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
            os.killpg(proc.pid, signal.SIGCONT)  # a paused group acts on SIGTERM only now
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def total_cpu(services: Iterable[Service]) -> float:
    return sum(service.cpu_seconds() for service in services)


__all__ = [
    "Service",
    "StartError",
    "children",
    "core_times",
    "cpu_seconds",
    "descendants",
    "free_port",
    "listen_overflows",
    "memory_kib",
    "total_cpu",
    "tree_memory_kib",
    "wait_port",
]
