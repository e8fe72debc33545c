"""The results picture: TTFT p50 and p99 per path at each concurrency, and non-streaming
requests/s per path; bars are medians over repeats, whiskers min..max."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.router.config import PATHS, Config
from bench.router.report import Row

COLOURS = {"direct": "#888888", "router": "#1f77b4", "nginx": "#2ca02c"}


def _row(rows: list[Row], section: str, figure: str) -> Row:
    return next(r for r in rows if r.section == section and r.figure == figure)


def _added(ax: Any, rows: list[Row], config: Config) -> None:
    """Added TTFT (proxy minus direct) per proxy, p50 and p99, on a symlog scale: a few
    tenths of a millisecond and tens of milliseconds in one picture."""
    bars = [(proxy, q) for proxy in ("router", "nginx") for q in ("p50", "p99")]
    width = 0.8 / len(bars)
    for i, (proxy, q) in enumerate(bars):
        medians, low, high = [], [], []
        for c in config.concurrencies:
            v = _row(rows, f"streaming, {c} concurrent", f"added TTFT {q}").values[proxy]
            medians.append(v["median"])
            low.append(v["median"] - v["min"])
            high.append(v["max"] - v["median"])
        xs = [x + (i - 1.5) * width for x in range(len(config.concurrencies))]
        ax.bar(
            xs,
            medians,
            width,
            yerr=[low, high],
            capsize=3,
            label=f"{proxy} {q}",
            color=COLOURS[proxy],
            alpha=1.0 if q == "p50" else 0.55,
        )
    targets = config.targets
    for limit in (targets.added_ttft_p50_ms, targets.added_ttft_p99_ms):
        ax.axhline(limit, color="red", linewidth=0.8, linestyle="--")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xticks(range(len(config.concurrencies)), [f"{c} streams" for c in config.concurrencies])
    ax.set_ylabel("ms, symlog (dashed: router targets at 64)")
    ax.set_title("added TTFT: proxy minus direct, same repeat")
    ax.legend(fontsize=8)


def draw(rows: list[Row], config: Config, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(2, 2, figsize=(13, 9))
    axes = [grid[0][0], grid[0][1], grid[1][1]]
    width = 0.8 / len(PATHS)
    positions = range(len(config.concurrencies))
    _added(grid[1][0], rows, config)
    for ax, figure in zip(axes[:2], ("TTFT p50", "TTFT p99"), strict=True):
        for i, path in enumerate(PATHS):
            medians, low, high = [], [], []
            for c in config.concurrencies:
                v = _row(rows, f"streaming, {c} concurrent", figure).values[path]
                medians.append(v["median"])
                low.append(v["median"] - v["min"])
                high.append(v["max"] - v["median"])
            xs = [x + (i - 1) * width for x in positions]
            ax.bar(xs, medians, width, yerr=[low, high], capsize=3, label=path, color=COLOURS[path])
        ax.axhline(config.ttft_ms, color="black", linewidth=0.8, linestyle=":")
        ax.set_xticks(list(positions), [f"{c} streams" for c in config.concurrencies])
        ax.set_ylabel("ms (dotted: the backend's own TTFT)")
        ax.set_title(f"{figure}, streaming")
        ax.legend()
    ax = axes[2]
    row = next(
        r for r in rows if r.section.startswith("non-streaming") and r.figure == "requests/s"
    )
    for i, path in enumerate(PATHS):
        v = row.values[path]
        ax.bar(
            [i],
            [v["median"]],
            0.6,
            yerr=[[v["median"] - v["min"]], [v["max"] - v["median"]]],
            capsize=4,
            color=COLOURS[path],
        )
    ax.axhline(config.targets.requests_per_second, color="red", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(PATHS)), list(PATHS))
    ax.set_ylabel("requests/s (dashed: router target)")
    ax.set_title(f"non-streaming, {config.throughput_connections} connections (wrk)")
    fig.suptitle(
        f"inferops router vs nginx vs direct: median of {config.repeats} repeat(s), "
        "whiskers min..max; proxies pinned to one core",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


__all__ = ["draw"]
