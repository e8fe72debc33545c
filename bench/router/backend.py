"""A stand-in for an LLM engine in the router benchmark: an OpenAI-compatible chat server with
fixed, configurable latencies, so that anything measured above them is the proxy's cost.

It is NOT an engine and not a test double for the router's tests: it answers every
`POST /v1/chat/completions` (or `/v1/completions`) with canned tokens. `stream: true` gets an
SSE stream (`Transfer-Encoding: chunked`, headers at once, the first event after
`ttft_ms`, then one event every `token_ms`, then `data: [DONE]`); anything else gets one JSON
completion after `json_delay_ms` (0 by default, so that request rate measures the proxy).
`GET /stats` counts requests and open streams, which the benchmark reads to check the traffic
split and the number of held streams.

It is written directly on `asyncio.Protocol` with timers instead of one task per request, so
a single process on a shared core stays far cheaper than the proxies measured against it.
Request bodies must carry `Content-Length` (every client in the benchmark sends it); a
request may override the latencies in a non-standard body field
`"x_standin": {"ttft_ms": ..., "token_ms": ..., "tokens": ...}`, and `max_tokens` caps the
token count as it would on an engine.

Run: `python -m bench.router.backend --port 9001 [--ttft-ms 50 --token-ms 20 --tokens 16]`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import signal
from dataclasses import dataclass
from typing import Any

MAX_HEAD_BYTES = 16 * 1024
CREATED = 1_700_000_000  # fixed, so the canned events are identical from run to run


@dataclass(frozen=True, slots=True)
class Latency:
    """How one answer is paced."""

    ttft_ms: float
    token_ms: float
    tokens: int
    json_delay_ms: float


@dataclass(slots=True)
class Counters:
    """What `GET /stats` reports."""

    requests: int = 0
    streams: int = 0
    open_streams: int = 0
    connections: int = 0


@functools.lru_cache(maxsize=4096)
def _event(model: str, index: int, last: bool) -> bytes:
    """One SSE event, framed as an HTTP chunk (cached: streams repeat the same events)."""
    doc = {
        "id": "chatcmpl-standin",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "delta": {"content": f" token{index}"},
                "finish_reason": "stop" if last else None,
            }
        ],
    }
    payload = b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"
    if last:
        payload += b"data: [DONE]\n\n"
    return _chunk(payload) + (b"0\r\n\r\n" if last else b"")


@functools.lru_cache(maxsize=256)
def _completion(model: str, tokens: int) -> bytes:
    doc = {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "".join(f" token{i}" for i in range(tokens)),
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 8, "completion_tokens": tokens, "total_tokens": 8 + tokens},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _response(status: str, content_type: str, body: bytes, keep_alive: bool) -> bytes:
    connection = b"keep-alive" if keep_alive else b"close"
    head = b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n" % (
        status.encode(),
        content_type.encode(),
        len(body),
        connection,
    )
    return head + body


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


class StandinProtocol(asyncio.Protocol):
    """One client connection: parses HTTP/1.1 requests (keep-alive, pipelining) and answers
    them one at a time; a stream is driven by `loop.call_later` timers."""

    def __init__(self, latency: Latency, counters: Counters) -> None:
        self.latency = latency
        self.counters = counters
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.counters.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.counters.connections -= 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            self.counters.open_streams -= 1
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._next()

    def _next(self) -> None:
        """Answers every complete request in the buffer, unless one is still being answered."""
        while not self.busy and self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD_BYTES:
                    self._fail(b"431 Request Header Fields Too Large")
                return
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                self._fail(b"400 Bad Request")
                return
            method, target, version = parts
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._fail(b"411 Length Required")
                return
            length = int(headers.get("content-length", "0") or 0)
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            connection = headers.get("connection", "").lower()
            keep_alive = connection != "close" and (
                version == "HTTP/1.1" or connection == "keep-alive"
            )
            self._dispatch(method, target.partition("?")[0], body, keep_alive)

    def _fail(self, status: bytes) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % status
        )
        self.transport.close()

    def _send(self, status: str, content_type: str, body: bytes, keep_alive: bool) -> None:
        assert self.transport is not None
        self.transport.write(_response(status, content_type, body, keep_alive))
        if not keep_alive:
            self.transport.close()

    def _dispatch(self, method: str, path: str, body: bytes, keep_alive: bool) -> None:
        if method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            self._generate(body, keep_alive)
        elif method == "GET" and path == "/stats":
            c = self.counters
            stats = {
                "requests": c.requests,
                "streams": c.streams,
                "open_streams": c.open_streams,
                "connections": c.connections,
            }
            self._send("200 OK", "application/json", json.dumps(stats).encode(), keep_alive)
        elif method == "GET" and path in ("/health", "/healthz", "/v1/models"):
            models = {"object": "list", "data": [{"id": "llama3.2", "object": "model"}]}
            self._send("200 OK", "application/json", json.dumps(models).encode(), keep_alive)
        else:
            self._send("404 Not Found", "text/plain", b"not found", keep_alive)

    def _generate(self, body: bytes, keep_alive: bool) -> None:
        try:
            doc: Any = json.loads(body)
            model = str(doc["model"])
        except (ValueError, KeyError, TypeError):
            self._send("400 Bad Request", "text/plain", b"bad request body", keep_alive)
            return
        self.counters.requests += 1
        latency = self._latency(doc)
        if doc.get("stream") is True:
            self._stream(model, latency, keep_alive)
        elif latency.json_delay_ms > 0:
            self.busy = True
            self.loop.call_later(
                latency.json_delay_ms / 1000, self._answer_later, model, latency, keep_alive
            )
        else:
            self._send("200 OK", "application/json", _completion(model, latency.tokens), keep_alive)

    def _latency(self, doc: dict[str, Any]) -> Latency:
        base = self.latency
        override = doc.get("x_standin")
        tokens = base.tokens
        ttft_ms, token_ms = base.ttft_ms, base.token_ms
        if isinstance(override, dict):
            ttft_ms = float(override.get("ttft_ms", ttft_ms))
            token_ms = float(override.get("token_ms", token_ms))
            tokens = int(override.get("tokens", tokens))
        cap = doc.get("max_tokens")
        if isinstance(cap, int) and cap > 0:
            tokens = min(tokens, cap)
        return Latency(ttft_ms, token_ms, max(tokens, 1), base.json_delay_ms)

    def _answer_later(self, model: str, latency: Latency, keep_alive: bool) -> None:
        self.busy = False
        if self.transport is None:
            return
        self._send("200 OK", "application/json", _completion(model, latency.tokens), keep_alive)
        self._next()

    def _stream(self, model: str, latency: Latency, keep_alive: bool) -> None:
        assert self.transport is not None
        self.busy = True
        self.counters.streams += 1
        self.counters.open_streams += 1
        self.transport.write(STREAM_HEAD)
        self.timer = self.loop.call_later(
            latency.ttft_ms / 1000, self._token, model, latency, 0, keep_alive
        )

    def _token(self, model: str, latency: Latency, index: int, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None:
            return
        last = index == latency.tokens - 1
        transport.write(_event(model, index, last))
        if not last:
            self.timer = self.loop.call_later(
                latency.token_ms / 1000, self._token, model, latency, index + 1, keep_alive
            )
            return
        self.timer = None
        self.counters.open_streams -= 1
        self.busy = False
        if not keep_alive:
            transport.close()
            return
        self._next()


async def serve(host: str, port: int, latency: Latency) -> None:
    """Serves until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    counters = Counters()
    server = await loop.create_server(
        lambda: StandinProtocol(latency, counters), host, port, backlog=4096, reuse_address=True
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.router.backend", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ttft-ms", type=float, default=50.0, help="time to the first event")
    parser.add_argument("--token-ms", type=float, default=20.0, help="time between events")
    parser.add_argument("--tokens", type=int, default=16, help="events per stream")
    parser.add_argument(
        "--json-delay-ms", type=float, default=0.0, help="delay of a non-streaming answer"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    latency = Latency(args.ttft_ms, args.token_ms, args.tokens, args.json_delay_ms)
    asyncio.run(serve(args.host, args.port, latency))


if __name__ == "__main__":
    main()
