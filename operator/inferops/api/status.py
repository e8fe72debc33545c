"""The `status` of an InferenceBackend: what the operator observed, written only by it."""

from __future__ import annotations

from typing import Literal

from inferops.api.base import Model

Phase = Literal["Pending", "Progressing", "Ready", "Degraded", "InvalidSpec"]

# Condition types; `Ready` is the summary a user or `kubectl wait` looks at.
READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
INVALID_SPEC = "InvalidSpec"
CONDITION_TYPES = (READY, PROGRESSING, DEGRADED, INVALID_SPEC)


class Condition(Model):
    """A standard Kubernetes condition."""

    type: str
    """Ready, Progressing, Degraded or InvalidSpec."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: str
    """A CamelCase word for the cause, stable enough to match in scripts."""
    message: str = ""
    """Human-readable details."""
    last_transition_time: str
    """When status last changed (RFC 3339)."""
    observed_generation: int | None = None
    """The spec generation this condition was computed for."""


class EngineStatus(Model):
    """Observed state of one engine's Deployment."""

    replicas: int = 0
    """Desired pods."""
    ready_replicas: int = 0
    """Pods that pass their readiness probe."""
    ready: str = "0/0"
    """ready/desired, for `kubectl get`."""
    url: str | None = None
    """In-cluster base URL of the engine's Service."""


class ConsumerStatus(Model):
    """Where one consumer stands."""

    name: str
    """The consumer's name."""
    weight: int
    """Percent of its requests currently sent to vLLM."""
    service: str
    """Name of its Service."""
    endpoint: str
    """Base URL to configure in the consumer: `<endpoint>/v1` for OpenAI clients,
    `<endpoint>:11434` for Ollama clients."""


class InferenceBackendStatus(Model):
    """What the operator observed of the resource and its children."""

    observed_generation: int | None = None
    """The spec generation the status reflects."""
    phase: Phase = "Pending"
    """One-word summary: Pending, Progressing, Ready, Degraded or InvalidSpec."""
    conditions: list[Condition] = []
    """Ready, Progressing, Degraded and InvalidSpec, with reason and message."""
    vllm: EngineStatus | None = None
    """The vLLM engine."""
    ollama: EngineStatus | None = None
    """The Ollama fallback engine; absent when disabled."""
    router: EngineStatus | None = None
    """The router; absent without consumers."""
    consumers: list[ConsumerStatus] = []
    """Each consumer's weight and endpoint, in migration order."""
