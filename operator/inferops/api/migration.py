"""`spec.migration`: the staged move of every consumer from Ollama to vLLM.

Without it, each consumer's `weight` is applied as written (manual weights). With it, the
operator owns every consumer's live weight: it walks the steps one consumer after another,
judges each step on the router's figures for that consumer (vLLM against the same consumer on
Ollama, in the same window), rolls back on failure, and records its progress in status.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, WithJsonSchema, field_validator, model_validator

from inferops.api.base import Model, cel, cel_rules

# Go's duration grammar restricted to what a schedule needs; CEL's duration() parses it too.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

# The longest duration a schedule may use: a week, far below what CEL's duration() (Go's
# int64 nanoseconds, about 292 years) can hold, so the API server and the model agree.
MAX_DURATION = "168h"


def _bounded(value: str) -> str:
    if seconds(value) > seconds(MAX_DURATION):
        raise ValueError(f"a duration may be at most {MAX_DURATION}")
    return value


Duration = Annotated[
    str,
    Field(pattern=DURATION_PATTERN, max_length=32),
    AfterValidator(_bounded),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": 32,
            "x-kubernetes-validations": [
                cel(
                    f"duration(self) <= duration('{MAX_DURATION}')",
                    f"a duration may be at most {MAX_DURATION}",
                )
            ],
        }
    ),
]
"""A duration such as `30s`, `10m` or `1h30m`, at most a week."""

MIN_INTERVAL = "10s"
# `null` switches a gate off; without `nullable` the API server would default it back.
NULLABLE = Field(json_schema_extra={"nullable": True})

# One-shot actions are requested in this annotation (where GitOps never writes) as JSON
# `{"id": "<unique>", "action": "promote", "consumer": "rag"}`; the operator handles a request
# once and acknowledges it by copying its id to `status.migration.lastAction.id`.
ACTION_ANNOTATION = "inferops.io/action"
ACTIONS = ("promote", "promote-full", "pause", "resume", "abort", "retry", "ack")

# Consumer phases in groups, as the planner and `kubectl ib` both reason about them.
IN_PROGRESS = ("Progressing", "Paused")
STOPPED = ("RolledBack", "Aborted")

# The phases each action applies to; another phase is refused with `ACTION_REFUSALS[action]`.
APPLIES_TO: dict[str, tuple[str, ...]] = {
    "promote": IN_PROGRESS,
    "promote-full": IN_PROGRESS,
    "pause": IN_PROGRESS,
    "resume": IN_PROGRESS,  # `kubectl ib` checks the paused flag instead
    "abort": (*IN_PROGRESS, "Migrated"),
    "retry": STOPPED,
    "ack": ("Pending",),
}
ACTION_REFUSALS = {
    "promote": "promote applies to a consumer in progress (Progressing or Paused)",
    "promote-full": "promote applies to a consumer in progress (Progressing or Paused)",
    "pause": "pause applies to a consumer in progress (Progressing or Paused)",
    "abort": "it is at 0% already (a RolledBack or Aborted one starts again with retry)",
    "retry": "retry applies to a RolledBack or Aborted consumer",
    "ack": "ack applies to a Pending consumer held for features vLLM would not honour",
}


def action_request(resource: Mapping[str, Any]) -> dict[str, Any] | str | None:
    """The request in the resource's action annotation: its JSON object when it has a
    non-empty string `id`, the raw text when it is malformed, None when there is none."""
    metadata = resource.get("metadata") or {}
    raw = (metadata.get("annotations") or {}).get(ACTION_ANNOTATION)
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return str(raw)
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not doc["id"]:
        return str(raw)
    return doc


def last_action_id(resource: Mapping[str, Any]) -> str | None:
    """The id of the request the operator acknowledged last (`status.migration.lastAction`)."""
    migration = (resource.get("status") or {}).get("migration") or {}
    last = migration.get("lastAction") or {} if isinstance(migration, dict) else {}
    return str(last["id"]) if isinstance(last, dict) and "id" in last else None


def seconds(duration: str) -> float:
    """`1m30s` -> 90.0. The pattern above guarantees the grammar."""
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(duration))


class Pause(Model):
    """How long a step holds before the next one; no duration waits for a manual promote."""

    duration: Duration | None = None
    """Time to hold the step's weight (while its analysis keeps passing); omit it to wait
    for `kubectl ib promote`."""


class Shadow(Model):
    """A shadow step: the consumer's live weight stays 0 while the router mirrors a bounded
    sample of its requests to vLLM and compares vLLM's answers with Ollama's. The client is
    always answered by Ollama; the mirror runs after its answer, never delaying or changing
    it."""

    model_config = cel_rules(
        cel(
            "duration(self.timeout) <= duration('10m')",
            "timeout may be at most 10m",
            ".timeout",
        )
    )

    percent: Annotated[float, Field(gt=0, le=100)] = 10
    """Percent of the consumer's requests mirrored."""
    min_samples: Annotated[int, Field(ge=1, le=100_000)] = 50
    """Comparisons of vLLM with Ollama needed for a verdict; fewer is Inconclusive. The step
    judges everything collected since it started."""
    noise_percent: Annotated[int, Field(ge=1, le=100)] = 50
    """Percent of the mirrored requests also asked of Ollama a second time, to measure how
    often Ollama disagrees with itself (the noise floor)."""
    min_noise_samples: Annotated[int, Field(ge=1, le=100_000)] = 10
    """Comparisons of Ollama with itself needed for a verdict; fewer is Inconclusive."""
    max_agreement_drop: Annotated[float, Field(ge=0, le=1)] = 0.05
    """How far vLLM's agreement with Ollama may fall below Ollama's agreement with itself
    (0.05 = five points of agreement); further fails the step."""
    min_cosine: Annotated[float, Field(ge=0, le=1)] = 0.99
    """Cosine similarity at or above which two embeddings agree."""
    max_concurrent: Annotated[int, Field(ge=1, le=64)] = 2
    """Mirrored requests under way at once per router process; a request sampled beyond it
    is dropped (and counted), never queued."""
    timeout: Duration = "60s"
    """Time limit of one mirrored comparison, its engine requests included."""
    record_content: bool = False
    """Let answer excerpts into the router's log of mismatches. Off, a mismatch is described
    without content (kind, fields, lengths, a hash): answers can hold personal data."""

    @field_validator("timeout")
    @classmethod
    def _max_timeout(cls, value: str) -> str:
        if seconds(value) > seconds("10m"):
            raise ValueError("timeout may be at most 10m")
        return value


class Step(Model):
    """One step of the canary: a live weight, or a shadow step (weight 0, answers compared)."""

    model_config = cel_rules(
        cel(
            "has(self.weight) != has(self.shadow)",
            "set either weight or shadow in a step, not both",
        )
    )

    weight: Annotated[int | None, Field(ge=1, le=100)] = None
    """Percent of the consumer's requests sent to vLLM during the step."""
    shadow: Shadow | None = None
    """Instead of a weight: mirror a sample of the consumer's requests to vLLM and compare
    the answers, with no live traffic on vLLM. Only the first step may be one."""
    pause: Pause | None = None
    """Hold the step: for a duration, or until promoted (`pause: {}`). Without a pause the
    step ends at its first passing analysis."""

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        if (self.weight is None) == (self.shadow is None):
            raise ValueError("set either weight or shadow in a step, not both")
        return self

    @property
    def live_weight(self) -> int:
        """The weight served during the step: 0 for a shadow step."""
        return 0 if self.weight is None else self.weight


class Gate(Model):
    """A limit on one of vLLM's figures: absolute, relative to the same consumer on Ollama in
    the same window, or both (a sample fails when either is exceeded)."""

    model_config = cel_rules(
        cel("has(self.max) || has(self.maxRatio)", "set max, maxRatio, or both"),
        cel(
            "!has(self.floor) || has(self.maxRatio)",
            "floor applies to maxRatio: set maxRatio too, or remove floor",
            ".floor",
        ),
    )

    max: Annotated[float | None, Field(ge=0)] = None
    """Absolute limit on vLLM's figure."""
    max_ratio: Annotated[float | None, Field(gt=0, le=100)] = None
    """Limit on vLLM's figure divided by Ollama's (1.0 = no worse than Ollama)."""
    floor: Annotated[float | None, Field(ge=0)] = None
    """Below this, vLLM's figure passes whatever the ratio (so 2 ms against 1 ms is not a
    failure)."""

    @model_validator(mode="after")
    def _mirror_cel(self) -> Gate:
        if self.max is None and self.max_ratio is None:
            raise ValueError("set max, maxRatio, or both")
        if self.floor is not None and self.max_ratio is None:
            raise ValueError("floor applies to maxRatio: set maxRatio too, or remove floor")
        return self


class RateGate(Gate):
    """A gate on the error rate, a fraction between 0 and 1."""

    max: Annotated[float | None, Field(ge=0, le=1)] = None
    """Absolute limit on vLLM's error rate (0.01 = 1% of requests)."""
    floor: Annotated[float | None, Field(ge=0, le=1)] = None
    """Below this error rate vLLM passes whatever the ratio."""


class Analysis(Model):
    """How each step is judged. Every sample is Pass, Fail or Inconclusive; too few
    requests, missing data or a failing metrics query are Inconclusive, never a verdict."""

    model_config = cel_rules(
        cel(
            f"duration(self.interval) >= duration('{MIN_INTERVAL}')",
            f"interval must be at least {MIN_INTERVAL}",
            ".interval",
        )
    )

    interval: Duration = "1m"
    """Time between two samples, and the window each sample covers; at least 10s."""
    initial_delay: Duration = "30s"
    """Time after a step's weight is served before its first sample (vLLM's first requests
    are slow)."""
    min_requests: Annotated[int, Field(ge=1, le=1_000_000)] = 10
    """Requests needed on each engine in a window for a verdict; fewer is Inconclusive."""
    error_rate: Annotated[RateGate | None, NULLABLE] = RateGate(max=0.05, max_ratio=2, floor=0.01)
    """Gate on the share of failed requests; `null` switches it off."""
    ttft_p95: Annotated[Gate | None, NULLABLE] = Gate(max_ratio=1.5, floor=0.5)
    """Gate on the 95th percentile time to first token of streaming requests, in seconds;
    `null` switches it off."""
    tpot_p95: Annotated[Gate | None, NULLABLE] = Gate(max_ratio=1.5, floor=0.05)
    """Gate on the 95th percentile time per output token of streaming requests, in seconds;
    `null` switches it off."""
    failure_limit: Annotated[int, Field(ge=0, le=100)] = 1
    """Failed samples tolerated per step; one more rolls the consumer back to 0%."""
    inconclusive_limit: Annotated[int, Field(ge=1, le=1000)] = 10
    """Inconclusive samples in a row after which the step is reported stalled."""
    on_inconclusive: Literal["Hold", "Rollback"] = "Hold"
    """What a stalled step does: hold its weight (and say so), or roll back."""

    @field_validator("interval")
    @classmethod
    def _min_interval(cls, value: str) -> str:
        if seconds(value) < seconds(MIN_INTERVAL):
            raise ValueError(f"interval must be at least {MIN_INTERVAL}")
        return value


class Probe(Model):
    """A tiny real completion sent through the consumer's endpoint to each engine every
    interval, so a quiet consumer is judged on real generation."""

    enabled: bool = True
    """Send probes."""
    requests: Annotated[int, Field(ge=1, le=100)] = 3
    """Probe requests per engine per interval."""
    max_tokens: Annotated[int, Field(ge=1, le=64)] = 8
    """Length of each probe's answer."""
    prompt: Annotated[str, Field(min_length=1, max_length=256)] = "Say OK."
    """The probe's user message."""


class Watch(Model):
    """The analysis of a consumer after it is Migrated: the same gates against the Ollama
    baseline kept from its migration, on its own traffic (no probes), every analysis
    interval. A failing sample makes the resource Degraded, emits a `WatchFailed` Event and
    sets `inferops_migration_watch_failing`."""

    enabled: bool = True
    """Keep analysing migrated consumers."""
    on_failure: Literal["Report", "Rollback"] = "Report"
    """Report: say so (condition, Event, metric) and leave the consumer on vLLM. Rollback:
    also send it back to Ollama (weight 0, phase RolledBack) once more samples in a row fail
    than analysis.failureLimit tolerates; `kubectl ib retry` migrates it again."""


DEFAULT_VECTOR_INPUTS = [
    "The invoice is due at the end of the month.",
    "How do I reset my password?",
    "Paris is the capital of France.",
    "def add(a, b): return a + b",
]


class EmbeddingsCheck(Model):
    """The comparison of both engines' vectors that must pass before any embeddings traffic
    moves from Ollama to vLLM: an index built from Ollama's vectors breaks silently on vectors
    that are not alike. The operator sends `inputs` to both engines (`/v1/embeddings`
    through the router, pinned to each engine) and compares each input's two vectors."""

    min_cosine: Annotated[float, Field(ge=0, le=1)] = 0.99
    """The lowest cosine similarity, over the inputs, at which the vectors count as alike."""
    inputs: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=2048)]],
        Field(min_length=1, max_length=32),
    ] = DEFAULT_VECTOR_INPUTS
    """Texts embedded by both engines for the comparison; use texts like the consumers'
    own (they go into no status or Event)."""
    recheck: Duration = "5m"
    """How long after a failed or inconclusive check it runs again (a passed one runs again
    only when a model, extraArgs or the inputs change)."""


class Migration(Model):
    """The staged, metric-gated move of the consumers from Ollama to vLLM."""

    model_config = cel_rules(
        cel(
            "self.steps.filter(s, has(s.weight)).map(s, s.weight).isSorted() && "
            "self.steps.all(s, !has(s.weight) || "
            "self.steps.exists_one(t, has(t.weight) && t.weight == s.weight))",
            "step weights must increase strictly",
            ".steps",
        ),
        cel(
            "has(self.steps[size(self.steps) - 1].weight) && "
            "self.steps[size(self.steps) - 1].weight == 100",
            "the last step must have weight 100",
            ".steps",
        ),
        cel(
            "!has(self.steps[size(self.steps) - 1].pause)",
            "the last step may not have a pause: reaching 100% is analysed once more and "
            "then the consumer is migrated",
            ".steps",
        ),
        cel(
            "self.steps.all(s, !has(s.shadow)) || "
            "(has(self.steps[0].shadow) && self.steps.exists_one(s, has(s.shadow)))",
            "only the first step may be a shadow step: answers are compared before any live weight",
            ".steps",
        ),
    )

    steps: Annotated[list[Step], Field(min_length=1, max_length=20)]
    """Weights each consumer goes through, strictly increasing, ending at 100; the first
    step may be a shadow step instead."""
    analysis: Analysis = Analysis()
    """How each step is judged."""
    probe: Probe = Probe()
    """Synthetic requests for consumers with too little traffic of their own."""
    max_parallel: Annotated[int, Field(ge=1, le=64)] = 1
    """Consumers migrating at the same time, in list order."""
    paused: bool = False
    """Hold every consumer at its current step (automatic rollback still acts)."""
    after_migration: Literal["KeepOllama", "ScaleDownOllama"] = "KeepOllama"
    """What happens to Ollama once every consumer is migrated: kept as fallback, or scaled
    to zero pods."""
    failover_hold_down: Duration = "2m"
    """After vLLM lost every ready pod, how long it must be ready again before consumers
    get their vLLM weights back."""
    watch: Watch = Watch()
    """What happens after a consumer is migrated: its gates keep being checked."""
    embeddings: EmbeddingsCheck = EmbeddingsCheck()
    """The comparison of both engines' vectors before embeddings move to vLLM."""

    @model_validator(mode="after")
    def _mirror_cel(self) -> Migration:
        weights = [s.weight for s in self.steps if s.weight is not None]
        if any(b <= a for a, b in itertools.pairwise(weights)):
            raise ValueError("migration.steps: step weights must increase strictly")
        if self.steps[-1].weight != 100:
            raise ValueError("migration.steps: the last step must have weight 100")
        if self.steps[-1].pause is not None:
            raise ValueError("migration.steps: the last step may not have a pause")
        if any(s.shadow is not None for s in self.steps[1:]):
            raise ValueError(
                "migration.steps: only the first step may be a shadow step: answers are "
                "compared before any live weight"
            )
        return self


__all__ = [
    "ACTIONS",
    "ACTION_ANNOTATION",
    "ACTION_REFUSALS",
    "APPLIES_TO",
    "IN_PROGRESS",
    "STOPPED",
    "Analysis",
    "EmbeddingsCheck",
    "Gate",
    "Migration",
    "Pause",
    "Probe",
    "RateGate",
    "Shadow",
    "Step",
    "Watch",
    "action_request",
    "last_action_id",
    "seconds",
]
