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


class ShadowCounts(Model):
    """Comparisons of one pair of answers by outcome, summed over a shadow step."""

    exact: float = 0
    """Identical answers."""
    normalized: float = 0
    """Answers identical once normalised (whitespace runs, U+FFFD)."""
    similar: float = 0
    """JSON answers with the same fields, or embeddings at or above the cosine threshold."""
    disagree: float = 0
    """Answers that differ."""
    error: float = 0
    """The engine failed (error status, timeout, unreadable answer): a disagreement."""

    @property
    def compared(self) -> float:
        return self.exact + self.normalized + self.similar + self.disagree + self.error

    @property
    def agreement(self) -> float | None:
        """The share of comparisons that agree; None without any."""
        total = self.compared
        return None if total <= 0 else (self.exact + self.normalized + self.similar) / total


class ShadowStatus(Model):
    """What the current shadow step has compared since it started (no answer content)."""

    vllm: ShadowCounts = ShadowCounts()
    """vLLM's answers compared with Ollama's."""
    noise: ShadowCounts = ShadowCounts()
    """Ollama's answers compared with its own to the same request: the noise floor."""
    uncomparable: float = 0
    """Mirror-eligible requests that cannot be compared (sampled at a temperature above 0):
    not mirrored."""
    dropped: float = 0
    """Sampled requests not mirrored: the router's bound on mirrored requests was reached,
    or Ollama's reference answer failed."""
    disagreeing: dict[str, float] = {}
    """vLLM's disagreements and errors by request kind: json, deterministic, embeddings."""


class GateResult(Model):
    """How one gate judged a sample."""

    metric: str
    """errorRate, ttftP95, tpotP95, or shadowAgreement (at a shadow step)."""
    verdict: Verdict
    """Pass, Fail or Inconclusive."""
    value: float | None = None
    """vLLM's figure."""
    baseline: float | None = None
    """Ollama's figure for the same consumer and window."""
    threshold: float | None = None
    """The limit vLLM's figure was held to."""
    kind: str | None = None
    """The request kind (chat, completions, embeddings) the gate judged alone; absent for
    the consumer's requests as a whole."""


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


class EngineComparison(Model):
    """One engine's figures for a consumer pooled over the migration's analysis windows
    (how: docs/migration.md, "The comparison")."""

    windows: int = 0
    """Analysis windows pooled."""
    seconds: float = 0
    """Their total length, seconds."""
    requests: float = 0
    """Requests in those windows."""
    errors: float = 0
    """Failed requests in those windows."""
    output_tokens: float = 0
    """Completion tokens in those windows."""
    ttft_observations: float = 0
    """Streamed answers behind the TTFT figures (their weight)."""
    tpot_observations: float = 0
    """Streamed answers behind the TPOT figures (their weight)."""
    error_rate: float | None = None
    """errors / requests over every window."""
    ttft_p50: float | None = None
    """Median time to first token, seconds: the windows' medians weighted by observations."""
    ttft_p95: float | None = None
    """95th percentile time to first token, seconds, weighted like ttftP50."""
    tpot_p50: float | None = None
    """Median time per output token, seconds, weighted like ttftP50."""
    tpot_p95: float | None = None
    """95th percentile time per output token, seconds, weighted like ttftP50."""
    output_tokens_per_second: float | None = None
    """Completion tokens served per second of the windows: follows the share of traffic the
    engine had, not its speed."""
    requests_per_second: float | None = None
    """Requests served per second of the windows; follows the traffic share too."""


class Comparison(Model):
    """vLLM against Ollama for one consumer over its migration; kept once it is migrated."""

    vllm: EngineComparison | None = None
    """vLLM's pooled figures (every window of the migration)."""
    ollama: EngineComparison | None = None
    """Ollama's pooled figures (windows below 100%; at 100% Ollama serves the consumer only
    fallbacks, so its figures stop there, as the baseline does)."""
    summary: str = ""
    """The comparison in words, e.g. `TTFT p95 3.1x faster, TPOT p95 2.4x faster, errors 0.1%
    vs 0.3%`; `too few samples` instead of a ratio below analysis.minRequests."""


class WatchStatus(Model):
    """The watch of a migrated consumer: its analysis keeps running on the same gates."""

    failing: bool = False
    """The last conclusive sample failed a gate."""
    since: str | None = None
    """When it began failing (RFC 3339)."""
    failed_samples: int = 0
    """Failed samples in a row."""
    samples: int = 0
    """Samples taken since the consumer was migrated."""
    message: str = ""
    """The last conclusive sample's verdict in words."""


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


class VectorCheck(Model):
    """Both engines' vectors for the same inputs, compared before any embeddings traffic
    moves from Ollama to vLLM (`inferops.migration.vectors`): a stored index built from
    Ollama's vectors breaks silently on vectors that are not alike."""

    verdict: Literal["Pass", "Fail", "Inconclusive"]
    """Pass: every input's cosine at or above minCosine; Fail: one below it, or vectors of
    another count or dimension; Inconclusive: an engine could not be asked."""
    cosine: float | None = None
    """The lowest cosine similarity over the inputs (four significant digits)."""
    min_cosine: float
    """The threshold the check was held to (spec.migration.embeddings.minCosine)."""
    inputs: int = 0
    """Inputs compared."""
    time: str
    """When the check ran (RFC 3339)."""
    key: str = ""
    """A hash of what the vectors depend on (models, extraArgs, inputs): a change runs the
    check again."""
    message: str = ""
    """The figures, or why the engines could not be compared."""


class EmbeddingsStatus(Model):
    """Where a consumer's embeddings requests go, decided apart from its chat: 0 or 100
    (vectors of two models must not be mixed)."""

    weight: int = 0
    """Percent of the consumer's embeddings requests sent to vLLM's embeddings deployment."""
    held: bool = False
    """The consumer's migration would move them, but both engines' vectors do not agree (or
    were not compared yet): they stay on Ollama."""
    message: str = ""
    """Why the weight is what it is (`held on Ollama: vectors differ, cosine 0.41 < 0.99`)."""


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
    comparison: Comparison | None = None
    """vLLM against Ollama over the migration's analysis windows, kept after it."""
    watch: WatchStatus | None = None
    """Once Migrated: the watch on the same gates (spec.migration.watch)."""
    shadow: ShadowStatus | None = None
    """At a shadow step: the comparisons collected since it started."""
    features: FeatureReport | None = None
    """Features it uses that vLLM would not honour, read before its migration starts."""
    embeddings: EmbeddingsStatus | None = None
    """With spec.vllm.embeddings: where its embeddings requests go."""
    routes: list[str] = []
    """The router routes (a request kind in the OpenAI or Ollama form: chat, completions,
    embeddings, ollama_chat, ollama_generate, ollama_embed, ollama_embeddings) it was seen
    using, read before its migration starts and added to at each sample: its probes send
    these, and its gates judge each kind vLLM serves."""


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
    vectors: VectorCheck | None = None
    """The last comparison of both engines' vectors (embeddings move only when it passed)."""


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
    vllm_embeddings: EngineStatus | None = None
    """The embeddings deployment; absent without spec.vllm.embeddings."""
    consumers: list[ConsumerStatus] = []
    """Each consumer's weight and endpoint, in migration order."""
    migration: MigrationStatus | None = None
    """The migration's progress; absent without spec.migration."""
