"""The canary analysis' figures from a real Prometheus scraping a real router process.

The router runs as its own process, fed a routing table file, in front of two engine
stand-ins (testsupport/standin.py) in this event loop; the official `openai` client sends
real requests through it; Debian's Prometheus (testsupport/prometheus.py) scrapes it every second
with the `namespace` and `pod` labels Kubernetes discovery would give a router pod, so that
`PrometheusSource`'s default selector finds it. No Kubernetes cluster is involved.

Prometheus' `increase()` extrapolates to the window's edges, so its counts are the requests
sent times a factor a little above 1 (the same for every series of one target); the
`ScrapeSource` reading of the same router is exact. Both are checked against what was sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from testsupport.markers import needs
from testsupport.programs import RouterProcess
from testsupport.prometheus import Prometheus
from testsupport.standin import Behaviour, EngineStandin, running

from inferops.migration.figures import EngineFigures, Figures
from inferops.migration.sources import PrometheusSource, ScrapeSource, window_of

pytestmark = needs("prometheus")

NAMESPACE, BACKEND, CONSUMER = "shop", "llama32", "notes"
HOST = "llama32-notes"
MODEL = "llama3.2"
REVISION = 3735928559
OK = Behaviour(words=["Hello", " from", " vllm"], delay=0.06, chunk_delay=0.01)
FAILING = Behaviour(fail_status=500)
SELECTOR = f'namespace="{NAMESPACE}",pod=~"{BACKEND}-router-.+",consumer="{CONSUMER}"'


@pytest.fixture
async def engines() -> AsyncIterator[tuple[EngineStandin, ...]]:
    async with running("vllm", "ollama") as started:
        yield started


@pytest.fixture
async def router(
    engines: tuple[EngineStandin, ...], tmp_path: Path
) -> AsyncIterator[RouterProcess]:
    vllm, ollama = engines
    table = {
        "model": MODEL,
        "engines": {"vllm": {"url": vllm.url}, "ollama": {"url": ollama.url}},
        "consumers": [{"name": CONSUMER, "hosts": [HOST], "weight": 100, "api": "chat"}],
        "fallback": True,
        "timeouts": {"connectSeconds": 2, "firstByteSeconds": 10, "totalSeconds": 30},
        "revision": REVISION,
    }
    path = tmp_path / "routes.json"
    path.write_text(json.dumps(table))
    process = RouterProcess(["--table-file", str(path)], tmp_path / "router.log")
    await asyncio.to_thread(process.start)
    yield process
    await asyncio.to_thread(process.stop)
    print(f"router log {process.process.log_path}")


@pytest.fixture
async def prometheus(router: RouterProcess, tmp_path: Path) -> AsyncIterator[Prometheus]:
    labels = {"namespace": NAMESPACE, "pod": f"{BACKEND}-router-7d9f-x2k4q"}
    server = Prometheus(tmp_path / "prometheus", [(f"127.0.0.1:{router.port}", labels)])
    await asyncio.to_thread(server.start)
    try:
        await asyncio.to_thread(server.wait_for_targets_up)
        yield server
    finally:
        await asyncio.to_thread(server.stop)
        print(f"prometheus log {server.log_path}:\n{server.log_tail()}")


def consumer_client(router: RouterProcess) -> openai.AsyncOpenAI:
    """The consumer's official client, through the router, without retries."""
    return openai.AsyncOpenAI(
        base_url=f"{router.url}/v1",
        api_key="unused",
        max_retries=0,
        timeout=20,
        default_headers={"Host": HOST},
    )


async def chat(client: openai.AsyncOpenAI) -> None:
    """One streaming chat request; every one must succeed (fallback hides vLLM's 500s)."""
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks and chunks[-1].usage is not None


async def send(client: openai.AsyncOpenAI, vllm: EngineStandin, ok: int, failing: int) -> None:
    vllm.behaviour = OK
    for _ in range(ok):
        await chat(client)
    vllm.behaviour = FAILING
    for _ in range(failing):
        await chat(client)
    vllm.behaviour = OK


async def scraped(http: httpx.AsyncClient, url: str, total: int, timeout: float = 10) -> None:
    """Waits until Prometheus holds `total` engine attempts for the consumer."""
    expr = f'sum(inferops_router_requests_total{{{SELECTOR},engine!="none"}})'
    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        body = (await http.get(f"{url}/api/v1/query", params={"query": expr})).json()
        result = body["data"]["result"]
        seen = float(result[0]["value"][1]) if result else None
        if seen == total:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"prometheus did not see {total} attempts in {timeout}s; last {seen}")


async def test_prometheus_source_reads_the_routers_figures(
    router: RouterProcess, prometheus: Prometheus, engines: tuple[EngineStandin, ...]
) -> None:
    vllm, ollama = engines
    client = consumer_client(router)

    async def targets(namespace: str, backend: str) -> list[str]:
        assert (namespace, backend) == (NAMESPACE, BACKEND)
        return [router.url]

    async with httpx.AsyncClient(timeout=5) as http:
        source = PrometheusSource(prometheus.url, http=http)
        scrape = ScrapeSource(targets, http=http)
        assert await source.served_revisions(NAMESPACE, BACKEND) == [REVISION]
        assert await scrape.served_revisions(NAMESPACE, BACKEND) == [REVISION]
        assert await source.served_revisions("elsewhere", BACKEND) is None

        # Warm-up: every series exists before the window (Prometheus cannot see the first
        # value of a series born between two scrapes), and is large enough that the
        # extrapolation of `increase()` is not clamped at zero differently per series.
        await send(client, vllm, ok=4, failing=2)
        await scraped(http, prometheus.url, total=4 + 2 + 2)
        assert (await scrape.figures(NAMESPACE, BACKEND, CONSUMER, 10)).problem is not None
        await asyncio.sleep(3)  # the window starts on a flat stretch
        burst_start = time.monotonic()

        ok, failing = 12, 4
        await send(client, vllm, ok=ok, failing=failing)
        exact = await scrape.figures(NAMESPACE, BACKEND, CONSUMER, 10)
        await scraped(http, prometheus.url, total=8 + ok + 2 * failing)
        await asyncio.sleep(3)  # ... and ends on one
        window = time.monotonic() - burst_start + 2.0
        figures = await source.figures(NAMESPACE, BACKEND, CONSUMER, window)

    await client.close()
    print(f"prometheus: {figures}\nscraped: {exact}\nwindow {window:.2f}s")  # on failure
    assert vllm.hits == 4 + 2 + ok + failing and ollama.hits == 2 + failing

    # The scraping source: exact counts of the burst.
    assert exact.problem is None and exact.vllm is not None and exact.ollama is not None
    assert (exact.vllm.requests, exact.vllm.errors) == (ok + failing, failing)
    assert (exact.ollama.requests, exact.ollama.errors) == (failing, 0)

    # Prometheus: the same, up to `increase()`'s extrapolation to the window's edges (less
    # than two scrape intervals out of the window), which scales every series alike.
    assert figures.problem is None, figures.problem
    w = window_of(window)
    assert figures.window_seconds == w
    assert figures.vllm is not None and figures.ollama is not None
    counts = {
        "vllm requests": (figures.vllm.requests, ok + failing),
        "vllm errors": (figures.vllm.errors, failing),
        "ollama requests": (figures.ollama.requests, failing),
    }
    factors = {name: got / sent for name, (got, sent) in counts.items()}
    most = w / (w - 2.2)
    assert all(0.999 <= f <= most for f in factors.values()), (factors, figures)
    assert max(factors.values()) == pytest.approx(min(factors.values()), rel=1e-6), factors
    assert figures.ollama.errors == 0
    assert figures.vllm.error_rate == pytest.approx(failing / (ok + failing), rel=1e-6)

    # Latencies: vLLM's stand-in waits 60 ms before answering and 10 ms per chunk; Ollama's
    # answers at once. The p95s land in the matching buckets on both sources.
    for each in (figures, exact):
        v, o = each.vllm, each.ollama
        assert isinstance(v, EngineFigures) and isinstance(o, EngineFigures)
        assert v.ttft_p95 is not None and 0.05 < v.ttft_p95 <= 0.25, each
        assert o.ttft_p95 is not None and o.ttft_p95 < v.ttft_p95, each
        assert v.tpot_p95 is not None and o.tpot_p95 is not None, each
        assert o.tpot_p95 < v.tpot_p95 <= 0.25, each

    empty = Figures(vllm=None, ollama=None, problem=None, window_seconds=w)
    async with httpx.AsyncClient(timeout=5) as http:
        other = PrometheusSource(prometheus.url, http=http)
        assert await other.figures(NAMESPACE, BACKEND, "rag", window) == empty


async def embed(http: httpx.AsyncClient, url: str, count: int) -> None:
    """`count` Ollama-API embeddings requests; each succeeds (on Ollama, after vLLM's
    failure, by fallback)."""
    for _ in range(count):
        answer = await http.post(
            f"{url}/api/embed", json={"model": MODEL, "input": "Hello"}, headers={"Host": HOST}
        )
        assert answer.status_code == 200, answer.text


async def test_prometheus_source_reads_the_figures_by_request_kind(
    router: RouterProcess, prometheus: Prometheus, engines: tuple[EngineStandin, EngineStandin]
) -> None:
    """The per-kind queries (PromQL's label_replace from the route) on a real Prometheus: a
    consumer at 100% whose chats pass on vLLM and whose Ollama-API embeddings all fail
    there (500, then served by Ollama through the fallback)."""
    vllm, ollama = engines
    vllm.behaviour = Behaviour(
        words=["Hello", " from", " vllm"], delay=0.02, fail_paths={"/v1/embeddings": 500}
    )
    client = openai.AsyncOpenAI(
        base_url=f"{router.url}/v1",
        api_key="unused",
        max_retries=0,
        timeout=20,
        default_headers={"Host": HOST},
    )
    async with httpx.AsyncClient(timeout=10) as http:
        source = PrometheusSource(prometheus.url, http=http)
        # Warm-up, as above: every series exists before the window.
        for _ in range(3):
            await chat(client)
        await embed(http, router.url, 2)
        await scraped(http, prometheus.url, total=3 + 2 * 2)
        await asyncio.sleep(3)
        start = time.monotonic()
        chats, embeds = 10, 6
        for _ in range(chats):
            await chat(client)
        await embed(http, router.url, embeds)
        await scraped(http, prometheus.url, total=3 + 2 * 2 + chats + 2 * embeds)
        await asyncio.sleep(3)
        window = time.monotonic() - start + 2.0
        figures = await source.figures(NAMESPACE, BACKEND, CONSUMER, window)
        routes = await source.routes(NAMESPACE, BACKEND, CONSUMER)
    await client.close()
    print(f"prometheus: {figures}\nroutes: {routes}")  # on failure
    assert ollama.hits == 2 + embeds  # the embeddings, by fallback; no chat
    assert figures.problem is None, figures.problem
    assert set(figures.kinds) == {"chat", "embeddings"}
    chat_kind, embeddings = figures.kinds["chat"], figures.kinds["embeddings"]
    assert chat_kind.vllm is not None and chat_kind.ollama is None  # at 100%: no Ollama chat
    assert embeddings.vllm is not None and embeddings.ollama is not None
    # Counts up to increase()'s extrapolation, which scales every series of the target alike.
    factor = chat_kind.vllm.requests / chats
    w = window_of(window)
    assert 0.999 <= factor <= w / (w - 2.2), figures
    assert embeddings.vllm.requests == pytest.approx(embeds * factor, rel=1e-6)
    assert embeddings.ollama.requests == pytest.approx(embeds * factor, rel=1e-6)
    assert chat_kind.vllm.error_rate == 0
    assert embeddings.vllm.error_rate == pytest.approx(1.0)
    assert embeddings.ollama.error_rate == 0
    # Streamed chats have a time to first token; embeddings are never streamed.
    assert chat_kind.vllm.ttft_p95 is not None and chat_kind.vllm.ttft_p95 > 0.01
    assert embeddings.vllm.ttft_p95 is None and embeddings.ollama.ttft_p95 is None
    # The routes it used since the router started (max_over_time of the counters).
    assert routes == {"chat": 3 + chats, "ollama_embed": 2 * (2 + embeds)}
