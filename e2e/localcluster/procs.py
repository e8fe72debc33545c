"""Start, identify and stop the cluster's processes by process id.

Each component runs in its own session (so a Ctrl-C in the terminal that ran ``up``
does not kill the cluster, and the CLI can exit while the cluster keeps running),
with stdout/stderr appended to a log file. A process is identified by its pid AND
its start time from ``/proc/<pid>/stat``, so a pid reused by an unrelated process
after a reboot or crash is never signalled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from testsupport import process

log = logging.getLogger(__name__)

# Popen objects of processes this Python process started, so it can reap them and no
# zombie lingers in a long-lived caller such as a pytest session.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ProcessRecord:
    """What is needed to find a started process again from another Python process."""

    name: str
    pid: int
    start_ticks: int
    argv: list[str]
    log: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessRecord:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            start_ticks=int(data["start_ticks"]),
            argv=[str(a) for a in data["argv"]],
            log=str(data["log"]),
        )


def _stat(pid: int) -> tuple[str, int] | None:
    """Return (state letter, start time in clock ticks) of a pid, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def start(
    name: str, argv: Sequence[str], log_path: Path, cwd: Path, env: dict[str, str] | None = None
) -> ProcessRecord:
    """Start ``argv`` detached in its own session, output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as logf:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        logf.write(f"\n=== {stamp} starting {name}: {' '.join(argv)}\n".encode())
        logf.flush()
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _CHILDREN[proc.pid] = proc
    stat = _stat(proc.pid)
    start_ticks = stat[1] if stat else -1
    return ProcessRecord(
        name=name, pid=proc.pid, start_ticks=start_ticks, argv=list(argv), log=str(log_path)
    )


def is_running(record: ProcessRecord) -> bool:
    """Return whether the recorded process is still alive (not exited, not a zombie)."""
    child = _CHILDREN.get(record.pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(record.pid, None)
        return False
    stat = _stat(record.pid)
    if stat is None:
        return False
    state, ticks = stat
    if ticks != record.start_ticks:
        # Same pid, different process: ours is gone.
        return False
    return state not in ("Z", "X")


def _present(record: ProcessRecord) -> bool:
    """Return whether the pid still has a /proc entry for this process (even as a zombie)."""
    stat = _stat(record.pid)
    return stat is not None and stat[1] == record.start_ticks


def exit_code(record: ProcessRecord) -> int | None:
    """Return the exit code if this Python process started it and it has exited."""
    child = _CHILDREN.get(record.pid)
    if child is None:
        return None
    return child.poll()


def stop(records: Sequence[ProcessRecord], grace: float = 10.0) -> list[str]:
    """SIGTERM every running record, SIGKILL what is left after ``grace`` seconds.

    Returns the names of the processes that had to be killed. Only the recorded pids
    (each the leader of its own session and process group) are signalled.
    """
    alive = [r for r in records if is_running(r)]
    for rec in alive:
        _signal(rec, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [r for r in alive if is_running(r)]
    killed = []
    for rec in alive:
        log.warning(
            "%s (pid %d) ignored SIGTERM for %.0fs; sending SIGKILL", rec.name, rec.pid, grace
        )
        _signal(rec, signal.SIGKILL)
        killed.append(rec.name)
    deadline = time.monotonic() + 5.0
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [r for r in alive if is_running(r)]
    for rec in records:
        _reap(rec.pid)
    if alive:
        raise RuntimeError(f"could not stop: {', '.join(f'{r.name} (pid {r.pid})' for r in alive)}")
    return killed


def wait_reaped(records: Sequence[ProcessRecord], timeout: float = 5.0) -> bool:
    """Wait until dead processes have left the process table; return whether they all did.

    A process whose launcher already exited (the usual case after the CLI's `up`) is
    reaped by init, which on some machines does so only every second or two; until then
    it shows up in `pgrep` as <defunct>. Waiting here makes "no process left after
    down" literally true for whoever checks right after.
    """
    deadline = time.monotonic() + timeout
    while any(_present(r) for r in records):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _signal(record: ProcessRecord, sig: signal.Signals) -> None:
    try:
        # The process group has the pid as id because of start_new_session; signalling
        # the group also reaches any helper process a component may have forked.
        os.killpg(record.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(record.pid, sig)


def _reap(pid: int) -> None:
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        # A process that survived SIGKILL's wait is reported by stop(); do not block here.
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=1)


def tail(path: Path | str, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a log file, framed with its path."""
    text = process.tail(Path(path), lines)
    return f"--- last lines of {path} ---\n{text}" if text else f"(no log at {path})"
