"""Routing behaviour end to end: the weighted split, readiness, fallback and its limits,
table swaps under load, client disconnects, and the metrics that record all of it."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import ollama
import openai
import pytest
from testsupport.standin import EngineStandin, closed_port_url

from tests.router.conftest import MESSAGES, Router, answer_text, streamed_text, wait_for


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 when absent."""
    for line in metrics.splitlines():
        if line.startswith(name + " ") and not labels:
            return float(line.rsplit(" ", 1)[1])
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.index("}")]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_split_follows_the_weight(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    # 10,000 small embeddings requests at weight 30: the realised share must be within two
    # percentage points (that is more than four standard deviations: not a flaky bound).
    total = 10_000
    assert [c["weight"] for c in router.table["consumers"] if c["name"] == "ner"] == [30]
    url = f"{router.url}/v1/embeddings"
    body = b'{"model":"llama3.2","input":"x"}'
    headers = {"Host": "llama32-ner", "Content-Type": "application/json"}
    queue = iter(range(total))
    statuses: dict[int, int] = {}

    async def worker() -> None:
        for _ in queue:
            async with router.http.post(url, data=body, headers=headers) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1

    await asyncio.gather(*(worker() for _ in range(32)))
    assert statuses == {200: total}
    share = vllm.hits / total
    assert abs(share - 0.30) <= 0.02, f"vLLM got {share:.2%} of requests at weight 30"
    assert vllm.hits + ollama_engine.hits == total
    metrics = await router.metrics()
    for engine, hits in (("vllm", vllm.hits), ("ollama", ollama_engine.hits)):
        assert (
            sample(
                metrics,
                "inferops_router_requests_total",
                consumer="ner",
                engine=engine,
                route="embeddings",
                code="200",
            )
            == hits
        )


async def test_weights_0_and_100_are_exact(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    notes, rag = router.openai("llama32-notes"), router.openai("llama32-rag")
    for _ in range(20):
        await notes.embeddings.create(model="llama3.2", input="a")
        await rag.embeddings.create(model="llama3.2", input="a")
    assert (vllm.hits, ollama_engine.hits) == (20, 20)


async def test_an_engine_that_is_not_ready_gets_no_traffic(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    await router.set_engine("vllm", ready=False)
    for _ in range(10):  # notes is at weight 100, yet everything goes to Ollama
        await router.openai("llama32-notes").chat.completions.create(
            model="llama3.2", messages=MESSAGES
        )
    assert (vllm.hits, ollama_engine.hits) == (0, 10)
    await router.set_table(
        engines={
            "vllm": {"url": vllm.url, "ready": True},
            "ollama": {"url": ollama_engine.url, "ready": False},
        }
    )
    for _ in range(10):  # rag is at weight 0, yet everything goes to vLLM
        await router.openai("llama32-rag").chat.completions.create(
            model="llama3.2", messages=MESSAGES
        )
    assert (vllm.hits, ollama_engine.hits) == (10, 10)
    metrics = await router.metrics()
    assert (
        sample(metrics, "inferops_router_consumer_weight", consumer="rag", kind="effective") == 100
    )
    assert (
        sample(metrics, "inferops_router_consumer_weight", consumer="rag", kind="configured") == 0
    )


async def test_fallback_on_5xx_is_invisible_to_the_client(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin, stream: bool
) -> None:
    vllm.behaviour.fail_status = 500
    client = router.openai("llama32-notes")
    for _ in range(5):
        assert await answer_text(client, stream) == "Hello from ollama"
    assert (vllm.hits, ollama_engine.hits) == (5, 5)
    metrics = await router.metrics()
    labels = {"consumer": "notes", "engine": "vllm", "route": "chat"}
    assert sample(metrics, "inferops_router_fallbacks_total", reason="upstream_5xx", **labels) == 5
    assert sample(metrics, "inferops_router_errors_total", reason="upstream_5xx", **labels) == 5
    assert sample(metrics, "inferops_router_requests_total", code="500", **labels) == 5
    assert (
        sample(
            metrics, "inferops_router_requests_total", consumer="notes", engine="ollama", code="200"
        )
        == 5
    )


async def test_fallback_when_vllm_refuses_connections(
    router: Router, ollama_engine: EngineStandin
) -> None:
    await router.set_engine("vllm", url=closed_port_url())
    client = router.ollama("llama32-notes")
    for _ in range(5):
        response = await client.chat(model="llama3.2", messages=MESSAGES)
        assert response.message.content == "Hello from ollama"
    assert ollama_engine.hits == 5
    metrics = await router.metrics()
    labels = {"consumer": "notes", "engine": "vllm", "route": "ollama_chat"}
    assert sample(metrics, "inferops_router_fallbacks_total", reason="connect", **labels) == 5


async def test_fallback_when_vllm_sends_no_first_byte_in_time(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin, stream: bool
) -> None:
    timeouts = {"connectSeconds": 1, "firstByteSeconds": 0.2, "totalSeconds": 20}
    await router.set_table(timeouts=timeouts)
    vllm.behaviour.delay = 30.0  # far beyond the client's own 10 s timeout
    client = router.openai("llama32-notes")
    answers = await asyncio.gather(*(answer_text(client, stream) for _ in range(4)))
    assert answers == ["Hello from ollama"] * 4
    assert (vllm.hits, ollama_engine.hits) == (4, 4)
    await wait_for(lambda: vllm.cancelled == 4, "the abandoned vLLM requests to be closed")
    metrics = await router.metrics()
    labels = {"consumer": "notes", "engine": "vllm"}
    assert sample(metrics, "inferops_router_fallbacks_total", reason="timeout", **labels) == 4


async def test_no_fallback_when_disabled_or_when_ollama_is_absent(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    vllm.behaviour.fail_status = 503
    await router.set_table(fallback=False)
    with pytest.raises(openai.InternalServerError):
        await router.openai().chat.completions.create(model="llama3.2", messages=MESSAGES)
    await router.set_table(fallback=True, engines={"vllm": {"url": closed_port_url()}})
    with pytest.raises(openai.APIStatusError) as caught:
        await router.openai("llama32-rag").chat.completions.create(
            model="llama3.2", messages=MESSAGES
        )
    # Without Ollama even the weight-0 consumer goes to vLLM; unreachable, it is a 502.
    assert caught.value.status_code == 502
    assert "unreachable" in caught.value.message
    assert ollama_engine.hits == 0


async def test_no_retry_once_bytes_were_streamed(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    timeouts = {"connectSeconds": 1, "firstByteSeconds": 0.3, "totalSeconds": 20}
    await router.set_table(timeouts=timeouts)
    vllm.behaviour.stall_after = 1  # role chunk, one word, then silence
    stream = await router.openai().chat.completions.create(
        model="llama3.2",
        messages=MESSAGES,
        stream=True,
    )
    received = ""
    with pytest.raises(openai.APIError, match=r"sent nothing for 0\.3s"):
        async for chunk in stream:
            received += chunk.choices[0].delta.content or "" if chunk.choices else ""
    assert received == "Hello"
    assert ollama_engine.hits == 0  # the client already had bytes: no retry
    await wait_for(lambda: vllm.cancelled == 1, "the stalled upstream stream to be closed")
    # The same through the Ollama API: the client raises on the in-band error line.
    with pytest.raises(ollama.ResponseError, match="sent nothing"):
        async for _ in await router.ollama().chat(model="llama3.2", messages=MESSAGES, stream=True):
            pass
    assert ollama_engine.hits == 0
    metrics = await router.metrics()
    assert (
        sample(
            metrics,
            "inferops_router_errors_total",
            consumer="notes",
            engine="vllm",
            route="chat",
            reason="stream_stalled",
        )
        == 1
    )
    assert sample(metrics, "inferops_router_fallbacks_total", consumer="notes") == 0


async def test_an_engine_that_dies_mid_stream_ends_the_stream_with_an_error(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    vllm.behaviour.die_after = 2  # role chunk, two words, then the connection drops
    stream = await router.openai().chat.completions.create(
        model="llama3.2",
        messages=MESSAGES,
        stream=True,
    )
    received = ""
    with pytest.raises(openai.APIError, match="broke off the stream"):
        async for chunk in stream:
            received += chunk.choices[0].delta.content or "" if chunk.choices else ""
    assert received == "Hello from"
    assert ollama_engine.hits == 0
    metrics = await router.metrics()
    assert (
        sample(metrics, "inferops_router_errors_total", engine="vllm", reason="stream_broken") == 1
    )


async def test_table_change_applies_to_new_requests_only(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    vllm.behaviour.chunk_delay = 0.05  # ~0.25 s per stream
    client = router.openai("llama32-notes")  # weight 100

    async def consume() -> str:
        return await streamed_text(client)

    streams = [asyncio.create_task(consume()) for _ in range(8)]
    await wait_for(lambda: vllm.streams_open == 8, "eight open streams")
    await router.set_weight("notes", 0)  # swapped while all eight are mid-stream
    assert vllm.streams_open == 8
    after = [await consume() for _ in range(3)]
    assert await asyncio.gather(*streams) == ["Hello from vllm"] * 8
    assert after == ["Hello from ollama"] * 3
    assert (vllm.hits, ollama_engine.hits) == (8, 3)


async def test_client_disconnect_cancels_the_upstream_request(
    router: Router, vllm: EngineStandin
) -> None:
    vllm.behaviour.stall_after = 1
    async with router.http.post(
        f"{router.url}/v1/chat/completions",
        json={"model": "llama3.2", "messages": MESSAGES, "stream": True},
        headers={"Host": "llama32-notes"},
    ) as response:
        assert response.status == 200
        first = await response.content.readany()
        assert b"data: " in first
        await wait_for(lambda: vllm.streams_open == 1, "the upstream stream")
        response.close()  # the consumer hangs up mid-stream
    await wait_for(lambda: vllm.cancelled == 1, "the upstream stream to be cancelled")
    metrics = await router.metrics()
    assert (
        sample(
            metrics, "inferops_router_requests_total", consumer="notes", engine="vllm", code="499"
        )
        == 1
    )
    assert (
        sample(metrics, "inferops_router_in_flight_requests", consumer="notes", engine="vllm") == 0
    )


async def test_client_giving_up_on_a_non_stream_request_cancels_it_upstream(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    vllm.behaviour.delay = 5.0  # longer than the client waits; no fallback limit is hit
    with pytest.raises(TimeoutError):
        async with router.http.post(
            f"{router.url}/v1/chat/completions",
            json={"model": "llama3.2", "messages": MESSAGES},
            headers={"Host": "llama32-notes"},
            timeout=aiohttp.ClientTimeout(total=0.3),
        ):
            pass
    await wait_for(lambda: vllm.cancelled == 1, "the upstream request to be cancelled")
    assert ollama_engine.hits == 0
    metrics = await router.metrics()
    assert (
        sample(
            metrics, "inferops_router_requests_total", consumer="notes", engine="vllm", code="499"
        )
        == 1
    )
    assert sample(metrics, "inferops_router_in_flight_requests", engine="vllm") == 0


async def test_metrics_carry_consumer_engine_and_route(router: Router, vllm: EngineStandin) -> None:
    client = router.openai("llama32-notes")
    async for _ in await client.chat.completions.create(
        model="llama3.2",
        messages=MESSAGES,
        stream=True,
    ):
        pass
    await client.chat.completions.create(model="llama3.2", messages=MESSAGES)
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nope", messages=MESSAGES)
    metrics = await router.metrics()
    labels = {"consumer": "notes", "engine": "vllm", "route": "chat"}
    assert sample(metrics, "inferops_router_requests_total", code="200", **labels) == 2
    assert sample(metrics, "inferops_router_request_duration_seconds_count", **labels) == 2
    assert sample(metrics, "inferops_router_time_to_first_token_seconds_count", **labels) == 1
    assert sample(metrics, "inferops_router_tokens_total", kind="completion", **labels) == 3
    assert (
        sample(metrics, "inferops_router_in_flight_requests", consumer="notes", engine="vllm") == 0
    )
    assert (
        sample(
            metrics, "inferops_router_requests_total", consumer="notes", engine="none", code="404"
        )
        == 1
    )
    assert sample(metrics, "inferops_router_table_generation") == 1
    assert "inferops_router_fallbacks_total" in metrics or "inferops_router_fallbacks" in metrics


async def test_health_and_readiness(router: Router) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{router.url}/healthz") as response:
            assert response.status == 200
        async with http.get(f"{router.url}/readyz") as response:
            assert response.status == 200
        router.state.routes = None  # as before the first table arrives
        async with http.get(f"{router.url}/readyz") as response:
            assert response.status == 503
        async with http.post(
            f"{router.url}/v1/chat/completions",
            json={"model": "llama3.2"},
            headers={"Host": "llama32-notes"},
        ) as response:
            assert response.status == 503
            assert (await response.json())["error"]["code"] == "no_routing_table"
