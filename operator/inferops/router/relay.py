"""Relaying an engine's stream to the client as it arrives: one write per upstream chunk.

A codec decides what each chunk becomes: the OpenAI passthrough returns it unchanged (no
parsing, no re-encoding), the Ollama translation turns SSE events into NDJSON lines. Once the
first byte is out there is no fallback any more: an engine that breaks off or falls silent
ends the stream with an in-band error the official clients raise on. A client that goes away
closes the upstream connection, which makes the engine abort the generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Protocol

import aiohttp
from aiohttp import web

from inferops.router.errors import stream_error_openai
from inferops.router.metrics import CLIENT_CLOSED, Exchange
from inferops.router.upstream import Answer

_DECODER = json.JSONDecoder()


class Codec(Protocol):
    content_type: str
    failed: str | None
    """Set when the engine reported an error inside the stream."""

    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...

    def error(self, message: str, code: str) -> bytes: ...

    def counts(self) -> tuple[int | None, int | None]: ...


def find_usage(data: bytes) -> tuple[int | None, int | None]:
    """Prompt and completion tokens from the last `"usage": {...}` in `data`, without
    parsing the rest (an embeddings answer can be megabytes of floats). The byte sequence
    `"usage"` cannot occur inside a JSON string (the quotes would be escaped), so a match is
    a key."""
    at = data.rfind(b'"usage"')
    if at < 0:
        return None, None
    start = data.find(b"{", at, at + 32)
    if start < 0:
        return None, None
    try:
        usage, _ = _DECODER.raw_decode(data[start:].decode("utf-8", "replace"))
    except ValueError:
        return None, None
    if not isinstance(usage, dict):
        return None, None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) else None,
        completion if isinstance(completion, int) else None,
    )


class SsePassthrough:
    """The OpenAI stream as is. Keeps references to the last two chunks (no copies) to find
    the usage event, which comes last when the client asked for it."""

    __slots__ = ("content_type", "failed", "last", "previous")

    def __init__(self, content_type: str) -> None:
        self.content_type = content_type
        self.failed: str | None = None
        self.previous = b""
        self.last = b""

    def feed(self, chunk: bytes) -> bytes:
        self.previous = self.last
        self.last = chunk
        return chunk

    def finish(self) -> bytes:
        return b""

    def error(self, message: str, code: str) -> bytes:
        # Close a half-relayed event first, so the error is an event of its own.
        prefix = b"" if not self.last or self.last.endswith(b"\n\n") else b"\n\n"
        return prefix + stream_error_openai(message, code)

    def counts(self) -> tuple[int | None, int | None]:
        return find_usage(self.previous + self.last)


async def relay(
    request: web.Request,
    answer: Answer,
    codec: Codec,
    ex: Exchange,
    deadline: float,
    idle_seconds: float,
    headers: dict[str, str],
) -> web.StreamResponse:
    """Streams `answer` (which must hold an open stream) to the client through `codec`."""
    stream = answer.stream
    assert stream is not None
    loop = asyncio.get_running_loop()
    out = web.StreamResponse(status=answer.status, headers=headers)
    out.headers["Content-Type"] = codec.content_type
    out.headers["Cache-Control"] = "no-cache"
    failure: tuple[str, str, str] | None = None  # (reason, code, message)
    clean = False
    try:
        await out.prepare(request)
        sent = False
        async with asyncio.timeout(None) as watchdog:
            data = codec.feed(answer.body)
            if data:
                await out.write(data)
                ex.first_byte()
                sent = True
            while True:
                watchdog.reschedule(min(loop.time() + idle_seconds, deadline))
                chunk = await stream.content.readany()
                if not chunk:
                    break
                data = codec.feed(chunk)
                if data:
                    await out.write(data)
                    if not sent:
                        ex.first_byte()
                        sent = True
            tail = codec.finish()
            if tail:
                await out.write(tail)
        clean = True
    except TimeoutError:
        if loop.time() >= deadline:
            failure = ("stream_timeout", "engine_timeout", "the request exceeded its time limit")
        else:
            message = f"engine {answer.target.name!r} sent nothing for {idle_seconds:.3g}s"
            failure = ("stream_stalled", "engine_timeout", message)
    except ConnectionResetError:  # the client went away (aiohttp's write error is one too)
        stream.close()
        ex.done(CLIENT_CLOSED)
        return out
    except aiohttp.ClientError as err:
        message = f"engine {answer.target.name!r} broke off the stream: {err!r}"
        failure = ("stream_broken", "engine_stream_broken", message)
    except asyncio.CancelledError:  # the client went away, or shutdown ran out of time
        stream.close()
        ex.done(CLIENT_CLOSED)
        raise
    except Exception:
        stream.close()
        ex.error("router_error")
        ex.done(500)
        raise
    if clean:
        stream.release()
        if codec.failed:
            ex.error("engine_stream_error")
        ex.tokens(*codec.counts())
    else:
        stream.close()
        assert failure is not None
        reason, code, message = failure
        ex.error(reason)
        try:
            await out.write(codec.error(message, code))
        except ConnectionResetError:
            ex.done(CLIENT_CLOSED)
            return out
    with contextlib.suppress(ConnectionResetError):
        await out.write_eof()
    ex.done(answer.status)
    return out


__all__ = ["Codec", "SsePassthrough", "find_usage", "relay"]
