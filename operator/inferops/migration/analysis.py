"""Judges one analysis sample: vLLM's figures against the gates, relative to the same
consumer on Ollama in the same window. Pure.

Every sample is Pass, Fail or Inconclusive. Missing data is never a verdict: a failed query,
too few requests on either engine, or no figure on either side of a relative gate makes the
sample Inconclusive (the research behind this: Flagger and Argo Rollouts users whose canaries
were promoted or rolled back on empty queries).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from inferops.api.migration import Analysis, Gate
from inferops.api.status import AnalysisResult, EngineFiguresStatus, GateResult, Verdict
from inferops.migration.figures import EngineFigures, Figures


@dataclass(frozen=True)
class Subject:
    """What is judged: one consumer's step."""

    step: int
    """The step's number, from 1."""
    at_full: bool
    """The step sends the consumer's every request to vLLM: Ollama has no figures of its
    own in the window, so relative gates compare with the stored baseline."""
    embeddings: bool
    """Embeddings have no tokens to stream: only the error rate applies."""
    baseline: EngineFiguresStatus | None


# Figures written to status keep this many significant digits, as the verdicts' messages
# do: Prometheus' increase() extrapolates (48.932384341637004 requests), and every digit of
# that showed in `kubectl describe`. Verdicts are taken on the exact figures.
DIGITS = 4


def significant(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.{DIGITS}g}")


def _rounded(figures: EngineFiguresStatus | None) -> EngineFiguresStatus | None:
    if figures is None:
        return None
    return figures.model_copy(
        update={
            "requests": significant(figures.requests) or 0.0,
            "error_rate": significant(figures.error_rate),
            "ttft_p95": significant(figures.ttft_p95),
            "tpot_p95": significant(figures.tpot_p95),
            "shed": significant(figures.shed) or 0.0,
        }
    )


def _rounded_gate(gate: GateResult) -> GateResult:
    return gate.model_copy(
        update={
            "value": significant(gate.value),
            "baseline": significant(gate.baseline),
            "threshold": significant(gate.threshold),
        }
    )


def figures_status(figures: EngineFigures | None) -> EngineFiguresStatus | None:
    if figures is None:
        return None
    return EngineFiguresStatus(
        requests=figures.requests,
        error_rate=figures.error_rate,
        ttft_p95=figures.ttft_p95,
        tpot_p95=figures.tpot_p95,
        shed=figures.shed,
    )


Metric = Callable[[EngineFiguresStatus], float | None]
METRICS: tuple[tuple[str, Metric], ...] = (
    ("errorRate", lambda f: f.error_rate),
    ("ttftP95", lambda f: f.ttft_p95),
    ("tpotP95", lambda f: f.tpot_p95),
)


def _gates(spec: Analysis, subject: Subject) -> list[tuple[str, Metric, Gate]]:
    gates = {"errorRate": spec.error_rate, "ttftP95": spec.ttft_p95, "tpotP95": spec.tpot_p95}
    return [
        (name, metric, gate)
        for name, metric in METRICS
        if (gate := gates[name]) is not None and (name == "errorRate" or not subject.embeddings)
    ]


def judge_gate(
    name: str, gate: Gate, value: float | None, baseline: float | None, *, no_reference: bool
) -> GateResult | None:
    """One gate; None when it does not apply. `no_reference`: at 100% without any stored
    Ollama figure (a consumer that went 0 -> 100 in one step), where only an absolute limit
    can apply."""
    if no_reference and gate.max is None:
        return None
    if value is None:
        return GateResult(metric=name, verdict="Inconclusive", baseline=baseline)
    limits = [] if gate.max is None else [gate.max]
    if gate.max_ratio is not None and not no_reference:
        if baseline is None:
            return GateResult(metric=name, verdict="Inconclusive", value=value)
        limits.append(max(gate.max_ratio * baseline, gate.floor or 0.0))
    threshold = min(limits)
    return GateResult(
        metric=name,
        verdict="Fail" if value > threshold else "Pass",
        value=value,
        baseline=baseline,
        threshold=threshold,
    )


def judge(spec: Analysis, figures: Figures, subject: Subject, now: str) -> AnalysisResult:
    def result(
        verdict: Verdict, message: str, gates: list[GateResult] | None = None
    ) -> AnalysisResult:
        return AnalysisResult(
            verdict=verdict,
            time=now,
            step=subject.step,
            message=message,
            vllm=_rounded(figures_status(figures.vllm)),
            ollama=_rounded(figures_status(figures.ollama)),
            gates=[_rounded_gate(g) for g in gates or []],
        )

    if figures.problem:
        return result("Inconclusive", f"no figures: {figures.problem}")
    vllm = figures_status(figures.vllm)
    if vllm is None or vllm.requests < spec.min_requests:
        seen = 0.0 if vllm is None else vllm.requests
        return result(
            "Inconclusive", f"too few requests on vLLM ({seen:.{DIGITS}g} < {spec.min_requests})"
        )
    if subject.at_full:
        reference = subject.baseline
    else:
        reference = figures_status(figures.ollama)
        if reference is None or reference.requests < spec.min_requests:
            seen = 0.0 if reference is None else reference.requests
            return result(
                "Inconclusive",
                f"too few requests on Ollama ({seen:.{DIGITS}g} < {spec.min_requests})",
            )
    judged = (
        judge_gate(
            name,
            gate,
            metric(vllm),
            None if reference is None else metric(reference),
            no_reference=subject.at_full and reference is None,
        )
        for name, metric, gate in _gates(spec, subject)
    )
    gates = [g for g in judged if g is not None]
    if not gates:
        return result(
            "Inconclusive",
            "no gate applies without an Ollama baseline: give a gate an absolute max",
        )
    failed = [g for g in gates if g.verdict == "Fail"]
    if failed:
        return result("Fail", "; ".join(_describe(g) for g in failed), gates)
    unknown = [g.metric for g in gates if g.verdict == "Inconclusive"]
    if unknown:
        return result("Inconclusive", "no data for " + ", ".join(unknown), gates)
    return result("Pass", "every gate passed", gates)


def _describe(gate: GateResult) -> str:
    base = "" if gate.baseline is None else f" (Ollama {gate.baseline:.4g})"
    return f"{gate.metric} {gate.value:.4g} > {gate.threshold:.4g}{base}"


__all__ = ["Subject", "figures_status", "judge", "judge_gate"]
