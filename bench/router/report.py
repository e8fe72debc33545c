"""From raw phases to the figures the benchmark reports: per-repeat values, added latency
(proxy minus direct within the same repeat), min/median/max over repeats, the router's ratio
to each peer (router / nginx, router / vllm-router, router / litellm), the targets'
PASS/MISS, and the readable table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bench.router.config import Config, Profile
from bench.router.stats import ratio, spread

Phase = dict[str, Any]
Getter = Callable[[Phase], float]

LATENCY_FLOOR_MS = 0.01
"""An added latency at or below this is zero within noise: no ratio against it."""


@dataclass
class Row:
    """One reported figure: min/median/max over repeats per path, and router / each peer."""

    section: str
    figure: str
    unit: str
    values: dict[str, dict[str, float]]
    """Path -> spread; paths the figure does not apply to are absent."""
    ratios: dict[str, float]
    """Peer -> median(router) / median(peer); NaN when meaningless."""


def _metric(phase: Phase, *keys: str) -> float:
    value: Any = phase
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return math.nan
        value = value[key]
    return float(value)


def _select(phases: list[Phase], kind: str, **match: Any) -> list[Phase]:
    return [p for p in phases if p["kind"] == kind and all(p.get(k) == v for k, v in match.items())]


def stream_section(profile: Profile, concurrency: int) -> str:
    return f"streaming {profile.name} ({profile.describe()}), {concurrency} concurrent"


def _by_repeat(phases: list[Phase], path: str) -> dict[int, Phase]:
    return {p["repeat"]: p for p in phases if p["path"] == path}


class Table:
    """Accumulates rows from one kind of phase."""

    def __init__(self, config: Config) -> None:
        self.rows: list[Row] = []
        self.paths = config.paths
        self.proxies = config.proxies
        self.peers = config.peers

    def absolute(
        self,
        section: str,
        figure: str,
        unit: str,
        phases: list[Phase],
        get: Getter,
        proxies_only: bool = False,
        compare: bool = True,
    ) -> Row:
        """Min/median/max per path; `compare=False` for a figure that describes the
        conditions (noise, errors, the split), where router / peer means nothing."""
        paths = self.proxies if proxies_only else self.paths
        values = {
            path: spread([get(p) for p in _by_repeat(phases, path).values()]) for path in paths
        }
        row = self._add(section, figure, unit, values, 0.0)
        if not compare:
            row.ratios = {}
        return row

    def added(self, section: str, figure: str, phases: list[Phase], get: Getter) -> Row:
        """Proxy minus direct, repeat by repeat (both measured in the same repeat). A ratio
        to a peer is given only when that peer added time in every repeat: a ratio to a value
        that is zero within noise says nothing."""
        direct = _by_repeat(phases, "direct")
        values: dict[str, dict[str, float]] = {}
        for path in self.proxies:
            proxied = _by_repeat(phases, path)
            diffs = [get(proxied[r]) - get(direct[r]) for r in proxied if r in direct]
            values[path] = spread(diffs)
        row = self._add(section, figure, "ms", values, LATENCY_FLOOR_MS)
        for peer in row.ratios:
            if not values[peer]["min"] > LATENCY_FLOOR_MS:
                row.ratios[peer] = math.nan
        return row

    def _add(
        self,
        section: str,
        figure: str,
        unit: str,
        values: dict[str, dict[str, float]],
        floor: float,
    ) -> Row:
        router = values.get("router")
        ratios = {}
        for peer in self.peers:
            other = values.get(peer)
            ratios[peer] = math.nan
            if router is not None and other is not None:
                ratios[peer] = ratio(router["median"], other["median"], floor)
        row = Row(section, figure, unit, values, ratios)
        self.rows.append(row)
        return row


def _at(*keys: str, scale: float = 1.0) -> Getter:
    """A figure nested in a phase (NaN where the phase has none), times ``scale``."""
    return lambda p: _metric(p, *keys) * scale


def _of(key: str, scale: int = 1) -> Getter:
    """A figure every phase of its kind has."""
    return lambda p: p[key] * scale


@dataclass(frozen=True)
class Figure:
    """One absolute figure of a section (``Table.absolute``'s arguments but the phases)."""

    name: str
    unit: str
    get: Getter
    proxies_only: bool = False
    compare: bool = True


def _absolutes(table: Table, section: str, phases: list[Phase], figures: list[Figure]) -> None:
    for f in figures:
        table.absolute(section, f.name, f.unit, phases, f.get, f.proxies_only, f.compare)


# How busy the load cores were (near 100%: the client side limits the figures), and how much
# of the proxy's core went to other processes (a noisy neighbour); "idle proxies' CPU" is the
# part of "others" that the proxies not measured, idle on the same core, took.
NOISE = [
    Figure("load cores busy", "%", _at("load_cores", "busy", scale=100), compare=False),
    Figure("proxy core used by others", "%", _at("proxy_core", "others", scale=100), compare=False),
    Figure(
        "proxy busy after the phase ended", "s", _at("settle_s"), proxies_only=True, compare=False
    ),
    Figure("idle proxies' CPU", "%", _at("idle_proxies_cpu_util", scale=100), compare=False),
]
ERRORS = Figure("errors", "", _of("errors"), compare=False)
PROXY_CPU = Figure(
    "proxy CPU per 1,000 requests", "s", _at("proxy", "cpu_s_per_1k"), proxies_only=True
)
PROXY_RSS = Figure("proxy RSS", "MiB", _at("proxy", "rss_mib"), proxies_only=True)
REQUESTS = Figure("requests/s", "req/s", _of("requests_per_s"))

THROUGHPUT = [
    REQUESTS,
    Figure(
        "requests/s per core of proxy CPU",
        "req/s",
        lambda p: 1000.0 / _metric(p, "proxy", "cpu_s_per_1k"),
        proxies_only=True,
    ),
    Figure("latency p50", "ms", _at("wrk", "latency_ms", "50")),
    Figure("latency p99", "ms", _at("wrk", "latency_ms", "99")),
    PROXY_CPU,
    Figure("proxy CPU busy", "%", _at("proxy", "cpu_util", scale=100), proxies_only=True),
    PROXY_RSS,
    Figure("share sent to backend a", "%", _of("backend_share_a", 100), compare=False),
    *NOISE,
    ERRORS,
]

HOLD = [
    Figure("streams open at once", "", _of("backend_open_streams"), compare=False),
    Figure("proxy RSS while held", "MiB", _at("proxy", "rss_mib"), proxies_only=True),
    Figure("proxy RSS before", "MiB", _at("proxy", "rss_before_mib"), proxies_only=True),
    Figure("time to open all", "s", _of("open_all_s")),
    Figure("engine streams closed, after the clients left", "s", _at("upstream_close_s")),
    Figure("burst TTFT p99", "ms", _at("ttft_ms", "p99")),
    Figure("listen queue overflows", "", _at("listen_overflows"), compare=False),
    ERRORS,
]


def summarise(phases: list[Phase], config: Config) -> list[Row]:
    table = Table(config)
    for profile in config.profiles:
        for c in config.concurrencies:
            section = stream_section(profile, c)
            ph = _select(phases, "stream", profile=profile.name, concurrency=c)
            _streaming(table, section, ph)
    section = f"non-streaming, {config.throughput_connections} connections (wrk)"
    _absolutes(table, section, _select(phases, "throughput"), THROUGHPUT)
    section = f"{config.hold_streams} concurrent open streams held"
    _absolutes(table, section, _select(phases, "hold"), HOLD)
    return table.rows


def _streaming(table: Table, section: str, ph: list[Phase]) -> None:
    table.absolute(section, "TTFT p50", "ms", ph, _at("ttft_ms", "p50"))
    table.absolute(section, "TTFT p99", "ms", ph, _at("ttft_ms", "p99"))
    table.added(section, "added TTFT p50", ph, _at("ttft_ms", "p50"))
    table.added(section, "added TTFT p99", ph, _at("ttft_ms", "p99"))
    table.added(section, "added end-to-end p50", ph, _at("e2e_ms", "p50"))
    table.added(section, "added end-to-end p99", ph, _at("e2e_ms", "p99"))
    _absolutes(table, section, ph, [REQUESTS, PROXY_CPU, PROXY_RSS, *NOISE, ERRORS])


@dataclass
class Verdict:
    """One target and whether the router met it."""

    target: str
    limit: str
    measured: float
    unit: str
    basis: str
    passed: bool

    @property
    def word(self) -> str:
        return "PASS" if self.passed else "MISS"


def _find(rows: list[Row], section_start: str, figure: str) -> Row:
    for row in rows:
        if row.section.startswith(section_start) and row.figure == figure:
            return row
    raise KeyError(f"{section_start}: {figure}")


def verdicts(rows: list[Row], config: Config) -> list[Verdict]:
    """The router's targets (none when the router was not measured); a target relative to a
    peer only when that peer was measured."""
    if "router" not in config.paths:
        return []
    t = config.targets
    out: list[Verdict] = []
    profile = next((p for p in config.profiles if p.name == t.profile), None)
    if profile is not None and t.concurrency in config.concurrencies:
        out += _latency_verdicts(rows, config, stream_section(profile, t.concurrency))
    if profile is not None and t.workers_concurrency in config.concurrencies:
        section = stream_section(profile, t.workers_concurrency)
        values = _find(rows, section, "added TTFT p99").values.get(ROUTER_2W)
        if values is not None:
            value = values["median"]
            out.append(
                Verdict(
                    f"added TTFT p99 at {t.workers_concurrency} streams, router with 2 workers",
                    f"<= {t.workers_added_ttft_p99_ms:g} ms",
                    value,
                    "ms",
                    _basis(values, "median over repeats"),
                    value <= t.workers_added_ttft_p99_ms,
                )
            )
    out += _throughput_verdicts(rows, config)
    rss = _find(rows, f"{config.hold_streams} ", "proxy RSS while held").values["router"]["max"]
    out.append(
        Verdict(
            f"router RSS with {config.hold_streams} open streams, one worker",
            f"<= {t.hold_rss_mib:g} MiB",
            rss,
            "MiB",
            "worst repeat",
            rss <= t.hold_rss_mib,
        )
    )
    return out


ROUTER_2W = "router-2w"
"""The path of the router with two worker processes."""


def _basis(values: dict[str, float], basis: str) -> str:
    """`basis`, saying so when the added time's repeats span zero or its median is below
    it (a proxy cannot be faster than no proxy): the verdict then says only that no added
    time was measurable."""
    if values["min"] <= 0.0 <= values["max"] or values["median"] <= 0.0:
        return (
            f"{basis}; within noise of zero, repeats {_num(values['min'])}.."
            f"{_num(values['max'])} ms"
        )
    return basis


def _latency_verdicts(rows: list[Row], config: Config, section: str) -> list[Verdict]:
    t = config.targets
    out = []
    for q in ("p50", "p99"):
        row = _find(rows, section, f"added TTFT {q}")
        value = row.values["router"]["median"]
        medians = _basis(row.values["router"], "medians over repeats")
        where = f"added TTFT {q} at {t.concurrency} streams ({t.profile} profile)"
        if q == "p99":
            out.append(
                Verdict(
                    f"{where}, vs direct",
                    f"<= {t.added_ttft_p99_ms:g} ms",
                    value,
                    "ms",
                    _basis(row.values["router"], "median over repeats"),
                    value <= t.added_ttft_p99_ms,
                )
            )
        if "nginx" in row.values:
            # Within noise of zero, nginx's added time is taken as the floor: 1.5x of nothing
            # would ask for less than a measurement can tell.
            nginx = max(row.values["nginx"]["median"], LATENCY_FLOOR_MS)
            limit = t.nginx_latency_factor * nginx
            out.append(
                Verdict(
                    f"{where}, vs nginx",
                    f"<= {t.nginx_latency_factor:g} x nginx's ({_num(nginx)} ms)",
                    value,
                    "ms",
                    medians,
                    value <= limit,
                )
            )
        if "vllm-router" in row.values:
            peer = max(row.values["vllm-router"]["median"], LATENCY_FLOOR_MS)
            out.append(
                Verdict(
                    f"{where}, vs vllm-router",
                    f"< vllm-router's ({_num(peer)} ms)",
                    value,
                    "ms",
                    medians,
                    value < peer,
                )
            )
    return out


def _throughput_verdicts(rows: list[Row], config: Config) -> list[Verdict]:
    t = config.targets
    rate = _find(rows, "non-streaming", "requests/s").values
    per_core = _find(rows, "non-streaming", "requests/s per core of proxy CPU").values
    router = rate["router"]["median"]
    basis = (
        f"medians over repeats; router {_num(per_core['router']['median'])} per core of its own CPU"
    )
    out = []
    if "vllm-router" in rate:
        peer = rate["vllm-router"]["median"]
        out.append(
            Verdict(
                "non-streaming requests/s, one router process on one core, vs vllm-router",
                f"> vllm-router's ({_num(peer)})",
                router,
                "req/s",
                basis,
                router > peer,
            )
        )
    if "nginx" in rate:
        limit = t.nginx_rps_share * rate["nginx"]["median"]
        out.append(
            Verdict(
                "non-streaming requests/s, one router process on one core, vs nginx (the aim)",
                f">= {t.nginx_rps_share:g} x nginx's ({_num(rate['nginx']['median'])})",
                router,
                "req/s",
                basis,
                router >= limit,
            )
        )
    return out


def _num(value: float) -> str:
    if math.isnan(value):
        return "-"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _cell(values: dict[str, float] | None, repeats: int) -> str:
    if not values or not values.get("n"):
        return ""
    if repeats == 1:
        return _num(values["median"])
    return f"{_num(values['median'])} [{_num(values['min'])}..{_num(values['max'])}]"


def render(rows: list[Row], results: list[Verdict], config: Config) -> str:
    """The table printed at the end of a run (and quoted in docs/benchmarks.md): a column per
    path, then the router's ratio to each peer."""
    repeats = config.repeats
    header = (
        "figure",
        "unit",
        *config.paths,
        *(f"router/{peer}" for peer in config.peers),
    )
    lines: list[tuple[str, ...]] = []
    section = None
    table: list[tuple[str, ...] | str] = []
    for row in rows:
        if row.section != section:
            section = row.section
            table.append(section)
        cells = (
            "  " + row.figure,
            row.unit,
            *(_cell(row.values.get(path), repeats) for path in config.paths),
            *(_num(row.ratios.get(peer, math.nan)) for peer in config.peers),
        )
        table.append(cells)
        lines.append(cells)
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(len(header))]

    def fmt(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest])

    spread_note = "median [min..max] over" if repeats > 1 else "one repeat,"
    out = [
        f"Router benchmark: {spread_note} {repeats} repeat(s); "
        "added = path minus direct in the same repeat",
        fmt(header),
        "-" * len(fmt(header)),
    ]
    for item in table:
        out.append(item if isinstance(item, str) else fmt(item))
    if not results:
        return "\n".join(out)
    out.append("")
    out.append("Targets (router):")
    for v in results:
        out.append(
            f"  {v.word}  {v.target}: {_num(v.measured)} {v.unit} ({v.basis}), target {v.limit}"
        )
    return "\n".join(out)


def rows_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]


def verdicts_json(results: list[Verdict]) -> list[dict[str, Any]]:
    return [{**asdict(v), "result": v.word} for v in results]


__all__ = [
    "Row",
    "Verdict",
    "render",
    "rows_json",
    "stream_section",
    "summarise",
    "verdicts",
    "verdicts_json",
]
