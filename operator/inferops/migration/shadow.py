"""The shadow step's verdict and its routing: what the router mirrors for a consumer at a
shadow step, and how the comparisons it counted are judged. Pure.

The comparisons of a step add up in status (`ConsumerStatus.shadow`) from one sample to the
next, so the step is judged on everything it collected, a bounded sample of `minSamples`
comparisons at least. vLLM's agreement with Ollama is held to Ollama's agreement with itself
on the same kind of requests (Diffy's noise floor), less `maxAgreementDrop`: answers that
Ollama itself does not repeat are not read as vLLM's regressions.
"""

from __future__ import annotations

from collections.abc import Mapping

from inferops.api.migration import IN_PROGRESS, Migration, Shadow, seconds
from inferops.api.routing import Mirror
from inferops.api.status import (
    AnalysisResult,
    ConsumerStatus,
    GateResult,
    ShadowCounts,
    ShadowStatus,
)
from inferops.migration.analysis import significant
from inferops.migration.figures import Figures

GATE = "shadowAgreement"
_COUNTED = ("exact", "normalized", "similar", "disagree", "error")


def _added(counts: ShadowCounts, window: Mapping[str, float]) -> ShadowCounts:
    return counts.model_copy(
        update={
            name: significant(getattr(counts, name) + window.get(name, 0.0)) or 0.0
            for name in _COUNTED
        }
    )


def accumulate(totals: ShadowStatus | None, figures: Figures) -> ShadowStatus:
    """`totals` with the window's comparisons added (unchanged by a window without any)."""
    totals = totals or ShadowStatus()
    window = figures.shadow
    if window is None or figures.problem:
        return totals
    return ShadowStatus(
        vllm=_added(totals.vllm, window.vllm),
        noise=_added(totals.noise, window.ollama),
        uncomparable=significant(totals.uncomparable + window.vllm.get("uncomparable", 0.0)) or 0.0,
        dropped=significant(totals.dropped + window.vllm.get("dropped", 0.0)) or 0.0,
        disagreeing={
            kind: significant(totals.disagreeing.get(kind, 0.0) + window.disagreeing.get(kind, 0.0))
            or 0.0
            for kind in sorted(totals.disagreeing.keys() | window.disagreeing.keys())
        },
    )


def _figures(totals: ShadowStatus) -> str:
    v, n = totals.vllm, totals.noise
    text = (
        f"vLLM: {v.compared:.0f} compared ({v.exact:.0f} exact, {v.normalized:.0f} normalized, "
        f"{v.similar:.0f} similar, {v.disagree:.0f} disagree, {v.error:.0f} errors); "
        f"Ollama with itself: {n.compared:.0f} compared, {n.disagree:.0f} disagree; "
        f"{totals.uncomparable:.0f} not comparable, {totals.dropped:.0f} dropped"
    )
    if totals.disagreeing:
        kinds = ", ".join(f"{kind} {count:.0f}" for kind, count in totals.disagreeing.items())
        text += f"; vLLM's disagreements by kind: {kinds}"
    return text


def judge(spec: Shadow, totals: ShadowStatus, step: int, now: str) -> AnalysisResult:
    """The shadow step's verdict on everything collected so far."""

    def result(verdict: str, message: str, gate: GateResult | None = None) -> AnalysisResult:
        return AnalysisResult.model_validate(
            {
                "verdict": verdict,
                "time": now,
                "step": step,
                "message": f"{message} ({_figures(totals)})",
                "gates": [] if gate is None else [gate],
            }
        )

    vllm, noise = totals.vllm, totals.noise
    if vllm.compared < spec.min_samples:
        return result(
            "Inconclusive",
            f"too few shadow comparisons with vLLM ({vllm.compared:.0f} < {spec.min_samples})",
        )
    if noise.compared < spec.min_noise_samples:
        return result(
            "Inconclusive",
            f"too few comparisons of Ollama with itself ({noise.compared:.0f} < "
            f"{spec.min_noise_samples})",
        )
    agreement, floor = vllm.agreement, noise.agreement
    assert agreement is not None and floor is not None  # both compared > 0 (min >= 1)
    threshold = max(floor - spec.max_agreement_drop, 0.0)
    verdict = "Fail" if agreement < threshold else "Pass"
    gate = GateResult(
        metric=GATE,
        verdict=verdict,
        value=significant(agreement),
        baseline=significant(floor),
        threshold=significant(threshold),
    )
    if verdict == "Fail":
        message = (
            f"{GATE} {agreement:.4g} < {threshold:.4g} (Ollama agrees with itself "
            f"{floor:.4g}, maxAgreementDrop {spec.max_agreement_drop:g})"
        )
    else:
        message = f"{GATE} {agreement:.4g} >= {threshold:.4g} (Ollama with itself {floor:.4g})"
    return result(verdict, message, gate)


def mirror(spec: Shadow) -> Mirror:
    """The routing table's instruction for a consumer at a shadow step."""
    return Mirror(
        percent=spec.percent,
        noise_percent=spec.noise_percent,
        max_concurrent=spec.max_concurrent,
        timeout_seconds=seconds(spec.timeout),
        min_cosine=spec.min_cosine,
        record_content=spec.record_content,
    )


def mirrors(
    migration: Migration | None, consumers: list[ConsumerStatus], failover: bool
) -> dict[str, Mirror]:
    """The consumers the router mirrors: those at a shadow step, unless vLLM is failed over
    (there is nothing to ask then)."""
    if migration is None or failover:
        return {}
    out = {}
    for c in consumers:
        if c.phase not in IN_PROGRESS or not 1 <= (c.step or 0) <= len(migration.steps):
            continue
        step = migration.steps[(c.step or 0) - 1]
        if step.shadow is not None:
            out[c.name] = mirror(step.shadow)
    return out


__all__ = ["GATE", "accumulate", "judge", "mirror", "mirrors"]
