"""The benchmark's settings: what is measured, for how long, and the targets it is held to."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

PATHS = ("direct", "router", "nginx")
"""The three ways to the same backends, measured side by side."""

PROXIES = ("router", "nginx")

HOST = "bench"
"""The consumer's Host header (the router tells consumers apart by it)."""
MODEL = "llama3.2"
WEIGHT = 50
"""The consumer's vLLM share: half of the requests to each backend."""


@dataclass(frozen=True)
class Targets:
    """What the router is held to; the run prints PASS or MISS for each."""

    added_ttft_p50_ms: float = 1.0
    """At `target_concurrency` streams, median over repeats of (router - direct) TTFT p50."""
    added_ttft_p99_ms: float = 5.0
    target_concurrency: int = 64
    requests_per_second: float = 5000.0
    """Non-streaming, through one router process on one core (median over repeats)."""
    hold_rss_mib: float = 150.0
    """Router RSS with `hold_streams` open streams (worst repeat)."""


@dataclass(frozen=True)
class Config:
    """One benchmark run."""

    repeats: int = 5
    duration_s: float = 10.0
    """Measured time of each streaming and throughput phase."""
    warmup_s: float = 1.0
    """Time before each phase's measurement (connections opened, caches warm)."""
    concurrencies: tuple[int, ...] = (1, 64, 512)
    ttft_ms: float = 50.0
    token_ms: float = 20.0
    tokens: int = 16
    throughput_connections: int = 64
    hold_streams: int = 1000
    hold_token_ms: float = 1000.0
    """The held streams trickle one event per second..."""
    hold_tokens: int = 10
    """...for this many events, so they end on their own."""
    proxy_cpus: frozenset[int] = frozenset()
    """The core the router and nginx are pinned to (one at a time)."""
    load_cpus: frozenset[int] = frozenset()
    """The cores of the load generators and backends."""
    disturbed: float = 0.15
    """A phase during which other processes took more than this share of the proxy's core or
    of the load cores is run again..."""
    retries: int = 2
    """...at most this many times, after a pause; the least disturbed attempt is kept."""
    retry_pause_s: float = 5.0
    profile: bool = False
    """Also profile the router under the throughput load with py-spy."""
    targets: Targets = field(default_factory=Targets)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Config:
        """The inverse of `to_json` (reading an earlier run's results)."""
        fields = dict(doc)
        fields["targets"] = Targets(**fields.get("targets", {}))
        fields["concurrencies"] = tuple(fields["concurrencies"])
        fields["proxy_cpus"] = frozenset(fields["proxy_cpus"])
        fields["load_cpus"] = frozenset(fields["load_cpus"])
        return cls(**fields)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["proxy_cpus"] = sorted(self.proxy_cpus)
        doc["load_cpus"] = sorted(self.load_cpus)
        doc["concurrencies"] = list(self.concurrencies)
        return doc


QUICK = {"repeats": 1, "duration_s": 2.0, "warmup_s": 0.5}
"""`--quick`: one short repeat, to check that everything runs."""


def split_cpus() -> tuple[frozenset[int], frozenset[int]]:
    """One core for the proxy under test, the rest for everything else (on one core, both
    share it and the numbers say little)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) == 1:
        return frozenset(cpus), frozenset(cpus)
    return frozenset(cpus[:1]), frozenset(cpus[1:])


__all__ = [
    "HOST",
    "MODEL",
    "PATHS",
    "PROXIES",
    "QUICK",
    "WEIGHT",
    "Config",
    "Targets",
    "split_cpus",
]
