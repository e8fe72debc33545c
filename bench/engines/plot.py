"""The results picture: per engine and concurrency, TTFT p50, time per output token p50 and
output tokens/s over all streams. Bars are medians over repeats, whiskers min..max."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

COLOURS = {"vllm": "#1f77b4", "ollama": "#ff7f0e"}
PANELS = (
    ("ttft_p50_ms", "TTFT p50 [ms]"),
    ("tpot_p50_ms", "time per output token p50 [ms]"),
    ("tokens_per_s", "output tokens/s, all streams"),
)


def render(
    figures: Mapping[str, Mapping[int, Mapping[str, Mapping[str, float]]]],
    engines: Sequence[str],
    title: str,
    path: Path,
) -> None:
    """Write the PNG (matplotlib, from the `bench` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    concs = sorted({c for e in engines for c in figures.get(e, {})})
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 4.0))
    width = 0.8 / max(len(engines), 1)
    for ax, (key, label) in zip(axes, PANELS, strict=True):
        for i, engine in enumerate(engines):
            xs, meds, lows, highs = [], [], [], []
            for j, conc in enumerate(concs):
                s: Mapping[str, Any] = figures.get(engine, {}).get(conc, {}).get(key, {})
                if not s or math.isnan(s["median"]):
                    continue
                xs.append(j + (i - (len(engines) - 1) / 2) * width)
                meds.append(s["median"])
                lows.append(s["median"] - s["min"])
                highs.append(s["max"] - s["median"])
            ax.bar(
                xs,
                meds,
                width,
                yerr=[lows, highs],
                capsize=3,
                label=engine,
                color=COLOURS.get(engine),
            )
        ax.set_xticks(range(len(concs)), [f"{c} stream{'s' if c > 1 else ''}" for c in concs])
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["render"]
