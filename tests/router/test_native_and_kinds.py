"""An Ollama-API request that goes to Ollama goes natively (body and answer as Ollama's own),
translation happens only toward vLLM; and requests are routed by kind: a kind vLLM does not
serve goes to Ollama whatever the weight, a kind no engine serves is refused naming the fix.
The official `ollama` and `openai` clients are the consumers."""

from __future__ import annotations

import ollama
import openai
import pytest
from testsupport.standin import EngineStandin

from tests.router.conftest import Router
from tests.router.test_routing import sample

MESSAGES = [{"role": "user", "content": "hi"}]
OPTIONS = {
    "num_predict": 2,
    "top_k": 7,
    "min_p": 0.05,
    "repeat_penalty": 1.2,
    "num_ctx": 8192,
    "num_thread": 1,
    "mirostat": 2,
}
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9aw"
    "AAAABJRU5ErkJggg=="
)


async def test_chat_to_ollama_goes_natively_with_every_field(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    response = await router.ollama("llama32-rag").chat(
        model="llama3.2:3b",  # an alias: the only field rewritten
        messages=[{**MESSAGES[0], "images": [PNG]}],
        options=OPTIONS,
        keep_alive="1h",
        format={"type": "object"},
        think=True,
        stream=False,
    )
    assert isinstance(response, ollama.ChatResponse)
    assert response.message.content == "Hello from"  # num_predict 2, as Ollama counted it
    assert response.eval_count == 2 and response.prompt_eval_count == 9
    assert response.load_duration == 10  # Ollama's own figures, not the router's
    assert vllm.seen == []
    sent = ollama_engine.seen[0]
    assert sent.path == "/api/chat"
    assert sent.body["model"] == "llama3.2"
    assert sent.body["options"] == OPTIONS
    assert sent.body["keep_alive"] == "1h"
    assert sent.body["format"] == {"type": "object"}
    assert sent.body["think"] is True
    assert sent.body["messages"][0]["images"] == [PNG]
    metrics = await router.metrics()
    labels = {"consumer": "rag", "engine": "ollama", "route": "ollama_chat"}
    assert sample(metrics, "inferops_router_tokens_total", kind="completion", **labels) == 2
    assert sample(metrics, "inferops_router_tokens_total", kind="prompt", **labels) == 9


async def test_an_ollama_stream_is_relayed_as_ollama_wrote_it(
    router: Router, ollama_engine: EngineStandin
) -> None:
    body = {"model": "llama3.2", "prompt": "Why?", "options": {"num_predict": 3}}
    objects = await router.ndjson("/api/generate", body, "llama32-rag")
    # The stand-in's own timestamps and durations: nothing was re-encoded on the way.
    assert [o["response"] for o in objects] == ["Hello", " from", " ollama", ""]
    assert all(o["created_at"] == "2026-01-01T00:00:00Z" for o in objects)
    assert objects[-1]["done"] is True and objects[-1]["eval_count"] == 3
    assert ollama_engine.seen[0].path == "/api/generate"
    metrics = await router.metrics()
    labels = {"consumer": "rag", "engine": "ollama", "route": "ollama_generate"}
    assert sample(metrics, "inferops_router_tokens_total", kind="completion", **labels) == 3


async def test_empty_chat_to_ollama_reaches_ollama(
    router: Router, ollama_engine: EngineStandin
) -> None:
    """A load (or, with keep_alive 0, unload) request is Ollama's to answer when it goes
    there; only vLLM's side answers "loaded" from the router."""
    response = await router.ollama("llama32-rag").chat(model="llama3.2", messages=[], keep_alive=0)
    assert response.done
    assert ollama_engine.seen[0].path == "/api/chat"
    assert ollama_engine.seen[0].body["keep_alive"] == 0


async def test_embed_to_ollama_goes_natively(router: Router, ollama_engine: EngineStandin) -> None:
    client = router.ollama("llama32-rag")
    embedded = await client.embed(model="llama3.2", input=["a", "bbb"], truncate=False)
    assert [list(v) for v in embedded.embeddings] == [[3.0, 1.0, 0.5], [3.0, 3.0, 0.5]]
    assert ollama_engine.seen[-1].path == "/api/embed"
    assert ollama_engine.seen[-1].body["truncate"] is False
    legacy = await client.embeddings(model="llama3.2", prompt="dddd")
    assert list(legacy.embedding) == [3.0, 4.0, 0.5]
    assert ollama_engine.seen[-1].path == "/api/embeddings"
    # A name Ollama knows itself is not rewritten (only an alias is): its answer echoes it.
    await client.embed(model="llama3.2:latest", input="e")
    assert ollama_engine.seen[-1].body["model"] == "llama3.2:latest"


async def test_ollama_errors_pass_through_as_ollama_wrote_them(
    router: Router, ollama_engine: EngineStandin
) -> None:
    ollama_engine.behaviour.fail_status = 404
    with pytest.raises(ollama.ResponseError) as raised:
        await router.ollama("llama32-rag").chat(model="llama3.2", messages=MESSAGES)
    assert raised.value.status_code == 404
    assert raised.value.error == "ollama failed on purpose"


async def test_fallback_from_vllm_asks_ollama_natively(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin, stream: bool
) -> None:
    vllm.behaviour.fail_status = 503
    client = router.ollama("llama32-notes")
    if stream:
        parts = [
            p
            async for p in await client.chat(
                model="llama3.2", messages=MESSAGES, options={"top_k": 3}, stream=True
            )
        ]
        text = "".join(p.message.content or "" for p in parts)
    else:
        answer = await client.chat(model="llama3.2", messages=MESSAGES, options={"top_k": 3})
        text = answer.message.content or ""
    assert text == "Hello from ollama"
    assert vllm.seen[0].path == "/v1/chat/completions"  # translated toward vLLM
    assert vllm.seen[0].body["top_k"] == 3
    assert ollama_engine.seen[0].path == "/api/chat"  # native toward Ollama
    assert ollama_engine.seen[0].body["options"] == {"top_k": 3}


async def test_openai_requests_to_ollama_still_pass_through_to_its_openai_api(
    router: Router, ollama_engine: EngineStandin
) -> None:
    await router.openai("llama32-rag").chat.completions.create(model="llama3.2", messages=MESSAGES)  # type: ignore[arg-type]
    assert ollama_engine.seen[0].path == "/v1/chat/completions"


# -- request kinds ---------------------------------------------------------------------------


async def test_embeddings_go_to_ollama_when_vllm_serves_only_generation(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    await router.set_engine("vllm", kinds=["chat", "completions"])
    embedded = await router.ollama("llama32-notes").embed(model="llama3.2", input="abc")
    assert [list(v) for v in embedded.embeddings] == [[3.0, 3.0, 0.5]]
    vectors = await router.openai("llama32-notes").embeddings.create(model="llama3.2", input="ab")
    assert vectors.data[0].embedding == [2.0, 2.0, 0.5]  # Ollama's /v1
    chat = await router.ollama("llama32-notes").chat(model="llama3.2", messages=MESSAGES)
    assert chat.message.content == "Hello from vllm"  # weight 100 still holds for chat
    assert [s.path for s in vllm.seen] == ["/v1/chat/completions"]
    metrics = await router.metrics()
    reason = "vllm_does_not_serve_kind"
    for route in ("ollama_embed", "embeddings"):
        labels = {"consumer": "notes", "engine": "ollama", "route": route, "kind": "embeddings"}
        assert sample(metrics, "inferops_router_rerouted_total", reason=reason, **labels) == 1
    assert sample(metrics, "inferops_router_rerouted_total", route="ollama_chat") == 0


async def test_a_kind_no_engine_serves_is_refused_naming_the_fix(
    router: Router, vllm: EngineStandin
) -> None:
    await router.set_table(engines={"vllm": {"url": vllm.url, "kinds": ["chat", "completions"]}})
    with pytest.raises(ollama.ResponseError) as raised:
        await router.ollama("llama32-notes").embed(model="llama3.2", input="abc")
    assert raised.value.status_code == 404
    assert "serves no embeddings requests" in raised.value.error
    assert "spec.ollama" in raised.value.error and "--runner pooling" in raised.value.error
    with pytest.raises(openai.NotFoundError) as refused:
        await router.openai("llama32-notes").embeddings.create(model="llama3.2", input="ab")
    body = refused.value.body
    assert isinstance(body, dict) and body["code"] == "kind_not_served"
    assert vllm.seen == []
    metrics = await router.metrics()
    labels = {"consumer": "notes", "engine": "none", "route": "ollama_embed", "code": "404"}
    assert sample(metrics, "inferops_router_requests_total", **labels) == 1
    # Chat is still served.
    chat = await router.ollama("llama32-notes").chat(model="llama3.2", messages=MESSAGES)
    assert chat.message.content == "Hello from vllm"


async def test_a_table_without_kinds_routes_every_kind_by_weight(
    router: Router, vllm: EngineStandin
) -> None:
    """A table of an operator that predates kinds: vLLM is taken to serve every kind."""
    embedded = await router.ollama("llama32-notes").embed(model="llama3.2", input="abc")
    assert [list(v) for v in embedded.embeddings] == [[1.0, 3.0, 0.5]]
    assert vllm.seen[0].path == "/v1/embeddings"


# -- features vLLM cannot honour as started --------------------------------------------------

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.mark.parametrize(
    ("tool_calling", "engine"), [(False, "ollama"), (True, "vllm"), (None, "vllm")]
)
async def test_tools_go_to_ollama_when_vllm_has_no_tool_parser(
    router: Router,
    vllm: EngineStandin,
    ollama_engine: EngineStandin,
    tool_calling: bool | None,
    engine: str,
) -> None:
    """`toolCalling` false: the request goes to Ollama at weight 100 (natively, as the client
    wrote it); true, or unknown (a table of an older operator), it goes by weight."""
    if tool_calling is not None:
        await router.set_engine("vllm", toolCalling=tool_calling)
    await router.ollama("llama32-notes").chat(model="llama3.2", messages=MESSAGES, tools=[TOOL])
    await router.openai("llama32-notes").chat.completions.create(
        model="llama3.2",
        messages=MESSAGES,  # type: ignore[arg-type]
        tools=[TOOL],  # type: ignore[list-item]
    )
    went = ollama_engine if engine == "ollama" else vllm
    paths = (
        ["/api/chat", "/v1/chat/completions"]
        if engine == "ollama"
        else [
            "/v1/chat/completions",
            "/v1/chat/completions",
        ]
    )
    assert [s.path for s in went.seen] == paths
    metrics = await router.metrics()
    for route in ("ollama_chat", "chat"):
        reason = "vllm_has_no_tool_parser"
        rerouted = sample(metrics, "inferops_router_rerouted_total", route=route, reason=reason)
        assert rerouted == (1 if engine == "ollama" else 0)
        labels = {"consumer": "notes", "engine": engine, "route": route, "feature": "tools"}
        assert sample(metrics, "inferops_router_request_features_total", **labels) == 1


async def test_suffix_and_a_context_beyond_vllm_go_to_ollama(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    await router.set_engine("vllm", maxModelLen=2048)
    client = router.ollama("llama32-notes")
    await client.generate(model="llama3.2", prompt="def f(", suffix="return 1")
    await client.chat(model="llama3.2", messages=MESSAGES, options={"num_ctx": 4096})
    await client.chat(model="llama3.2", messages=MESSAGES, options={"num_ctx": 2048})
    assert [s.path for s in ollama_engine.seen] == ["/api/generate", "/api/chat"]
    assert ollama_engine.seen[0].body["suffix"] == "return 1"
    assert [s.path for s in vllm.seen] == ["/v1/chat/completions"]
    metrics = await router.metrics()
    for reason in ("vllm_refuses_suffix", "num_ctx_above_vllm_max_model_len"):
        assert sample(metrics, "inferops_router_rerouted_total", reason=reason) == 1


async def test_features_are_counted_per_consumer_with_the_table_names_only(
    router: Router, ollama_engine: EngineStandin
) -> None:
    await router.ollama("llama32-rag").chat(
        model="llama3.2",
        messages=MESSAGES,
        options={"top_k": 3, "num_thread": 2, "made_up_option": 1},
        keep_alive="5m",
        format="json",
    )
    metrics = await router.metrics()
    labels = {"consumer": "rag", "engine": "ollama", "route": "ollama_chat"}
    for feature in ("top_k", "num_thread", "keep_alive", "format_json"):
        assert (
            sample(metrics, "inferops_router_request_features_total", feature=feature, **labels)
            == 1
        )
    assert "made_up_option" not in metrics  # a client's string never becomes a label
    assert ollama_engine.seen[0].body["options"]["made_up_option"] == 1  # but reaches Ollama
