"""Stand-ins for the engines: small in-process servers speaking the OpenAI API the way vLLM
(and Ollama's /v1) do, whose behaviour each test sets: latency, failing with a status,
streaming N chunks then stalling. They are not engines; they only make the router's side of
the conversation observable (what arrived, whether a stream was cancelled)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


def closed_port_url() -> str:
    """A URL nobody listens on: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass
class Seen:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Behaviour:
    fail_status: int | None = None
    """Answer every request with this status and an OpenAI-style error."""
    delay: float = 0.0
    """Seconds before the response headers."""
    stall_after: int | None = None
    """Stream this many content chunks, then go silent until the client leaves."""
    die_after: int | None = None
    """Stream this many content chunks, then drop the connection (a crash mid-stream)."""
    chunk_delay: float = 0.0
    words: list[str] = field(default_factory=list)


class FakeEngine:
    """A stand-in for one engine's OpenAI-compatible API, named like the engine it plays."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.behaviour = Behaviour(words=["Hello", " from", f" {name}"])
        self.seen: list[Seen] = []
        self.hits = 0
        self.cancelled = 0
        self.streams_open = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=0.1
        )
        await self._runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    # -- handlers ------------------------------------------------------------------------

    async def _common(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        body = await request.json()
        self.hits += 1
        self.seen.append(Seen(request.path, body, dict(request.headers)))
        b = self.behaviour
        if b.delay:
            try:
                await asyncio.sleep(b.delay)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if b.fail_status:
            error = {
                "message": f"{self.name} failed on purpose",
                "type": "server_error",
                "code": b.fail_status,
            }
            return body, web.json_response({"error": error}, status=b.fail_status)
        return body, None

    def _tool_call_requested(self, body: dict[str, Any]) -> bool:
        return bool(body.get("tools"))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self._common(request)
        if failed:
            return failed
        words = self.behaviour.words
        usage = {
            "prompt_tokens": 7,
            "completion_tokens": len(words),
            "total_tokens": 7 + len(words),
        }
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": "".join(words)}
            finish = "stop"
            if self._tool_call_requested(body):
                message = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_x",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                }
                finish = "tool_calls"
            return web.json_response(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body["model"],
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": usage,
                }
            )

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": w}) for w in words]
        finish = "stop"
        if self._tool_call_requested(body):
            events += [
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_x",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": ""},
                            }
                        ]
                    }
                ),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
            ]
            finish = "tool_calls"
        events.append(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": body["model"],
                    "choices": [],
                    "usage": usage,
                }
            )
        return await self._stream(request, events)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self._common(request)
        if failed:
            return failed
        words = self.behaviour.words
        usage = {
            "prompt_tokens": 5,
            "completion_tokens": len(words),
            "total_tokens": 5 + len(words),
        }
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "cmpl-1",
                    "object": "text_completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [{"index": 0, "text": "".join(words), "finish_reason": "length"}],
                    "usage": usage,
                }
            )
        events: list[dict[str, Any]] = [
            {
                "id": "cmpl-1",
                "object": "text_completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "text": w, "finish_reason": None}],
            }
            for w in words
        ]
        events[-1]["choices"][0]["finish_reason"] = "length"
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(
                {
                    "id": "cmpl-1",
                    "object": "text_completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [],
                    "usage": usage,
                }
            )
        return await self._stream(request, events)

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self._common(request)
        if failed:
            return failed
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        marker = 1.0 if self.name == "vllm" else 2.0
        # Listed in reverse order on purpose: clients must sort by index.
        data = [
            {"object": "embedding", "index": i, "embedding": [marker, float(len(text)), 0.5]}
            for i, text in reversed(list(enumerate(inputs)))
        ]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)},
            }
        )

    async def _stream(
        self, request: web.Request, events: list[dict[str, Any]]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        self.streams_open += 1
        b = self.behaviour
        try:
            for index, event in enumerate(events):
                if b.stall_after is not None and index > b.stall_after:
                    await asyncio.Event().wait()  # silent until the router hangs up
                if b.die_after is not None and index > b.die_after:
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                if b.chunk_delay:
                    await asyncio.sleep(b.chunk_delay)
                await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled += 1
            raise
        finally:
            self.streams_open -= 1
        return response
