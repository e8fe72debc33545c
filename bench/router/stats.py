"""Small statistics: percentiles of one phase's samples, min/median/max over repeats, and
ratios that stay meaningful when the denominator is near zero."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(ordered: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0..100) of sorted values, linearly interpolated."""
    if not ordered:
        return math.nan
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(values: Sequence[float]) -> dict[str, float]:
    """Min, median and max of per-repeat values (NaNs ignored)."""
    clean = [v for v in values if not math.isnan(v)]
    if not clean:
        return {"min": math.nan, "median": math.nan, "max": math.nan, "n": 0}
    return {
        "min": min(clean),
        "median": statistics.median(clean),
        "max": max(clean),
        "n": len(clean),
    }


def ratio(numerator: float, denominator: float, floor: float = 0.0) -> float:
    """`numerator / denominator`, NaN when the denominator is at most `floor` (an added
    latency of nginx within noise of zero makes any ratio meaningless)."""
    if math.isnan(numerator) or math.isnan(denominator) or denominator <= floor:
        return math.nan
    return numerator / denominator


__all__ = ["percentile", "ratio", "spread"]
