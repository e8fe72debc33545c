"""The canary analysis' metrics sources against real HTTP servers: a fake Prometheus
answering canned query results (normal, empty, NaN, 500, unreachable, timeout), and router
pods serving real exposition text from a real `RouterMetrics` registry driven by the test."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web
from prometheus_client import generate_latest
from testsupport.aioserve import serving
from testsupport.standin import closed_port_url

from inferops.migration.figures import (
    EngineFigures,
    Figures,
    KindFigures,
    ShadowFigures,
    quantile,
)
from inferops.migration.sources import (
    ERRORS,
    FEATURES,
    FIRST_SCRAPE,
    REQUESTS,
    SHADOW,
    SHED,
    TOKENS,
    TPOT,
    TTFT,
    PrometheusSource,
    ScrapeSource,
    make_source,
    window_of,
)
from inferops.router.metrics import TTFT_BUCKETS, RouterMetrics

NS, BACKEND = "ai", "llama32"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- fake Prometheus ----------------------------------------------------------------------


def sample(value: str, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [1767225600.123, value]}


@dataclass
class FakePrometheus:
    """Answers `/api/v1/query` from `vectors` (first metric name found in the query)."""

    url: str = ""
    vectors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    status: int = 200
    body: Any = None
    """When set, the raw JSON answer to every query."""
    delay: float = 0.0
    queries: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        query = request.query["query"]
        self.queries.append(query)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            error = {"status": "error", "errorType": "internal", "error": "out of memory"}
            return web.json_response(error, status=self.status)
        if self.body is not None:
            return web.json_response(self.body)
        result: list[dict[str, Any]] = []
        # Longest name first: the histogram queries also contain shorter names' prefixes.
        for name in sorted(self.vectors, key=len, reverse=True):
            if name in query:
                result = self.vectors[name]
                break
        data = {"resultType": "vector", "result": result}
        return web.json_response({"status": "success", "data": data})


def getting(path: str, handler: Handler) -> web.Application:
    """An application answering GETs of `path` (aiohttp's route syntax) with `handler`."""
    app = web.Application()
    app.router.add_get(path, handler)
    return app


@pytest.fixture
async def prometheus() -> AsyncIterator[FakePrometheus]:
    fake = FakePrometheus()
    async with serving(getting("/api/v1/query", fake.handle)) as fake.url:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


def median_of(name: str) -> str:
    """The start of the median's query of histogram `name` (a longer key than the name)."""
    return f"histogram_quantile(0.5, sum by (le, engine) (increase({name}_bucket"


def canned(prometheus: FakePrometheus) -> None:
    prometheus.vectors = {
        REQUESTS: [sample("10", engine="vllm"), sample("90", engine="ollama")],
        ERRORS: [sample("1", engine="vllm")],
        SHED: [sample("7", engine="ollama")],
        TOKENS: [sample("80", engine="vllm"), sample("700", engine="ollama")],
        f"{TTFT}_count": [sample("8", engine="vllm"), sample("88", engine="ollama")],
        f"{TPOT}_count": [sample("0", engine="vllm"), sample("80", engine="ollama")],
        f"{TTFT}_bucket": [sample("0.2", engine="vllm"), sample("0.45", engine="ollama")],
        f"{TPOT}_bucket": [sample("NaN", engine="vllm"), sample("0.05", engine="ollama")],
        median_of(TTFT): [sample("0.1", engine="vllm"), sample("0.3", engine="ollama")],
        median_of(TPOT): [sample("NaN", engine="vllm"), sample("0.02", engine="ollama")],
    }


async def test_prometheus_normal_vector(
    prometheus: FakePrometheus, http: httpx.AsyncClient
) -> None:
    canned(prometheus)
    source = PrometheusSource(prometheus.url, http=http)
    figures = await source.figures(NS, BACKEND, "notes", 29.6)
    assert figures == Figures(
        vllm=EngineFigures(
            requests=10,
            errors=1,
            ttft_p95=0.2,
            tpot_p95=None,
            ttft_p50=0.1,
            ttft_count=8,
            output_tokens=80,
        ),
        # Shed requests are reported beside the error rate, not in it.
        ollama=EngineFigures(
            requests=90,
            errors=0,
            ttft_p95=0.45,
            tpot_p95=0.05,
            shed=7,
            ttft_p50=0.3,
            tpot_p50=0.02,
            ttft_count=88,
            tpot_count=80,
            output_tokens=700,
        ),
        problem=None,
        window_seconds=30,
    )
    assert figures.vllm is not None and figures.vllm.error_rate == pytest.approx(0.1)
    assert figures.ollama is not None and figures.ollama.error_rate == 0
    shadow_selector = 'namespace="ai",pod=~"llama32-router-.+",consumer="notes"'
    selector = shadow_selector + ',engine!="none"'
    assert sorted(prometheus.queries) == sorted(
        [
            f"sum by (engine) (increase({REQUESTS}{{{selector}}}[30s]))",
            f"sum by (engine) (increase({ERRORS}{{{selector}}}[30s]))",
            f"sum by (engine) (increase({SHED}{{{selector}}}[30s]))",
            f'sum by (engine) (increase({TOKENS}{{{selector},kind="completion"}}[30s]))',
            f"sum by (engine) (increase({TTFT}_count{{{selector}}}[30s]))",
            f"sum by (engine) (increase({TPOT}_count{{{selector}}}[30s]))",
            f"histogram_quantile(0.95, sum by (le, engine) "
            f"(increase({TTFT}_bucket{{{selector}}}[30s])))",
            f"histogram_quantile(0.95, sum by (le, engine) "
            f"(increase({TPOT}_bucket{{{selector}}}[30s])))",
            f"histogram_quantile(0.5, sum by (le, engine) "
            f"(increase({TTFT}_bucket{{{selector}}}[30s])))",
            f"histogram_quantile(0.5, sum by (le, engine) "
            f"(increase({TPOT}_bucket{{{selector}}}[30s])))",
            # Without engine!="none": the shadow counter has no such series anyway.
            f"sum by (engine, kind, verdict) (increase({SHADOW}{{{shadow_selector}}}[30s]))",
            # By request kind: requests, errors and the p95s (e2e/test_prometheus_source.py
            # runs them on a real Prometheus).
            *source.kind_queries(NS, BACKEND, "notes", 30).values(),
        ]
    )
    assert source.kind_queries(NS, BACKEND, "notes", 30)["requests"] == (
        "sum by (engine, request_kind) (label_replace(label_replace(label_replace("
        f"increase({REQUESTS}{{{selector}}}[30s]), "
        '"request_kind", "chat", "route", "chat|ollama_chat"), '
        '"request_kind", "completions", "route", "completions|ollama_generate"), '
        '"request_kind", "embeddings", "route", "embeddings|ollama_embed|ollama_embeddings"))'
    )


async def test_prometheus_shadow_counts_by_engine_and_verdict(
    prometheus: FakePrometheus, http: httpx.AsyncClient
) -> None:
    canned(prometheus)
    prometheus.vectors[SHADOW] = [
        sample("40", engine="vllm", kind="deterministic", verdict="exact"),
        sample("3.5", engine="vllm", kind="json", verdict="disagree"),
        sample("1", engine="vllm", kind="json", verdict="error"),
        sample("2", engine="vllm", kind="embeddings", verdict="disagree"),
        sample("12", engine="ollama", kind="deterministic", verdict="exact"),
        sample("0", engine="ollama", kind="json", verdict="error"),
        sample("5", engine="ollama", kind="json", verdict="disagree"),  # noise: not vLLM's
    ]
    figures = await PrometheusSource(prometheus.url, http=http).figures(NS, BACKEND, "rag", 30)
    assert figures.problem is None
    assert figures.shadow == ShadowFigures(
        vllm={"exact": 40, "disagree": 5.5, "error": 1},
        ollama={"exact": 12, "error": 0, "disagree": 5},
        disagreeing={"json": 4.5, "embeddings": 2},
    )
    # Nothing mirrored in the window: no shadow figures at all (not zeros).
    prometheus.vectors[SHADOW] = [sample("0", engine="vllm", kind="json", verdict="exact")]
    figures = await PrometheusSource(prometheus.url, http=http).figures(NS, BACKEND, "rag", 30)
    assert figures.problem is None and figures.shadow is None
    prometheus.vectors[SHADOW] = [sample("NaN", engine="vllm", kind="json", verdict="exact")]
    figures = await PrometheusSource(prometheus.url, http=http).figures(NS, BACKEND, "rag", 30)
    assert figures.problem is not None and "shadow count vllm/exact is nan" in figures.problem


def test_window_is_whole_seconds_at_least_one() -> None:
    assert [window_of(w) for w in (0, 0.2, 1.49, 1.5, 2.5, 60)] == [1, 1, 1, 2, 3, 60]
    with pytest.raises(ValueError):
        window_of(math.nan)


async def test_prometheus_custom_selector_and_quoting(
    prometheus: FakePrometheus, http: httpx.AsyncClient
) -> None:
    source = PrometheusSource(
        prometheus.url, selector='kubernetes_namespace="{namespace}",app="{backend}"', http=http
    )
    await source.figures(NS, BACKEND, 'we"ird', 0.3)
    assert all(
        'kubernetes_namespace="ai",app="llama32",consumer="we\\"ird"' in q and "[1s]" in q
        for q in prometheus.queries
    )


async def test_prometheus_empty_result_is_no_data_not_a_problem(
    prometheus: FakePrometheus, http: httpx.AsyncClient
) -> None:
    figures = await PrometheusSource(prometheus.url, http=http).figures(NS, BACKEND, "notes", 60)
    assert figures == Figures(vllm=None, ollama=None, problem=None, window_seconds=60)


async def test_prometheus_one_engine_without_data(
    prometheus: FakePrometheus, http: httpx.AsyncClient
) -> None:
    prometheus.vectors = {REQUESTS: [sample("0", engine="ollama"), sample("3", engine="none")]}
    figures = await PrometheusSource(prometheus.url, http=http).figures(NS, BACKEND, "notes", 60)
    assert figures.problem is None and figures.vllm is None
    assert figures.ollama == EngineFigures(requests=0, errors=0, ttft_p95=None, tpot_p95=None)
    assert figures.ollama.error_rate is None


@pytest.mark.parametrize("value", ["NaN", "+Inf", "-Inf"])
async def test_prometheus_nan_count_is_a_problem(
    prometheus: FakePrometheus, http: httpx.AsyncClient, value: str
) -> None:
    canned(prometheus)
    prometheus.vectors[REQUESTS] = [sample(value, engine="vllm"), sample("5", engine="ollama")]
    figures = await PrometheusSource(prometheus.url, http=http).figures(NS, BACKEND, "notes", 60)
    assert figures.problem is not None and value.lower().lstrip("+") in figures.problem
    assert figures.vllm is None and figures.ollama is None


async def test_prometheus_nan_quantile_is_none_never_a_number(
    prometheus: FakePrometheus, http: httpx.AsyncClient
) -> None:
    canned(prometheus)
    prometheus.vectors[f"{TTFT}_bucket"] = [sample("NaN", engine="vllm")]
    figures = await PrometheusSource(prometheus.url, http=http).figures(NS, BACKEND, "notes", 60)
    assert figures.problem is None
    assert figures.vllm is not None and figures.vllm.ttft_p95 is None
    assert figures.ollama is not None and figures.ollama.ttft_p95 is None


async def test_prometheus_http_500_is_a_problem(
    prometheus: FakePrometheus, http: httpx.AsyncClient
) -> None:
    prometheus.status = 500
    figures = await PrometheusSource(prometheus.url, http=http).figures(NS, BACKEND, "notes", 60)
    assert figures.vllm is None and figures.ollama is None
    assert figures.problem is not None
    assert "HTTP 500" in figures.problem and "out of memory" in figures.problem


@pytest.mark.parametrize(
    "body",
    [
        {"status": "error", "errorType": "bad_data", "error": "parse error"},
        {"status": "success", "data": {"resultType": "matrix", "result": []}},
        {"status": "success", "data": {"resultType": "vector", "result": [{"value": [1]}]}},
        {"status": "success", "data": {"resultType": "vector", "result": [sample("x")]}},
        ["not", "an", "object"],
    ],
    ids=["status-error", "matrix", "no-metric", "not-a-float", "not-an-object"],
)
async def test_prometheus_unexpected_answers_are_problems(
    prometheus: FakePrometheus, http: httpx.AsyncClient, body: Any
) -> None:
    prometheus.body = body
    figures = await PrometheusSource(prometheus.url, http=http).figures(NS, BACKEND, "notes", 60)
    assert figures.problem is not None and figures.vllm is None and figures.ollama is None


async def test_prometheus_unreachable_is_a_problem() -> None:
    url = closed_port_url()
    source = PrometheusSource(url)
    try:
        figures = await source.figures(NS, BACKEND, "notes", 60)
        assert figures.problem is not None and "unreachable" in figures.problem
        assert url in figures.problem
        assert figures.vllm is None and figures.ollama is None
        assert await source.served_revisions(NS, BACKEND) is None
    finally:
        await source.aclose()


async def test_prometheus_timeout_is_a_problem(prometheus: FakePrometheus) -> None:
    prometheus.delay = 1.0
    source = PrometheusSource(prometheus.url, timeout=0.1)
    try:
        figures = await source.figures(NS, BACKEND, "notes", 60)
    finally:
        await source.aclose()
    assert figures.problem is not None and "timed out" in figures.problem


async def test_prometheus_served_revisions(
    prometheus: FakePrometheus, http: httpx.AsyncClient
) -> None:
    source = PrometheusSource(prometheus.url, http=http)
    prometheus.vectors = {
        "inferops_router_table_revision": [
            sample("3735928559", pod="llama32-router-a"),
            sample("12", pod="llama32-router-b"),
        ]
    }
    assert await source.served_revisions(NS, BACKEND) == [12, 3735928559]
    assert prometheus.queries[-1] == (
        'inferops_router_table_revision{namespace="ai",pod=~"llama32-router-.+"}'
    )
    prometheus.vectors["inferops_router_table_revision"].append(sample("NaN", pod="c"))
    assert await source.served_revisions(NS, BACKEND) is None
    prometheus.vectors = {}
    assert await source.served_revisions(NS, BACKEND) is None  # nobody answers: unknown
    prometheus.status = 500
    assert await source.served_revisions(NS, BACKEND) is None


async def test_prometheus_features(prometheus: FakePrometheus, http: httpx.AsyncClient) -> None:
    source = PrometheusSource(prometheus.url, http=http)
    prometheus.vectors = {FEATURES: [sample("5", feature="tools"), sample("2", feature="seed")]}
    assert await source.features(NS, BACKEND, "rag") == {"tools": 5.0, "seed": 2.0}
    assert prometheus.queries[-1] == (
        "sum by (feature) (max_over_time(inferops_router_request_features_total"
        '{namespace="ai",pod=~"llama32-router-.+",consumer="rag"}[1d]))'
    )
    prometheus.vectors = {}
    assert await source.features(NS, BACKEND, "rag") == {}  # none used: nothing to hold
    prometheus.status = 500
    assert await source.features(NS, BACKEND, "rag") is None  # unknown


# -- router pods for ScrapeSource ----------------------------------------------------------


@dataclass
class Pods:
    """Router pods at `<url>/<name>`, each serving its own registry's exposition text."""

    url: str = ""
    metrics: dict[str, RouterMetrics] = field(default_factory=dict)
    pages: dict[str, str] = field(default_factory=dict)
    """A raw page instead of a registry's."""
    failing: set[str] = field(default_factory=set)
    listed: list[str] | None = None
    """The pods `targets` returns (default: every pod)."""

    def pod(self, name: str) -> RouterMetrics:
        self.metrics[name] = RouterMetrics()
        return self.metrics[name]

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["pod"]
        if name in self.failing:
            return web.Response(status=500, text="no")
        if name in self.pages:
            return web.Response(text=self.pages[name])
        return web.Response(body=generate_latest(self.metrics[name].registry))

    async def targets(self, namespace: str, backend: str) -> list[str]:
        assert (namespace, backend) == (NS, BACKEND)
        names = self.listed if self.listed is not None else sorted(self.metrics)
        return [f"{self.url}/{name}" for name in names]


@pytest.fixture
async def pods() -> AsyncIterator[Pods]:
    fake = Pods()
    async with serving(getting("/{pod}/metrics", fake.handle)) as fake.url:
        yield fake


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def traffic(m: RouterMetrics, consumer: str, engine: str, ok: int, failed: int = 0) -> None:
    series = m.series(consumer, engine, "chat")
    for _ in range(ok):
        series.count(200)
    for _ in range(failed):
        series.count(502)
        series.error("connect", fallback=True)


@dataclass
class Scraper:
    """The source under test and its clock; `figures` is one consumer's over a 60 s window."""

    source: ScrapeSource
    clock: Clock

    async def figures(self, consumer: str = "notes") -> Figures:
        return await self.source.figures(NS, BACKEND, consumer, 60)


@pytest.fixture
async def scrape(pods: Pods, http: httpx.AsyncClient) -> Scraper:
    clock = Clock()
    return Scraper(ScrapeSource(pods.targets, http=http, clock=clock), clock)


async def test_scrape_first_call_has_no_window(pods: Pods, scrape: Scraper) -> None:
    traffic(pods.pod("a"), "notes", "vllm", 3)
    figures = await scrape.figures()
    assert figures == Figures(vllm=None, ollama=None, problem=FIRST_SCRAPE)


async def test_scrape_window_is_the_difference(pods: Pods, scrape: Scraper) -> None:
    m = pods.pod("a")
    traffic(m, "notes", "vllm", ok=5, failed=2)
    traffic(m, "notes", "ollama", ok=7)
    m.refused("notes", "chat", 429)  # before an engine: not an attempt
    await scrape.figures()

    traffic(m, "notes", "vllm", ok=3, failed=1)
    traffic(m, "notes", "ollama", ok=4)
    m.series("notes", "vllm", "chat").completion += 40  # output tokens (prompt ones: not)
    m.series("notes", "vllm", "chat").prompt += 1000
    m.refused("notes", "chat", 429)
    m.shed("notes", "ollama", "chat", "queue_full")  # refused for Ollama's overload
    m.shed("notes", "ollama", "chat", "wait_timeout")
    traffic(m, "rag", "vllm", ok=50)  # another consumer
    scrape.clock.now += 30.5
    figures = await scrape.figures()
    vllm = EngineFigures(requests=4, errors=1, ttft_p95=None, tpot_p95=None, output_tokens=40)
    ollama = EngineFigures(requests=4, errors=0, ttft_p95=None, tpot_p95=None, shed=2)
    assert figures == Figures(
        vllm=vllm,
        ollama=ollama,
        problem=None,
        window_seconds=30.5,
        kinds={"chat": KindFigures(vllm, ollama)},  # every request was a chat
    )
    assert figures.vllm is not None and figures.vllm.error_rate == 0.25

    scrape.clock.now += 10
    figures = await scrape.figures()  # nothing happened since
    assert figures.vllm == EngineFigures(requests=0, errors=0, ttft_p95=None, tpot_p95=None)
    assert figures.vllm.error_rate is None
    assert figures.window_seconds == 10


async def test_scrape_shadow_counts_are_the_window_difference(pods: Pods, scrape: Scraper) -> None:
    source, clock = scrape.source, scrape.clock
    m = pods.pod("a")
    traffic(m, "rag", "ollama", ok=10)
    m.series("rag", "vllm", "chat").shadow["deterministic:exact"] = 4
    await source.figures(NS, BACKEND, "rag", 60)
    assert (await source.figures(NS, BACKEND, "rag", 60)).shadow is None  # none since

    m.series("rag", "vllm", "chat").shadow["deterministic:exact"] = 9
    m.series("rag", "vllm", "ollama_chat").shadow["json:disagree"] = 2  # born in the window
    m.series("rag", "ollama", "chat").shadow["deterministic:normalized"] = 3
    m.series("notes", "vllm", "chat").shadow["deterministic:exact"] = 50  # another consumer
    clock.now += 30
    figures = await source.figures(NS, BACKEND, "rag", 60)
    assert figures.problem is None
    assert figures.shadow == ShadowFigures(
        vllm={"exact": 5, "disagree": 2}, ollama={"normalized": 3}, disagreeing={"json": 2}
    )
    # Mirrored requests are not the consumer's requests: vLLM served none of them.
    assert figures.vllm == EngineFigures(requests=0, errors=0, ttft_p95=None, tpot_p95=None)


async def test_scrape_engine_without_series_is_none(pods: Pods, scrape: Scraper) -> None:
    m = pods.pod("a")
    traffic(m, "notes", "ollama", ok=1)
    await scrape.figures()
    traffic(m, "notes", "ollama", ok=2)
    figures = await scrape.figures()
    assert figures.problem is None and figures.vllm is None
    assert figures.ollama is not None and figures.ollama.requests == 2


async def test_scrape_consumers_have_their_own_windows(pods: Pods, scrape: Scraper) -> None:
    m = pods.pod("a")
    traffic(m, "notes", "vllm", ok=1)
    traffic(m, "rag", "vllm", ok=1)
    await scrape.figures()
    await scrape.figures("rag")
    traffic(m, "notes", "vllm", ok=2)
    traffic(m, "rag", "vllm", ok=3)
    rag = await scrape.figures("rag")
    notes = await scrape.figures()  # rag's sample took nothing
    assert rag.vllm is not None and rag.vllm.requests == 3
    assert notes.vllm is not None and notes.vllm.requests == 2


async def test_scrape_series_born_in_the_window_counts_from_zero(
    pods: Pods, scrape: Scraper
) -> None:
    m = pods.pod("a")
    traffic(m, "notes", "ollama", ok=1)
    await scrape.figures()
    traffic(m, "notes", "vllm", ok=3, failed=2)  # vLLM's first requests: new series
    figures = await scrape.figures()
    assert figures.vllm == EngineFigures(requests=5, errors=2, ttft_p95=None, tpot_p95=None)


async def test_scrape_counter_reset(pods: Pods, scrape: Scraper) -> None:
    traffic(pods.pod("a"), "notes", "vllm", ok=10, failed=3)
    await scrape.figures()
    restarted = pods.pod("a")  # the router restarted: its counters start over
    traffic(restarted, "notes", "vllm", ok=2, failed=1)
    figures = await scrape.figures()
    assert figures.vllm == EngineFigures(requests=3, errors=1, ttft_p95=None, tpot_p95=None)


async def test_scrape_sums_pods(pods: Pods, scrape: Scraper) -> None:
    a, b = pods.pod("a"), pods.pod("b")
    traffic(a, "notes", "vllm", ok=1)
    traffic(b, "notes", "vllm", ok=100, failed=10)
    await scrape.figures()
    traffic(a, "notes", "vllm", ok=3, failed=1)
    traffic(b, "notes", "vllm", ok=5)
    traffic(b, "notes", "ollama", ok=6)
    # A third pod appears: its history is not in this window, only its baseline.
    traffic(pods.pod("c"), "notes", "vllm", ok=1000)
    figures = await scrape.figures()
    assert figures.vllm == EngineFigures(requests=9, errors=1, ttft_p95=None, tpot_p95=None)
    assert figures.ollama is not None and figures.ollama.requests == 6
    traffic(pods.metrics["c"], "notes", "vllm", ok=1)
    figures = await scrape.figures()
    assert figures.vllm is not None and figures.vllm.requests == 1


async def test_scrape_quantiles_from_bucket_deltas(pods: Pods, scrape: Scraper) -> None:
    a, b = pods.pod("a"), pods.pod("b")
    for _ in range(50):  # before the window: slow, must not weigh on the quantile
        a.series("notes", "vllm", "chat").ttft.observe(20.0)
    await scrape.figures()
    for m in (a, b):
        series = m.series("notes", "vllm", "chat")
        for _ in range(10):
            series.ttft.observe(0.03)  # bucket (0.025, 0.05]
            series.tpot.observe(0.012)  # bucket (0.01, 0.015]
        m.series("notes", "ollama", "chat").ttft.observe(100.0)  # beyond the last bound
    figures = await scrape.figures()
    assert figures.vllm is not None and figures.ollama is not None
    # 20 observations in (0.025, 0.05]: rank 19 -> 0.025 + 0.025 * 19/20.
    assert figures.vllm.ttft_p95 == pytest.approx(0.025 + 0.025 * 19 / 20)
    assert figures.vllm.tpot_p95 == pytest.approx(0.01 + 0.005 * 19 / 20)
    assert figures.ollama.ttft_p95 == TTFT_BUCKETS[-1]  # +Inf bucket: the highest bound
    assert figures.ollama.tpot_p95 is None  # no observation
    # The median of the same buckets: rank 10 of 20 -> 0.025 + 0.025 * 10/20.
    assert figures.vllm.ttft_p50 == pytest.approx(0.025 + 0.025 * 10 / 20)
    assert figures.vllm.tpot_p50 == pytest.approx(0.01 + 0.005 * 10 / 20)
    # The observations behind them (the window's only: the 50 before it are not counted).
    assert (figures.vllm.ttft_count, figures.vllm.tpot_count) == (20, 20)
    assert (figures.ollama.ttft_count, figures.ollama.tpot_count) == (2, 0)


async def test_scrape_failed_pod_is_a_problem_and_keeps_the_window(
    pods: Pods, scrape: Scraper
) -> None:
    traffic(pods.pod("a"), "notes", "vllm", ok=1)
    traffic(pods.pod("b"), "notes", "vllm", ok=1)
    await scrape.figures()
    traffic(pods.metrics["a"], "notes", "vllm", ok=2)
    pods.failing.add("b")
    scrape.clock.now += 10
    figures = await scrape.figures()
    assert figures.problem is not None and "HTTP 500" in figures.problem
    assert figures.vllm is None and figures.ollama is None
    pods.failing.clear()
    traffic(pods.metrics["b"], "notes", "vllm", ok=4)
    scrape.clock.now += 10
    figures = await scrape.figures()
    assert figures.problem is None and figures.window_seconds == 20  # spans the failed one
    assert figures.vllm is not None and figures.vllm.requests == 6


@pytest.mark.parametrize("page", ["garbage {{{", 'inferops_router_requests_total{consumer="notes"'])
async def test_scrape_unreadable_page_is_a_problem(pods: Pods, scrape: Scraper, page: str) -> None:
    pods.pod("a")
    pods.pages["a"] = page
    figures = await scrape.figures()
    assert figures.problem is not None and "unreadable" in figures.problem


async def test_scrape_nan_counter_is_a_problem(pods: Pods, scrape: Scraper) -> None:
    pods.pod("a")
    line = 'inferops_router_requests_total{consumer="notes",engine="vllm",route="chat",code="200"}'
    pods.pages["a"] = f"# TYPE inferops_router_requests counter\n{line} NaN\n"
    figures = await scrape.figures()
    assert figures.problem is not None and "nan" in figures.problem.lower()


async def test_scrape_unreachable_and_no_pods_and_lister_failure(
    pods: Pods, http: httpx.AsyncClient
) -> None:
    async def unreachable(namespace: str, backend: str) -> list[str]:
        return [closed_port_url()]

    async def broken(namespace: str, backend: str) -> list[str]:
        raise RuntimeError("API server down")

    async def empty(namespace: str, backend: str) -> list[str]:
        return []

    for targets, words in (
        (unreachable, "unreachable"),
        (broken, "API server down"),
        (empty, "no ready router pod"),
    ):
        source = ScrapeSource(targets, http=http)
        figures = await source.figures(NS, BACKEND, "notes", 60)
        assert figures.problem is not None and words in figures.problem
        assert figures.vllm is None and figures.ollama is None
        assert await source.served_revisions(NS, BACKEND) is None


async def test_scrape_served_revisions(pods: Pods, scrape: Scraper) -> None:
    pods.pod("a").table_revision.set(3735928559)
    pods.pod("b").table_revision.set(7)
    assert await scrape.source.served_revisions(NS, BACKEND) == [7, 3735928559]
    pods.pages["b"] = "# an old router without the gauge\nup 1\n"
    assert await scrape.source.served_revisions(NS, BACKEND) is None
    del pods.pages["b"]
    pods.failing.add("a")
    assert await scrape.source.served_revisions(NS, BACKEND) is None


async def test_scrape_forget(pods: Pods, scrape: Scraper) -> None:
    traffic(pods.pod("a"), "notes", "vllm", ok=1)
    await scrape.figures()
    scrape.source.forget(NS, BACKEND)
    assert (await scrape.figures()).problem == FIRST_SCRAPE


# -- the contract with the router, the factory, the pure parts ----------------------------


def test_metric_names_are_the_routers() -> None:
    m = RouterMetrics()
    series = m.series("notes", "vllm", "chat")
    series.count(200)
    series.error("connect")
    series.ttft.observe(0.1)
    series.tpot.observe(0.01)
    m.table_revision.set(1)
    m.shed("notes", "ollama", "chat", "queue_full")
    series.shadow["json:exact"] = 1
    m.features("notes", "ollama", "ollama_chat", ["tools"])
    text = generate_latest(m.registry).decode()
    series.completion += 3
    for name in (
        REQUESTS,
        ERRORS,
        SHED,
        TOKENS,
        SHADOW,
        FEATURES,
        f"{TTFT}_bucket",
        f"{TPOT}_bucket",
        f"{TTFT}_count",
        f"{TPOT}_count",
    ):
        assert f"\n{name}{{" in text, name
    assert "\ninferops_router_table_revision " in text


async def test_make_source() -> None:
    async def targets(namespace: str, backend: str) -> list[str]:
        return []

    prometheus = make_source("http://prometheus:9090/", targets)
    assert isinstance(prometheus, PrometheusSource)
    assert prometheus.url == "http://prometheus:9090"
    scrape = make_source(None, targets)
    assert isinstance(scrape, ScrapeSource) and scrape.targets is targets
    assert isinstance(make_source("", targets), ScrapeSource)
    await prometheus.aclose()
    await scrape.aclose()


INF = math.inf


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [(0.1, 0), (0.2, 10), (INF, 10)], 0.15),
        (0.95, [(0.1, 0), (0.2, 10), (INF, 10)], 0.195),
        (0.5, [(1.0, 10), (INF, 10)], 0.5),  # the lowest bucket starts at 0
        (0.95, [(1.0, 1), (2.0, 2), (INF, 10)], 2.0),  # rank in +Inf: highest finite bound
        (0.5, [(INF, 10), (0.2, 10), (0.1, 0)], 0.15),  # any order
        (0.5, [(0.1, 6), (0.2, 3), (INF, 10)], 0.1 * 5 / 6),  # decreasing: running maximum
        (0.5, [(0.1, 2), (0.1, 2), (0.2, 6), (0.2, 4), (INF, 10)], 0.1 + 0.1 / 6),  # summed
        (0.1, [(-1.0, 5), (INF, 10)], -1.0),  # a non-positive lowest bound is returned as is
        (0.0, [(0.1, 0), (0.2, 10), (INF, 10)], 0.0),  # Prometheus: NaN (0/0)
        (1.0, [(0.1, 0), (0.2, 10), (INF, 10)], 0.2),
        (0.5, [(0.1, 0), (0.2, 0), (INF, 0)], None),  # no observation
        (0.5, [(0.1, 0), (0.2, 10)], None),  # no +Inf bucket
        (0.5, [(INF, 10)], None),  # a single bucket
        (0.5, [], None),
        (0.5, [(0.1, math.nan), (INF, 10)], None),
    ],
)
def test_quantile(q: float, buckets: list[tuple[float, float]], expected: float | None) -> None:
    result = quantile(q, buckets)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


def test_quantile_rejects_a_q_outside_zero_one() -> None:
    with pytest.raises(ValueError):
        quantile(1.5, [(1.0, 1), (INF, 1)])


def test_engine_figures_never_hold_nan() -> None:
    assert EngineFigures(requests=0, errors=0, ttft_p95=None, tpot_p95=None).error_rate is None
    assert EngineFigures(requests=4, errors=1, ttft_p95=0.1, tpot_p95=None).error_rate == 0.25
    for bad in (
        {"requests": math.nan},
        {"errors": math.inf},
        {"requests": -1.0},
        {"ttft_p95": math.nan},
        {"tpot_p95": math.inf},
    ):
        fields: dict[str, Any] = {
            "requests": 1.0,
            "errors": 0.0,
            "ttft_p95": None,
            "tpot_p95": None,
            **bad,
        }
        with pytest.raises(ValueError):
            EngineFigures(**fields)
    assert Figures.failed("x").engine("vllm") is None
    with pytest.raises(ValueError):
        Figures.failed("x").engine("tgi")


async def test_scrape_features_sum_pods(pods: Pods, scrape: Scraper) -> None:
    source = scrape.source
    a, b = pods.pod("a"), pods.pod("b")
    a.features("rag", "ollama", "ollama_chat", ["tools", "top_k"])
    b.features("rag", "vllm", "chat", ["tools"])
    b.features("notes", "vllm", "chat", ["mirostat"])
    assert await source.features(NS, BACKEND, "rag") == {"tools": 2.0, "top_k": 1.0}
    pods.failing.add("b")
    assert await source.features(NS, BACKEND, "rag") is None


# -- by request kind ------------------------------------------------------------------------


def by_kind_of(name: str) -> str:
    """The start of the per-kind query of `name` (longer than the name: matched first)."""
    return f"(label_replace(label_replace(label_replace(increase({name}"


async def test_prometheus_figures_by_kind(
    prometheus: FakePrometheus, http: httpx.AsyncClient
) -> None:
    canned(prometheus)
    prometheus.vectors |= {
        by_kind_of(REQUESTS): [
            sample("8", engine="vllm", request_kind="chat"),
            sample("2", engine="vllm", request_kind="embeddings"),
            sample("60", engine="ollama", request_kind="chat"),
            sample("30", engine="ollama", request_kind="embeddings"),
            sample("4", engine="vllm"),  # a route of no kind: left out
        ],
        by_kind_of(ERRORS): [sample("1", engine="vllm", request_kind="embeddings")],
        by_kind_of(f"{TTFT}_bucket"): [
            sample("0.2", engine="vllm", request_kind="chat"),
            sample("0.4", engine="ollama", request_kind="chat"),
            sample("NaN", engine="ollama", request_kind="embeddings"),  # never streamed
        ],
    }
    figures = await PrometheusSource(prometheus.url, http=http).figures(NS, BACKEND, "rag", 30)
    assert figures.problem is None
    assert figures.kinds == {
        "chat": KindFigures(
            vllm=EngineFigures(requests=8, errors=0, ttft_p95=0.2, tpot_p95=None),
            ollama=EngineFigures(requests=60, errors=0, ttft_p95=0.4, tpot_p95=None),
        ),
        "embeddings": KindFigures(
            vllm=EngineFigures(requests=2, errors=1, ttft_p95=None, tpot_p95=None),
            ollama=EngineFigures(requests=30, errors=0, ttft_p95=None, tpot_p95=None),
        ),
    }
    # The figures as a whole are the canned ones, as before.
    assert figures.vllm is not None and figures.vllm.requests == 10
    prometheus.vectors[by_kind_of(ERRORS)] = [
        sample("NaN", engine="vllm", request_kind="embeddings")
    ]
    figures = await PrometheusSource(prometheus.url, http=http).figures(NS, BACKEND, "rag", 30)
    assert figures.problem is not None
    assert "nan for the embeddings errors of consumer rag on vllm" in figures.problem


async def test_prometheus_routes(prometheus: FakePrometheus, http: httpx.AsyncClient) -> None:
    source = PrometheusSource(prometheus.url, http=http)
    prometheus.vectors = {
        REQUESTS: [
            sample("12", route="chat"),
            sample("3", route="ollama_embed"),
            sample("1", route="models"),  # not an inference route
        ]
    }
    assert await source.routes(NS, BACKEND, "rag") == {"chat": 12.0, "ollama_embed": 3.0}
    assert prometheus.queries[-1] == (
        "sum by (route) (max_over_time(inferops_router_requests_total"
        '{namespace="ai",pod=~"llama32-router-.+",consumer="rag",engine!="none"}[1d]))'
    )
    prometheus.status = 500
    assert await source.routes(NS, BACKEND, "rag") is None  # unknown


async def test_scrape_figures_and_routes_by_kind(pods: Pods, scrape: Scraper) -> None:
    """Real router pages: the kinds come from each series' route, both API forms of a kind
    together, summed over pods; mirrored (shadow) requests are not the consumer's."""
    a, b = pods.pod("a"), pods.pod("b")
    await scrape.figures("rag")
    for m, route in ((a, "chat"), (b, "ollama_chat")):
        m.series("rag", "vllm", route).count(200)
        m.series("rag", "ollama", route).count(200)
    b.series("rag", "vllm", "ollama_embed").count(500)
    b.series("rag", "vllm", "ollama_embed").error("upstream_5xx", fallback=True)
    b.series("rag", "ollama", "ollama_embed").count(200)
    b.series("rag", "vllm", "completions").shadow["deterministic:exact"] = 5
    a.series("rag", "vllm", "chat").ttft.observe(0.3)
    scrape.clock.now += 30
    figures = await scrape.figures("rag")
    # The shadow counter's series carries its route (completions), but no request of it.
    assert {kind: f.requests() for kind, f in figures.kinds.items()} == {
        "chat": 4,
        "embeddings": 2,
        "completions": 0,
    }
    chat = figures.kinds["chat"]
    assert chat.vllm is not None and chat.ollama is not None
    assert (chat.vllm.requests, chat.ollama.requests) == (2, 2)
    assert chat.vllm.ttft_p95 is not None and chat.ollama.ttft_p95 is None
    embeddings = figures.kinds["embeddings"]
    assert embeddings.vllm is not None and embeddings.vllm.error_rate == 1.0
    assert embeddings.ollama is not None and embeddings.ollama.error_rate == 0.0
    assert await scrape.source.routes(NS, BACKEND, "rag") == {
        "chat": 2.0,
        "ollama_chat": 2.0,
        "ollama_embed": 2.0,
    }
    pods.failing.add("b")
    assert await scrape.source.routes(NS, BACKEND, "rag") is None
