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
MIGRATING = "Migrating"
CONDITION_TYPES = (READY, PROGRESSING, DEGRADED, INVALID_SPEC, MIGRATING)


class Condition(Model):
    """A standard Kubernetes condition."""

    type: str
    """Ready, Progressing, Degraded, InvalidSpec, or Migrating (with spec.migration)."""
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


ConsumerPhase = Literal[
    "Manual", "Pending", "Progressing", "Paused", "Migrated", "RolledBack", "Aborted"
]
Verdict = Literal["Pass", "Fail", "Inconclusive"]


class EngineFiguresStatus(Model):
    """One engine's figures for a consumer over one analysis window, measured at the router."""

    requests: float = 0
    """Requests in the window."""
    error_rate: float | None = None
    """Share of failed requests."""
    ttft_p95: float | None = None
    """95th percentile time to first token, seconds."""
    tpot_p95: float | None = None
    """95th percentile time per output token, seconds."""
    shed: float = 0
    """Requests the router refused (503) because the engine was at its admission limit
    (spec.vllm.admission, spec.ollama.admission); not counted in requests or errorRate."""


class GateResult(Model):
    """How one gate judged a sample."""

    metric: str
    """errorRate, ttftP95 or tpotP95."""
    verdict: Verdict
    """Pass, Fail or Inconclusive."""
    value: float | None = None
    """vLLM's figure."""
    baseline: float | None = None
    """Ollama's figure for the same consumer and window."""
    threshold: float | None = None
    """The limit vLLM's figure was held to."""


class AnalysisResult(Model):
    """One analysis sample of a consumer's step."""

    verdict: Verdict
    """Pass, Fail or Inconclusive."""
    time: str
    """When the sample was taken (RFC 3339)."""
    step: int
    """The number of the step it judged, counted from 1 (as in Events and `kubectl ib`)."""
    message: str = ""
    """Why, in words."""
    vllm: EngineFiguresStatus | None = None
    """vLLM's figures."""
    ollama: EngineFiguresStatus | None = None
    """Ollama's figures (the baseline)."""
    gates: list[GateResult] = []
    """Each gate's verdict."""


class FeatureFinding(Model):
    """A feature the consumer's requests use that vLLM, as the spec starts it, would not
    honour (`inferops.api.features`)."""

    feature: str
    """Its name in the table (an Ollama option such as `mirostat`, or `tools`, ...)."""
    requests: int = 0
    """Requests seen using it."""
    message: str = ""
    """What vLLM would do, and the fix."""


class FeatureReport(Model):
    """What the router saw the consumer use, read before its migration starts."""

    findings: list[FeatureFinding] = []
    """Features vLLM would not honour; each holds the consumer at 0% until the spec fixes it
    or it is acknowledged."""
    acknowledged: list[str] = []
    """Findings accepted with `kubectl ib ack`: they no longer hold the consumer."""
    held: bool = False
    """The consumer waits at 0% for a finding not acknowledged."""


class ConsumerStatus(Model):
    """Where one consumer stands."""

    name: str
    """The consumer's name."""
    weight: int
    """Percent of its requests currently sent to vLLM (the live weight)."""
    service: str
    """Name of its Service."""
    endpoint: str
    """Base URL to configure in the consumer: `<endpoint>/v1` for OpenAI clients,
    `<endpoint>:11434` for Ollama clients."""
    phase: ConsumerPhase = "Manual"
    """Manual (weights from the spec), Pending, Progressing, Paused, Migrated, RolledBack or
    Aborted."""
    step: int | None = None
    """The number of the current step, counted from 1 like Events and `kubectl ib` count:
    step 1 is spec.migration.steps[0]; absent while Pending."""
    step_started_at: str | None = None
    """When every ready router began serving the step's weight; absent while waiting."""
    last_sample_at: str | None = None
    """When the step was last sampled; at most one sample per analysis interval."""
    passed_samples: int = 0
    """Passing samples in this step."""
    failed_samples: int = 0
    """Failed samples in this step."""
    inconclusive_samples: int = 0
    """Inconclusive samples in a row in this step."""
    paused: bool = False
    """Held by `kubectl ib pause` until `kubectl ib resume`."""
    message: str = ""
    """Why the consumer is where it is."""
    last_analysis: AnalysisResult | None = None
    """The latest sample, with vLLM's and Ollama's figures."""
    baseline: EngineFiguresStatus | None = None
    """Ollama's figures from the last conclusive sample, the reference at 100% where the
    consumer sends Ollama nothing."""
    features: FeatureReport | None = None
    """Features it uses that vLLM would not honour, read before its migration starts."""


class ActionRecord(Model):
    """A one-shot action (`kubectl ib promote|abort|retry|pause|resume`) and its outcome."""

    id: str
    """The action's id, from the request annotation."""
    action: str
    """promote, promote-full, abort, retry, pause, resume or ack."""
    consumer: str = ""
    """The consumer it applied to."""
    result: Literal["Done", "Rejected"]
    """Done, or Rejected when it does not apply in the current state."""
    message: str = ""
    """What it did, or why it was rejected."""
    time: str
    """When the operator handled it (RFC 3339)."""


class MigrationStatus(Model):
    """The migration's state machine; a restarted operator resumes from it."""

    spec_hash: str = ""
    """Hash of steps and analysis; a change restarts the consumer in progress."""
    migrated: str = "0/0"
    """Migrated consumers / all consumers, for `kubectl get`."""
    current: str = "-"
    """The consumer(s) in progress with their live weight (`rag@50%`), `-` when none is,
    for `kubectl get`."""
    last_action: ActionRecord | None = None
    """The last one-shot action handled; its id acknowledges the request annotation."""
    failover: bool = False
    """vLLM lost every ready pod: all consumers are on Ollama."""
    vllm_ready_since: str | None = None
    """While failed over: since when vLLM has been ready again (the hold-down clock)."""


class InferenceBackendStatus(Model):
    """What the operator observed of the resource and its children."""

    observed_generation: int | None = None
    """The spec generation the status reflects."""
    phase: Phase = "Pending"
    """One-word summary: Pending, Progressing, Ready, Degraded or InvalidSpec."""
    conditions: list[Condition] = []
    """Ready, Progressing, Degraded, InvalidSpec and, with spec.migration, Migrating; each
    with reason and message."""
    vllm: EngineStatus | None = None
    """The vLLM engine."""
    ollama: EngineStatus | None = None
    """The Ollama fallback engine; absent when disabled."""
    router: EngineStatus | None = None
    """The router; absent without consumers."""
    consumers: list[ConsumerStatus] = []
    """Each consumer's weight and endpoint, in migration order."""
    migration: MigrationStatus | None = None
    """The migration's progress; absent without spec.migration."""
