"""The figures (pure): one phase's samples summarised, min/median/max over repeats, the
vLLM/Ollama ratio of each headline figure, and the printed table."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from bench.engines.client import Phase
from bench.router.stats import percentile, ratio, spread

METRICS: tuple[tuple[str, str, str], ...] = (
    # key, label, unit
    ("ttft_p50_ms", "TTFT p50", "ms"),
    ("ttft_p90_ms", "TTFT p90", "ms"),
    ("tpot_p50_ms", "time per output token p50", "ms"),
    ("tokens_per_s", "output tokens/s (all streams)", "tok/s"),
    ("stream_tokens_per_s", "output tokens/s per stream p50", "tok/s"),
    ("tokens_mean", "output tokens per answer", "tok"),
    ("chunks_mean", "content chunks per answer", "chunks"),
    ("engine_cpu_ms_per_token", "engine CPU per output token", "ms"),
    ("engine_cores_busy", "engine cores busy", "cores"),
    ("others_cores_busy", "other processes' cores busy", "cores"),
)
"""The summary's figures, in table order. The CPU figures are added to a phase's summary by
the runner, which reads the engines' processes and /proc/stat (NaN where absent)."""

CONDITIONS = frozenset({"others_cores_busy"})
"""Figures that describe the machine during a phase, not the engine: no ratio."""


def summarise_phase(phase: Phase) -> dict[str, Any]:
    """One phase's figures: percentiles over its requests, throughput over its wall time."""
    ttft = sorted(s.ttft * 1000 for s in phase.samples)
    tpot = sorted(t * 1000 for s in phase.samples if (t := s.tpot) is not None)
    per_stream = sorted(s.tokens / s.total for s in phase.samples if s.total > 0)
    tokens = sum(s.tokens for s in phase.samples)
    return {
        "requests": len(phase.samples),
        "errors": len(phase.errors),
        "error_samples": phase.errors[:5],
        "wall_s": phase.wall_s,
        "ttft_p50_ms": percentile(ttft, 50),
        "ttft_p90_ms": percentile(ttft, 90),
        "tpot_p50_ms": percentile(tpot, 50),
        "tokens_per_s": tokens / phase.wall_s if phase.wall_s > 0 and tokens else math.nan,
        "stream_tokens_per_s": percentile(per_stream, 50),
        "tokens_mean": statistics.fmean(s.tokens for s in phase.samples)
        if phase.samples
        else math.nan,
        "chunks_mean": statistics.fmean(s.chunks for s in phase.samples)
        if phase.samples
        else math.nan,
        "token_sources": sorted({s.token_source for s in phase.samples}),
    }


def aggregate(
    repeats: Sequence[Mapping[str, Mapping[int, Mapping[str, Any]]]],
) -> dict[str, dict[int, dict[str, dict[str, float]]]]:
    """Min/median/max over repeats of every figure, per engine and concurrency.

    `repeats[i][engine][concurrency]` is one phase's summary (`summarise_phase`)."""
    out: dict[str, dict[int, dict[str, dict[str, float]]]] = {}
    for rep in repeats:
        for engine, by_conc in rep.items():
            for conc in by_conc:
                out.setdefault(engine, {}).setdefault(conc, {})
    for engine, by_conc in out.items():
        for conc in by_conc:
            phases = [rep[engine][conc] for rep in repeats if conc in rep.get(engine, {})]
            by_conc[conc] = {
                key: spread([float(p.get(key, math.nan)) for p in phases]) for key, _, _ in METRICS
            }
            by_conc[conc]["errors"] = spread([float(p["errors"]) for p in phases])
    return out


def ratios(
    figures: Mapping[str, Mapping[int, Mapping[str, Mapping[str, float]]]],
    numerator: str = "vllm",
    denominator: str = "ollama",
) -> dict[int, dict[str, float]]:
    """`numerator`'s median over `denominator`'s, per concurrency and figure (below 1: the
    numerator's figure is lower, better for latency, worse for tokens/s)."""
    num, den = figures.get(numerator, {}), figures.get(denominator, {})
    return {
        conc: {
            key: ratio(num[conc][key]["median"], den[conc][key]["median"])
            for key, _, _ in METRICS
            if key not in CONDITIONS
        }
        for conc in sorted(set(num) & set(den))
    }


def _cell(s: Mapping[str, float]) -> str:
    if not s or math.isnan(s["median"]):
        return "-"
    return f"{s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f})"


def table(
    figures: Mapping[str, Mapping[int, Mapping[str, Mapping[str, float]]]],
    engines: Sequence[str] = ("vllm", "ollama"),
) -> str:
    """The printed table: median (min-max over repeats) per engine, and the ratio of the
    first engine's median to the second's."""
    rel = ratios(figures, engines[0], engines[1]) if len(engines) == 2 else {}
    header = ["streams", "figure", *engines, f"{engines[0]}/{engines[1]}" if rel else ""]
    rows = [header]
    concs = sorted({c for e in engines for c in figures.get(e, {})})
    for conc in concs:
        for key, label, unit in (*METRICS, ("errors", "errors", "")):
            row = [str(conc), f"{label} [{unit}]" if unit else label]
            row += [_cell(figures.get(e, {}).get(conc, {}).get(key, {})) for e in engines]
            value = rel.get(conc, {}).get(key, math.nan)
            row.append("" if math.isnan(value) else f"{value:.2f}")
            rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


__all__ = ["CONDITIONS", "METRICS", "aggregate", "ratios", "summarise_phase", "table"]
