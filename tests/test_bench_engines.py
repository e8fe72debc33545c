"""The engine benchmark's pure parts: reading the SSE stream (content chunks, the usage chunk,
`[DONE]`), one phase's figures from its requests, min/median/max over repeats, the vLLM/Ollama
ratios and the printed table. No engine is started: the client is shown one canned stream
from a local aiohttp server, in each engine's chunk shape."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from bench.engines import report
from bench.engines.client import (
    Phase,
    Sample,
    StreamFailed,
    chat_body,
    chunk_content,
    parse_event,
    run_phase,
)
from testsupport.aioserve import serving


def test_the_request_is_greedy_streamed_capped_and_asks_for_usage() -> None:
    body = json.loads(chat_body("tiny-llama", "hi", 64))
    assert body == {
        "model": "tiny-llama",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 64,
        "temperature": 0,
    }


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'data: {"choices": []}\n', {"choices": []}),
        (b"data:[DONE]\n", "done"),
        (b"data: [DONE]\r\n", "done"),
        (b"\n", None),
        (b": keep-alive comment\n", None),
        (b"event: message\n", None),
    ],
)
def test_sse_lines(line: bytes, expected: object) -> None:
    assert parse_event(line) == expected


@pytest.mark.parametrize(
    ("chunk", "text"),
    [
        ({"choices": [{"delta": {"role": "assistant", "content": ""}}]}, ""),  # vLLM's first
        ({"choices": [{"delta": {"role": "assistant", "content": "ab"}}]}, "ab"),  # Ollama's
        ({"choices": [{"delta": {"content": "c"}, "finish_reason": None}]}, "c"),
        ({"choices": [{"delta": {}, "finish_reason": "length"}]}, ""),
        ({"choices": [], "usage": {"completion_tokens": 3}}, ""),  # the usage chunk
        ({"choices": [{"delta": {"content": None}}]}, ""),
    ],
)
def test_only_content_counts_as_a_token_chunk(chunk: dict[str, Any], text: str) -> None:
    assert chunk_content(chunk) == text


def test_time_per_output_token_is_the_decode_pace_after_the_first() -> None:
    assert Sample(ttft=0.1, last=0.5, total=0.6, tokens=5, token_source="usage").tpot == (
        pytest.approx(0.1)
    )
    assert Sample(ttft=0.1, last=0.1, total=0.2, tokens=1, token_source="usage").tpot is None


def _sample(ttft_ms: float, tokens: int = 11, tpot_ms: float = 2.0) -> Sample:
    ttft = ttft_ms / 1000
    last = ttft + (tokens - 1) * tpot_ms / 1000
    return Sample(ttft, last, last + 0.001, tokens, "usage", chunks=tokens // 2)


def test_a_phase_summary() -> None:
    phase = Phase(
        samples=[_sample(10), _sample(20), _sample(30), _sample(40, tokens=21, tpot_ms=4.0)],
        errors=["HTTP 500"],
        wall_s=2.0,
    )
    s = report.summarise_phase(phase)
    assert (s["requests"], s["errors"], s["error_samples"]) == (4, 1, ["HTTP 500"])
    assert s["ttft_p50_ms"] == pytest.approx(25.0)
    assert s["ttft_p90_ms"] == pytest.approx(37.0)
    assert s["tpot_p50_ms"] == pytest.approx(2.0)
    assert s["tokens_per_s"] == pytest.approx((11 * 3 + 21) / 2.0)
    assert s["tokens_mean"] == pytest.approx(13.5)
    assert s["chunks_mean"] == pytest.approx((5 * 3 + 10) / 4)
    assert s["token_sources"] == ["usage"]


def test_a_phase_without_answers_has_no_figures() -> None:
    s = report.summarise_phase(Phase(samples=[], errors=["refused"] * 3, wall_s=0.5))
    assert s["errors"] == 3
    for key in ("ttft_p50_ms", "tpot_p50_ms", "tokens_per_s", "tokens_mean"):
        assert math.isnan(s[key]), key


def _phase(ttft: float, tps: float, **extra: float) -> dict[str, Any]:
    return {
        "ttft_p50_ms": ttft,
        "ttft_p90_ms": ttft * 2,
        "tpot_p50_ms": 1000 / tps,
        "tokens_per_s": tps,
        "stream_tokens_per_s": tps,
        "tokens_mean": 64.0,
        "chunks_mean": 64.0,
        "errors": 0,
        **extra,
    }


REPEATS: list[dict[str, dict[int, dict[str, Any]]]] = [
    {
        "vllm": {1: _phase(10, 250, engine_cores_busy=2.0), 8: _phase(80, 800)},
        "ollama": {1: _phase(14, 1000, others_cores_busy=0.5), 8: _phase(90, 900)},
    },
    {
        "vllm": {1: _phase(12, 270, engine_cores_busy=1.9), 8: _phase(86, 840)},
        "ollama": {1: _phase(13, 1100, others_cores_busy=0.1), 8: _phase(88, 880)},
    },
    {
        "vllm": {1: _phase(11, 260, engine_cores_busy=1.8), 8: _phase(84, 820)},
        "ollama": {1: _phase(20, 1050), 8: _phase(87, 890)},
    },
]


def test_min_median_max_over_repeats() -> None:
    figures = report.aggregate(REPEATS)
    assert figures["vllm"][1]["ttft_p50_ms"] == {"min": 10, "median": 11, "max": 12, "n": 3}
    assert figures["ollama"][8]["tokens_per_s"]["median"] == 890
    assert figures["vllm"][1]["engine_cores_busy"]["median"] == pytest.approx(1.9)
    # A figure the runner did not record stays empty rather than zero.
    assert figures["vllm"][8]["engine_cores_busy"]["n"] == 0


def test_ratios_divide_vllm_medians_by_ollama_medians() -> None:
    rel = report.ratios(report.aggregate(REPEATS))
    assert sorted(rel) == [1, 8]
    assert rel[1]["ttft_p50_ms"] == pytest.approx(11 / 14)
    assert rel[8]["tokens_per_s"] == pytest.approx(820 / 890)
    assert math.isnan(rel[1]["engine_cores_busy"])  # Ollama's is missing here
    # Other processes' CPU describes the machine, not an engine: no ratio.
    assert all(report.CONDITIONS.isdisjoint(figures) for figures in rel.values())


def test_the_table() -> None:
    text = report.table(report.aggregate(REPEATS))
    lines = text.splitlines()
    assert lines[0].split() == ["streams", "figure", "vllm", "ollama", "vllm/ollama"]
    assert set(lines[1]) <= {"-", " "}
    ttft_1 = next(line for line in lines if line.startswith("1 ") and "TTFT p50" in line)
    assert "11.0 (10.0-12.0)" in ttft_1
    assert "14.0 (13.0-20.0)" in ttft_1
    assert ttft_1.endswith("0.79")
    others_1 = next(line for line in lines if line.startswith("1 ") and "other process" in line)
    assert others_1.split()[-1] == "(0.1-0.5)"  # Ollama's figure, and no ratio after it
    cores_8 = next(line for line in lines if line.startswith("8 ") and "engine cores" in line)
    assert cores_8.split()[-2:] == ["-", "-"]  # no figure, no ratio
    # One row per figure and the errors, per concurrency, under the two header lines.
    assert len(lines) == 2 + 2 * (len(report.METRICS) + 1)


# ----------------------------------------------------------- the client on a canned stream
def _sse(chunks: list[dict[str, Any]]) -> bytes:
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


def _delta(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


STREAMS = {
    # vLLM: an empty role chunk first, the finish chunk, then usage.
    "/vllm": [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        _delta("a"),
        _delta("b"),
        _delta("c"),
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}},
    ],
    # No usage chunk: the client counts content chunks.
    "/nousage": [_delta("a"), _delta("b")],
    # Two tokens in one chunk, as a server that fell behind its engine sends them.
    "/coalesced": [
        _delta("a"),
        _delta("bc"),
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}},
    ],
    "/empty": [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}],
}


@pytest.fixture
async def canned() -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.json()
        name = request.path.removesuffix("/v1/chat/completions")
        if name == "/refuse":
            return web.json_response({"error": "busy"}, status=503)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(_sse(STREAMS[name]))
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/{name}/v1/chat/completions", handler)
    async with serving(app) as url:
        yield url


async def test_the_client_counts_tokens_from_usage_or_from_content_chunks(canned: str) -> None:
    body = chat_body("m", "p", 3)
    phase = await run_phase(canned + "/vllm", body, concurrency=2, requests=3)
    assert phase.errors == []
    assert [(s.tokens, s.token_source, s.chunks) for s in phase.samples] == [(3, "usage", 3)] * 3
    for s in phase.samples:
        assert 0 < s.ttft <= s.last <= s.total
    phase = await run_phase(canned + "/coalesced", body, concurrency=1, requests=1)
    assert [(s.tokens, s.token_source, s.chunks) for s in phase.samples] == [(3, "usage", 2)]
    phase = await run_phase(canned + "/nousage", body, concurrency=1, requests=1)
    assert [(s.tokens, s.token_source, s.chunks) for s in phase.samples] == [(2, "chunks", 2)]


async def test_failed_streams_are_errors_not_samples(canned: str) -> None:
    body = chat_body("m", "p", 3)
    for path, expected in (("/refuse", "HTTP 503"), ("/empty", "without content")):
        phase = await run_phase(canned + path, body, concurrency=1, requests=2)
        assert phase.samples == []
        assert len(phase.errors) == 2
        assert expected in phase.errors[0], phase.errors[0]
        assert StreamFailed.__name__ in phase.errors[0]
