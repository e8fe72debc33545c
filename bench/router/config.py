"""The benchmark's settings: which paths, which stream profiles, for how long, and the targets
the router is held to."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

PATHS = ("direct", "router", "router-2w", "nginx", "vllm-router", "litellm")
"""The ways to the same backends, measured side by side: straight to them, through this
router, through this router as two worker processes (`--workers 2`), and through each peer
(nginx; vLLM's Rust router; LiteLLM's proxy)."""

DEFAULT_PATHS = PATHS
"""Measured unless `--paths` says otherwise. `router-2w` uses both cores (the load shares
one of them), so beside the one-core peers it is not a like-for-like comparison: it is there
for the scaling from one worker to two and the 512-stream target."""

PROXIES = PATHS[1:]

PEERS = ("router-2w", "nginx", "vllm-router", "litellm")
"""The proxies the router's figures are divided by (router / peer) in the table and plot
(router/router-2w: one worker against two)."""

ROUTER_WORKERS = {"router": 1, "router-2w": 2}
"""The router's paths, by their `--workers`."""

HOST = "bench"
"""The consumer's Host header (the router tells consumers apart by it)."""
MODEL = "llama3.2"
WEIGHT = 50
"""The consumer's vLLM share: half of the requests to each backend."""


@dataclass(frozen=True)
class Profile:
    """How the backends pace a stream: the first event after `ttft_ms`, then `tokens` events
    `token_ms` apart. Sent with every streaming request (the stand-in's `x_standin` body
    field, which every proxy passes through; the run checks that it arrives)."""

    name: str
    ttft_ms: float
    token_ms: float
    tokens: int

    def describe(self) -> str:
        return f"{self.ttft_ms:g} ms, then {self.tokens} x {self.token_ms:g} ms"

    def standin(self) -> dict[str, float]:
        return {"ttft_ms": self.ttft_ms, "token_ms": self.token_ms, "tokens": self.tokens}


BASELINE = Profile("baseline", ttft_ms=50.0, token_ms=20.0, tokens=16)
"""The profile of the earlier runs (and of the targets): 50 events/s per stream."""
REALISTIC = Profile("realistic", ttft_ms=20.0, token_ms=10.0, tokens=32)
"""An engine's pace: 100 tokens/s per stream, so twice the events per second to relay."""


@dataclass(frozen=True)
class Targets:
    """What the router is held to (issue 10); the run prints PASS or MISS for each. The
    comparisons are with peers measured in the same run."""

    profile: str = REALISTIC.name
    """The streaming targets are judged on this profile (100 tokens/s per stream)."""
    concurrency: int = 64
    added_ttft_p99_ms: float = 2.0
    """At `concurrency` streams, (router - direct) TTFT p99, median over repeats."""
    nginx_latency_factor: float = 1.5
    """The router's added TTFT (p50 and p99) at most this many times nginx's."""
    nginx_rps_share: float = 0.8
    """Non-streaming requests/s on one core: at least this share of nginx's (the aim), and
    more than vllm-router's (the target)."""
    hold_rss_mib: float = 100.0
    """Router RSS per worker with `hold_streams` open streams (worst repeat)."""
    workers_concurrency: int = 512
    workers_added_ttft_p99_ms: float = 10.0
    """At `workers_concurrency` streams through the router with two workers."""


@dataclass(frozen=True)
class Config:
    """One benchmark run."""

    repeats: int = 5
    duration_s: float = 10.0
    """Measured time of each streaming and throughput phase."""
    warmup_s: float = 1.0
    """Time before each phase's measurement (connections opened, caches warm)."""
    concurrencies: tuple[int, ...] = (1, 64, 512)
    profiles: tuple[Profile, ...] = (BASELINE, REALISTIC)
    """The streaming phases run once per profile."""
    paths: tuple[str, ...] = DEFAULT_PATHS
    """The paths measured (`--paths`; direct is always one of them)."""
    tokens: int = BASELINE.tokens
    """Tokens of a non-streaming answer (its size)."""
    throughput_connections: int = 64
    hold_streams: int = 1000
    hold_token_ms: float = 1000.0
    """The held streams trickle one event per second..."""
    hold_tokens: int = 150
    """...for up to this many events: longer than a slow proxy takes to open them all, so that
    all are open at once. The client closes them once measured."""
    hold_open_timeout_s: float = 100.0
    """The proxy's RSS is read once all held streams had their first event, or after this."""
    proxy_cpus: frozenset[int] = frozenset()
    """The core every proxy is pinned to (all run all the time; one is measured at a time)."""
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
        # An earlier run is judged by today's targets (its own are in its file).
        fields["targets"] = Targets()
        fields["concurrencies"] = tuple(fields["concurrencies"])
        if "profiles" in fields:
            fields["profiles"] = tuple(Profile(**p) for p in fields["profiles"])
        else:  # a run from before profiles: one, the backends' pace then
            pace = {k: fields.pop(k) for k in ("ttft_ms", "token_ms") if k in fields}
            fields["profiles"] = (
                Profile(BASELINE.name, **pace, tokens=fields.get("tokens", BASELINE.tokens)),
            )
        # A run from before the peers measured direct, router and nginx.
        fields["paths"] = tuple(fields.get("paths", ("direct", "router", "nginx")))
        fields["proxy_cpus"] = frozenset(fields["proxy_cpus"])
        fields["load_cpus"] = frozenset(fields["load_cpus"])
        return cls(**fields)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["proxy_cpus"] = sorted(self.proxy_cpus)
        doc["load_cpus"] = sorted(self.load_cpus)
        doc["concurrencies"] = list(self.concurrencies)
        doc["paths"] = list(self.paths)
        doc["profiles"] = [asdict(p) for p in self.profiles]
        return doc

    def cpus_of(self, path: str) -> frozenset[int]:
        """The cores a proxy is pinned to: the proxy core; for the router's two workers that
        core and the first load core (on two cores: both, shared with the load generators
        and backends, as a pod's workers share a node)."""
        if ROUTER_WORKERS.get(path, 1) > 1:
            return self.proxy_cpus | {min(self.load_cpus)}
        return self.proxy_cpus

    @property
    def proxies(self) -> tuple[str, ...]:
        """The measured paths that go through a proxy."""
        return tuple(p for p in self.paths if p != "direct")

    @property
    def peers(self) -> tuple[str, ...]:
        """The measured proxies the router is compared with (none without the router)."""
        if "router" not in self.paths:
            return ()
        return tuple(p for p in self.paths if p in PEERS)


QUICK = {"repeats": 1, "duration_s": 2.0, "warmup_s": 0.5, "retries": 0}
"""`--quick`: one short repeat, to check that everything runs (no re-runs of disturbed
phases: with five paths and two profiles they would triple its time; `--retries` still
applies)."""


def split_cpus() -> tuple[frozenset[int], frozenset[int]]:
    """One core for the proxy under test, the rest for everything else (on one core, both
    share it and the numbers say little)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) == 1:
        return frozenset(cpus), frozenset(cpus)
    return frozenset(cpus[:1]), frozenset(cpus[1:])


__all__ = [
    "BASELINE",
    "DEFAULT_PATHS",
    "HOST",
    "MODEL",
    "PATHS",
    "PEERS",
    "PROXIES",
    "QUICK",
    "REALISTIC",
    "ROUTER_WORKERS",
    "WEIGHT",
    "Config",
    "Profile",
    "Targets",
    "split_cpus",
]
