"""The streaming client, one code path for both engines: each request is an OpenAI chat
completion streamed over SSE from the engine's own `/v1/chat/completions` (vLLM's and
Ollama's OpenAI-compatible endpoint), timed at its first content chunk and its last one.

Output tokens are counted from the final `usage` chunk (`stream_options.include_usage`), which
both engines send; a stream without one falls back to counting content chunks, and the
request records which source it used so the report can say so.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

CHAT = "/v1/chat/completions"
TIMEOUT = aiohttp.ClientTimeout(total=300, sock_connect=10)


def chat_body(model: str, prompt: str, max_tokens: int) -> bytes:
    """The request every engine gets: greedy (temperature 0), one user turn, a token cap,
    and the usage chunk at the end of the stream."""
    doc: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Sample:
    """One request as the client saw it; times in seconds from sending it."""

    ttft: float
    """Until the first chunk carrying content."""
    last: float
    """Until the last chunk carrying content."""
    total: float
    """Until `[DONE]`."""
    tokens: int
    token_source: str
    """"usage" (the engine's count) or "chunks" (content chunks counted by the client)."""
    chunks: int = 0
    """Content chunks received: fewer than `tokens` when the engine sent several tokens in
    one chunk (a server that fell behind its engine coalesces them; then the time per
    output token seen by the client is shorter, and TTFT longer, than the engine's)."""

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first: the decode pace, None for one token."""
        if self.tokens < 2:
            return None
        return (self.last - self.ttft) / (self.tokens - 1)


class StreamFailed(Exception):
    """A stream answered with an error status, carried no content or ended without `[DONE]`."""


def parse_event(line: bytes) -> dict[str, Any] | str | None:
    """One SSE line: the chunk's JSON, "done" for `[DONE]`, None for anything else
    (blank lines, comments)."""
    text = line.decode("utf-8", errors="replace").strip()
    if not text.startswith("data:"):
        return None
    payload = text[len("data:") :].strip()
    if payload == "[DONE]":
        return "done"
    chunk: dict[str, Any] = json.loads(payload)
    return chunk


def chunk_content(chunk: dict[str, Any]) -> str:
    """The text a chunk adds (empty for role-only, finish and usage chunks)."""
    return "".join(
        (choice.get("delta") or {}).get("content") or "" for choice in chunk.get("choices") or []
    )


def client_session(connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, keepalive_timeout=60)
    return aiohttp.ClientSession(connector=connector, timeout=TIMEOUT)


async def stream_once(session: aiohttp.ClientSession, url: str, body: bytes) -> Sample:
    """Send one streaming request and time it."""
    start = time.perf_counter()
    first: float | None = None
    last = 0.0
    chunks = 0
    usage_tokens: int | None = None
    async with session.post(
        url + CHAT, data=body, headers={"Content-Type": "application/json"}
    ) as resp:
        if resp.status != 200:
            raise StreamFailed(f"HTTP {resp.status}: {(await resp.text())[:200]}")
        async for line in resp.content:
            event = parse_event(line)
            if event is None:
                continue
            now = time.perf_counter() - start
            if event == "done":
                if first is None:
                    raise StreamFailed("stream ended without content")
                tokens = usage_tokens if usage_tokens is not None else chunks
                source = "usage" if usage_tokens is not None else "chunks"
                return Sample(first, last, now, tokens, source, chunks)
            assert isinstance(event, dict)
            if chunk_content(event):
                chunks += 1
                last = now
                if first is None:
                    first = now
            usage = event.get("usage")
            if usage and usage.get("completion_tokens") is not None:
                usage_tokens = int(usage["completion_tokens"])
    raise StreamFailed("stream ended without [DONE]")


@dataclass
class Phase:
    """One engine at one concurrency: every request's sample, the errors and the wall time."""

    samples: list[Sample]
    errors: list[str]
    wall_s: float


async def run_phase(url: str, body: bytes, concurrency: int, requests: int) -> Phase:
    """`requests` streams, `concurrency` at a time (closed loop: each worker sends its next
    request when the last one ends), all on one keep-alive pool."""
    pending = iter(range(requests))
    samples: list[Sample] = []
    errors: list[str] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in pending:
            try:
                samples.append(await stream_once(session, url, body))
            except (TimeoutError, aiohttp.ClientError, StreamFailed) as exc:
                errors.append(repr(exc))

    async with client_session(concurrency) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return Phase(samples, errors, wall)


__all__ = [
    "CHAT",
    "Phase",
    "Sample",
    "StreamFailed",
    "chat_body",
    "chunk_content",
    "parse_event",
    "run_phase",
    "stream_once",
]
