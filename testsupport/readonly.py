"""`python -m testsupport.readonly WRITABLE -m MODULE [ARGS...]`: runs MODULE as `python -m` does,
on what behaves like a read-only root filesystem with one writable mount.

The operator and router pods run with `readOnlyRootFilesystem: true` and an emptyDir at
/tmp (HOME and the temporary directory of the image). Tests cannot mount a read-only root
without containers or privileges, so this wrapper does the next best thing inside the
process: an audit hook (PEP 578) refuses every filesystem write outside WRITABLE (and /dev,
/proc) with EROFS, exactly the error a read-only mount gives, and reports each refusal on
stderr as a line starting with REFUSED. Run the process with the image's environment
(`PYTHONDONTWRITEBYTECODE=1`, HOME and TMPDIR at WRITABLE, WRITABLE as the working
directory); a test then checks that it works and that its log has no REFUSED line.

It sees what Python code does (open, os.open, mkdir, rename, remove, ...): a C extension
writing files through libc directly would pass unnoticed. None of the operator's or the
router's dependencies does.
"""

from __future__ import annotations

import errno
import os
import runpy
import shlex
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "images" / "inferops" / "Dockerfile"
REFUSED = "testsupport.readonly: REFUSED"
# Where the pods mount their emptyDir (the image's HOME and WORKDIR).
POD_TMP = "/tmp"
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# Events whose first argument is a path they create, change or remove.
_PATH_EVENTS = {
    "os.mkdir",
    "os.remove",
    "os.rmdir",
    "os.truncate",
    "os.chmod",
    "os.chown",
    "os.utime",
    "os.mkfifo",
    "os.mknod",
    "os.chflags",
    "os.lchflags",
    "os.setxattr",
    "os.removexattr",
}
# Events whose first two arguments are paths (source, destination).
_TWO_PATH_EVENTS = {"os.rename", "os.replace", "os.link", "os.symlink"}


def _path(value: Any) -> str | None:
    """An absolute path, or None for what is no path (a file descriptor)."""
    if isinstance(value, int):
        return None
    try:
        text = os.fsdecode(os.fspath(value))
    except TypeError:
        return None
    return os.path.abspath(text)


def _writes(event: str, args: tuple[Any, ...]) -> list[str]:
    """The paths an audited operation would write to."""
    if event == "open":
        path, mode, flags = args
        if isinstance(mode, str):
            writing = any(c in mode for c in "wax+")
        else:
            writing = bool((flags or 0) & _WRITE_FLAGS)
        return [p for p in [_path(path)] if p and writing]
    if event in _PATH_EVENTS:
        return [p for p in [_path(args[0])] if p]
    if event in _TWO_PATH_EVENTS:
        return [p for p in (_path(args[0]), _path(args[1])) if p]
    return []


def install(writable: str) -> None:
    """Refuses writes outside `writable`, /dev and /proc from now on, in this process."""
    allowed = tuple(os.path.abspath(p) for p in (writable, "/dev", "/proc"))

    def inside(path: str) -> bool:
        return any(path == a or path.startswith(a + os.sep) for a in allowed)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event != "open" and not event.startswith("os."):
            return
        for path in _writes(event, args):
            if not inside(path):
                sys.stderr.write(f"{REFUSED} {event} {path}\n")
                sys.stderr.flush()
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    sys.addaudithook(hook)


def image_env(dockerfile: Path = DOCKERFILE) -> dict[str, str]:
    """The ENV instructions of the image's final stage, as `{name: value}`."""
    lines = dockerfile.read_text().replace("\\\n", " ").splitlines()
    stage = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    env: dict[str, str] = {}
    for line in lines[stage:]:
        if line.startswith("ENV "):
            for pair in shlex.split(line[len("ENV ") :]):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def command(writable: Path, module: str) -> list[str]:
    """`python -m MODULE` under the guard; append MODULE's arguments."""
    return [sys.executable, "-m", "testsupport.readonly", str(writable), "-m", module]


def environment(base: dict[str, str], writable: Path) -> dict[str, str]:
    """`base` with the image's environment, its /tmp moved to `writable` (and TMPDIR there:
    /tmp is the image's temporary directory), and this checkout importable."""
    image = {
        k: v.replace(POD_TMP, str(writable)) if v.startswith(POD_TMP) else v
        for k, v in image_env().items()
    }
    path = os.pathsep.join(
        filter(None, [str(REPO / "operator"), str(REPO), base.get("PYTHONPATH")])
    )
    return {**base, **image, "TMPDIR": str(writable), "PYTHONPATH": path}


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "-m":
        sys.exit(__doc__)
    writable, module, args = argv[0], argv[2], argv[3:]
    install(writable)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
