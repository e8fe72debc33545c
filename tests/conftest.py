"""Shared helpers of the unit tier: specs built from compact dicts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from inferops.api.spec import InferenceBackendSpec
from inferops.builders import Owner
from tests.fake_kube import FakeKubeApi

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
async def api() -> AsyncIterator[FakeKubeApi]:
    """A stand-in API server for list and watch (tests/fake_kube.py), started."""
    server = FakeKubeApi()
    await server.start()
    yield server
    await server.stop()
