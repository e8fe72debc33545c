"""Ollama <-> OpenAI translation, and SSE parsing, without a network: the outputs must be
what the official `ollama` client's own types accept."""

from __future__ import annotations

import json
import time

import ollama
import pytest

from inferops.router.errors import RouterError
from inferops.router.relay import SsePassthrough, find_usage
from inferops.router.sse import SseParser
from inferops.router.translate import (
    OllamaStream,
    chat_request,
    convert_messages,
    error_message,
    generate_request,
)


def sse(*events: object) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)


def test_sse_parser_survives_any_chunking() -> None:
    stream = sse({"a": 1}, {"b": "x\ny"}) + b"data: [DONE]\n\n"
    stream = stream.replace(b"\n", b"\r\n", 2)  # a CRLF-speaking server, for part of it
    for size in (1, 2, 3, 7, len(stream)):
        parser = SseParser()
        events = [e for i in range(0, len(stream), size) for e in parser.feed(stream[i : i + size])]
        assert events == [b'{"a": 1}', b'{"b": "x\\ny"}', b"[DONE]"], size
    # Multi-line data, comments and other fields.
    assert SseParser().feed(b": keep-alive\n\nevent: x\ndata: 1\ndata:2\n\n") == [b"1\n2"]


def test_options_map_to_openai_names() -> None:
    body = chat_request(
        {
            "messages": [{"role": "user", "content": "q"}],
            "keep_alive": "5m",
            "format": {"type": "object"},
            "options": {
                "num_predict": -1,
                "top_k": 20,
                "repeat_penalty": 1.1,
                "num_ctx": 8192,
                "presence_penalty": 0.5,
            },
        },
        "llama3.2",
        stream=True,
    )
    assert body == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "q"}],
        "top_k": 20,
        "repetition_penalty": 1.1,
        "presence_penalty": 0.5,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": {"type": "object"}},
        },
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_generate_routes_raw_and_suffix_to_completions() -> None:
    path, body = generate_request({"prompt": "def f(", "suffix": "return x"}, "m", False)
    assert path == "/v1/completions"
    assert body == {"model": "m", "prompt": "def f(", "suffix": "return x", "stream": False}
    path, body = generate_request({"prompt": "hi", "template": "{{ .Prompt }}"}, "m", False)
    assert path == "/v1/chat/completions"
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_tool_results_are_matched_to_calls_by_name() -> None:
    messages = convert_messages(
        [
            {
                "role": "assistant",
                "tool_calls": [
                    {"function": {"name": "a", "arguments": {"x": 1}}},
                    {"function": {"name": "b", "arguments": {}}},
                ],
            },
            {"role": "tool", "tool_name": "b", "content": "B"},
            {"role": "tool", "tool_name": "a", "content": "A"},
        ]
    )
    ids = {c["function"]["name"]: c["id"] for c in messages[0]["tool_calls"]}
    assert messages[1]["tool_call_id"] == ids["b"] and messages[2]["tool_call_id"] == ids["a"]
    assert messages[0]["content"] == ""


@pytest.mark.parametrize(
    "bad",
    [
        {"messages": "hi"},
        {"messages": [{"content": "no role"}]},
        {"messages": [{"role": "user", "content": 3}]},
        {"messages": [], "options": [1]},
    ],
)
def test_malformed_native_requests_are_400(bad: dict[str, object]) -> None:
    with pytest.raises(RouterError) as caught:
        chat_request(bad, "m", False)
    assert caught.value.status == 400


def test_chat_stream_translation_parses_as_ollama_types() -> None:
    start = time.monotonic_ns()
    stream = OllamaStream("llama3.2", chat_api=True, chat_upstream=True, start_ns=start)
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}}]},
        {"choices": [{"index": 0, "delta": {"content": "Hi"}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
        {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}},
    ]
    raw = sse(*chunks) + b"data: [DONE]\n\n"
    out = b"".join(stream.feed(raw[i : i + 5]) for i in range(0, len(raw), 5)) + stream.finish()
    lines = out.decode().splitlines()
    parts = [ollama.ChatResponse(**json.loads(line)) for line in lines]
    assert [(p.message.thinking, p.message.content, p.done) for p in parts] == [
        ("hmm", "", False),
        (None, "Hi", False),
        (None, "", True),
    ]
    final = parts[-1]
    assert final.done_reason == "length" and final.eval_count == 2 and final.prompt_eval_count == 4
    assert final.total_duration is not None and final.total_duration >= 0
    assert stream.counts() == (4, 2)


def test_a_stream_that_ends_without_finishing_is_an_error() -> None:
    stream = OllamaStream("m", chat_api=False, chat_upstream=False, start_ns=0)
    assert json.loads(stream.feed(sse({"choices": [{"text": "a"}]})))["response"] == "a"
    assert json.loads(stream.finish()) == {"error": "the engine ended the stream before finishing"}
    assert stream.failed


def test_an_in_band_engine_error_becomes_an_ollama_error_line() -> None:
    stream = OllamaStream("m", chat_api=True, chat_upstream=True, start_ns=0)
    line = stream.feed(sse({"error": {"message": "out of memory", "code": 500}}))
    assert json.loads(line) == {"error": "out of memory"}
    assert stream.finish() == b""


def test_error_messages_of_every_engine_shape() -> None:
    assert error_message(b'{"error": {"message": "bad"}}', 400) == "bad"
    assert error_message(b'{"object": "error", "message": "old vllm"}', 400) == "old vllm"
    assert error_message(b'{"error": "ollama style"}', 400) == "ollama style"
    assert error_message(b"Internal Server Error", 500) == "Internal Server Error"
    assert error_message(b"", 502) == "engine answered HTTP 502"


def test_usage_is_found_without_parsing_the_whole_body() -> None:
    body = json.dumps(
        {"data": [{"embedding": [0.1] * 1000}], "usage": {"prompt_tokens": 9, "total_tokens": 9}}
    ).encode()
    assert find_usage(body) == (9, None)
    assert find_usage(b'{"usage": null}') == (None, None)
    assert find_usage(b'{"content": "no usage here"}') == (None, None)
    passthrough = SsePassthrough("text/event-stream")
    final = sse({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5}})
    for piece in (final[:20], final[20:], b"data: [DONE]\n\n"):
        passthrough.feed(piece)
    # The usage event, split across chunks and followed by [DONE], is in the last two.
    assert passthrough.counts() == (3, 5)
