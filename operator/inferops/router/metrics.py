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

NO_ENGINE = "none"
UNKNOWN_CONSUMER = "unknown"
CLIENT_CLOSED = 499  # nginx's code for "the client went away first"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


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
        self.table_loads = Counter(
            "inferops_router_table_loads",
            "Routing table loads, by outcome (installed, unchanged, invalid).",
            ["outcome"],
            registry=r,
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def child(self, family: Any, *labels: str) -> Any:
        key = (id(family), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = family.labels(*labels)
        return found

    def refused(self, consumer: str, route: str, code: int) -> None:
        self.child(self.requests, consumer, NO_ENGINE, route, str(code)).inc()


class Exchange:
    """Records one request's life into the metrics: attempts, first byte, outcome."""

    __slots__ = ("active", "consumer", "engine", "first_at", "metrics", "route", "start")

    def __init__(self, metrics: RouterMetrics, consumer: str, route: str, start: float) -> None:
        self.metrics = metrics
        self.consumer = consumer
        self.route = route
        self.start = start
        self.engine = NO_ENGINE
        self.first_at = 0.0
        self.active = False

    def begin(self, engine: str) -> None:
        """An attempt on `engine` starts."""
        self.engine = engine
        self.active = True
        self.metrics.child(self.metrics.in_flight, self.consumer, engine).inc()

    def failed(self, code: int, reason: str, fallback: bool) -> None:
        """The current attempt failed before anything reached the client."""
        self.active = False
        m = self.metrics
        m.child(m.in_flight, self.consumer, self.engine).dec()
        m.child(m.requests, self.consumer, self.engine, self.route, str(code)).inc()
        m.child(m.errors, self.consumer, self.engine, self.route, reason).inc()
        if fallback:
            m.child(m.fallbacks, self.consumer, self.engine, self.route, reason).inc()

    def first_byte(self) -> None:
        """The first body byte of a stream was written to the client."""
        self.first_at = time.monotonic()
        m = self.metrics
        m.child(m.ttft, self.consumer, self.engine, self.route).observe(self.first_at - self.start)

    def error(self, reason: str) -> None:
        """The current attempt failed after bytes were sent (no fallback possible)."""
        m = self.metrics
        m.child(m.errors, self.consumer, self.engine, self.route, reason).inc()

    def tokens(self, prompt: int | None, completion: int | None) -> None:
        m = self.metrics
        if prompt:
            m.child(m.tokens, self.consumer, self.engine, self.route, "prompt").inc(prompt)
        if completion:
            m.child(m.tokens, self.consumer, self.engine, self.route, "completion").inc(completion)

    def done(self, code: int) -> None:
        """The current attempt ended and the client has its answer (or went away). Only the
        first call counts, so every exit path may call it."""
        if not self.active:
            return
        self.active = False
        m = self.metrics
        m.child(m.in_flight, self.consumer, self.engine).dec()
        m.child(m.requests, self.consumer, self.engine, self.route, str(code)).inc()
        m.child(m.latency, self.consumer, self.engine, self.route).observe(
            time.monotonic() - self.start
        )


__all__ = ["CLIENT_CLOSED", "NO_ENGINE", "UNKNOWN_CONSUMER", "Exchange", "RouterMetrics"]
