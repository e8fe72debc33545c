"""What one analysis sample knows about a consumer: per-engine figures over a window.

Pure values, no I/O: the metrics sources (`inferops.migration.sources`) produce them, the
analysis judges them. NaN never leaves this module as a number: a figure is a finite float
or None ("no data"), and a source that failed says so in `Figures.problem`, which the
analysis must treat as Inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

VLLM = "vllm"
OLLAMA = "ollama"
ENGINES = (VLLM, OLLAMA)


def finite(value: float | None) -> float | None:
    """`value` when it is a finite number, else None (NaN and infinities are "no data")."""
    if value is None or not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class EngineFigures:
    """One engine's figures for one consumer over the window."""

    requests: float
    """Engine attempts in the window (every status code; refusals before an engine was
    chosen, `engine="none"`, are not attempts)."""
    errors: float
    """Failures attributed to the engine in the window (`inferops_router_errors_total`)."""
    ttft_p95: float | None
    """95th percentile of the time to first token, seconds; None when there is no data."""
    tpot_p95: float | None
    """95th percentile of the time per output token, seconds; None when there is no data."""
    shed: float = 0.0
    """Requests the router refused in the window because the engine was at its admission
    limit (`inferops_router_shed_total`). Not in `requests` nor `errors`: a refusal is the
    configured capacity speaking, not the engine failing, and it is reported, not judged."""
    ttft_p50: float | None = None
    """Median time to first token, seconds; None when there is no data."""
    tpot_p50: float | None = None
    """Median time per output token, seconds; None when there is no data."""
    ttft_count: float = 0.0
    """Observations behind the TTFT quantiles (streamed answers), their weight when windows
    are pooled (`inferops.migration.comparison`)."""
    tpot_count: float = 0.0
    """Observations behind the TPOT quantiles."""
    output_tokens: float = 0.0
    """Completion tokens the engine reported in the window (`inferops_router_tokens_total`,
    kind="completion"): the throughput's numerator."""

    def __post_init__(self) -> None:
        # A source that let a NaN through is a bug; fail where it happened, not in a verdict.
        for name in ("requests", "errors", "shed", "ttft_count", "tpot_count", "output_tokens"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite count >= 0, got {value!r}")
        for name in ("ttft_p95", "tpot_p95", "ttft_p50", "tpot_p50"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be finite or None, got {value!r}")

    @property
    def error_rate(self) -> float | None:
        """errors / requests; None when the engine had no request in the window."""
        if self.requests <= 0:
            return None
        return self.errors / self.requests


@dataclass(frozen=True)
class ShadowFigures:
    """A consumer's shadow comparisons over the window, by verdict: `vllm` compares vLLM's
    answer with Ollama's, `ollama` Ollama's with its own (the noise floor)."""

    vllm: Mapping[str, float] = field(default_factory=dict)
    ollama: Mapping[str, float] = field(default_factory=dict)
    disagreeing: Mapping[str, float] = field(default_factory=dict)
    """vLLM's disagreements and errors by request kind (json, deterministic, embeddings)."""

    def __post_init__(self) -> None:
        for side in (self.vllm, self.ollama):
            for verdict, value in side.items():
                if not math.isfinite(value) or value < 0:
                    raise ValueError(f"shadow count {verdict} must be finite and >= 0")


@dataclass(frozen=True)
class KindFigures:
    """Both engines' figures for the requests of one kind (chat, completions, embeddings:
    `inferops.api.routing.KINDS`) of a consumer over the window, Ollama-API and OpenAI-API
    forms together."""

    vllm: EngineFigures | None
    ollama: EngineFigures | None

    def requests(self) -> float:
        """Engine attempts of this kind on either engine in the window."""
        return sum(e.requests for e in (self.vllm, self.ollama) if e is not None)


@dataclass(frozen=True)
class Figures:
    """Both engines' figures for one consumer over one window."""

    vllm: EngineFigures | None
    """None: no data at all for vLLM in the window."""
    ollama: EngineFigures | None
    """None: no data at all for Ollama in the window."""
    problem: str | None = None
    """Why the source could not answer (query failed, unreachable, NaN, parse error, no
    window yet): the sample is Inconclusive whatever the engine figures say."""
    window_seconds: float | None = None
    """The window the figures cover, as the source measured it (None when unknown)."""
    shadow: ShadowFigures | None = None
    """The router's shadow comparisons in the window; None when it made none."""
    kinds: Mapping[str, KindFigures] = field(default_factory=dict)
    """The same figures by request kind, for the kinds with series in the window; empty when
    the source could not tell kinds apart. `vllm` and `ollama` above are every kind's."""

    @classmethod
    def failed(cls, problem: str, window_seconds: float | None = None) -> Figures:
        return cls(vllm=None, ollama=None, problem=problem, window_seconds=window_seconds)

    def engine(self, name: str) -> EngineFigures | None:
        """The figures of `name` ("vllm" or "ollama")."""
        if name == VLLM:
            return self.vllm
        if name == OLLAMA:
            return self.ollama
        raise ValueError(f"unknown engine {name!r}")


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The q-quantile of a histogram given as cumulative buckets `(le, count)`, estimated
    like Prometheus' `histogram_quantile`: linear interpolation inside the bucket that holds
    the rank, the lowest bucket starting at 0 (when its bound is positive), and a rank in the
    +Inf bucket answered with the highest finite bound.

    None when there is no observation, when the +Inf bucket is missing, or when fewer than
    two buckets are given (Prometheus answers NaN in those cases).
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q!r}")
    merged: dict[float, float] = {}
    for le, count in buckets:
        if math.isnan(le) or not math.isfinite(count):
            return None
        # Buckets with the same bound (two series summed without their le aligned) add up.
        merged[le] = merged.get(le, 0.0) + count
    ordered = sorted(merged.items())
    if len(ordered) < 2 or ordered[-1][0] != math.inf:
        return None
    # Counts must not decrease with le; scrapes at slightly different moments, or counter
    # resets detected per bucket, can break that: Prometheus' fix is a running maximum.
    cumulative: list[tuple[float, float]] = []
    highest = 0.0
    for le, count in ordered:
        highest = max(highest, count)
        cumulative.append((le, highest))
    observations = cumulative[-1][1]
    if observations <= 0:
        return None
    rank = q * observations
    index = next(i for i, (_, count) in enumerate(cumulative) if count >= rank)
    if index == len(cumulative) - 1:
        return cumulative[-2][0]
    upper, count = cumulative[index]
    if index == 0 and upper <= 0:
        return upper
    lower = 0.0
    if index > 0:
        lower, below = cumulative[index - 1]
        count -= below
        rank -= below
    if count <= 0:
        return lower
    return lower + (upper - lower) * (rank / count)


__all__ = [
    "ENGINES",
    "OLLAMA",
    "VLLM",
    "EngineFigures",
    "Figures",
    "KindFigures",
    "ShadowFigures",
    "finite",
    "quantile",
]
