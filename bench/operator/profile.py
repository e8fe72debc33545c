"""Where the operator's CPU goes: py-spy samples its stacks while the backends are created,
and the summary lists the functions with the most samples, inclusive and self."""

from __future__ import annotations

import collections
import shutil
import subprocess
from pathlib import Path


class Profiler:
    def __init__(self, pid: int, raw: Path) -> None:
        py_spy = shutil.which("py-spy") or str(Path(__file__).parents[2] / ".venv/bin/py-spy")
        self.raw = raw
        self.process = subprocess.Popen(
            [
                py_spy,
                "record",
                "--format",
                "raw",
                "--rate",
                "50",
                "--nonblocking",
                "-o",
                str(raw),
                "-p",
                str(pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        self.process.send_signal(2)  # SIGINT: py-spy writes its file and exits
        self.process.wait(timeout=60)


def summary(raw: Path, top: int = 25) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
            for f in stack.split(";")
        ]
        samples += n
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    lines = [f"{samples} samples at 50 Hz", "", "inclusive:"]
    lines += [f"{100 * n / samples:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"{100 * n / samples:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines) + "\n"


class ApiserverProfile:
    """A CPU profile of the API server over `seconds` (its /debug/pprof, which the
    benchmark's cluster enables), fetched with `kubectl get --raw` in the background and
    saved to `out` (gzipped protobuf, for `go tool pprof`)."""

    def __init__(self, kubectl: str, kubeconfig: Path, seconds: int, out: Path) -> None:
        self.out = out
        self._file = out.open("wb")
        self.process = subprocess.Popen(
            [
                kubectl,
                "--kubeconfig",
                str(kubeconfig),
                "get",
                "--raw",
                f"/debug/pprof/profile?seconds={seconds}",
                f"--request-timeout={seconds + 60}s",
            ],
            stdout=self._file,
            stderr=subprocess.DEVNULL,
        )

    def wait(self) -> Path:
        self.process.wait(timeout=600)
        self._file.close()
        if self.process.returncode:
            raise RuntimeError(f"kubectl get --raw /debug/pprof/profile: {self.process.returncode}")
        return self.out


def pprof_top(profile: Path, nodes: int = 40) -> str:
    """`go tool pprof -top`: the functions with the most CPU, flat and cumulative."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    flat = subprocess.run(
        [go, "tool", "pprof", "-top", f"-nodecount={nodes}", str(profile)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cumulative = subprocess.run(
        [go, "tool", "pprof", "-top", "-cum", f"-nodecount={nodes}", str(profile)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return f"flat:\n{flat}\ncumulative:\n{cumulative}"
