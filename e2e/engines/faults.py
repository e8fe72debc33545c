"""A fault injector in front of a real server: forwards every request unchanged, streaming
included, and on demand answers a share of inference requests with HTTP 500, delays them, or
answers everything with a canned reply.

This is how the e2e tier makes a vLLM canary bad without touching vLLM (the router sees
exactly what it would see from a failing or slow engine), and a real Prometheus answer empty,
NaN or HTTP 500.
"""

from __future__ import annotations

import asyncio
import random
import threading
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from testsupport.aioserve import Served, serve

# Hop-by-hop headers, and the encoding ones: aiohttp's client decompresses what it reads, so
# forwarding Content-Encoding would announce gzip over a plain body.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "content-encoding",
    "accept-encoding",
}


@dataclass
class Faults:
    """What to inject now; the test thread changes these fields directly."""

    error_share: float = 0.0
    """Share of inference requests (`/v1/...` POSTs) answered with HTTP 500."""
    paths: tuple[str, ...] = ()
    """When set, `error_share` applies to these paths only (`/v1/completions`): an engine
    failing one request kind."""
    delay_seconds: float = 0.0
    """Delay before forwarding an inference request (adds to time to first token)."""
    canned: tuple[int, object] | None = None
    """(status, JSON body) answered to every request instead of forwarding it (e.g. a
    Prometheus that answers empty, NaN or HTTP 500)."""

    def clear(self) -> None:
        self.error_share = 0.0
        self.paths = ()
        self.delay_seconds = 0.0
        self.canned = None


class FaultProxy:
    """The injector on its own event loop in a daemon thread."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults = Faults()
        self.injected = 0
        self._loop = asyncio.new_event_loop()
        self._served: Served | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        if self.faults.canned is not None:
            self.injected += 1
            status, body = self.faults.canned
            return web.json_response(body, status=status)
        inference = request.method == "POST" and request.path.startswith("/v1/")
        chosen = not self.faults.paths or request.path in self.faults.paths
        if inference and chosen and random.random() < self.faults.error_share:
            self.injected += 1
            return web.json_response({"error": {"message": "injected fault"}}, status=500)
        if inference and self.faults.delay_seconds:
            await asyncio.sleep(self.faults.delay_seconds)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=await request.read(),
        ) as upstream:
            answer = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP},
            )
            try:
                await answer.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await answer.write(chunk)
                await answer.write_eof()
            except ConnectionResetError:
                pass  # the router went away first (a client that hung up): nothing to relay
            return answer

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # aiohttp's default grace: streams still being relayed may finish.
        self._served = await serve(app, shutdown_timeout=60.0)
        self.port = self._served.port

    async def _stop(self) -> None:
        if self._served is not None:
            await self._served.close()
        if self._session is not None:
            await self._session.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        threading.Thread(target=self._loop.run_forever, name="faults", daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
