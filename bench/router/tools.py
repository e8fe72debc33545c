"""The external programs the benchmark drives (nginx, wrk): found on PATH or installed from
Debian's packages with apt-get, and their versions for the results file."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

log = logging.getLogger("bench.router")

# Program -> the Debian package that ships it. nginx-light is the smallest build that has
# split_clients and the upstream keepalive module.
PACKAGES = {"nginx": "nginx-light", "wrk": "wrk"}
_SEARCH = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")


class ToolMissing(RuntimeError):
    """A program is absent and could not be installed."""


def find(program: str) -> str | None:
    found = shutil.which(program)
    if found:
        return found
    # /usr/sbin is not on every user's PATH, and nginx lives there.
    for directory in _SEARCH:
        path = os.path.join(directory, program)
        if os.access(path, os.X_OK):
            return path
    return None


def ensure(programs: list[str]) -> dict[str, str]:
    """Program -> absolute path, installing the missing ones with apt-get (as root)."""
    missing = [p for p in programs if find(p) is None]
    if missing:
        packages = [PACKAGES[p] for p in missing]
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise ToolMissing(
                f"missing {', '.join(missing)}: install {' '.join(packages)} "
                "(apt-get install, as root)"
            )
        log.info("installing %s with apt-get", " ".join(packages))
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
            check=True,
            env=env,
        )
    paths: dict[str, str] = {}
    for program in programs:
        path = find(program)
        if path is None:
            raise ToolMissing(f"{program} is still missing after installing {PACKAGES[program]}")
        paths[program] = path
    return paths


def version(path: str) -> str:
    """The first line a program prints about its version (nginx: `-v`, wrk: `--version`)."""
    flag = "-v" if os.path.basename(path) == "nginx" else "--version"
    result = subprocess.run([path, flag], capture_output=True, text=True, check=False)
    text = (result.stderr or result.stdout).strip()
    return text.splitlines()[0] if text else "unknown"


__all__ = ["PACKAGES", "ToolMissing", "ensure", "find", "version"]
