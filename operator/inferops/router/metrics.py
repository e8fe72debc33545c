"""The router's Prometheus metrics, in a registry of its own, and the per-request recorder.

These are the canary analysis' source: both engines measured at the same place, per consumer
and engine. `requests_total` counts engine attempts, so a request that fell back from vLLM to
Ollama counts once for each (the failed vLLM attempt is what the analysis must see); requests
refused before an engine was chosen count under `engine="none"`.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from inferops.api.routing import REVISION_METRIC

NO_ENGINE = "none"
UNKNOWN_CONSUMER = "unknown"
CLIENT_CLOSED = 499  # nginx's code for "the client went away first"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Per output token: ~1 ms (a small model on a big GPU) to ~2 s (a large one on a CPU), denser
# where GPU decoding lands (10-100 ms) so a vLLM-vs-Ollama difference shows in the quantiles.
TPOT_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25,
    0.5, 1, 2,
)  # fmt: skip


class RouterMetrics:
    """The metric families, plus a cache of labelled children: `labels()` takes a lock and
    builds a key on every call, which the data path should not pay per request."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "inferops_router_requests",
            "Engine attempts (and requests refused before one), by consumer, engine, route "
            "and HTTP status; code 499 means the client went away first.",
            ["consumer", "engine", "route", "code"],
            registry=r,
        )
        self.errors = Counter(
            "inferops_router_errors",
            "Failures attributed to an engine (connect error, 5xx, timeout, broken stream), "
            "whether or not a fallback hid them from the client.",
            ["consumer", "engine", "route", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "inferops_router_request_duration_seconds",
            "Time from a request's arrival to its last byte, by the engine that answered.",
            ["consumer", "engine", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "inferops_router_time_to_first_token_seconds",
            "Time from a streaming request's arrival to the first body byte sent to the client.",
            ["consumer", "engine", "route"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "inferops_router_time_per_output_token_seconds",
            "Time between output tokens of a streaming request: (last byte - first body byte) "
            "/ (completion tokens - 1), from the engine's `usage`; streams with fewer than "
            "two completion tokens or without usage are not observed.",
            ["consumer", "engine", "route"],
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "inferops_router_tokens",
            "Tokens reported by the engine's `usage`, by kind (prompt or completion).",
            ["consumer", "engine", "route", "kind"],
            registry=r,
        )
        self.fallbacks = Counter(
            "inferops_router_fallbacks",
            "Requests retried on the fallback engine; `engine` is the engine that failed.",
            ["consumer", "engine", "route", "reason"],
            registry=r,
        )
        self.in_flight = Gauge(
            "inferops_router_in_flight_requests",
            "Engine attempts under way.",
            ["consumer", "engine"],
            registry=r,
        )
        self.weight = Gauge(
            "inferops_router_consumer_weight",
            "Percent of a consumer's requests for vLLM as set in the installed table, and as "
            "applied after engine readiness (`effective`).",
            ["consumer", "kind"],
            registry=r,
        )
        self.table_generation = Gauge(
            "inferops_router_table_generation",
            "How many routing tables this process has installed.",
            registry=r,
        )
        self.table_revision = Gauge(
            REVISION_METRIC,
            "The `revision` of the installed routing table (a checksum the operator sets), so "
            "the operator can tell when every router serves the table it wrote.",
            registry=r,
        )
        self.table_stale = Gauge(
            "inferops_router_table_stale",
            "1 while the router serves its last good table because its source no longer "
            "holds a usable one (the ConfigMap deleted, or its content rejected); 0 when it "
            "serves what the source holds.",
            registry=r,
        )
        self.table_loads = Counter(
            "inferops_router_table_loads",
            "Routing table loads, by outcome (installed, unchanged, invalid).",
            ["outcome"],
            registry=r,
        )
        self._series: dict[tuple[str, str, str], Series] = {}

    def series(self, consumer: str, engine: str, route: str) -> Series:
        key = (consumer, engine, route)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = Series(self, consumer, engine, route)
        return found

    def refused(self, consumer: str, route: str, code: int) -> None:
        self.series(consumer, NO_ENGINE, route).count(code)


class Series:
    """The labelled children of one (consumer, engine, route), resolved once: `labels()`
    takes a lock and builds a key on every call, which the data path should not pay per
    request."""

    __slots__ = (
        "_by_code",
        "_by_reason",
        "_fallbacks",
        "_labels",
        "_metrics",
        "completion",
        "in_flight",
        "latency",
        "prompt",
        "tpot",
        "ttft",
    )

    def __init__(self, metrics: RouterMetrics, consumer: str, engine: str, route: str) -> None:
        self._metrics = metrics
        self._labels = (consumer, engine, route)
        self.in_flight = metrics.in_flight.labels(consumer, engine)
        self.latency = metrics.latency.labels(consumer, engine, route)
        self.ttft = metrics.ttft.labels(consumer, engine, route)
        self.tpot = metrics.tpot.labels(consumer, engine, route)
        self.prompt = metrics.tokens.labels(consumer, engine, route, "prompt")
        self.completion = metrics.tokens.labels(consumer, engine, route, "completion")
        self._by_code: dict[int, Any] = {}
        self._by_reason: dict[str, Any] = {}
        self._fallbacks: dict[str, Any] = {}

    def count(self, code: int) -> None:
        child = self._by_code.get(code)
        if child is None:
            child = self._by_code[code] = self._metrics.requests.labels(*self._labels, str(code))
        child.inc()

    def error(self, reason: str, fallback: bool = False) -> None:
        child = self._by_reason.get(reason)
        if child is None:
            child = self._by_reason[reason] = self._metrics.errors.labels(*self._labels, reason)
        child.inc()
        if fallback:
            child = self._fallbacks.get(reason)
            if child is None:
                child = self._fallbacks[reason] = self._metrics.fallbacks.labels(
                    *self._labels, reason
                )
            child.inc()


class Exchange:
    """Records one request's life into the metrics: attempts, first byte, outcome.

    Time per output token needs no per-chunk work: the first body byte's time and the
    completion count are kept, and the one division happens in `done()`."""

    __slots__ = (
        "active",
        "completion",
        "consumer",
        "engine",
        "first_at",
        "metrics",
        "route",
        "series",
        "start",
    )

    def __init__(self, metrics: RouterMetrics, consumer: str, route: str, start: float) -> None:
        self.metrics = metrics
        self.consumer = consumer
        self.route = route
        self.start = start
        self.engine = NO_ENGINE
        self.series: Series | None = None
        self.active = False
        self.first_at: float | None = None
        """When the first body byte of a stream reached the client (monotonic clock)."""
        self.completion = 0
        """Completion tokens the engine reported for the current attempt."""

    def begin(self, engine: str) -> None:
        """An attempt on `engine` starts."""
        self.engine = engine
        self.active = True
        self.first_at = None
        self.completion = 0
        self.series = series = self.metrics.series(self.consumer, engine, self.route)
        series.in_flight.inc()

    def failed(self, code: int, reason: str, fallback: bool) -> None:
        """The current attempt failed before anything reached the client."""
        self.active = False
        series = self.series
        assert series is not None
        series.in_flight.dec()
        series.count(code)
        series.error(reason, fallback)

    def first_byte(self) -> None:
        """The first body byte of a stream was written to the client."""
        if self.series is not None:
            self.first_at = now = time.monotonic()
            self.series.ttft.observe(now - self.start)

    def error(self, reason: str) -> None:
        """The current attempt failed after bytes were sent (no fallback possible)."""
        if self.series is not None:
            self.series.error(reason)

    def tokens(self, prompt: int | None, completion: int | None) -> None:
        if self.series is not None:
            if prompt:
                self.series.prompt.inc(prompt)
            if completion:
                self.series.completion.inc(completion)
                self.completion = completion

    def done(self, code: int) -> None:
        """The current attempt ended and the client has its answer (or went away). Only the
        first call counts, so every exit path may call it."""
        if not self.active or self.series is None:
            return
        self.active = False
        series = self.series
        now = time.monotonic()
        series.in_flight.dec()
        series.count(code)
        series.latency.observe(now - self.start)
        # n tokens arrive over n - 1 gaps after the first; the first token's own wait is TTFT.
        if self.first_at is not None and self.completion >= 2:
            series.tpot.observe((now - self.first_at) / (self.completion - 1))


__all__ = ["CLIENT_CLOSED", "NO_ENGINE", "UNKNOWN_CONSUMER", "Exchange", "RouterMetrics", "Series"]
