"""Ollama's native API through the router, with the official `ollama` client as the consumer:
the answers must parse into the client's own types, streaming and not."""

from __future__ import annotations

import ollama
import pytest
from testsupport.standin import WEATHER_TOOL, EngineStandin

from tests.router.conftest import MESSAGES, Router


async def test_chat_non_stream(router: Router, vllm: EngineStandin) -> None:
    response = await router.ollama().chat(
        model="llama3.2",
        messages=MESSAGES,
        options={
            "num_predict": 64,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": ["\n"],
            "seed": 7,
            "num_ctx": 4096,
        },
        format="json",
        keep_alive="1h",
    )
    assert isinstance(response, ollama.ChatResponse)
    assert response.message.role == "assistant"
    assert response.message.content == "Hello from vllm"
    assert response.done and response.done_reason == "stop"
    assert response.model == "llama3.2"
    assert response.eval_count == 3 and response.prompt_eval_count == 7
    assert response.total_duration and response.total_duration > 0
    sent = vllm.seen[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.body == {
        "model": "llama3.2",
        "messages": MESSAGES,
        "stream": False,
        "max_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["\n"],
        "seed": 7,
        "response_format": {"type": "json_object"},
    }


async def test_chat_stream(router: Router, vllm: EngineStandin) -> None:
    parts = [
        p
        async for p in await router.ollama().chat(
            model="llama3.2:3b", messages=MESSAGES, stream=True
        )
    ]
    assert all(isinstance(p, ollama.ChatResponse) for p in parts)
    assert "".join(p.message.content or "" for p in parts) == "Hello from vllm"
    assert [p.done for p in parts] == [False, False, False, True]
    final = parts[-1]
    assert final.done_reason == "stop" and final.eval_count == 3 and final.prompt_eval_count == 7
    assert final.model == "llama3.2:3b"  # the name the client asked for
    assert final.eval_duration is not None and final.prompt_eval_duration is not None
    assert vllm.seen[0].body["stream_options"] == {"include_usage": True}
    assert vllm.seen[0].body["model"] == "llama3.2"


async def test_stream_is_the_default_of_the_native_api(router: Router) -> None:
    body = {"model": "llama3.2", "messages": MESSAGES}
    objects = await router.ndjson("/api/chat", body, "llama32-notes")
    assert objects[0]["message"] == {"role": "assistant", "content": "Hello"}
    assert objects[0]["done"] is False and "created_at" in objects[0]
    assert objects[-1]["done"] is True and objects[-1]["done_reason"] == "stop"


async def test_chat_tool_calls_both_ways(router: Router, vllm: EngineStandin) -> None:
    tool = WEATHER_TOOL
    history = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    client = router.ollama()
    response = await client.chat(model="llama3.2", messages=history, tools=[tool])
    assert response.message.tool_calls is not None
    assert response.message.tool_calls[0].function.name == "get_weather"
    assert response.message.tool_calls[0].function.arguments == {"city": "Paris"}
    sent = vllm.seen[0].body["messages"]
    call = sent[1]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert sent[2]["tool_call_id"] == call["id"] and sent[2]["role"] == "tool"
    # Streamed, the argument fragments are joined into one whole call.
    parts = [
        p
        async for p in await client.chat(
            model="llama3.2", messages=history, tools=[tool], stream=True
        )
    ]
    calls = [c for p in parts for c in (p.message.tool_calls or [])]
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})
    ]


async def test_generate_uses_the_chat_template_unless_raw(
    router: Router, vllm: EngineStandin
) -> None:
    client = router.ollama()
    response = await client.generate(model="llama3.2", prompt="Why?", system="Be brief.")
    assert isinstance(response, ollama.GenerateResponse)
    assert response.response == "Hello from vllm" and response.done
    assert vllm.seen[-1].path == "/v1/chat/completions"
    assert vllm.seen[-1].body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Why?"},
    ]
    response = await client.generate(model="llama3.2", prompt="Once upon", raw=True)
    assert response.response == "Hello from vllm" and response.done_reason == "length"
    assert vllm.seen[-1].path == "/v1/completions"
    assert vllm.seen[-1].body["prompt"] == "Once upon"


@pytest.mark.parametrize("raw", [False, True])
async def test_generate_stream(router: Router, vllm: EngineStandin, raw: bool) -> None:
    parts = [
        p
        async for p in await router.ollama().generate(
            model="llama3.2", prompt="Why?", raw=raw, stream=True
        )
    ]
    assert all(isinstance(p, ollama.GenerateResponse) for p in parts)
    assert "".join(p.response or "" for p in parts) == "Hello from vllm"
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    assert parts[-1].eval_count == 3


async def test_generate_with_an_image_sends_a_data_url(router: Router, vllm: EngineStandin) -> None:
    png = (
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9aw"
        "AAAABJRU5ErkJggg=="
    )
    await router.ollama().generate(model="llama3.2", prompt="What is this?", images=[png])
    content = vllm.seen[-1].body["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "What is this?"}
    assert content[1]["image_url"]["url"] == f"data:image/png;base64,{png}"


async def test_empty_prompt_only_loads(router: Router, vllm: EngineStandin) -> None:
    response = await router.ollama().generate(model="llama3.2", prompt="")
    assert response.done and response.done_reason == "load"
    response_chat = await router.ollama().chat(model="llama3.2", messages=[])
    assert response_chat.done_reason == "load"
    assert vllm.hits == 0


async def test_embed_and_embeddings(router: Router, vllm: EngineStandin) -> None:
    client = router.ollama("llama32-search")
    embedded = await client.embed(model="llama3.2", input=["a", "bbb"])
    assert isinstance(embedded, ollama.EmbedResponse)
    assert [list(v) for v in embedded.embeddings] == [[1.0, 1.0, 0.5], [1.0, 3.0, 0.5]]
    assert vllm.seen[-1].body == {
        "model": "llama3.2",
        "input": ["a", "bbb"],
        "encoding_format": "float",
    }
    single = await client.embed(model="llama3.2", input="cc")
    assert [list(v) for v in single.embeddings] == [[1.0, 2.0, 0.5]]
    legacy = await client.embeddings(model="llama3.2", prompt="dddd")
    assert isinstance(legacy, ollama.EmbeddingsResponse)
    assert list(legacy.embedding) == [1.0, 4.0, 0.5]
    assert vllm.seen[-1].body["input"] == "dddd"


async def test_tags_version_and_root(router: Router) -> None:
    client = router.ollama()
    listed = await client.list()
    assert [m.model for m in listed.models] == ["llama3.2:latest", "llama3.2:3b"]
    assert listed.models[0].modified_at is not None
    async with router.http.get(f"{router.url}/api/version") as response:
        assert (await response.json())["version"]
    async with router.http.get(f"{router.url}/") as response:
        assert await response.text() == "Ollama is running"
    async with router.http.head(f"{router.url}/") as response:
        assert response.status == 200


async def test_errors_in_ollama_dialect(router: Router, vllm: EngineStandin) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        await router.ollama().chat(model="mistral", messages=MESSAGES)
    assert caught.value.status_code == 404
    assert "model 'mistral' not found" in caught.value.error
    with pytest.raises(ollama.ResponseError) as caught:
        await router.ollama("llama32-unknown").chat(model="llama3.2", messages=MESSAGES)
    assert caught.value.status_code == 404 and "matches no consumer" in caught.value.error
    async with router.http.post(
        f"{router.url}/api/chat", data=b"{oops", headers={"Host": "llama32-notes"}
    ) as response:
        assert response.status == 400
        error = (await response.json())["error"]
        assert isinstance(error, str) and "not valid JSON" in error
    async with router.http.post(
        f"{router.url}/api/generate", data=b"x" * 70_000, headers={"Host": "llama32-notes"}
    ) as response:
        assert response.status == 413
        assert "larger than the limit" in (await response.json())["error"]
    vllm.behaviour.fail_status = 422
    with pytest.raises(ollama.ResponseError) as caught:
        async for _ in await router.ollama().chat(model="llama3.2", messages=MESSAGES, stream=True):
            pass
    assert caught.value.status_code == 422 and caught.value.error == "vllm failed on purpose"
