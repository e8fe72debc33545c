"""Computes an InferenceBackend's status from what was observed of its children. Pure.

The rules:
- Ready: every component (the engines, and the router when there are consumers) has all its
  desired pods Ready.
- Progressing: a component is still rolling out or starting, with nothing wrong yet.
- Degraded: a component cannot reach its desired state on its own (unschedulable pods, e.g.
  `Insufficient nvidia.com/gpu`; crash loops; image pull errors; a rollout past its deadline).
- InvalidSpec: the spec cannot be acted on; the children were left as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from inferops.api.status import (
    DEGRADED,
    INVALID_SPEC,
    MIGRATING,
    PROGRESSING,
    READY,
    Condition,
    ConsumerStatus,
    EngineStatus,
    InferenceBackendStatus,
    MigrationStatus,
    Phase,
)

Obj = dict[str, Any]
ENGINE_TITLES = {
    "vllm": "VLLM",
    "ollama": "Ollama",
    "router": "Router",
    "vllm-embeddings": "VLLMEmbeddings",
}

# Container waiting reasons that will not resolve by waiting.
FAILING_WAIT_REASONS = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}


@dataclass(frozen=True)
class EngineObservation:
    """What was read from the API server about one component (vllm, ollama or router)."""

    engine: str
    desired: int
    url: str | None
    deployment: Obj | None = None
    pods: list[Obj] = field(default_factory=list)


@dataclass(frozen=True)
class Finding:
    """One reason an engine is not Ready; `failing` ones make the resource Degraded."""

    reason: str
    message: str
    failing: bool


def ready_replicas(obs: EngineObservation) -> int:
    return int((obs.deployment or {}).get("status", {}).get("readyReplicas") or 0)


def engine_status(obs: EngineObservation) -> EngineStatus:
    ready = ready_replicas(obs)
    return EngineStatus(
        replicas=obs.desired,
        ready_replicas=ready,
        ready=f"{ready}/{obs.desired}",
        url=obs.url,
    )


def _pod_findings(title: str, pods: list[Obj]) -> list[Finding]:
    out = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        status = pod.get("status", {})
        for cond in status.get("conditions", []):
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                out.append(
                    Finding(
                        f"{title}Unschedulable",
                        f"pod {pod['metadata']['name']} cannot be scheduled: "
                        f"{cond.get('message', cond.get('reason', ''))}",
                        failing=cond.get("reason") == "Unschedulable",
                    )
                )
        for container in status.get("containerStatuses", []):
            waiting = container.get("state", {}).get("waiting") or {}
            if waiting.get("reason") in FAILING_WAIT_REASONS:
                out.append(
                    Finding(
                        f"{title}{waiting['reason']}",
                        f"pod {pod['metadata']['name']} container {container['name']}: "
                        f"{waiting.get('message', waiting['reason'])}",
                        failing=True,
                    )
                )
    return out


def engine_findings(obs: EngineObservation) -> list[Finding]:
    """Why the engine is not (yet) what the spec asks for; empty when it is."""
    title = ENGINE_TITLES[obs.engine]
    deployment = obs.deployment
    if deployment is None:
        return [Finding(f"{title}Creating", f"Deployment for {obs.engine} not created yet", False)]
    status = deployment.get("status", {})
    out = []
    for cond in status.get("conditions", []):
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            out.append(Finding(f"{title}ProgressDeadlineExceeded", cond.get("message", ""), True))
    out += _pod_findings(title, obs.pods)
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    generation_seen = status.get("observedGeneration", 0) >= deployment["metadata"].get(
        "generation", 0
    )
    if not out and (ready < obs.desired or updated < obs.desired or not generation_seen):
        out.append(
            Finding(
                f"{title}Starting",
                f"{obs.engine}: {ready}/{obs.desired} pods ready, {updated} updated",
                False,
            )
        )
    return out


def _condition(
    previous: dict[str, Condition],
    ctype: str,
    value: Literal["True", "False", "Unknown"],
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> Condition:
    """A condition whose transition time moves only when its status changes."""
    old = previous.get(ctype)
    since = old.last_transition_time if old is not None and old.status == value else now
    return Condition(
        type=ctype,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


def compute(
    *,
    generation: int | None,
    engines: list[EngineObservation],
    previous: InferenceBackendStatus,
    now: str,
    invalid: str | None = None,
    consumers: list[ConsumerStatus] | None = None,
    migration: MigrationStatus | None = None,
    migrating: tuple[Literal["True", "False", "Unknown"], str, str] | None = None,
    failover: str | None = None,
    watch: str | None = None,
) -> InferenceBackendStatus:
    """The status to write. `invalid` is the InvalidSpec message when the spec was refused;
    `migrating` the Migrating condition (status, reason, message) when a migration is
    configured; `failover` why every consumer is on Ollama, if they are; `watch` what the
    migrated consumers failing their watch fail."""
    findings = [f for obs in engines for f in engine_findings(obs)]
    if failover is not None:
        findings.append(Finding("VLLMFailedOver", failover, failing=True))
    if watch is not None:
        # vLLM's pods are Ready and the consumer "migrated", yet its requests fail or crawl:
        # Ready would be a lie (its traffic may run entirely on fallback).
        findings.append(Finding("WatchFailed", watch, failing=True))
    failing = [f for f in findings if f.failing]
    prev = {c.type: c for c in previous.conditions}

    def cond(
        ctype: str, value: Literal["True", "False", "Unknown"], reason: str, message: str
    ) -> Condition:
        return _condition(prev, ctype, value, reason, message, generation, now)

    phase: Phase
    if invalid is not None:
        phase = "InvalidSpec"
        ready_cond = cond(READY, "False", "InvalidSpec", invalid)
    elif failing:
        phase = "Degraded"
        ready_cond = cond(READY, "False", failing[0].reason, failing[0].message)
    elif findings:
        phase = "Progressing"
        ready_cond = cond(READY, "False", findings[0].reason, findings[0].message)
    else:
        phase = "Ready"
        ready_cond = cond(READY, "True", "EnginesReady", "every engine has all pods ready")

    progressing = [f for f in findings if not f.failing]
    conditions = [
        ready_cond,
        cond(PROGRESSING, "True", progressing[0].reason, progressing[0].message)
        if progressing
        else cond(PROGRESSING, "False", "Stalled", "cannot progress: see Degraded")
        if failing
        else cond(PROGRESSING, "False", "Stable", "no rollout in progress"),
        cond(DEGRADED, "True", failing[0].reason, "; ".join(f.message for f in failing))
        if failing
        else cond(DEGRADED, "False", "AsExpected", "no engine is failing"),
        cond(INVALID_SPEC, "True", "InvalidSpec", invalid)
        if invalid is not None
        else cond(INVALID_SPEC, "False", "Valid", "the spec was accepted"),
    ]
    if migrating is not None:
        conditions.append(cond(MIGRATING, *migrating))
    by_engine = {obs.engine: engine_status(obs) for obs in engines}
    return InferenceBackendStatus(
        observed_generation=generation,
        phase=phase,
        conditions=conditions,
        vllm=by_engine.get("vllm"),
        ollama=by_engine.get("ollama"),
        router=by_engine.get("router"),
        vllm_embeddings=by_engine.get("vllm-embeddings"),
        consumers=consumers or [],
        migration=migration,
    )
