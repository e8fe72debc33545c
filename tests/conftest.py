"""Shared helpers of the unit tier: specs built from compact dicts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from testsupport.kubeserver import KubeServer

from inferops.api.spec import InferenceBackendSpec
from inferops.builders import Owner

OWNER = Owner(name="llama32", namespace="ai", uid="0000-1111")


def make_spec(**overrides: Any) -> InferenceBackendSpec:
    """A minimal valid spec; keyword arguments replace top-level sections (camelCase)."""
    raw: dict[str, Any] = {
        "model": "llama3.2",
        "vllm": {"model": "meta-llama/Llama-3.2-3B-Instruct"},
        "ollama": {"model": "llama3.2:3b"},
    }
    raw.update(overrides)
    return InferenceBackendSpec.model_validate(raw)


@pytest.fixture
def owner() -> Owner:
    return OWNER


@pytest.fixture
async def api() -> AsyncIterator[KubeServer]:
    """The in-memory API server over HTTP (testsupport/kubeserver.py), started."""
    server = KubeServer()
    await server.start()
    yield server
    await server.stop()
