"""`X-Inferops-Probe` pins a request to one engine: whatever the consumer's weight, without
fallback, counted under the consumer's labels; an engine that cannot take it is a 503, an
unknown value a 400."""

from __future__ import annotations

import json

import ollama
import openai
import pytest
from testsupport.standin import EngineStandin, closed_port_url

from inferops.api.routing import RoutingTable
from inferops.router.errors import RouterError
from inferops.router.proxy import PROBE_HEADER, probe_target
from inferops.router.routes import OLLAMA, VLLM, compile_table
from tests.router.conftest import MESSAGES, Router, base_table
from tests.router.test_routing import sample


def probe(engine: str) -> dict[str, str]:
    return {PROBE_HEADER: engine}


async def test_a_probe_goes_to_the_engine_it_names_whatever_the_weight(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    # rag is at weight 0 (all Ollama), notes at 100 (all vLLM): probes cross both.
    rag = router.openai("llama32-rag", **probe("vllm"))
    notes = router.openai("llama32-notes", **probe("ollama"))
    for _ in range(5):
        answer = await rag.chat.completions.create(model="llama3.2", messages=MESSAGES)
        assert answer.choices[0].message.content == "Hello from vllm"
        answer = await notes.chat.completions.create(model="llama3.2", messages=MESSAGES)
        assert answer.choices[0].message.content == "Hello from ollama"
    assert (vllm.hits, ollama_engine.hits) == (5, 5)
    # The router's own header stays with the router.
    assert all(PROBE_HEADER.lower() not in {k.lower() for k in s.headers} for s in vllm.seen)
    metrics = await router.metrics()
    # Counted under the consumer's normal labels: real generation the analysis wants.
    for consumer, engine in (("rag", "vllm"), ("notes", "ollama")):
        labels = {"consumer": consumer, "engine": engine, "route": "chat"}
        assert sample(metrics, "inferops_router_requests_total", code="200", **labels) == 5
        assert sample(metrics, "inferops_router_tokens_total", kind="completion", **labels) == 15


async def test_a_failing_pinned_engine_shows_as_an_error_without_fallback(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    vllm.behaviour.fail_status = 500
    client = router.openai("llama32-notes", **probe("vllm"))
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="llama3.2", messages=MESSAGES)
    await router.set_engine("vllm", url=closed_port_url())
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(model="llama3.2", messages=MESSAGES)
    assert caught.value.status_code == 502
    assert ollama_engine.hits == 0  # a fallback would hide what the probe measures
    metrics = await router.metrics()
    labels = {"consumer": "notes", "engine": "vllm", "route": "chat"}
    assert sample(metrics, "inferops_router_requests_total", code="500", **labels) == 3
    assert sample(metrics, "inferops_router_errors_total", reason="upstream_5xx", **labels) == 3
    assert sample(metrics, "inferops_router_errors_total", reason="connect", **labels) == 1
    assert sample(metrics, "inferops_router_fallbacks_total", consumer="notes") == 0


async def test_a_stalled_pinned_stream_is_not_retried(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    # Unpinned, a slow first byte falls back to Ollama; pinned, the probe waits for vLLM.
    await router.set_table(
        timeouts={"connectSeconds": 1, "firstByteSeconds": 0.2, "totalSeconds": 20}
    )
    vllm.behaviour.delay = 0.5
    client = router.openai("llama32-notes", **probe("vllm"))
    answer = await client.chat.completions.create(model="llama3.2", messages=MESSAGES)
    assert answer.choices[0].message.content == "Hello from vllm"
    assert ollama_engine.hits == 0


async def test_a_probe_for_an_engine_that_is_not_ready_or_absent_is_a_503(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    await router.set_engine("vllm", ready=False)
    with pytest.raises(openai.APIStatusError) as caught:
        await router.openai("llama32-notes", **probe("vllm")).chat.completions.create(
            model="llama3.2", messages=MESSAGES
        )
    assert caught.value.status_code == 503
    assert "'vllm'" in caught.value.message and "no Ready pods" in caught.value.message
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "probe_engine_unavailable"
    await router.set_table(engines={"vllm": {"url": vllm.url, "ready": True}})
    with pytest.raises(ollama.ResponseError) as refused:
        await router.ollama("llama32-notes", **probe("ollama")).chat(
            model="llama3.2", messages=MESSAGES, stream=False
        )
    assert refused.value.status_code == 503
    assert "'ollama'" in refused.value.error and "not in the routing table" in refused.value.error
    assert (vllm.hits, ollama_engine.hits) == (0, 0)
    metrics = await router.metrics()
    for route in ("chat", "ollama_chat"):
        labels = {"consumer": "notes", "engine": "none", "route": route}
        assert sample(metrics, "inferops_router_requests_total", code="503", **labels) == 1


async def test_an_unknown_probe_value_is_a_400_naming_the_header(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    async with router.http.post(
        f"{router.url}/v1/chat/completions",
        data=json.dumps({"model": "llama3.2", "messages": MESSAGES}),
        headers={"Host": "llama32-notes", PROBE_HEADER: "gpu", "Content-Type": "application/json"},
    ) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert error["code"] == "invalid_probe_engine"
    assert PROBE_HEADER in error["message"]
    assert "'gpu'" in error["message"]
    assert "'vllm'" in error["message"] and "'ollama'" in error["message"]
    assert (vllm.hits, ollama_engine.hits) == (0, 0)
    metrics = await router.metrics()
    assert (
        sample(
            metrics, "inferops_router_requests_total", consumer="notes", engine="none", code="400"
        )
        == 1
    )


async def test_the_ollama_api_honours_the_probe_too(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    client = router.ollama("llama32-notes", **probe("ollama"))
    parts = [
        part.message.content
        async for part in await client.chat(model="llama3.2", messages=MESSAGES, stream=True)
    ]
    assert "".join(p or "" for p in parts) == "Hello from ollama"
    assert (vllm.hits, ollama_engine.hits) == (0, 1)


def test_probe_values_resolve_to_the_tables_targets() -> None:
    raw = base_table("http://v.ns.svc:8000", "http://o.ns.svc:11434")
    routes = compile_table(RoutingTable.model_validate(raw))
    assert probe_target(routes, "vllm") is routes.targets[VLLM]
    assert probe_target(routes, " Ollama ") is routes.targets[OLLAMA]
    with pytest.raises(RouterError) as caught:
        probe_target(routes, "")
    assert caught.value.status == 400
    without = compile_table(
        RoutingTable.model_validate({**raw, "engines": {"vllm": raw["engines"]["vllm"]}})
    )
    with pytest.raises(RouterError) as caught:
        probe_target(without, "ollama")
    assert caught.value.status == 503
