"""The results picture: TTFT p50 and p99 per path at each concurrency for each stream profile
(log scale: the proxies differ by orders of magnitude under load), non-streaming requests/s
and requests/s per core of proxy CPU, proxy RSS with the held streams, and the router's ratio
to each peer for the headline figures. Bars are medians over repeats, whiskers min..max."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.router.config import Config
from bench.router.report import Row, stream_section

COLOURS = {
    "direct": "#888888",
    "router": "#1f77b4",
    "router-2w": "#17becf",
    "nginx": "#2ca02c",
    "vllm-router": "#ff7f0e",
    "litellm": "#9467bd",
}


def _row(rows: list[Row], section: str, figure: str) -> Row:
    return next(r for r in rows if r.section == section and r.figure == figure)


def _section_row(rows: list[Row], start: str, figure: str) -> Row:
    return next(r for r in rows if r.section.startswith(start) and r.figure == figure)


def _bars(
    ax: Any,
    groups: list[str],
    series: list[tuple[str, list[dict[str, float]]]],
    log: bool = False,
) -> None:
    """One bar per (group, series); `series` is (path, a spread per group; an empty one where
    the figure does not apply to the path)."""
    width = 0.8 / max(len(series), 1)
    for i, (path, spreads) in enumerate(series):
        medians = [s.get("median", math.nan) for s in spreads]
        low = [max(m - s.get("min", m), 0.0) for m, s in zip(medians, spreads, strict=True)]
        high = [max(s.get("max", m) - m, 0.0) for m, s in zip(medians, spreads, strict=True)]
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(groups))]
        ax.bar(
            xs,
            medians,
            width,
            yerr=[low, high],
            capsize=2,
            label=path,
            color=COLOURS.get(path, "#333333"),
        )
        for x, m, spread in zip(xs, medians, spreads, strict=True):
            if spread and (math.isnan(m) or (log and m <= 0)):
                # No bar to draw: say so, rather than leave a gap that reads as "tiny".
                _no_bar(ax, x, "no data" if math.isnan(m) else f"{m:g}", path)
    ax.set_xticks(range(len(groups)), groups)
    if log:
        _log_axis(ax)


def _no_bar(ax: Any, x: float, label: str, path: str) -> None:
    ax.annotate(
        label,
        (x, 0.02),
        xycoords=("data", "axes fraction"),
        ha="center",
        fontsize=6,
        rotation=90,
        color=COLOURS.get(path, "#333333"),
    )


def _log_axis(ax: Any) -> None:
    """A log y axis with plain numbers (not 5x10^1) on its ticks."""
    from matplotlib.ticker import FuncFormatter

    ax.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=6)


def _ttft(ax: Any, rows: list[Row], config: Config, profile_index: int, figure: str) -> None:
    profile = config.profiles[profile_index]
    groups = [f"{c} streams" for c in config.concurrencies]
    series = [
        (
            path,
            [
                _row(rows, stream_section(profile, c), figure).values.get(path, {})
                for c in config.concurrencies
            ],
        )
        for path in config.paths
    ]
    _bars(ax, groups, series, log=True)
    ax.axhline(profile.ttft_ms, color="black", linewidth=0.8, linestyle=":")
    ax.set_ylabel("ms, log (dotted: the backend's own TTFT)")
    ax.set_title(f"{figure}, streaming {profile.name}: {profile.describe()}", fontsize=10)
    ax.legend(fontsize=7)


def _throughput(ax: Any, rows: list[Row], config: Config) -> None:
    rate = _section_row(rows, "non-streaming", "requests/s")
    per_core = _section_row(rows, "non-streaming", "requests/s per core of proxy CPU")
    groups = ["requests/s", "requests/s per core\nof proxy CPU"]
    series = [
        (path, [rate.values.get(path, {}), per_core.values.get(path, {})]) for path in config.paths
    ]
    _bars(ax, groups, series, log=True)
    ax.set_ylabel("log scale")
    ax.set_title(f"non-streaming, {config.throughput_connections} connections (wrk)", fontsize=10)
    ax.legend(fontsize=7)


def _memory(ax: Any, rows: list[Row], config: Config) -> None:
    start = f"{config.hold_streams} "
    held = _section_row(rows, start, "proxy RSS while held")
    before = _section_row(rows, start, "proxy RSS before")
    groups = ["before the burst", f"{config.hold_streams} streams open"]
    series = [
        (path, [before.values.get(path, {}), held.values.get(path, {})]) for path in config.proxies
    ]
    _bars(ax, groups, series, log=True)
    ax.axhline(config.targets.hold_rss_mib, color="red", linewidth=0.8, linestyle="--")
    ax.set_ylabel("MiB RSS, log (dashed: router target)")
    ax.set_title("proxy memory", fontsize=10)
    ax.legend(fontsize=7)


def _headline(rows: list[Row], config: Config) -> list[tuple[str, Row]]:
    """The figures whose router/peer ratio the picture shows, with short labels."""
    out: list[tuple[str, Row]] = []
    last = config.profiles[-1]
    for c in config.concurrencies:
        if c <= 1:
            continue
        section = stream_section(last, c)
        out.append((f"TTFT p50\n{last.name} x{c}", _row(rows, section, "TTFT p50")))
        out.append((f"TTFT p99\n{last.name} x{c}", _row(rows, section, "TTFT p99")))
    top = stream_section(last, max(config.concurrencies))
    out.append(
        (
            f"CPU per stream\n{last.name} x{max(config.concurrencies)}",
            _row(rows, top, "proxy CPU per 1,000 requests"),
        )
    )
    out.append(("non-streaming\nreq/s", _section_row(rows, "non-streaming", "requests/s")))
    out.append(
        (
            "req/s per core\nof proxy CPU",
            _section_row(rows, "non-streaming", "requests/s per core of proxy CPU"),
        )
    )
    out.append(
        (
            f"RSS with {config.hold_streams}\nstreams",
            _section_row(rows, f"{config.hold_streams} ", "proxy RSS while held"),
        )
    )
    return out


def _ratios(ax: Any, rows: list[Row], config: Config) -> None:
    headline = _headline(rows, config)
    groups = [label for label, _ in headline]
    width = 0.8 / max(len(config.peers), 1)
    for i, peer in enumerate(config.peers):
        values = [row.ratios.get(peer, math.nan) for _, row in headline]
        xs = [x + (i - (len(config.peers) - 1) / 2) * width for x in range(len(groups))]
        ax.bar(xs, values, width, label=f"router / {peer}", color=COLOURS.get(peer, "#333333"))
        for x, v in zip(xs, values, strict=True):
            if math.isnan(v) or v <= 0:
                _no_bar(ax, x, "no data", peer)
            else:
                ax.annotate(f"{v:.2g}", (x, v), ha="center", va="bottom", fontsize=7, rotation=90)
    ax.axhline(1.0, color="black", linewidth=0.8)
    _log_axis(ax)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_ylabel("router / peer, log (medians)")
    ax.set_title(
        "the router's ratio to each peer: below 1 the router's figure is lower (better for "
        "TTFT, CPU and RSS; worse for req/s)",
        fontsize=10,
    )
    ax.legend(fontsize=8)


def draw(rows: list[Row], config: Config, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(config.profiles), 2)
    fig = plt.figure(figsize=(7.5 * columns, 20))
    grid = fig.add_gridspec(4, columns)
    for i in range(len(config.profiles)):
        _ttft(fig.add_subplot(grid[0, i]), rows, config, i, "TTFT p50")
        _ttft(fig.add_subplot(grid[1, i]), rows, config, i, "TTFT p99")
    _throughput(fig.add_subplot(grid[2, 0]), rows, config)
    _memory(fig.add_subplot(grid[2, 1]), rows, config)
    if config.peers:
        _ratios(fig.add_subplot(grid[3, :]), rows, config)
    fig.suptitle(
        f"inferops router vs {', '.join(config.peers) or 'direct'}: median of "
        f"{config.repeats} repeat(s), whiskers min..max; every proxy pinned to one core"
        + (" (router-2w: two, shared with the load)" if "router-2w" in config.paths else ""),
        fontsize=12,
    )
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 0.98))  # room for the title
    fig.savefig(out, dpi=90)
    plt.close(fig)


__all__ = ["draw"]
