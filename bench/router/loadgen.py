"""The Python load generator (asyncio + aiohttp client): closed-loop streaming clients that
time each request's first SSE data chunk (TTFT) and its end, and a burst of long streams held
open at once.

Each of `concurrency` workers sends one streaming chat request after the other on a keep-alive
pool until the phase ends, so the phase stops by itself; only requests started after the
warm-up count. A request counts as an error unless it answers 200 and ends with `[DONE]`.
Held streams are the exception: the client closes them once measured, and that is no error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.router.config import HOST, MODEL

CHAT = "/v1/chat/completions"
HEADERS = {"Host": HOST, "Content-Type": "application/json"}
TIMEOUT = aiohttp.ClientTimeout(total=120, sock_connect=10)


def chat_body(stream: bool, max_tokens: int, standin: dict[str, float] | None = None) -> bytes:
    """A small chat request; `standin` overrides the backend's pacing (see backend.py)."""
    doc: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
        "stream": stream,
        "max_tokens": max_tokens,
    }
    if standin:
        doc["x_standin"] = standin
    return json.dumps(doc, separators=(",", ":")).encode()


class StreamFailed(Exception):
    """A stream answered with an error status or ended without `[DONE]`."""


@dataclass
class StreamRun:
    """One streaming phase as the client saw it; times in seconds."""

    ttft: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    completed: int = 0
    """Requests finished in the whole phase, warm-up included (the CPU figures' divisor)."""
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def fail(self, err: BaseException) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(repr(err))


def client_session(timeout: aiohttp.ClientTimeout = TIMEOUT) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


async def stream_once(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    opened: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """Sends one streaming request; returns (ttft, end-to-end) in seconds."""
    start = time.perf_counter()
    first = 0.0
    tail = b""
    async with session.post(url, data=body, headers=HEADERS) as response:
        if response.status != 200:
            text = await response.text()
            raise StreamFailed(f"HTTP {response.status}: {text[:200]}")
        while chunk := await response.content.readany():
            if not first and b"data:" in chunk:
                first = time.perf_counter()
                if opened is not None:
                    opened()
            tail = tail[-16:] + chunk
    end = time.perf_counter()
    if not first or b"[DONE]" not in tail:
        raise StreamFailed("the stream ended without [DONE]")
    return first - start, end - start


async def run_streams(
    base_urls: list[str],
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    body: bytes,
) -> StreamRun:
    """`concurrency` closed-loop streaming clients for `warmup_s + duration_s` seconds."""
    run = StreamRun()
    urls = [base + CHAT for base in base_urls]
    began = time.perf_counter()
    measure_from = began + warmup_s
    stop_at = measure_from + duration_s

    async def worker(session: aiohttp.ClientSession) -> None:
        while (now := time.perf_counter()) < stop_at:
            url = urls[0] if len(urls) == 1 else random.choice(urls)
            try:
                ttft, e2e = await stream_once(session, url, body)
            except (aiohttp.ClientError, StreamFailed, TimeoutError) as err:
                run.fail(err)
                await asyncio.sleep(0.01)  # no hot loop against a failing path
                continue
            run.completed += 1
            if now >= measure_from:
                run.ttft.append(ttft)
                run.e2e.append(e2e)

    async with client_session() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    run.wall_s = time.perf_counter() - began
    return run


@dataclass
class HoldRun:
    """A burst of long streams, held open together; times in seconds."""

    streams: int
    opened: int = 0
    open_all_s: float = float("nan")
    """From the burst's start until every stream had its first event."""
    ttft: list[float] = field(default_factory=list)
    """Per stream, from the burst's start to its first event."""
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    measured: dict[str, Any] = field(default_factory=dict)
    """What `measure` returned while all streams were open."""


HOLD_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10)
"""Held streams last minutes; they end when the client closes them."""


async def hold_streams(
    base_urls: list[str],
    streams: int,
    body: bytes,
    measure: Callable[[], dict[str, Any]],
    settle_s: float = 1.0,
    open_timeout_s: float = 30.0,
) -> HoldRun:
    """Opens `streams` streams at once, calls `measure` once all had their first event (or
    after `open_timeout_s`), then closes them all (the client leaves mid-stream)."""
    run = HoldRun(streams)
    urls = [base + CHAT for base in base_urls]
    all_open = asyncio.Event()
    began = time.perf_counter()

    def opened() -> None:
        # The streams are closed before they end, so their TTFT is taken here.
        now = time.perf_counter()
        run.ttft.append(now - began)
        run.opened += 1
        if run.opened == streams:
            run.open_all_s = now - began
            all_open.set()

    async def one(session: aiohttp.ClientSession, index: int) -> None:
        try:
            await stream_once(session, urls[index % len(urls)], body, opened)
        except (aiohttp.ClientError, StreamFailed, TimeoutError) as err:
            run.errors += 1
            if len(run.error_samples) < 5:
                run.error_samples.append(repr(err))

    async with client_session(HOLD_TIMEOUT) as session:
        tasks = [asyncio.create_task(one(session, i)) for i in range(streams)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_open.wait(), open_timeout_s)
        await asyncio.sleep(settle_s)
        run.measured = measure()
        for task in tasks:
            task.cancel()  # closes each stream's connection
        await asyncio.gather(*tasks, return_exceptions=True)
    return run


__all__ = [
    "CHAT",
    "HoldRun",
    "StreamFailed",
    "StreamRun",
    "chat_body",
    "client_session",
    "hold_streams",
    "run_streams",
    "stream_once",
]
