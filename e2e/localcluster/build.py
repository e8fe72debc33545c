"""Build the local cluster's binaries from Go modules into a per-version cache.

No container image or release tarball can be downloaded on the project machines, but
the Go module proxy is reachable, so every binary is compiled from source with the
``go`` client:

- ``kubernetes``: kube-apiserver, kube-controller-manager, kube-scheduler and kubectl
  from ``k8s.io/kubernetes``. Its go.mod points the ``k8s.io/*`` staging modules at
  ``./staging/...`` with placeholder versions ``v0.0.0``, which is why
  ``go install ...@version`` refuses it. A generated wrapper module replaces each
  staging module with its published ``v0.<minor>.<patch>`` release instead.
- ``etcd`` from ``go.etcd.io/etcd/server/v3`` (its module root is the main package).
- ``kwok`` from ``sigs.k8s.io/kwok``, plus the stage files it needs (kwok v0.8 has no
  built-in stages), concatenated from the module cache into one config file.
- ``helm`` from ``helm.sh/helm/v3``.

Every component uses the same recipe, a wrapper module in the cache dir (never in the
checkout): copy the upstream ``go``/``godebug`` lines so the build behaves like
upstream's own, ``go get -tool`` the main packages at the pinned version, then
``go build -trimpath`` with ``CGO_ENABLED=0`` and version stamps in ``-ldflags``.
All main packages of a component are built in ONE ``go build`` invocation: shared
packages compile once and the linkers overlap with the remaining compiles (measured
faster than one invocation per binary; see docs/local-cluster.md).

Results land in ``<cache>/bin/<component>-<version>/`` through an atomic rename,
with a ``manifest.json`` recording what was built and how long it took; a component
whose directory exists is never rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from . import paths, procs, versions

log = logging.getLogger(__name__)

# A cold link of kube-apiserver alone takes minutes on 2 cores; without a heartbeat
# a CI log looks hung.
HEARTBEAT_SECONDS = 60.0

MANIFEST = "manifest.json"
KWOK_STAGES_FILE = "kwok-stages.yaml"

# Stage files inside the sigs.k8s.io/kwok module that make simulated nodes Ready and
# keep their leases fresh, and move pods through Running/Ready, Succeeded and deletion.
KWOK_STAGE_FILES: tuple[str, ...] = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


class BuildError(RuntimeError):
    """A binary could not be built; the message carries the tail of the build log."""


@dataclass(frozen=True)
class Component:
    """One Go module at a pinned version and the main packages built from it."""

    name: str
    module: str
    version: str
    packages: tuple[str, ...]
    binaries: tuple[str, ...]
    # For k8s.io/kubernetes: the version its staging modules are published under.
    staging_version: str | None = None

    @property
    def dir(self) -> Path:
        """Return the cache directory holding this component's binaries."""
        return paths.bin_root() / f"{self.name}-{self.version}"

    def path(self, binary: str) -> Path:
        """Return the cached path of one of this component's binaries."""
        if binary not in self.binaries:
            raise KeyError(f"{self.name} does not build {binary}")
        return self.dir / binary

    def is_complete(self) -> bool:
        """Return whether a finished build of this exact version is cached."""
        return (self.dir / MANIFEST).is_file() and all(
            os.access(self.dir / b, os.X_OK) for b in self.binaries
        )


KUBERNETES = Component(
    name="kubernetes",
    module="k8s.io/kubernetes",
    version=versions.KUBERNETES_VERSION,
    packages=(
        "k8s.io/kubernetes/cmd/kube-apiserver",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        "k8s.io/kubernetes/cmd/kube-scheduler",
        "k8s.io/kubernetes/cmd/kubectl",
    ),
    binaries=("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"),
    staging_version=versions.kubernetes_staging_version(),
)


def _tool(name: str, module: str, version: str, command: str = "") -> Component:
    """A component that builds one binary, ``name``, from the package ``module + command``."""
    return Component(
        name=name, module=module, version=version, packages=(module + command,), binaries=(name,)
    )


ETCD = _tool("etcd", "go.etcd.io/etcd/server/v3", versions.ETCD_VERSION)
KWOK = _tool("kwok", "sigs.k8s.io/kwok", versions.KWOK_VERSION, "/cmd/kwok")
HELM = _tool("helm", "helm.sh/helm/v3", versions.HELM_VERSION, "/cmd/helm")

# Build order: the biggest first, so a failure in the long build shows up early.
COMPONENTS: tuple[Component, ...] = (KUBERNETES, ETCD, KWOK, HELM)


@dataclass(frozen=True)
class Toolset:
    """Paths of the built binaries for the pinned versions."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path
    kwok_stages: Path
    helm: Path
    # One directory with links to all binaries, meant for PATH.
    bin_dir: Path


def toolset() -> Toolset:
    """Return where the binaries for the pinned versions are (built or not)."""
    return Toolset(
        etcd=ETCD.path("etcd"),
        kube_apiserver=KUBERNETES.path("kube-apiserver"),
        kube_controller_manager=KUBERNETES.path("kube-controller-manager"),
        kube_scheduler=KUBERNETES.path("kube-scheduler"),
        kubectl=KUBERNETES.path("kubectl"),
        kwok=KWOK.path("kwok"),
        kwok_stages=KWOK.dir / KWOK_STAGES_FILE,
        helm=HELM.path("helm"),
        bin_dir=_toolset_dir(),
    )


def missing_components() -> list[Component]:
    """Return the components whose pinned version is not in the cache yet."""
    return [c for c in COMPONENTS if not c.is_complete()]


def ensure_built(force: bool = False) -> Toolset:
    """Build whatever is missing from the cache (everything if ``force``) and return the paths.

    Concurrent callers (two test sessions, a CLI and a test) serialise on a lock file,
    and the second one finds the cache complete instead of building again.
    """
    if not force and not missing_components():
        _link_toolset()
        return toolset()
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "the `go` command is not on PATH; it is needed to build the cluster binaries"
        )
    paths.build_root().mkdir(parents=True, exist_ok=True)
    with _build_lock():
        todo = list(COMPONENTS) if force else missing_components()
        if todo:
            go_version = _go_version(go)
            total_start = time.monotonic()
            log.info(
                "building %s with %s (cached under %s); a cold build takes a while",
                ", ".join(f"{c.name} {c.version}" for c in todo),
                go_version,
                paths.bin_root(),
            )
            for component in todo:
                _build_component(go, go_version, component)
            log.info("all binaries built in %.0fs", time.monotonic() - total_start)
        _link_toolset()
    return toolset()


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    lock_path = paths.build_root() / ".lock"
    with open(lock_path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is building the cluster binaries; waiting for it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            # Static binaries, no C toolchain needed, and required by the brief.
            "CGO_ENABLED": "0",
            # Never let an upstream `toolchain` line trigger a toolchain download.
            "GOTOOLCHAIN": "local",
            # A go.work in a parent directory must not leak into the wrapper modules.
            "GOWORK": "off",
            # The wrapper modules are not in a VCS checkout; a user's GOFLAGS (e.g.
            # -mod=vendor) must not change how upstream code is built.
            "GOFLAGS": "-buildvcs=false",
        }
    )
    return env


def _go_version(go: str) -> str:
    out = subprocess.run(
        [go, "env", "GOVERSION"], env=_go_env(), check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def _version_tuple(go_version: str) -> tuple[int, ...]:
    nums = re.findall(r"\d+", go_version.removeprefix("go"))
    return tuple(int(n) for n in nums[:3])


@dataclass(frozen=True)
class _Upstream:
    go_line: str
    godebug: list[str]
    gomod: str
    module_dir: Path


def _download_upstream(go: str, component: Component) -> _Upstream:
    spec = f"{component.module}@{component.version}"
    proc = subprocess.run(
        [go, "mod", "download", "-json", spec],
        env=_go_env(),
        cwd=paths.build_root(),
        capture_output=True,
        text=True,
    )
    try:
        info = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise BuildError(f"go mod download {spec} failed: {proc.stderr.strip()}") from exc
    if proc.returncode != 0 or "Error" in info:
        raise BuildError(
            f"go mod download {spec} failed: {info.get('Error') or proc.stderr.strip()}"
        )
    gomod = Path(info["GoMod"]).read_text()
    go_line = ""
    godebug: list[str] = []
    in_godebug_block = False
    for line in gomod.splitlines():
        stripped = line.strip()
        if in_godebug_block:
            godebug.append(line)
            if stripped == ")":
                in_godebug_block = False
        elif stripped.startswith("go "):
            go_line = stripped
        elif stripped.startswith("godebug"):
            godebug.append(line)
            in_godebug_block = stripped.endswith("(")
    if not go_line:
        raise BuildError(f"{spec}: go.mod has no `go` line")
    return _Upstream(go_line=go_line, godebug=godebug, gomod=gomod, module_dir=Path(info["Dir"]))


def _staging_replaces(component: Component, gomod: str) -> list[str]:
    if component.staging_version is None:
        return []
    names = re.findall(
        r"^\s*(?:replace\s+)?(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", gomod, re.MULTILINE
    )
    if not names:
        raise BuildError(
            f"{component.module} {component.version}: no staging replace directives found"
        )
    return [f"\t{name} => {name} {component.staging_version}" for name in sorted(set(names))]


def _write_wrapper(workdir: Path, component: Component, upstream: _Upstream) -> None:
    replaces = _staging_replaces(component, upstream.gomod)
    lines = [
        "// Generated by e2e/localcluster (build.py): a wrapper module that builds",
        f"// {component.module} {component.version} with its go/godebug settings.",
        f"module inferops.local/localcluster/{component.name}",
        "",
        upstream.go_line,
        *upstream.godebug,
        "",
        f"require {component.module} {component.version}",
    ]
    if replaces:
        lines += ["", "replace (", *replaces, ")"]
    # go.sum is regenerated by `go get` against the fresh go.mod.
    (workdir / "go.sum").unlink(missing_ok=True)
    (workdir / "go.mod").write_text("\n".join(lines) + "\n")


def _ldflags(component: Component, upstream: _Upstream) -> str:
    # -s -w: no symbol table/DWARF; the links are faster and the binaries smaller.
    flags = ["-s", "-w"]
    if component is KUBERNETES:
        major, minor = versions.major_minor(component.version)
        build_date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        # Unstamped binaries report v0.0.0, which breaks helm's kubeVersion checks
        # and the apiserver's own version discovery.
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags += [
                f"-X {pkg}.gitVersion={component.version}",
                f"-X {pkg}.gitMajor={major}",
                f"-X {pkg}.gitMinor={minor}",
                f"-X {pkg}.gitTreeState=clean",
                f"-X {pkg}.buildDate={build_date}",
            ]
    elif component is HELM:
        # Without the stamp helm reports "v3.22" with no patch level.
        flags += [
            f"-X helm.sh/helm/v3/internal/version.version={component.version}",
            "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
        ]
        # helm's default Capabilities.KubeVersion (used by `helm template` and lint)
        # follows the client-go it is built with, as upstream's Makefile stamps it.
        match = re.search(r"^\s*k8s\.io/client-go\s+v0\.(\d+)\.", upstream.gomod, re.MULTILINE)
        if match:
            for pkg in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
                flags += [
                    f"-X {pkg}.k8sVersionMajor=1",
                    f"-X {pkg}.k8sVersionMinor={match.group(1)}",
                ]
    return " ".join(flags)


def _build_component(go: str, go_version: str, component: Component) -> None:
    start = time.monotonic()
    label = f"{component.name} {component.version}"
    workdir = paths.build_root() / f"{component.name}-{component.version}"
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "build.log"
    log_path.write_text("")
    log.info("[%s] resolving module %s@%s", label, component.module, component.version)

    upstream = _download_upstream(go, component)
    needed = _version_tuple(upstream.go_line.split()[1])
    if needed > _version_tuple(go_version):
        raise BuildError(
            f"{label} needs Go {upstream.go_line.split()[1]} but {go_version} is installed; "
            "pin an older version in e2e/localcluster/versions.py or install a newer Go"
        )
    _write_wrapper(workdir, component, upstream)
    _run_go(
        [go, "get", "-tool", *(f"{p}@{component.version}" for p in component.packages)],
        cwd=workdir,
        log_path=log_path,
        label=f"{label} (downloading modules)",
    )
    resolved = time.monotonic() - start
    log.info(
        "[%s] modules resolved in %.0fs; compiling %s",
        label,
        resolved,
        ", ".join(component.binaries),
    )

    tmp_dir = paths.bin_root() / f".{component.name}-{component.version}.tmp{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    # With one package `go build -o DIR/` would name etcd's binary "server" (after the
    # module path), so single-package components get an explicit output file.
    output = str(tmp_dir / component.binaries[0]) if len(component.packages) == 1 else f"{tmp_dir}/"
    compile_start = time.monotonic()
    appeared = _run_go(
        [
            go,
            "build",
            "-trimpath",
            "-ldflags",
            _ldflags(component, upstream),
            "-o",
            output,
            *component.packages,
        ],
        cwd=workdir,
        log_path=log_path,
        label=label,
        watch_dir=tmp_dir,
        expected=component.binaries,
    )
    compile_seconds = time.monotonic() - compile_start
    for binary in component.binaries:
        if not os.access(tmp_dir / binary, os.X_OK):
            raise BuildError(f"{label}: go build succeeded but {binary} is missing; see {log_path}")
    _check_version(component, tmp_dir)
    if component is KWOK:
        _write_kwok_stages(upstream.module_dir, tmp_dir / KWOK_STAGES_FILE)

    manifest = {
        "component": component.name,
        "module": component.module,
        "version": component.version,
        "packages": list(component.packages),
        "binaries": list(component.binaries),
        "go": go_version,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "resolve_seconds": round(resolved, 1),
        "compile_seconds": round(compile_seconds, 1),
        # Seconds from the start of `go build` until each binary was written.
        "binary_ready_seconds": {b: round(s, 1) for b, s in appeared.items()},
        "total_seconds": round(time.monotonic() - start, 1),
    }
    (tmp_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if component.dir.exists():
        shutil.rmtree(component.dir)
    tmp_dir.rename(component.dir)
    log.info(
        "[%s] built in %.0fs (modules %.0fs, compile+link %.0fs) -> %s",
        label,
        manifest["total_seconds"],
        resolved,
        compile_seconds,
        component.dir,
    )


def _run_go(
    argv: Sequence[str],
    *,
    cwd: Path,
    log_path: Path,
    label: str,
    watch_dir: Path | None = None,
    expected: Sequence[str] = (),
) -> dict[str, float]:
    """Run a go command with its output appended to ``log_path``, printing a heartbeat.

    Returns, for each name in ``expected``, the seconds after which it appeared in
    ``watch_dir`` (that is how per-binary times of a multi-binary build are measured).
    """
    start = time.monotonic()
    appeared: dict[str, float] = {}
    next_beat = start + HEARTBEAT_SECONDS
    with open(log_path, "a") as logf:
        logf.write(f"$ {' '.join(argv)}\n")
        logf.flush()
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=_go_env(),
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
        try:
            while True:
                try:
                    rc = proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                if watch_dir is not None:
                    for name in expected:
                        if name not in appeared and (watch_dir / name).exists():
                            appeared[name] = now - start
                            log.info("[%s] %s linked after %.0fs", label, name, appeared[name])
                if now >= next_beat:
                    pending = [n for n in expected if n not in appeared]
                    suffix = f" (waiting for {', '.join(pending)})" if pending else ""
                    log.info("still building %s, %.0fs%s", label, now - start, suffix)
                    next_beat = now + HEARTBEAT_SECONDS
        except BaseException:
            # Interrupted (Ctrl-C, test timeout): do not leave a compiler running.
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    if rc != 0:
        raise BuildError(
            f"{label}: `{' '.join(argv[:3])} ...` failed with exit code {rc}\n"
            + procs.tail(log_path)
        )
    end = time.monotonic() - start
    for name in expected:
        appeared.setdefault(name, end)
    return appeared


def _check_version(component: Component, out_dir: Path) -> None:
    """Fail the build if a binary does not report the pinned version (a stamping bug)."""
    bare = component.version.removeprefix("v")
    checks: dict[str, tuple[list[str], str]] = {
        "kubernetes": (["kubectl", "version", "--client"], f"Client Version: {component.version}"),
        "etcd": (["etcd", "--version"], f"etcd Version: {bare}"),
        "kwok": (["kwok", "--version"], bare),
        "helm": (["helm", "version", "--short"], component.version),
    }
    argv, expected = checks[component.name]
    proc = subprocess.run(
        [str(out_dir / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        # helm wants writable config/cache dirs; keep it from touching the user's.
        env={
            **os.environ,
            "HELM_CACHE_HOME": str(out_dir / ".helm"),
            "HELM_CONFIG_HOME": str(out_dir / ".helm"),
        },
    )
    shutil.rmtree(out_dir / ".helm", ignore_errors=True)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 or expected not in output:
        raise BuildError(
            f"{component.name}: `{' '.join(argv)}` did not report {expected!r}:\n{output.strip()}"
        )


def _write_kwok_stages(module_dir: Path, target: Path) -> None:
    docs = []
    for rel in KWOK_STAGE_FILES:
        source = module_dir / rel
        if not source.is_file():
            raise BuildError(f"kwok stage file {rel} not found in {module_dir}")
        docs.append(f"# from sigs.k8s.io/kwok module: {rel}\n{source.read_text().strip()}\n")
    target.write_text("---\n".join(docs))


def _toolset_dir() -> Path:
    # Keyed by all pins, so checkouts with different pins can share the cache.
    pins = ",".join(f"{c.name}={c.version}" for c in COMPONENTS)
    return paths.bin_root() / f"toolset-{hashlib.sha256(pins.encode()).hexdigest()[:12]}"


def _link_toolset() -> None:
    """(Re)create the directory of links to every binary, meant to be put on PATH."""
    target = _toolset_dir()
    target.mkdir(parents=True, exist_ok=True)
    for component in COMPONENTS:
        for binary in component.binaries:
            link = target / binary
            dest = component.path(binary)
            if link.is_symlink() and Path(os.readlink(link)) == dest:
                continue
            tmp = target / f".{binary}.tmp{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(dest)
            tmp.replace(link)
