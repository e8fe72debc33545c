"""The engine STAND-IN of the tests (not an engine), and its faults: one module, one set of
fault options (`Faults`), in three forms.

- `EngineStandin`: a small server speaking the OpenAI API the way vLLM (and Ollama's /v1)
  do, and, named "ollama", Ollama's own API (`GET /`, `/api/version`, `/api/tags`,
  `/api/show`, `/api/ps`, `/api/chat`, `/api/generate`, `/api/embed`, `/api/embeddings`),
  with deterministic answers; it records what arrived and whether a stream was cancelled,
  which makes the router's side of the conversation observable.
- `FaultProxy`: the same faults in front of a real server (real vLLM, a real Prometheus),
  forwarding everything else unchanged, streams included: how the e2e tier makes a canary
  bad without touching vLLM.
- `InThread` runs either on its own event loop for synchronous tests; `StandinProcess` runs
  the engine stand-in as a process (`python -m testsupport.standin`).

Faults (`Faults`, the fields a test sets, changeable while it runs): an HTTP status on
inference requests (all, a random share, or all after the first N), a delay before the
response headers, a delay between stream chunks, a stream that stalls or whose connection
drops after N chunks (the engine only: a proxy does not know an upstream's chunks), a
canned answer to every request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, Protocol, Self, TypeVar

import aiohttp
from aiohttp import web

from testsupport.aioserve import Served, serve
from testsupport.process import LocalServer, ManagedProcess, StopsOnExit

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
class Faults:
    """What to inject now; a test changes these fields directly, `clear()` ends them all."""

    fail_status: int | None = None
    """Answer inference requests with this status and an error in the API's dialect."""
    fail_share: float = 1.0
    """The share of inference requests that fail (drawn at random)."""
    fail_after: int = 0
    """The first N inference requests are answered as usual (and the engine stand-in's
    metadata endpoints too: they fail only when every request does)."""
    fail_paths: dict[str, int] = field(default_factory=dict)
    """Inference paths (`/v1/embeddings`) failing with their status whatever the rest says:
    an engine failing one request kind only."""
    delay: float = 0.0
    """Seconds before the response headers (adds to the time to first token)."""
    chunk_delay: float = 0.0
    """Seconds before each stream chunk."""
    stall_after: int | None = None
    """Stream this many content chunks, then go silent until the client leaves."""
    die_after: int | None = None
    """Stream this many content chunks, then drop the connection (a crash mid-stream)."""
    canned: tuple[int, object] | None = None
    """(status, JSON body) answered to every request instead (e.g. a Prometheus answering
    empty, NaN or HTTP 500)."""

    def failing(self, path: str, served: int) -> int | None:
        """The status to fail an inference request on `path` with, after `served` earlier
        ones."""
        if path in self.fail_paths:
            return self.fail_paths[path]
        if self.fail_status is None or served < self.fail_after:
            return None
        return self.fail_status if random.random() < self.fail_share else None

    def clear(self) -> None:
        for fault in fields(Faults):
            default = fault.default_factory() if callable(fault.default_factory) else fault.default
            setattr(self, fault.name, default)


@dataclass
class Behaviour(Faults):
    """The engine stand-in's faults and what it answers."""

    words: list[str] = field(default_factory=list)
    max_model_len: int = 2048
    """What `/v1/models` reports (vLLM's field)."""
    loaded: bool = True
    """Whether Ollama's `/api/ps` lists the model."""
    context_length: int = 4096
    """The context Ollama's `/api/ps` reports the model loaded with."""
    models: list[str] | None = None
    """The models inference requests may name (404 for another, as the engines answer);
    None: any."""
    show: dict[str, Any] = field(default_factory=lambda: dict(OLLAMA_SHOW))
    """Ollama's `/api/show` answer for the model."""


# Shaped like Ollama's `/api/show` answer for llama3.2:3b (its docs/api.md and api/types.go):
# the fields and their types; values made up where they do not matter.
OLLAMA_SHOW: dict[str, Any] = {
    "license": "LLAMA 3.2 COMMUNITY LICENSE AGREEMENT",
    "modelfile": '# Modelfile generated by "ollama show"\nFROM /root/.ollama/models/blobs/x\n',
    "parameters": 'stop                           "<|eot_id|>"',
    "template": "{{ .Prompt }}",
    "details": {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "3.2B",
        "quantization_level": "Q4_K_M",
    },
    "model_info": {
        "general.architecture": "llama",
        "general.parameter_count": 3212749888,
        "llama.context_length": 131072,
        "llama.embedding_length": 3072,
        "tokenizer.ggml.tokens": None,
    },
    "capabilities": ["completion", "tools"],
    "modified_at": "2025-09-01T10:00:00.000000000Z",
}


WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
"""The tool the tests offer, and the one the stand-in calls when it is offered tools."""

STANDIN_VERSION = "0.0.0-inferops-standin"
"""What the Ollama stand-in's `/api/version` answers: a version that says what this is."""


class EngineStandin:
    """A stand-in for one engine's API, named like the engine it plays ("vllm", "ollama");
    `port` 0: a free one."""

    def __init__(self, name: str, model: str = "llama3.2", port: int = 0) -> None:
        self.name = name
        self.model = model
        self.behaviour = Behaviour(words=["Hello", " from", f" {name}"])
        self.seen: list[Seen] = []
        self.hits = 0
        self.cancelled = 0
        self.streams_open = 0
        self.port = port
        self._served: Served | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        if self.name != "ollama":
            app.router.add_get("/health", self._health)
        if self.name == "ollama":  # vLLM has no Ollama API: asking it would be the bug
            app.router.add_get("/", self._running)
            app.router.add_get("/api/version", self._version)
            app.router.add_get("/api/tags", self._tags)
            app.router.add_post("/api/show", self._show)
            app.router.add_get("/api/ps", self._ps)
            app.router.add_post("/api/chat", self._refusing_bad_input(self._native_chat))
            app.router.add_post("/api/generate", self._refusing_bad_input(self._native_generate))
            app.router.add_post("/api/embed", self._refusing_bad_input(self._native_embed))
            app.router.add_post(
                "/api/embeddings", self._refusing_bad_input(self._native_embeddings)
            )
        # A restarted engine listens where its clients look for it (the port it had).
        self._served = await serve(app, port=self.port, handler_cancellation=True)
        self.port = self._served.port

    async def stop(self) -> None:
        if self._served:
            await self._served.close()

    # -- handlers ------------------------------------------------------------------------

    async def _common(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        body = await request.json()
        self.hits += 1
        self.seen.append(Seen(request.path, body, dict(request.headers)))
        b = self.behaviour
        if b.canned is not None:
            return body, web.json_response(b.canned[1], status=b.canned[0])
        if b.models is not None and body.get("model") not in b.models:
            error = {"message": f"The model `{body.get('model')}` does not exist.", "code": 404}
            return body, web.json_response({"error": error | {"type": "NotFoundError"}}, status=404)
        if b.delay:
            try:
                await asyncio.sleep(b.delay)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        status = b.failing(request.path, self.hits - 1)
        if status:
            error = {
                "message": f"{self.name} failed on purpose",
                "type": "server_error",
                "code": status,
            }
            return body, web.json_response({"error": error}, status=status)
        return body, None

    async def _info(self, request: web.Request) -> web.Response | None:
        """What the metadata endpoints share: record, wait, fail as told."""
        body = await request.json() if request.can_read_body else {}
        self.seen.append(Seen(request.path, body, dict(request.headers)))
        b = self.behaviour
        if b.delay:
            await asyncio.sleep(b.delay)
        if b.fail_status and not b.fail_after:  # failing every request, not only some
            error = {"message": f"{self.name} failed on purpose", "code": b.fail_status}
            return web.json_response({"error": error}, status=b.fail_status)
        return None

    async def _models(self, request: web.Request) -> web.Response:
        failed = await self._info(request)
        if failed:
            return failed
        model = {
            "id": self.model,
            "object": "model",
            "created": 0,
            "owned_by": "vllm",
            "root": "meta-llama/Llama-3.2-3B-Instruct",
            "parent": None,
            "max_model_len": self.behaviour.max_model_len,
            "permission": [],
        }
        return web.json_response({"object": "list", "data": [model]})

    async def _show(self, request: web.Request) -> web.Response:
        failed = await self._info(request)
        if failed:
            return failed
        if self.seen[-1].body.get("model") != self.model:  # Ollama knows the logical name only
            return web.json_response({"error": "model not found"}, status=404)
        return web.json_response(self.behaviour.show)

    async def _ps(self, request: web.Request) -> web.Response:
        failed = await self._info(request)
        if failed:
            return failed
        if not self.behaviour.loaded:
            return web.json_response({"models": []})
        entry = {
            "name": f"{self.model}:latest",
            "model": f"{self.model}:latest",
            "size": 3_400_000_000,
            "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
            "details": self.behaviour.show["details"],
            "expires_at": "2030-01-01T00:00:00.000000000Z",
            "size_vram": 3_000_000_000,
            "context_length": self.behaviour.context_length,
        }
        return web.json_response({"models": [entry]})

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response()  # vLLM's: 200, no body

    async def _running(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": STANDIN_VERSION})

    async def _tags(self, request: web.Request) -> web.Response:
        failed = await self._info(request)
        if failed:
            return failed
        details = self.behaviour.show["details"]
        model = {"name": f"{self.model}:latest", "model": f"{self.model}:latest"}
        model |= {"modified_at": self.behaviour.show["modified_at"], "details": details}
        return web.json_response({"models": [model]})

    def _tool_call_requested(self, body: dict[str, Any]) -> bool:
        return bool(body.get("tools"))

    async def _generation(
        self, request: web.Request, prompt_tokens: int
    ) -> tuple[dict[str, Any], list[str], dict[str, int], web.Response | None]:
        """A generation request's body, the answer's words and usage, and the failure to
        answer instead, if any."""
        body, failed = await self._common(request)
        words = [] if failed else self._words(body)
        return body, words, _usage(prompt_tokens, len(words)), failed

    def _words(self, body: dict[str, Any]) -> list[str]:
        """The answer's words, as many as `max_tokens` (or `max_completion_tokens`) allow."""
        words = self.behaviour.words
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            return words[:limit]
        return words

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, words, usage, failed = await self._generation(request, prompt_tokens=7)
        if failed:
            return failed
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
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return _answer("chatcmpl-1", "chat.completion.chunk", body, choices=[choice])

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
                _answer("chatcmpl-1", "chat.completion.chunk", body, choices=[], usage=usage)
            )
        return await self._stream(request, events)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body, words, usage, failed = await self._generation(request, prompt_tokens=5)
        if failed:
            return failed
        if not body.get("stream"):
            choice = {"index": 0, "text": "".join(words), "finish_reason": "length"}
            return web.json_response(
                _answer("cmpl-1", "text_completion", body, choices=[choice], usage=usage)
            )
        events: list[dict[str, Any]] = [
            _answer(
                "cmpl-1",
                "text_completion",
                body,
                choices=[{"index": 0, "text": w, "finish_reason": None}],
            )
            for w in words
        ]
        events[-1]["choices"][0]["finish_reason"] = "length"
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(_answer("cmpl-1", "text_completion", body, choices=[], usage=usage))
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

    # -- Ollama's native API (the "ollama" engine only) ----------------------------------

    def _refusing_bad_input(self, handler: Handler) -> Handler:
        """Ollama answers a request it cannot read with 400 `{"error": ...}`; so does the
        stand-in, whatever the router passes through."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except (KeyError, TypeError, AttributeError, ValueError) as err:
                return web.json_response({"error": f"invalid request: {err!r}"}, status=400)

        return guarded

    async def _native_common(
        self, request: web.Request
    ) -> tuple[dict[str, Any], web.Response | None]:
        """`_common` with the failure in Ollama's dialect (`{"error": "..."}`)."""
        body, failed = await self._common(request)
        if failed:
            message = f"{self.name} failed on purpose"
            return body, web.json_response({"error": message}, status=failed.status)
        return body, None

    def _native_final(self, body: dict[str, Any]) -> dict[str, Any]:
        # Ollama counts what it generated; `num_predict` caps it as the real one does.
        words = self.behaviour.words
        limit = (body.get("options") or {}).get("num_predict")
        count = min(len(words), limit) if isinstance(limit, int) and limit > 0 else len(words)
        return {
            "model": body["model"],
            "created_at": "2026-01-01T00:00:00Z",
            "done": True,
            "done_reason": "stop",
            "total_duration": 1000,
            "load_duration": 10,
            "prompt_eval_count": 9,
            "prompt_eval_duration": 100,
            "eval_count": count,
            "eval_duration": 800,
        }

    async def _native_generation(self, request: web.Request, chat: bool) -> web.StreamResponse:
        body, failed = await self._native_common(request)
        if failed:
            return failed
        words = self.behaviour.words
        limit = self._native_final(body)["eval_count"]

        def piece(text: str) -> dict[str, Any]:
            out: dict[str, Any] = {"model": body["model"], "created_at": "2026-01-01T00:00:00Z"}
            if chat:
                out["message"] = {"role": "assistant", "content": text}
            else:
                out["response"] = text
            out["done"] = False
            return out

        if body.get("stream") is False:
            whole = piece("".join(words[:limit]))
            whole.update(self._native_final(body))
            return web.json_response(whole)
        events = [piece(w) for w in words[:limit]]
        final = piece("")
        final.update(self._native_final(body))
        return await self._stream(request, [*events, final], ndjson=True)

    async def _native_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._native_generation(request, chat=True)

    async def _native_generate(self, request: web.Request) -> web.StreamResponse:
        return await self._native_generation(request, chat=False)

    async def _native_embed(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self._native_common(request)
        if failed:
            return failed
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vectors = [[3.0, float(len(text)), 0.5] for text in inputs]  # 3.0: native, not /v1
        return web.json_response(
            {"model": body["model"], "embeddings": vectors, "prompt_eval_count": 3 * len(inputs)}
        )

    async def _native_embeddings(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self._native_common(request)
        if failed:
            return failed
        return web.json_response({"embedding": [3.0, float(len(body["prompt"])), 0.5]})

    async def _stream(
        self, request: web.Request, events: list[dict[str, Any]], ndjson: bool = False
    ) -> web.StreamResponse:
        kind = "application/x-ndjson" if ndjson else "text/event-stream"
        response = web.StreamResponse(headers={"Content-Type": kind})
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
                if ndjson:
                    await response.write(json.dumps(event).encode() + b"\n")
                else:
                    await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            if not ndjson:
                await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled += 1
            raise
        finally:
            self.streams_open -= 1
        return response


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _answer(id_: str, kind: str, body: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """An OpenAI answer (or chunk) of the asked model: the fields every one has, then
    `fields`."""
    return {"id": id_, "object": kind, "created": 0, "model": body["model"], **fields}


@contextlib.asynccontextmanager
async def running(*names: str) -> AsyncIterator[tuple[EngineStandin, ...]]:
    """Stand-ins for the engines `names`, started in this event loop for the block."""
    standins = tuple(EngineStandin(name) for name in names)
    for standin in standins:
        await standin.start()
    try:
        yield standins
    finally:
        for standin in standins:
            await standin.stop()


# -- the faults in front of a real server ----------------------------------------------------

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


class FaultProxy:
    """`faults` in front of `upstream`: inference requests (`/v1/...` POSTs) fail, wait or
    are answered canned as the faults say; everything else is forwarded unchanged."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults = Faults()
        self.forwarded = 0
        self.injected = 0
        self.port = 0
        self._served: Served | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # aiohttp's default grace: streams still being relayed may finish.
        self._served = await serve(app, shutdown_timeout=60.0)
        self.port = self._served.port

    async def stop(self) -> None:
        if self._served is not None:
            await self._served.close()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        faults = self.faults
        if faults.canned is not None:
            self.injected += 1
            return web.json_response(faults.canned[1], status=faults.canned[0])
        inference = request.method == "POST" and request.path.startswith("/v1/")
        if inference:
            failing = faults.failing(request.path, self.forwarded)
            self.forwarded += 1
            if failing:
                self.injected += 1
                return web.json_response({"error": {"message": "injected fault"}}, status=failing)
            if faults.delay:
                await asyncio.sleep(faults.delay)
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


# -- in a thread, as a process -------------------------------------------------------------


class _Serves(Protocol):
    @property
    def url(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


S = TypeVar("S", bound=_Serves)


class InThread(StopsOnExit, Generic[S]):
    """`standin` served from its own event loop in a daemon thread, for synchronous tests;
    its fields (`standin.faults`, `standin.behaviour`) may be changed from the test's thread."""

    def __init__(self, standin: S) -> None:
        self.standin = standin
        self._loop = asyncio.new_event_loop()

    @property
    def url(self) -> str:
        return self.standin.url

    def start(self, timeout: float = 10.0) -> None:
        threading.Thread(target=self._loop.run_forever, name="standin", daemon=True).start()
        asyncio.run_coroutine_threadsafe(self.standin.start(), self._loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        asyncio.run_coroutine_threadsafe(self.standin.stop(), self._loop).result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def __enter__(self) -> Self:
        self.start()
        return self


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


class StandinProcess(LocalServer):
    """The engine stand-in as its own process (`python -m testsupport.standin`), with the
    lifecycle of the real engines' servers (`LocalServer`)."""

    stop_grace = 5.0

    def __init__(
        self,
        name: str = "ollama",
        model: str = "llama3.2",
        words: int = 3,
        *,
        port: int | None = None,
        log_path: Path | None = None,
    ) -> None:
        super().__init__(f"{name}-standin", port, log_path)
        env = dict(os.environ)
        root = str(_repo_root())
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        argv = ["--port", str(self._port), "--name", name, "--model", model, "--words", str(words)]
        self._process = ManagedProcess(
            f"{name} stand-in on port {self._port}",
            [sys.executable, "-m", "testsupport.standin", *argv],
            env=env,
            log_path=self.log_path,
            health_url=f"{self.url}/" if name == "ollama" else f"{self.url}/health",
            cwd=_repo_root(),
        )

    def start(self, timeout: float = 30.0) -> float:
        return super().start(timeout)


async def _serve(standin: EngineStandin) -> None:
    await standin.start()
    print(f"{standin.name} STAND-IN (not an engine) on {standin.url}", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    await standin.stop()


def main(argv: list[str] | None = None) -> int:
    """Serve the engine stand-in until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m testsupport.standin", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0: a free one (printed)")
    parser.add_argument("--name", choices=["vllm", "ollama"], default="ollama")
    parser.add_argument("--model", default="llama3.2")
    parser.add_argument("--words", type=int, default=3, help="words in every answer")
    parser.add_argument("--fail-status", type=int, default=None)
    parser.add_argument("--fail-after", type=int, default=0)
    args = parser.parse_args(argv)
    standin = EngineStandin(args.name, args.model, args.port)
    standin.behaviour.words = [f" w{i}" for i in range(args.words)]
    standin.behaviour.models = [args.model, f"{args.model}:latest"]
    standin.behaviour.fail_status = args.fail_status
    standin.behaviour.fail_after = args.fail_after
    asyncio.run(_serve(standin))
    return 0


if __name__ == "__main__":
    sys.exit(main())
