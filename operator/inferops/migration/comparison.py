"""The comparison users migrate for: vLLM against Ollama for one consumer, pooled over the
migration's analysis windows, and its one-line summary. Pure.

How windows are pooled, and why:

- counts (requests, errors, output tokens, window seconds) are summed, so the error rate is
  errors / requests over every window (request-weighted: a window with 3 requests does not
  weigh like one with 3,000, as a mean of per-window rates would make it) and throughput is
  tokens / seconds;
- a quantile cannot be recovered from per-window quantiles. The exact pooled quantile needs
  the histograms' bucket counts (about 70 numbers per consumer, kept in status for good);
  instead each window's quantile is weighted by the observations behind it. That equals the
  pooled quantile when the windows' distributions are alike (a steady engine) and otherwise
  lies between the windows' quantiles, never dominated by a quiet window. The figures say
  how many observations they stand on, and below `analysis.minRequests` the summary says
  "too few samples" instead of a ratio.

Ollama's figures stop at the first step at 100%: from there it serves the consumer only
fallbacks (requests vLLM failed first), a different population. Its pooled figures are the
baseline kept after the migration.
"""

from __future__ import annotations

from inferops.api.status import Comparison, EngineComparison
from inferops.migration.analysis import significant
from inferops.migration.figures import EngineFigures, Figures


def _counted(value: float) -> float:
    """A pooled count as stored: Prometheus' increase() extrapolates to fractions; two
    decimals keep sums from drifting while staying readable."""
    return round(value, 2)


def _mean(before: float | None, weight: float, value: float | None, more: float) -> float | None:
    """The weighted mean of `before` (weight `weight`) and `value` (weight `more`)."""
    if value is None or more <= 0:
        return before
    if before is None or weight <= 0:
        return value
    return (before * weight + value * more) / (weight + more)


def pool(
    before: EngineComparison | None, window: EngineFigures, seconds: float
) -> EngineComparison:
    """`before` with one more window of figures, `seconds` long."""
    b = before or EngineComparison()
    total = b.seconds + seconds
    requests = b.requests + window.requests
    errors = b.errors + window.errors
    tokens = b.output_tokens + window.output_tokens
    return EngineComparison(
        windows=b.windows + 1,
        seconds=_counted(total),
        requests=_counted(requests),
        errors=_counted(errors),
        output_tokens=_counted(tokens),
        ttft_observations=_counted(b.ttft_observations + window.ttft_count),
        tpot_observations=_counted(b.tpot_observations + window.tpot_count),
        error_rate=significant(errors / requests) if requests > 0 else None,
        ttft_p50=significant(
            _mean(b.ttft_p50, b.ttft_observations, window.ttft_p50, window.ttft_count)
        ),
        ttft_p95=significant(
            _mean(b.ttft_p95, b.ttft_observations, window.ttft_p95, window.ttft_count)
        ),
        tpot_p50=significant(
            _mean(b.tpot_p50, b.tpot_observations, window.tpot_p50, window.tpot_count)
        ),
        tpot_p95=significant(
            _mean(b.tpot_p95, b.tpot_observations, window.tpot_p95, window.tpot_count)
        ),
        output_tokens_per_second=significant(tokens / total) if total > 0 else None,
        requests_per_second=significant(requests / total) if total > 0 else None,
    )


def add(
    before: Comparison | None,
    figures: Figures,
    *,
    with_ollama: bool,
    seconds: float,
    min_requests: int,
    latency: bool = True,
) -> Comparison:
    """`before` with one analysis window more. A window the source could not read adds
    nothing; `with_ollama` is False at 100% (Ollama's figures there are only fallbacks).
    `seconds` is the window's length when the source did not measure it."""
    comparison = before or Comparison()
    if figures.problem:
        return comparison
    length = figures.window_seconds or seconds
    vllm, ollama = comparison.vllm, comparison.ollama
    if figures.vllm is not None and figures.vllm.requests > 0:
        vllm = pool(vllm, figures.vllm, length)
    if with_ollama and figures.ollama is not None and figures.ollama.requests > 0:
        ollama = pool(ollama, figures.ollama, length)
    return Comparison(
        vllm=vllm, ollama=ollama, summary=summary(vllm, ollama, min_requests, latency)
    )


def _ratio(label: str, vllm: float | None, ollama: float | None) -> str:
    """`TTFT p95 3.1x faster` (Ollama's time over vLLM's) or `... 1.4x slower`, never a
    ratio below 1 called faster."""
    if vllm is None or ollama is None or vllm <= 0 or ollama <= 0:
        return f"{label}: no data"
    ratio = ollama / vllm
    word = "faster" if ratio >= 1 else "slower"
    factor = ratio if ratio >= 1 else 1 / ratio
    shown = f"{factor:.1f}" if factor < 10 else f"{factor:.0f}"
    if shown == "1.0":
        return f"{label} about the same"
    return f"{label} {shown}x {word}"


def _percent(rate: float | None) -> str:
    if rate is None:
        return "-"
    return f"{rate * 100:.2g}%" if rate > 0 else "0%"


def summary(
    vllm: EngineComparison | None,
    ollama: EngineComparison | None,
    min_requests: int,
    latency: bool = True,
) -> str:
    """The comparison in one line: `TTFT p95 3.1x faster, TPOT p95 2.4x faster, errors 0.1%
    vs 0.3%` (vLLM vs Ollama); a figure with fewer than `min_requests` observations on
    either engine says so instead of a ratio. Without `latency` (embeddings: no tokens are
    streamed) only the error rates."""
    if vllm is None or ollama is None:
        missing = "vLLM" if vllm is None else "Ollama"
        return f"no {missing} figures yet"
    parts = []
    for label, v, o, seen_v, seen_o in (
        ("TTFT p95", vllm.ttft_p95, ollama.ttft_p95, vllm.ttft_observations,
         ollama.ttft_observations),
        ("TPOT p95", vllm.tpot_p95, ollama.tpot_p95, vllm.tpot_observations,
         ollama.tpot_observations),
    ):  # fmt: skip
        if not latency:
            break
        if min(seen_v, seen_o) < min_requests:
            parts.append(
                f"{label}: too few samples (vLLM {seen_v:.0f}, Ollama {seen_o:.0f}, "
                f"need {min_requests})"
            )
        else:
            parts.append(_ratio(label, v, o))
    if min(vllm.requests, ollama.requests) < min_requests:
        parts.append(
            f"errors: too few requests (vLLM {vllm.requests:.0f}, Ollama "
            f"{ollama.requests:.0f}, need {min_requests})"
        )
    else:
        parts.append(f"errors {_percent(vllm.error_rate)} vs {_percent(ollama.error_rate)}")
    return ", ".join(parts)


__all__ = ["add", "pool", "summary"]
