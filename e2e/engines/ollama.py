"""Real Ollama, built once from its Go module, for the engine tests and the demo.

``ensure_ollama()`` builds, once per Ollama version, the ``ollama`` binary into
``${XDG_CACHE_HOME:-~/.cache}/inferops/ollama-<version>/bin/ollama`` and returns its path.
The recipe is the one checked in DESIGN.md section 3 ("Real Ollama without containers"):

1. the header-only libraries that the module zip leaves out (Go module zips drop every
   directory named ``vendor``, so ``llama/llama.cpp/vendor/`` is missing) come from
   packages: Debian's ``nlohmann-json3-dev`` and ``libstb-dev`` (``apt-get download`` +
   ``dpkg-deb -x``, no root install; the system's copies when they are installed) and
   PyPI's ``miniaudio`` sdist, which carries ``miniaudio/miniaudio.h``;
2. ``go install github.com/ollama/ollama@v<version>`` with ``CGO_ENABLED=1`` (its CPU
   backend, ggml and llama.cpp, is C/C++ compiled through cgo), ``CGO_CPPFLAGS`` pointing
   at those headers, and the version stamped with ``-ldflags -X`` (else ``/api/version``
   says 0.0.0);
3. check that the binary reports the pinned version.

A marker file is written only after every step succeeded; a directory without it is a
half-built one and is removed and rebuilt. A file lock keeps two processes from building
at once. Progress goes to stderr (with a heartbeat while the compiler runs), the tools'
own output to ``ollama-<version>.log`` in the cache dir (its tail is printed on failure).

CLI: ``python -m e2e.engines.ollama [--force]`` builds (if needed) and prints the binary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from . import _common
from ._common import BuildSteps, build_cli, cache_root, dir_size, progress, read_marker

OLLAMA_VERSION = "0.17.4"
"""The one pinned Ollama release; the install directory and its lock are keyed by it."""

OLLAMA_MODULE = "github.com/ollama/ollama"

DEBIAN_HEADER_PACKAGES = ("nlohmann-json3-dev", "libstb-dev")
"""Debian packages with the header-only libraries llama.cpp includes as
``nlohmann/json.hpp`` and ``stb/stb_image.h`` (both under ``usr/include``)."""

MINIAUDIO_VERSION = "1.71"
"""PyPI's ``miniaudio`` sdist that carries ``miniaudio/miniaudio.h`` (miniaudio 0.11.25)."""

SYSTEM_HEADERS = (Path("/usr/include/nlohmann/json_fwd.hpp"), Path("/usr/include/stb/stb_image.h"))
"""When the Debian packages are installed system-wide, their headers are used as they are."""

PROG = "python -m e2e.engines.ollama"


class OllamaBuildError(RuntimeError):
    """Building Ollama failed; the message carries the build log's tail."""


def install_dir(version: str = OLLAMA_VERSION) -> Path:
    """Return where the build for ``version`` lives (whether or not it is built)."""
    return cache_root() / f"ollama-{version}"


def binary_path(version: str = OLLAMA_VERSION) -> Path:
    """Return the ``ollama`` binary of the build for ``version``."""
    return install_dir(version) / "bin" / "ollama"


def log_path(version: str = OLLAMA_VERSION) -> Path:
    """Return the log of the (last) build for ``version``."""
    return cache_root() / f"ollama-{version}.log"


def build_info(binary: Path | None = None) -> dict[str, Any]:
    """Return what the build of ``binary`` (default: the pinned one) recorded (durations,
    size, version); {} if not built."""
    return read_marker(binary.parents[1] if binary else install_dir())


def ensure_ollama(force: bool = False) -> Path:
    """Build Ollama once (or again with ``force``) and return the binary's path.

    Fast when the build is complete: one ``stat``. Otherwise the caller waits for the lock,
    re-checks (another process may have just built it) and builds; a cold build compiles
    llama.cpp and takes minutes (see docs/engines.md).
    """
    _common.ensure_built(install_dir(), f"ollama-{OLLAMA_VERSION}", _build, force)
    return binary_path()


def _build(directory: Path) -> None:
    _common.fresh_directory(directory)
    work = directory / "src"
    work.mkdir(parents=True)
    build = BuildSteps(log_path(), 4, OllamaBuildError, os.environ)
    started = time.monotonic()
    progress(
        f"building ollama {OLLAMA_VERSION} in {directory} (a cold build compiles llama.cpp "
        f"through cgo and takes minutes; log: {build.log})"
    )
    step = build.step
    steps = build.seconds

    include_dirs: list[Path] = []
    if all(h.is_file() for h in SYSTEM_HEADERS):
        progress("nlohmann-json and stb headers: the system's (/usr/include)")
        steps["debian headers"] = 0.0
    else:
        debs = work / "debs"
        debs.mkdir()
        step(
            f"apt-get download {' '.join(DEBIAN_HEADER_PACKAGES)}",
            ["apt-get", "download", *DEBIAN_HEADER_PACKAGES],
            cwd=debs,
            hint="if apt cannot locate the packages, run `apt-get update` first",
        )
        root = work / "debian"
        for deb in sorted(debs.glob("*.deb")):
            build.run(["dpkg-deb", "-x", str(deb), str(root)], f"dpkg-deb -x {deb.name}")
        include_dirs.append(root / "usr" / "include")
    sdists = work / "sdist"
    step(
        f"pip download miniaudio=={MINIAUDIO_VERSION} (sdist, for miniaudio.h)",
        [
            sys.executable,
            "-m",
            "pip",
            "--disable-pip-version-check",
            "--no-input",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"miniaudio=={MINIAUDIO_VERSION}",
            "-d",
            str(sdists),
        ],
    )
    include_dirs.append(_extract_miniaudio(sdists, work / "miniaudio"))

    go_env = {
        "CGO_ENABLED": "1",
        "CGO_CPPFLAGS": " ".join(f"-I{d}" for d in include_dirs),
        "GOBIN": str(directory / "bin"),
        # Our module cache and proxy settings are the machine's; the build is not in a module.
        "GOFLAGS": "-buildvcs=false",
    }
    ldflags = f"-s -w -X {OLLAMA_MODULE}/version.Version={OLLAMA_VERSION}"
    step(
        f"go install {OLLAMA_MODULE}@v{OLLAMA_VERSION} (cgo: ggml + llama.cpp)",
        [
            "go",
            "install",
            "-v",
            "-trimpath",
            "-ldflags",
            ldflags,
            f"{OLLAMA_MODULE}@v{OLLAMA_VERSION}",
        ],
        env=go_env,
        cwd=work,
    )
    binary = binary_path()
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=False, timeout=30
    )
    reported = out.stdout + out.stderr
    if OLLAMA_VERSION not in reported:
        raise OllamaBuildError(f"{binary} --version does not report {OLLAMA_VERSION}: {reported}")
    steps["check version"] = 0.0
    shutil.rmtree(work)  # the headers were only needed by the compiler
    total = round(time.monotonic() - started, 1)
    info = {
        "ollama": OLLAMA_VERSION,
        "go": subprocess.run(
            ["go", "env", "GOVERSION"], capture_output=True, text=True, check=True
        ).stdout.strip(),
        "build_seconds": total,
        "step_seconds": steps,
        "binary_bytes": binary.stat().st_size,
        "size_bytes": dir_size(directory),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _common.write_marker(directory, info)
    progress(f"ollama {OLLAMA_VERSION} ready in {total:.0f}s: {binary}")


def _extract_miniaudio(sdists: Path, target: Path) -> Path:
    """Extract only ``miniaudio/miniaudio.h`` from the sdist; return the include dir."""
    archives = sorted(sdists.glob(f"miniaudio-{MINIAUDIO_VERSION}.tar.gz"))
    if not archives:
        raise OllamaBuildError(f"pip download left no miniaudio sdist in {sdists}")
    member = f"miniaudio-{MINIAUDIO_VERSION}/miniaudio/miniaudio.h"
    header = target / "miniaudio" / "miniaudio.h"
    header.parent.mkdir(parents=True)
    with tarfile.open(archives[0]) as tar:
        source = tar.extractfile(member)
        if source is None:
            raise OllamaBuildError(f"{archives[0].name} has no {member}")
        header.write_bytes(source.read())
    return target


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: build Ollama if needed and print the binary's path."""
    return build_cli(PROG, __doc__, argv, ensure_ollama, OllamaBuildError, build_info)


if __name__ == "__main__":
    sys.exit(main())
