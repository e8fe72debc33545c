"""Ollama STAND-IN: an aiohttp server speaking the part of Ollama's protocol the router uses.

This is not Ollama (Ollama cannot run on the project machines). It answers like an Ollama
server would for one model, with deterministic text, so the router's tests and benchmarks
have a second engine that behaves like Ollama on the wire:

- ``GET /`` (and ``HEAD /``) -> ``Ollama is running``;
- ``GET /api/version`` -> ``{"version": "0.0.0-inferops-ollama-standin"}``;
- ``GET /api/tags`` -> the one model, named ``<name>:latest`` like Ollama lists it;
- ``POST /api/show`` -> its description (details, ``model_info`` with the trained context
  length ``llama.context_length``, capabilities); ``GET /api/ps`` -> the model while it is
  "loaded": from the first inference request until Ollama's default keep-alive (5 minutes)
  after the last one, with the context it is loaded with (``context_length``);
- Ollama's own inference API: ``POST /api/chat`` and ``/api/generate`` (NDJSON streams,
  Ollama's default, or one object with ``"stream": false``; ``options.num_predict`` caps the
  answer; the final object carries ``done_reason``, ``prompt_eval_count`` and
  ``eval_count``), ``POST /api/embed`` and ``/api/embeddings``; errors as Ollama writes them,
  ``{"error": "..."}``;
- Ollama's OpenAI-compatible API: ``GET /v1/models``, ``GET /v1/models/{model}``,
  ``POST /v1/chat/completions``, ``POST /v1/completions`` (both streaming as SSE with a
  final ``data: [DONE]``, or not), ``POST /v1/embeddings``;
- ``GET /_standin/stats``: request counters (not Ollama; for tests and benchmarks).

Like Ollama, a model name without a tag means ``:latest``; any other model gets a 404
OpenAI-style error. Responses carry ``id``, ``object``, ``created``, ``model``,
``system_fingerprint: "fp_ollama"``, ``choices`` (``delta`` in stream chunks) with
``finish_reason`` (``length`` when ``max_tokens`` cut the answer, else ``stop``) and
``usage`` (non-stream, and in a last chunk with empty ``choices`` when
``stream_options.include_usage`` is set).

Behaviour for tests and benchmarks (``StandinConfig``, or CLI flags): latency before the
first byte (``ttft_ms``, before the response headers), per-token interval, number of tokens
per answer, and failure injection (HTTP 500 on every inference request, or on every one
after the first N). The hot path does no heavy work: chunk bytes are pre-built per word and
joined, and with no token interval a whole stream goes out in a single write.

In-process::

    async with OllamaStandin(StandinConfig(model="llama3.2", tokens=8)) as standin:
        standin.url  # http://127.0.0.1:<free port>; the OpenAI API is at standin.url + "/v1"

    with OllamaStandinThread(StandinConfig(model="llama3.2")) as standin:  # for sync code
        ...

As a process: ``python -m e2e.engines.ollama_standin --port P --model NAME [--ttft-ms MS]
[--token-interval-ms MS] [--tokens N] [--fail-after N | --fail-all]``, or
``OllamaStandinProcess`` from tests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from aiohttp import web
from testsupport.process import LocalServer, ManagedProcess, StopsOnExit

from ._common import repo_root

__all__ = [
    "STANDIN_VERSION",
    "STATE",
    "OllamaStandin",
    "OllamaStandinProcess",
    "OllamaStandinThread",
    "StandinConfig",
    "StandinState",
    "create_app",
]

STANDIN_VERSION = "0.0.0-inferops-ollama-standin"
"""What ``/api/version`` answers: a valid version string that says what this is."""

TRAINED_CONTEXT = 131072
"""The model's trained context length in ``/api/show`` (llama3.2's)."""

KEEP_ALIVE_SECONDS = 300.0
"""How long the model stays loaded after a request: Ollama's default keep-alive."""

WORDS = (
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "while",
    "a",
    "router",
    "moves",
    "traffic",
    "from",
    "one",
    "engine",
    "to",
    "another",
    "step",
    "by",
    "step",
    "and",
    "every",
    "consumer",
    "keeps",
    "its",
    "endpoint",
)
"""Generated text cycles through these words: token i is ``WORDS[i % len(WORDS)]``."""


@dataclass
class StandinConfig:
    """How the stand-in behaves; every field has a CLI flag."""

    model: str = "llama3.2"
    """The one model served (``llama3.2`` and ``llama3.2:latest`` are the same name)."""
    ttft_ms: float = 0.0
    """Delay before the response starts (headers included), in milliseconds."""
    token_interval_ms: float = 0.0
    """Delay between two generated tokens, in milliseconds (0: the whole answer at once)."""
    tokens: int = 16
    """Tokens per answer unless ``max_tokens`` asks for fewer."""
    fail_after: int | None = None
    """None: never fail. N: inference requests after the first N get HTTP 500 (0: all)."""
    embedding_dim: int = 16
    """Length of the deterministic embedding vectors."""
    context_length: int = 4096
    """The context the model is loaded with, as ``/api/ps`` reports it (Ollama's
    ``OLLAMA_CONTEXT_LENGTH``); ``/api/show`` reports the trained one, ``TRAINED_CONTEXT``."""


@dataclass
class StandinState:
    """Counters and live-tunable behaviour of one running app (``app[STATE]``)."""

    config: StandinConfig
    requests_total: int = 0
    """Inference requests received (chat, completions, embeddings)."""
    failures_total: int = 0
    """Inference requests answered with an injected HTTP 500."""
    in_flight: int = 0
    """Inference requests being answered right now."""
    max_in_flight: int = 0
    """Highest ``in_flight`` seen (e.g. to check a benchmark's concurrency)."""
    by_path: dict[str, int] = field(default_factory=dict)
    last_inference: float | None = None
    """Wall-clock time of the last inference request: the model stays "loaded" (``/api/ps``)
    for ``KEEP_ALIVE_SECONDS`` after it."""
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next_id(self) -> int:
        """Return a new number for response ids (``chatcmpl-<n>``)."""
        return next(self._ids)


STATE = web.AppKey("standin_state", StandinState)


def _tagged(name: str) -> str:
    """Ollama's naming: ``name`` without a tag means ``name:latest``."""
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def _rfc3339(epoch_seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_seconds))


def _error(status: int, message: str, kind: str | None = None) -> web.Response:
    """An OpenAI-style error body, shaped like Ollama's ``/v1`` errors."""
    kind = kind or {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return web.json_response(body, status=status)


def _word(i: int) -> str:
    word = WORDS[i % len(WORDS)]
    return word if i == 0 else " " + word


def _text(n: int) -> str:
    return "".join(_word(i) for i in range(n))


def _count_words(value: Any) -> int:
    """A cheap stand-in for prompt token counting: whitespace-separated words."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_count_words(v) for v in value)
    if isinstance(value, dict):
        return _count_words(value.get("content") or value.get("text") or "")
    return 0


def _embedding(text: str, dim: int) -> list[float]:
    """A deterministic unit vector derived from the text's hash."""
    raw = hashlib.blake2b(text.encode(), digest_size=max(1, min(dim, 64))).digest()
    values = [(raw[i % len(raw)] - 127.5) / 127.5 for i in range(dim)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]


class _Handlers:
    """Request handlers bound to one app's state (no globals: several apps per process)."""

    def __init__(self, state: StandinState) -> None:
        self.state = state
        self.tagged = _tagged(state.config.model)
        self.created = int(time.time())
        # JSON string literals of every token text, built once: token 0 is the first word,
        # token i > 0 is " " + WORDS[i % len(WORDS)]. The hot path only joins bytes.
        self._first = json.dumps(_word(0)).encode()
        self._rest = [json.dumps(" " + w).encode() for w in WORDS]

    def _token(self, i: int) -> bytes:
        return self._first if i == 0 else self._rest[i % len(WORDS)]

    # ------------------------------------------------------------ plain endpoints
    async def root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": STANDIN_VERSION})

    def _details(self) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "stand-in",
            "quantization_level": "stand-in",
        }

    def _digest(self) -> str:
        return hashlib.sha256(self.tagged.encode()).hexdigest()

    async def tags(self, request: web.Request) -> web.Response:
        model = {
            "name": self.tagged,
            "model": self.tagged,
            "modified_at": _rfc3339(self.created),
            "size": 1_000_000,
            "digest": self._digest(),
            "details": self._details(),
        }
        return web.json_response({"models": [model]})

    async def show(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.json_response({"error": "invalid JSON body"}, status=400)
        name = (body.get("model") or body.get("name")) if isinstance(body, dict) else None
        if not isinstance(name, str) or _tagged(name) != self.tagged:
            return web.json_response({"error": f"model '{name}' not found"}, status=404)
        return web.json_response(
            {
                "license": "",
                "modelfile": f'# Modelfile generated by "ollama show"\nFROM {self.tagged}\n',
                "parameters": "",
                "template": "{{ .Prompt }}",
                "details": self._details(),
                "model_info": {
                    "general.architecture": "llama",
                    "general.parameter_count": 0,
                    "llama.context_length": TRAINED_CONTEXT,
                },
                "capabilities": ["completion"],
                "modified_at": _rfc3339(self.created),
            }
        )

    async def ps(self, request: web.Request) -> web.Response:
        last = self.state.last_inference
        if last is None or time.time() > last + KEEP_ALIVE_SECONDS:
            return web.json_response({"models": []})
        model = {
            "name": self.tagged,
            "model": self.tagged,
            "size": 1_000_000,
            "digest": self._digest(),
            "details": self._details(),
            "expires_at": _rfc3339(last + KEEP_ALIVE_SECONDS),
            "size_vram": 0,
            "context_length": self.state.config.context_length,
        }
        return web.json_response({"models": [model]})

    def _model_object(self) -> dict[str, Any]:
        return {
            "id": self.tagged,
            "object": "model",
            "created": self.created,
            "owned_by": "library",
        }

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [self._model_object()]})

    async def model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        if _tagged(name) != self.tagged:
            return _error(404, f'model "{name}" not found')
        return web.json_response(self._model_object())

    async def stats(self, request: web.Request) -> web.Response:
        st = self.state
        return web.json_response(
            {
                "requests_total": st.requests_total,
                "failures_total": st.failures_total,
                "in_flight": st.in_flight,
                "max_in_flight": st.max_in_flight,
                "by_path": st.by_path,
                "config": vars(st.config),
            }
        )

    # ------------------------------------------------------------ inference
    async def _admit(self, request: web.Request) -> dict[str, Any] | web.Response:
        """Count the request, apply failure injection, parse the body, check the model."""
        st = self.state
        st.requests_total += 1
        st.by_path[request.path] = st.by_path.get(request.path, 0) + 1
        st.last_inference = time.time()
        fail_after = st.config.fail_after
        if fail_after is not None and st.requests_total > fail_after:
            st.failures_total += 1
            return _error(500, "ollama stand-in: injected failure")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "invalid JSON body")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _error(400, "model is required")
        if _tagged(model) != self.tagged:
            return _error(404, f'model "{model}" not found, try pulling it first')
        return body

    def _length(self, body: dict[str, Any], *keys: str) -> tuple[int, str]:
        """Return (tokens to generate, finish_reason) honouring max_tokens."""
        tokens = self.state.config.tokens
        for key in keys:
            limit = body.get(key)
            if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
                if limit < tokens:
                    return limit, "length"
                break
        return tokens, "stop"

    async def _run(self, answer: Callable[[], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Count the request as in flight and answer after the configured first-byte delay."""
        st = self.state
        st.in_flight += 1
        st.max_in_flight = max(st.max_in_flight, st.in_flight)
        try:
            if st.config.ttft_ms > 0:
                await asyncio.sleep(st.config.ttft_ms / 1000)
            return await answer()
        finally:
            st.in_flight -= 1

    async def chat(self, request: web.Request) -> web.StreamResponse:
        admitted = await self._admit(request)
        if isinstance(admitted, web.Response):
            return admitted
        body = admitted
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "messages is required and must be a non-empty list")
        n, finish = self._length(body, "max_completion_tokens", "max_tokens")
        prompt_tokens = _count_words(messages)
        num = self.state.next_id()
        model = json.dumps(body["model"])
        created = int(time.time())
        if body.get("stream") is True:
            head = (
                f'data: {{"id":"chatcmpl-{num}","object":"chat.completion.chunk",'
                f'"created":{created},"model":{model},"system_fingerprint":"fp_ollama",'
                '"choices":[{"index":0,"delta":{"role":"assistant","content":'
            ).encode()
            tail = b'},"finish_reason":null}]}\n\n'
            last = head + b'""},"finish_reason":"' + finish.encode() + b'"}]}\n\n'
            usage = b""
            if _include_usage(body):
                usage = (
                    f'data: {{"id":"chatcmpl-{num}","object":"chat.completion.chunk",'
                    f'"created":{created},"model":{model},"system_fingerprint":"fp_ollama",'
                    f'"choices":[],"usage":{_usage_json(prompt_tokens, n)}}}\n\n'
                ).encode()
            return await self._run(lambda: self._stream(request, n, head, tail, last + usage))

        async def answer() -> web.StreamResponse:
            await self._generation_time(n)
            return web.json_response(
                {
                    "id": f"chatcmpl-{num}",
                    "object": "chat.completion",
                    "created": created,
                    "model": body["model"],
                    "system_fingerprint": "fp_ollama",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": _text(n)},
                            "finish_reason": finish,
                        }
                    ],
                    "usage": _usage(prompt_tokens, n),
                }
            )

        return await self._run(answer)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        admitted = await self._admit(request)
        if isinstance(admitted, web.Response):
            return admitted
        body = admitted
        prompt = body.get("prompt")
        if not isinstance(prompt, str | list):
            return _error(400, "prompt is required")
        n, finish = self._length(body, "max_tokens")
        prompt_tokens = _count_words(prompt)
        num = self.state.next_id()
        model = json.dumps(body["model"])
        created = int(time.time())
        if body.get("stream") is True:
            head = (
                f'data: {{"id":"cmpl-{num}","object":"text_completion","created":{created},'
                f'"model":{model},"system_fingerprint":"fp_ollama","choices":[{{"text":'
            ).encode()
            tail = b',"index":0,"finish_reason":null}]}\n\n'
            last = head + b'"","index":0,"finish_reason":"' + finish.encode() + b'"}]}\n\n'
            usage = b""
            if _include_usage(body):
                usage = (
                    f'data: {{"id":"cmpl-{num}","object":"text_completion","created":{created},'
                    f'"model":{model},"system_fingerprint":"fp_ollama","choices":[],'
                    f'"usage":{_usage_json(prompt_tokens, n)}}}\n\n'
                ).encode()
            return await self._run(lambda: self._stream(request, n, head, tail, last + usage))

        async def answer() -> web.StreamResponse:
            await self._generation_time(n)
            return web.json_response(
                {
                    "id": f"cmpl-{num}",
                    "object": "text_completion",
                    "created": created,
                    "model": body["model"],
                    "system_fingerprint": "fp_ollama",
                    "choices": [{"text": _text(n), "index": 0, "finish_reason": finish}],
                    "usage": _usage(prompt_tokens, n),
                }
            )

        return await self._run(answer)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        admitted = await self._admit(request)
        if isinstance(admitted, web.Response):
            return admitted
        body = admitted
        raw = body.get("input")
        if isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
            inputs = [json.dumps(raw)]  # one pre-tokenized input
        elif isinstance(raw, list) and raw:
            inputs = [x if isinstance(x, str) else json.dumps(x) for x in raw]
        else:
            return _error(400, "invalid input type")
        dim = self.state.config.embedding_dim
        as_base64 = body.get("encoding_format") == "base64"

        def vector(text: str) -> list[float] | str:
            values = _embedding(text, dim)
            if as_base64:  # what the official openai client asks for by default
                return base64.b64encode(struct.pack(f"<{dim}f", *values)).decode()
            return values

        async def answer() -> web.StreamResponse:
            tokens = sum(_count_words(t) for t in inputs)
            return web.json_response(
                {
                    "object": "list",
                    "data": [
                        {"object": "embedding", "embedding": vector(t), "index": i}
                        for i, t in enumerate(inputs)
                    ],
                    "model": body["model"],
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                }
            )

        return await self._run(answer)

    # ------------------------------------------------------------ Ollama's own API
    async def _native_admit(self, request: web.Request) -> dict[str, Any] | web.Response:
        """`_admit`, with an error in Ollama's shape (`{"error": "..."}`)."""
        admitted = await self._admit(request)
        if isinstance(admitted, web.Response):
            error = json.loads(admitted.body)["error"]["message"]  # type: ignore[arg-type]
            return web.json_response({"error": error}, status=admitted.status)
        return admitted

    async def native(self, request: web.Request) -> web.StreamResponse:
        """``/api/chat`` and ``/api/generate``."""
        admitted = await self._native_admit(request)
        if isinstance(admitted, web.Response):
            return admitted
        body = admitted
        chat = request.path == "/api/chat"
        options = body.get("options") if isinstance(body.get("options"), dict) else {}
        n, finish = self._length(options, "num_predict")
        prompt = _count_words(body.get("messages") if chat else body.get("prompt"))
        model = body["model"]

        def piece(text: str, done: bool) -> dict[str, Any]:
            out: dict[str, Any] = {"model": model, "created_at": _rfc3339(time.time())}
            if chat:
                out["message"] = {"role": "assistant", "content": text}
            else:
                out["response"] = text
            out["done"] = done
            if done:
                out.update(
                    done_reason=finish,
                    total_duration=1,
                    load_duration=0,
                    prompt_eval_count=prompt,
                    prompt_eval_duration=0,
                    eval_count=n,
                    eval_duration=1,
                )
            return out

        async def answer() -> web.StreamResponse:
            await self._generation_time(n)
            if body.get("stream") is False:
                return web.json_response(piece(_text(n), True))
            lines = [piece(_word(i), False) for i in range(n)] + [piece("", True)]
            resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await resp.prepare(request)
            await resp.write(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
            await resp.write_eof()
            return resp

        return await self._run(answer)

    async def native_embed(self, request: web.Request) -> web.StreamResponse:
        """``/api/embed`` (``input``) and ``/api/embeddings`` (``prompt``)."""
        admitted = await self._native_admit(request)
        if isinstance(admitted, web.Response):
            return admitted
        body = admitted
        dim = self.state.config.embedding_dim
        if request.path == "/api/embeddings":
            prompt = body.get("prompt")
            if not isinstance(prompt, str):
                return web.json_response({"error": "prompt must be a string"}, status=400)
            return web.json_response({"embedding": _embedding(prompt, dim)})
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else raw
        if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
            return web.json_response({"error": "invalid input type"}, status=400)
        return web.json_response(
            {
                "model": body["model"],
                "embeddings": [_embedding(text, dim) for text in inputs],
                "prompt_eval_count": sum(_count_words(t) for t in inputs),
            }
        )

    async def _generation_time(self, n: int) -> None:
        interval = self.state.config.token_interval_ms
        if interval > 0 and n > 1:
            await asyncio.sleep((n - 1) * interval / 1000)

    async def _stream(
        self, request: web.Request, n: int, head: bytes, tail: bytes, end: bytes
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        interval = self.state.config.token_interval_ms / 1000
        try:
            if interval <= 0:
                # One write for the whole answer: the cheapest way to serve a benchmark.
                parts = [head + self._token(i) + tail for i in range(n)]
                parts += [end, b"data: [DONE]\n\n"]
                await resp.write(b"".join(parts))
            else:
                for i in range(n):
                    if i:
                        await asyncio.sleep(interval)
                    await resp.write(head + self._token(i) + tail)
                await resp.write(end + b"data: [DONE]\n\n")
            await resp.write_eof()
        except ConnectionResetError:
            pass  # the client went away mid-stream; nothing to clean up
        return resp


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _usage_json(prompt: int, completion: int) -> str:
    return json.dumps(_usage(prompt, completion), separators=(",", ":"))


def create_app(config: StandinConfig | None = None) -> web.Application:
    """Return the stand-in as an aiohttp application (its ``StandinState`` is ``app[STATE]``)."""
    state = StandinState(config or StandinConfig())
    h = _Handlers(state)
    app = web.Application()
    app[STATE] = state
    app.router.add_get("/", h.root)  # GET also answers HEAD, like Ollama
    app.router.add_get("/api/version", h.version)
    app.router.add_get("/api/tags", h.tags)
    app.router.add_post("/api/show", h.show)
    app.router.add_get("/api/ps", h.ps)
    app.router.add_post("/api/chat", h.native)
    app.router.add_post("/api/generate", h.native)
    app.router.add_post("/api/embed", h.native_embed)
    app.router.add_post("/api/embeddings", h.native_embed)
    app.router.add_get("/v1/models", h.models)
    app.router.add_get("/v1/models/{model:.+}", h.model)
    app.router.add_post("/v1/chat/completions", h.chat)
    app.router.add_post("/v1/completions", h.completions)
    app.router.add_post("/v1/embeddings", h.embeddings)
    app.router.add_get("/_standin/stats", h.stats)
    return app


class OllamaStandin:
    """The stand-in in the current event loop, on 127.0.0.1 and a free port by default."""

    def __init__(
        self, config: StandinConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or StandinConfig()
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self.state: StandinState | None = None
        """Live counters; ``state.config`` can be changed while running (e.g. fail_after)."""

    async def start(self) -> None:
        """Bind the socket and start serving (returns once connections are accepted)."""
        app = create_app(self.config)
        self.state = app[STATE]
        # No access log: at hundreds of concurrent streams it costs more than the handler.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        # A deep accept backlog: benchmarks open hundreds of connections at once.
        site = web.SockSite(runner, sock, backlog=2048)
        await site.start()
        self._port = sock.getsockname()[1]
        self._runner = runner

    async def stop(self) -> None:
        """Stop serving and close open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def port(self) -> int:
        """The bound port (after ``start``)."""
        if self._port is None:
            raise RuntimeError("the stand-in is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234`` (the OpenAI API is under ``/v1``)."""
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class OllamaStandinThread(StopsOnExit):
    """The stand-in on its own event loop in a daemon thread, for synchronous code."""

    def __init__(
        self, config: StandinConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.server = OllamaStandin(config, host=host, port=port)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start the loop thread and the server; return once it accepts connections."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="ollama-standin", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and the loop thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.server.stop(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        loop.close()
        self._loop = self._thread = None

    @property
    def url(self) -> str:
        """Base URL (the OpenAI API is under ``/v1``)."""
        return self.server.url

    @property
    def port(self) -> int:
        """The bound port."""
        return self.server.port

    @property
    def state(self) -> StandinState | None:
        """Live counters and config (read from the caller's thread; ints are safe to read)."""
        return self.server.state

    def __enter__(self) -> Self:
        self.start()
        return self


class OllamaStandinProcess(LocalServer):
    """The stand-in as its own process (``python -m e2e.engines.ollama_standin``).

    Same lifecycle API as ``VLLMServer`` (``LocalServer``): ``start(timeout)``, ``stop()``,
    ``kill()``, ``url``, ``port``, ``pid``. Its own process keeps a benchmark's load
    generator and the stand-in from sharing one event loop (and one core).
    """

    stop_grace = 5.0

    def __init__(
        self,
        config: StandinConfig | None = None,
        *,
        port: int | None = None,
        log_path: Path | None = None,
        python: str = sys.executable,
    ) -> None:
        self.config = config or StandinConfig()
        super().__init__("ollama-standin", port, log_path)
        env = dict(os.environ)
        root = str(repo_root())
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._process = ManagedProcess(
            f"Ollama stand-in on port {self._port}",
            [
                python,
                "-m",
                "e2e.engines.ollama_standin",
                "--port",
                str(self._port),
                *to_args(self.config),
            ],
            env=env,
            log_path=self.log_path,
            health_url=f"{self.url}/",
            cwd=repo_root(),
        )

    def start(self, timeout: float = 30.0) -> float:
        """Start the process and wait until ``GET /`` answers; return the seconds."""
        return super().start(timeout)


def to_args(config: StandinConfig) -> list[str]:
    """Return the CLI flags that reproduce ``config`` (``--port`` excluded)."""
    args = [
        "--model",
        config.model,
        "--ttft-ms",
        str(config.ttft_ms),
        "--token-interval-ms",
        str(config.token_interval_ms),
        "--tokens",
        str(config.tokens),
        "--embedding-dim",
        str(config.embedding_dim),
        "--context-length",
        str(config.context_length),
    ]
    if config.fail_after is not None:
        args += ["--fail-after", str(config.fail_after)]
    return args


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m e2e.engines.ollama_standin",
        description="Ollama STAND-IN (not Ollama): Ollama's /v1 OpenAI API, /api/tags, "
        "/api/show, /api/ps, /api/version and GET / for one model, with deterministic text.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    p.add_argument("--model", default=StandinConfig.model, help="model name (':latest' implied)")
    p.add_argument("--ttft-ms", type=float, default=0.0, help="delay before the first byte")
    p.add_argument("--token-interval-ms", type=float, default=0.0, help="delay between tokens")
    p.add_argument("--tokens", type=int, default=StandinConfig.tokens, help="tokens per answer")
    p.add_argument("--embedding-dim", type=int, default=StandinConfig.embedding_dim)
    p.add_argument(
        "--context-length",
        type=int,
        default=StandinConfig.context_length,
        help="the context /api/ps reports the model loaded with",
    )
    fail = p.add_mutually_exclusive_group()
    fail.add_argument(
        "--fail-after", type=int, default=None, help="HTTP 500 on inference requests after N"
    )
    fail.add_argument("--fail-all", action="store_true", help="HTTP 500 on every inference request")
    return p


async def _serve(config: StandinConfig, host: str, port: int) -> None:
    standin = OllamaStandin(config, host=host, port=port)
    await standin.start()
    print(f"Ollama stand-in listening on {standin.url} (model {_tagged(config.model)})", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    await standin.stop()


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: serve until SIGINT/SIGTERM."""
    args = _parser().parse_args(argv)
    config = StandinConfig(
        model=args.model,
        ttft_ms=args.ttft_ms,
        token_interval_ms=args.token_interval_ms,
        tokens=args.tokens,
        fail_after=0 if args.fail_all else args.fail_after,
        embedding_dim=args.embedding_dim,
        context_length=args.context_length,
    )
    asyncio.run(_serve(config, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
