"""The one place where the local cluster's component versions are pinned.

Every binary the local cluster runs is built from Go modules at exactly these
versions; the cache directories are keyed by them, so changing a pin here makes
the next ``build``/``up`` build the new version while keeping the old one.

Why these versions:

- Kubernetes v1.35.4: its go.mod says ``go 1.25.0``, satisfied by the Go 1.26
  toolchain on the project machines. Newer minors exist (up to v1.37), but kwok
  v0.8.0 (the newest kwok) is built against v0.36 client libraries, so one minor
  below that keeps the simulated kubelet's API expectations comfortably in skew.
- etcd v3.6.16: newest 3.6 patch; Kubernetes 1.35 supports etcd 3.5/3.6.
- kwok v0.8.0: newest release; simulates nodes and pod lifecycles.
- helm v3.22.0: newest helm 3 release (the project's chart targets helm 3).
"""

from __future__ import annotations

KUBERNETES_VERSION = "v1.35.4"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.22.0"


def kubernetes_staging_version(kubernetes_version: str = KUBERNETES_VERSION) -> str:
    """Return the version of the k8s.io/* staging modules released with a Kubernetes tag.

    Kubernetes v1.X.Y publishes its staging repositories (k8s.io/api, client-go, ...)
    as v0.X.Y, which is what the wrapper module's replace directives point at.
    """
    major, minor, patch = _split(kubernetes_version)
    if major != 1:
        raise ValueError(f"unexpected Kubernetes major version in {kubernetes_version!r}")
    return f"v0.{minor}.{patch}"


def major_minor(version: str) -> tuple[int, int]:
    """Return (major, minor) of a ``vMAJOR.MINOR.PATCH`` version string."""
    major, minor, _ = _split(version)
    return major, minor


def _split(version: str) -> tuple[int, int, int]:
    parts = version.removeprefix("v").split("-", 1)[0].split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a vMAJOR.MINOR.PATCH version: {version!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])
