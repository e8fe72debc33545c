"""Judges one analysis sample: vLLM's figures against the gates, relative to the same
consumer on Ollama in the same window. Pure.

Every sample is Pass, Fail or Inconclusive. Missing data is never a verdict: a failed query,
too few requests on either engine, or no figure on either side of a relative gate makes the
sample Inconclusive (the research behind this: Flagger and Argo Rollouts users whose canaries
were promoted or rolled back on empty queries).

A consumer whose window holds more than one request kind (chat, completions, embeddings) is
also judged kind by kind, for each kind vLLM serves: pooled, a few failing embeddings drown
in many passing chats. A kind vLLM does not serve goes to Ollama whatever the weight, so it
has nothing of vLLM's to judge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from inferops.api.migration import Analysis, Gate
from inferops.api.routing import KINDS
from inferops.api.spec import InferenceBackendSpec
from inferops.api.status import AnalysisResult, EngineFiguresStatus, GateResult, Verdict
from inferops.builders.router import vllm_facts
from inferops.migration.figures import EngineFigures, Figures, KindFigures


def vllm_kinds(spec: InferenceBackendSpec) -> frozenset[str]:
    """The request kinds vLLM serves as the spec starts it, as the routing table says."""
    kinds = vllm_facts(spec.vllm)["kinds"]
    assert isinstance(kinds, list)
    return frozenset(str(k) for k in kinds)


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
    served: frozenset[str] = frozenset(KINDS)
    """The request kinds vLLM serves: the only ones judged kind by kind."""


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


def _gates(spec: Analysis, embeddings: bool) -> list[tuple[str, Metric, Gate]]:
    gates = {"errorRate": spec.error_rate, "ttftP95": spec.ttft_p95, "tpotP95": spec.tpot_p95}
    return [
        (name, metric, gate)
        for name, metric in METRICS
        if (gate := gates[name]) is not None and (name == "errorRate" or not embeddings)
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
        for name, metric, gate in _gates(spec, subject.embeddings)
    )
    gates = [g for g in judged if g is not None]
    if not gates:
        return result(
            "Inconclusive",
            "no gate applies without an Ollama baseline: give a gate an absolute max",
        )
    kinds = judged_kinds(figures, subject)
    few: list[str] = []
    for kind in kinds:
        found, short = judge_kind(spec, kind, figures.kinds[kind], subject.at_full)
        gates += found
        few += [short] if short else []
    # A kind's failure first: it says where the consumer's figures as a whole went wrong.
    failed = sorted((g for g in gates if g.verdict == "Fail"), key=lambda g: g.kind is None)
    if failed:
        whole = "all kinds: " if kinds else ""
        return result("Fail", "; ".join(_describe(g, whole) for g in failed), gates)
    unknown = [_named(g) for g in gates if g.verdict == "Inconclusive"]
    if unknown or few:
        reasons = [*few, *(["no data for " + ", ".join(unknown)] if unknown else [])]
        return result("Inconclusive", "; ".join(reasons), gates)
    by_kind = f" (by kind: {', '.join(kinds)})" if kinds else ""
    return result("Pass", f"every gate passed{by_kind}", gates)


def judged_kinds(figures: Figures, subject: Subject) -> list[str]:
    """The kinds judged one by one: those vLLM serves, when the window holds requests of
    more than one kind (with one, the consumer's figures are that kind's)."""
    present = [k for k in KINDS if k in figures.kinds and figures.kinds[k].requests() > 0]
    if len(present) < 2:
        return []
    return [k for k in present if k in subject.served]


def judge_kind(
    spec: Analysis, kind: str, figures: KindFigures, at_full: bool
) -> tuple[list[GateResult], str | None]:
    """One kind's gates, and why it has no verdict when too few of its requests were seen
    (`minRequests` on vLLM, and below 100% on Ollama, as for the consumer as a whole).

    Latency gates apply to a kind only where both sides have a figure (a kind the consumer
    never streams has none): the consumer's figures as a whole judge latency already. At
    100% a kind has no baseline of its own: only gates with an absolute `max` apply."""
    vllm, ollama = figures_status(figures.vllm), figures_status(figures.ollama)
    seen = 0.0 if vllm is None else vllm.requests
    if seen < spec.min_requests:
        return [], f"too few {kind} requests on vLLM ({seen:.{DIGITS}g} < {spec.min_requests})"
    if not at_full:
        seen = 0.0 if ollama is None else ollama.requests
        if seen < spec.min_requests:
            return [], (
                f"too few {kind} requests on Ollama ({seen:.{DIGITS}g} < {spec.min_requests})"
            )
    assert vllm is not None
    reference = None if at_full else ollama
    gates = []
    for name, metric, gate in _gates(spec, kind == "embeddings"):
        value, base = metric(vllm), None if reference is None else metric(reference)
        if name != "errorRate" and (value is None or (base is None and not at_full)):
            continue
        judged = judge_gate(name, gate, value, base, no_reference=at_full)
        if judged is not None:
            gates.append(judged.model_copy(update={"kind": kind}))
    return gates, None


def _named(gate: GateResult) -> str:
    return gate.metric if gate.kind is None else f"{gate.kind} {gate.metric}"


def _describe(gate: GateResult, whole: str = "") -> str:
    """A failed gate in words; `whole` prefixes a gate of the consumer as a whole."""
    base = "" if gate.baseline is None else f" (Ollama {gate.baseline:.4g})"
    where = whole if gate.kind is None else f"{gate.kind}: "
    return f"{where}{gate.metric} {gate.value:.4g} > {gate.threshold:.4g}{base}"


__all__ = [
    "Subject",
    "figures_status",
    "judge",
    "judge_gate",
    "judge_kind",
    "judged_kinds",
    "vllm_kinds",
]
