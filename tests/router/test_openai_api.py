"""The OpenAI API through the router, with the official `openai` client as the consumer."""

from __future__ import annotations

import json

import openai
import pytest
from testsupport.standin import EngineStandin

from tests.router.conftest import MESSAGES, Router


async def test_chat_non_stream_goes_to_vllm_with_the_logical_model(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    client = router.openai("llama32-notes")  # weight 100
    raw = await client.chat.completions.with_raw_response.create(
        model="llama3.2", messages=MESSAGES
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from vllm"
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    assert raw.headers["x-inferops-engine"] == "vllm"
    assert raw.headers["x-inferops-consumer"] == "notes"
    assert vllm.hits == 1 and ollama_engine.hits == 0
    # The body arrived unchanged, credentials included.
    assert vllm.seen[0].body == {"model": "llama3.2", "messages": MESSAGES}
    assert vllm.seen[0].headers["Authorization"] == "Bearer sk-test"


async def test_chat_stream_relays_every_chunk(router: Router, vllm: EngineStandin) -> None:
    client = router.openai("llama32-notes")
    stream = await client.chat.completions.create(
        model="llama3.2",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    async for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            usage = chunk.usage
    assert "".join(pieces) == "Hello from vllm"
    assert usage is not None and usage.prompt_tokens == 7
    metrics = await router.metrics()
    labels = 'consumer="notes",engine="vllm",kind="prompt",route="chat"'
    assert f"inferops_router_tokens_total{{{labels}}} 7.0" in metrics


async def test_an_alias_is_rewritten_to_the_logical_model(
    router: Router, vllm: EngineStandin
) -> None:
    client = router.openai("llama32-notes")
    await client.chat.completions.create(model="llama3.2:3b", messages=MESSAGES)
    # `name:latest` is the same model to Ollama and its clients.
    await client.chat.completions.create(model="llama3.2:latest", messages=MESSAGES)
    assert [s.body["model"] for s in vllm.seen] == ["llama3.2", "llama3.2"]
    assert vllm.seen[0].body["messages"] == MESSAGES


async def test_completions(router: Router, vllm: EngineStandin, stream: bool) -> None:
    client = router.openai("llama32-notes")
    if stream:
        text = ""
        async for chunk in await client.completions.create(
            model="llama3.2", prompt="Once", stream=True
        ):
            text += chunk.choices[0].text
    else:
        completion = await client.completions.create(model="llama3.2", prompt="Once")
        text = completion.choices[0].text
    assert text == "Hello from vllm"
    assert vllm.seen[-1].path == "/v1/completions"


async def test_embeddings(router: Router, vllm: EngineStandin) -> None:
    client = router.openai("llama32-search")
    result = await client.embeddings.create(model="llama3.2", input=["a", "bbb"])
    assert [d.embedding for d in sorted(result.data, key=lambda d: d.index)] == [
        [1.0, 1.0, 0.5],
        [1.0, 3.0, 0.5],
    ]
    assert vllm.seen[-1].path == "/v1/embeddings"
    metrics = await router.metrics()
    assert (
        'inferops_router_tokens_total{consumer="search",engine="vllm",kind="prompt",'
        'route="embeddings"} 6.0' in metrics
    )


async def test_models_lists_the_logical_model(router: Router) -> None:
    models = await router.openai().models.list()
    assert [m.id for m in models.data] == ["llama3.2"]


async def test_consumer_is_identified_by_host_with_or_without_port(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    # notes: 100% vLLM; rag: 0% vLLM. Every spelling of the Service's name works.
    for host in [
        "llama32-notes",
        "llama32-notes:80",
        "llama32-notes.ai.svc.cluster.local:8080",
        "LLAMA32-NOTES.ai.svc",
    ]:
        await router.openai(host).chat.completions.create(model="llama3.2", messages=MESSAGES)
    assert (vllm.hits, ollama_engine.hits) == (4, 0)
    await router.openai("llama32-rag.ai:80").chat.completions.create(
        model="llama3.2", messages=MESSAGES
    )
    assert (vllm.hits, ollama_engine.hits) == (4, 1)


async def test_the_consumer_header_is_refused_unless_trusted(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    """By default the header would let any caller act as another consumer: refused, naming
    the header and the flag, counted under the consumer the Host names."""
    assert not router.state.trust_consumer_header
    for api in ("openai", "ollama"):
        async with router.http.post(
            f"{router.url}/v1/chat/completions" if api == "openai" else f"{router.url}/api/chat",
            json={"model": "llama3.2", "messages": MESSAGES, "stream": False},
            headers={"Host": "llama32-rag", "X-Inferops-Consumer": "notes"},
        ) as response:
            assert response.status == 400
            body = await response.json()
        message = body["error"]["message"] if api == "openai" else body["error"]
        assert "X-Inferops-Consumer" in message and "--trust-consumer-header" in message
    assert (vllm.hits, ollama_engine.hits) == (0, 0)
    metrics = await router.metrics()
    assert 'consumer="rag",engine="none",route="chat"' in metrics


async def test_the_consumer_header_overrides_the_host_when_trusted(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    router.state.trust_consumer_header = True  # `--trust-consumer-header`
    client = router.openai("llama32-notes", **{"X-Inferops-Consumer": "rag"})
    await client.chat.completions.create(model="llama3.2", messages=MESSAGES)
    assert (vllm.hits, ollama_engine.hits) == (0, 1)
    client = router.openai("some-other-host", **{"X-Inferops-Consumer": "notes"})
    await client.chat.completions.create(model="llama3.2", messages=MESSAGES)
    assert (vllm.hits, ollama_engine.hits) == (1, 1)


async def test_unknown_consumer_is_404(router: Router, vllm: EngineStandin) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await router.openai("llama32-other").chat.completions.create(
            model="llama3.2", messages=MESSAGES
        )
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["code"] == "consumer_not_found" and "llama32-other" in body["message"]
    router.state.trust_consumer_header = True
    with pytest.raises(openai.NotFoundError, match="X-Inferops-Consumer 'nobody'"):
        await router.openai(**{"X-Inferops-Consumer": "nobody"}).chat.completions.create(
            model="llama3.2", messages=MESSAGES
        )
    assert vllm.hits == 0


async def test_unknown_model_is_404(router: Router, vllm: EngineStandin) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await router.openai().chat.completions.create(model="gpt-4", messages=MESSAGES)
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["code"] == "model_not_found"
    assert "'gpt-4'" in body["message"] and "'llama3.2'" in body["message"]
    assert vllm.hits == 0


async def test_malformed_json_is_400(router: Router) -> None:
    for payload, fragment in [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"messages": []}', "'model'"),
    ]:
        async with router.http.post(
            f"{router.url}/v1/chat/completions",
            data=payload,
            headers={"Host": "llama32-notes", "Content-Type": "application/json"},
        ) as response:
            assert response.status == 400
            error = (await response.json())["error"]
            assert fragment in error["message"]
            assert error["type"] == "invalid_request_error"


async def test_body_over_the_limit_is_413(router: Router, vllm: EngineStandin) -> None:
    big = "x" * 70_000  # the test table's maxBodyBytes is 65536
    with pytest.raises(openai.APIStatusError) as caught:
        await router.openai().chat.completions.create(
            model="llama3.2", messages=[{"role": "user", "content": big}]
        )
    assert caught.value.status_code == 413
    assert "65536 bytes" in caught.value.message
    # Without a Content-Length (chunked upload) the limit holds too.

    async def chunks():
        yield b'{"model": "llama3.2", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 10_000
        yield b'"}]}'

    async with router.http.post(
        f"{router.url}/v1/chat/completions", data=chunks(), headers={"Host": "llama32-notes"}
    ) as response:
        assert response.status == 413
        assert (await response.json())["error"]["code"] == "request_too_large"
    assert vllm.hits == 0


async def test_engine_4xx_passes_through_without_fallback(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    vllm.behaviour.fail_status = 400
    with pytest.raises(openai.BadRequestError, match="vllm failed on purpose"):
        await router.openai().chat.completions.create(model="llama3.2", messages=MESSAGES)
    assert (vllm.hits, ollama_engine.hits) == (1, 0)


async def test_unknown_route_is_a_json_404(router: Router) -> None:
    async with router.http.get(f"{router.url}/v1/nothing") as response:
        assert response.status == 404
        assert json.loads(await response.text())["error"]["code"] == "unknown_route"
