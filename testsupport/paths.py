"""Where the expensive, shared things live: the user's cache for built binaries, the vLLM
CPU environment, models and the benchmarks' peers (shared by every checkout, keyed by version
by their owners)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_CACHE_NAME = "inferops"


def cache_root() -> Path:
    """Return ``${XDG_CACHE_HOME:-~/.cache}/inferops``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / PROJECT_CACHE_NAME
