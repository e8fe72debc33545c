"""The router's Prometheus metrics, in a registry of its own, and the per-request recorder.

These are the canary analysis' source: both engines measured at the same place, per consumer
and engine. `requests_total` counts engine attempts, so a request that fell back from vLLM to
Ollama counts once for each (the failed vLLM attempt is what the analysis must see); requests
refused before an engine was chosen count under `engine="none"`.

The per-request figures are plain numbers in a `Series` per (consumer, engine, route), turned
into metric families only when scraped (`DataPathCollector`): prometheus_client's own
metrics take a lock and check their state on every update, several times per request, which
the data path (one thread, the event loop) does not need.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from inferops.api.routing import REVISION_METRIC, ROUTE_KINDS

NO_ENGINE = "none"
UNKNOWN_CONSUMER = "unknown"
CLIENT_CLOSED = 499  # nginx's code for "the client went away first"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Per output token: ~1 ms (a small model on a big GPU) to ~2 s (a large one on a CPU), denser
# where GPU decoding lands (10-100 ms) so a vLLM-vs-Ollama difference shows in the quantiles.
TPOT_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1,
    2,
)


LABELS = ["consumer", "engine", "route"]

HELP = {
    "requests": "Engine attempts (and requests refused before one), by consumer, engine, route "
    "and HTTP status; code 499 means the client went away first.",
    "errors": "Failures attributed to an engine (connect error, 5xx, timeout, broken stream), "
    "whether or not a fallback hid them from the client.",
    "latency": "Time from a request's arrival to its last byte, by the engine that answered.",
    "ttft": "Time from a streaming request's arrival to the first body byte sent to the client.",
    "tpot": "Time between output tokens of a streaming request: (last byte - first body byte) "
    "/ (completion tokens - 1), from the engine's `usage`; streams with fewer than two "
    "completion tokens or without usage are not observed.",
    "tokens": "Tokens reported by the engine's `usage`, by kind (prompt or completion).",
    "fallbacks": "Requests retried on the fallback engine; `engine` is the engine that failed.",
    "in_flight": "Engine attempts under way.",
    "rerouted": "Requests sent to Ollama whatever the consumer's weight, by reason: "
    "`vllm_does_not_serve_kind` (vLLM does not serve the request kind), or a feature vLLM "
    "cannot honour as started (`vllm_has_no_tool_parser`, `vllm_not_multimodal`, "
    "`vllm_refuses_suffix`, `num_ctx_above_vllm_max_model_len`).",
    "features": "Requests by the Ollama options and request features they use (the names of "
    "inferops.api.features; the OpenAI API: `tools` only), by the engine chosen.",
    "shed": "Requests refused for overload (503 with Retry-After) because `engine` was at its "
    "admission limit: `queue_full` (no room to wait) or `wait_timeout` (no slot in time).",
    "shadow": "Mirrored requests of a consumer at a shadow step, by kind and verdict: "
    "`engine=vllm` compares vLLM's answer with Ollama's, `engine=ollama` Ollama's with its "
    "own (the noise floor). Not counted in the consumer's requests.",
}


class Histo:
    """A histogram's buckets as plain numbers (Prometheus' `le`: a value on a bound counts in
    that bound's bucket)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative, as exposed."""
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append((_le(bound), total))
        return out


def _le(bound: float) -> str:
    """A bucket's `le` label as prometheus_client writes it (`1.0`, `+Inf`)."""
    text: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return text


class Series:
    """The figures of one (consumer, engine, route)."""

    __slots__ = (
        "by_code",
        "by_reason",
        "completion",
        "fallbacks",
        "features",
        "in_flight",
        "labels",
        "latency",
        "prompt",
        "rerouted",
        "shadow",
        "shed",
        "tpot",
        "ttft",
    )

    def __init__(self, consumer: str, engine: str, route: str) -> None:
        self.labels = (consumer, engine, route)
        self.in_flight = 0
        self.latency = Histo(LATENCY_BUCKETS)
        self.ttft = Histo(TTFT_BUCKETS)
        self.tpot = Histo(TPOT_BUCKETS)
        self.prompt = 0
        self.completion = 0
        self.by_code: dict[int, int] = {}
        self.by_reason: dict[str, int] = {}
        self.fallbacks: dict[str, int] = {}
        self.shed: dict[str, int] = {}
        self.shadow: dict[str, int] = {}
        """`kind:verdict` -> mirrored requests (`inferops.router.shadow`)."""
        self.rerouted: dict[str, int] = {}
        self.features: dict[str, int] = {}

    def count(self, code: int) -> None:
        by_code = self.by_code
        by_code[code] = by_code.get(code, 0) + 1

    def error(self, reason: str, fallback: bool = False) -> None:
        by_reason = self.by_reason
        by_reason[reason] = by_reason.get(reason, 0) + 1
        if fallback:
            self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1


class DataPathCollector(Collector):
    """Exposes the `Series` of a `RouterMetrics` as metric families."""

    def __init__(self, metrics: RouterMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return list(self.families(()))

    def collect(self) -> Iterable[Metric]:
        return list(self.families(list(self.metrics.all_series())))

    @staticmethod
    def families(series: Iterable[Series]) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "inferops_router_requests", HELP["requests"], labels=[*LABELS, "code"]
        )
        errors = CounterMetricFamily(
            "inferops_router_errors", HELP["errors"], labels=[*LABELS, "reason"]
        )
        latency = HistogramMetricFamily(
            "inferops_router_request_duration_seconds", HELP["latency"], labels=LABELS
        )
        ttft = HistogramMetricFamily(
            "inferops_router_time_to_first_token_seconds", HELP["ttft"], labels=LABELS
        )
        tpot = HistogramMetricFamily(
            "inferops_router_time_per_output_token_seconds", HELP["tpot"], labels=LABELS
        )
        tokens = CounterMetricFamily(
            "inferops_router_tokens", HELP["tokens"], labels=[*LABELS, "kind"]
        )
        fallbacks = CounterMetricFamily(
            "inferops_router_fallbacks", HELP["fallbacks"], labels=[*LABELS, "reason"]
        )
        shed = CounterMetricFamily("inferops_router_shed", HELP["shed"], labels=[*LABELS, "reason"])
        shadow = CounterMetricFamily(
            "inferops_router_shadow", HELP["shadow"], labels=[*LABELS, "kind", "verdict"]
        )
        rerouted = CounterMetricFamily(
            "inferops_router_rerouted",
            HELP["rerouted"],
            labels=[*LABELS, "kind", "reason"],
        )
        features = CounterMetricFamily(
            "inferops_router_request_features",
            HELP["features"],
            labels=[*LABELS, "feature"],
        )
        in_flight = GaugeMetricFamily(
            "inferops_router_in_flight_requests", HELP["in_flight"], labels=["consumer", "engine"]
        )
        flying: dict[tuple[str, str], int] = {}
        for one in series:
            labels = list(one.labels)
            for code, n in one.by_code.items():
                requests.add_metric([*labels, str(code)], n)
            for reason, n in one.by_reason.items():
                errors.add_metric([*labels, reason], n)
            for reason, n in one.fallbacks.items():
                fallbacks.add_metric([*labels, reason], n)
            for reason, n in one.shed.items():
                shed.add_metric([*labels, reason], n)
            for kind_verdict, n in one.shadow.items():
                shadow.add_metric([*labels, *kind_verdict.split(":", 1)], n)
            for reason, n in one.rerouted.items():
                kind = ROUTE_KINDS.get(labels[2], labels[2])
                rerouted.add_metric([*labels, kind, reason], n)
            for feature, n in one.features.items():
                features.add_metric([*labels, feature], n)
            if one.labels[1] == NO_ENGINE:  # refused before an engine: counted, not timed
                continue
            latency.add_metric(labels, one.latency.buckets(), one.latency.sum)
            ttft.add_metric(labels, one.ttft.buckets(), one.ttft.sum)
            tpot.add_metric(labels, one.tpot.buckets(), one.tpot.sum)
            tokens.add_metric([*labels, "prompt"], one.prompt)
            tokens.add_metric([*labels, "completion"], one.completion)
            key = (labels[0], labels[1])
            flying[key] = flying.get(key, 0) + one.in_flight
        for (consumer, engine), n in flying.items():
            in_flight.add_metric([consumer, engine], n)
        yield from (requests, errors, latency, ttft, tpot, tokens, fallbacks, shed)
        yield from (shadow, rerouted, features, in_flight)


class RouterMetrics:
    """The metric families: the data path's as `Series` (see the module's docstring), the
    routing table's as prometheus_client metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._series: dict[tuple[str, str, str], Series] = {}
        r.register(DataPathCollector(self))
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
        self.table_metrics: tuple[Counter | Gauge, ...] = (
            self.weight,
            self.table_generation,
            self.table_revision,
            self.table_stale,
            self.table_loads,
        )
        """The series of the installed table (a worker of several renders these from its own
        state and the data path's from every worker: `inferops.router.podmetrics`)."""

    def series(self, consumer: str, engine: str, route: str) -> Series:
        key = (consumer, engine, route)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = Series(consumer, engine, route)
        return found

    def all_series(self) -> list[Series]:
        return list(self._series.values())

    def rerouted(self, consumer: str, engine: str, route: str, reason: str) -> None:
        """A request sent to `engine` because of its kind, not its consumer's weight."""
        by_kind = self.series(consumer, engine, route).rerouted
        by_kind[reason] = by_kind.get(reason, 0) + 1

    def features(self, consumer: str, engine: str, route: str, used: list[str]) -> None:
        """A request sent to `engine` uses `used` (names of `inferops.api.features`)."""
        counts = self.series(consumer, engine, route).features
        for name in used:
            counts[name] = counts.get(name, 0) + 1

    def refused(self, consumer: str, route: str, code: int) -> None:
        self.series(consumer, NO_ENGINE, route).count(code)

    def shed(self, consumer: str, engine: str, route: str, reason: str) -> None:
        """A request refused (503) because `engine` was at its admission limit: counted as a
        refusal, and as shed for that engine and `reason`."""
        self.refused(consumer, route, 503)
        shed = self.series(consumer, engine, route).shed
        shed[reason] = shed.get(reason, 0) + 1


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
        series.in_flight += 1

    def failed(self, code: int, reason: str, fallback: bool) -> None:
        """The current attempt failed before anything reached the client."""
        self.active = False
        series = self.series
        assert series is not None
        series.in_flight -= 1
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
        series = self.series
        if series is not None:
            if prompt:
                series.prompt += prompt
            if completion:
                series.completion += completion
                self.completion = completion

    def done(self, code: int) -> None:
        """The current attempt ended and the client has its answer (or went away). Only the
        first call counts, so every exit path may call it."""
        if not self.active or self.series is None:
            return
        self.active = False
        series = self.series
        now = time.monotonic()
        series.in_flight -= 1
        series.count(code)
        series.latency.observe(now - self.start)
        # n tokens arrive over n - 1 gaps after the first; the first token's own wait is TTFT.
        if self.first_at is not None and self.completion >= 2:
            series.tpot.observe((now - self.first_at) / (self.completion - 1))


__all__ = [
    "CLIENT_CLOSED",
    "NO_ENGINE",
    "UNKNOWN_CONSUMER",
    "DataPathCollector",
    "Exchange",
    "RouterMetrics",
    "Series",
]
