"""What the results were measured on: the machine, its load, and the versions of everything."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.router import peers, tools
from bench.router.stack import REPO


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def load_average() -> list[float]:
    return list(os.getloadavg())


def machine() -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "cpus_online": os.cpu_count(),
        "cpus_allowed": sorted(os.sched_getaffinity(0)),
        "mem_total_gib": round(_mem_total_gib(), 1),
        "kernel": platform.release(),
        "os": platform.platform(),
        "load_average_at_start": load_average(),
    }


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return result.stdout.strip()


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions(tool_paths: dict[str, str], peer_venvs: dict[str, Path]) -> dict[str, Any]:
    """Versions of Python, the router's packages, the tools and the peers (each peer's
    requirement, its installed version and its lock file)."""
    installed = {
        name: {
            "requirement": peers.PEERS[name].requirement,
            "version": peers.installed_version(peers.PEERS[name], venv),
            "lock": f"bench/router/locks/{peers.PEERS[name].lock.name}",
        }
        for name, venv in peer_venvs.items()
    }
    return {
        "python": platform.python_version(),
        "aiohttp": _package("aiohttp"),
        "inferops": _package("inferops"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--", "operator")),
        **{name: tools.version(path) for name, path in tool_paths.items()},
        "peers": installed,
    }


__all__ = ["load_average", "machine", "versions"]
