"""Where the local cluster keeps things: the binary cache and the per-checkout state dir.

Binaries are expensive (a cold build takes many minutes), so they live outside the
checkout in the user's cache, keyed by version, and are shared by every checkout.
Cluster state (PKI, etcd data, logs, pids, kubeconfig) is cheap and per checkout,
so it lives in ``.cluster/`` at the repository root unless ``INFEROPS_CLUSTER_DIR``
points elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from testsupport.paths import cache_root

STATE_DIR_ENV = "INFEROPS_CLUSTER_DIR"


def repo_root() -> Path:
    """Return the checkout root (this file is ``<root>/e2e/localcluster/paths.py``)."""
    return Path(__file__).resolve().parents[2]


def bin_root() -> Path:
    """Return the directory holding one ``<component>-<version>/`` dir per built component."""
    return cache_root() / "bin"


def build_root() -> Path:
    """Return the directory holding the generated wrapper Go modules and build logs."""
    return cache_root() / "build"


def default_state_dir() -> Path:
    """Return the cluster state dir: ``$INFEROPS_CLUSTER_DIR`` or ``<checkout>/.cluster``."""
    override = os.environ.get(STATE_DIR_ENV)
    if override:
        return Path(override).expanduser().resolve()
    return repo_root() / ".cluster"
