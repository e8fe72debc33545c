"""What a relayed stream's chunks become: the codecs (`inferops.router.forward` relays).

A codec decides what each chunk becomes: the OpenAI passthrough returns it unchanged (no
parsing, no re-encoding), the Ollama translation (`translate.OllamaStream`) turns SSE events
into NDJSON lines. A codec also writes the in-band error that ends a broken stream, and
reports the token counts of the engine's `usage`.
"""

from __future__ import annotations

import json
from typing import Protocol

from inferops.router.errors import stream_error_ollama, stream_error_openai

_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


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
        usage, _ = _scan(data[start:].decode("utf-8", "replace"), 0)
    except (ValueError, StopIteration, RecursionError):
        return None, None
    return usage_counts(usage)


def usage_counts(usage: object) -> tuple[int | None, int | None]:
    """Prompt and completion tokens of an OpenAI `usage` object (None where it has none)."""
    if not isinstance(usage, dict):
        return None, None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) else None,
        completion if isinstance(completion, int) else None,
    )


class StreamPassthrough:
    """An engine's stream relayed as is. Keeps references to the last two chunks (no copies):
    the end of the stream, where the token counts are."""

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


class SsePassthrough(StreamPassthrough):
    """The OpenAI stream as is; the usage event comes last when the client asked for it."""

    __slots__ = ()

    def finish(self) -> bytes:
        return b""

    def error(self, message: str, code: str) -> bytes:
        # Close a half-relayed event first, so the error is an event of its own.
        prefix = b"" if not self.last or self.last.endswith(b"\n\n") else b"\n\n"
        return prefix + stream_error_openai(message, code)

    def counts(self) -> tuple[int | None, int | None]:
        return find_usage(self.previous + self.last)


def _count_after(data: bytes, key: bytes) -> int | None:
    """The integer after the last `"key":` in `data`, without parsing the rest."""
    at = data.rfind(key)
    if at < 0:
        return None
    at += len(key)
    end = at
    while end < len(data) and data[end : end + 1] in b" :\t":
        end += 1
    start = end
    while end < len(data) and data[end : end + 1].isdigit():
        end += 1
    return int(data[start:end]) if end > start else None


def find_ollama_counts(data: bytes) -> tuple[int | None, int | None]:
    """Prompt and completion tokens of an Ollama answer (`prompt_eval_count`, `eval_count`
    of its final object), without parsing the rest: keys in JSON are quoted, so a match of
    `"eval_count"` (with its quotes) is the key, never a value."""
    return _count_after(data, b'"prompt_eval_count"'), _count_after(data, b'"eval_count"')


class NdjsonPassthrough(StreamPassthrough):
    """Ollama's NDJSON stream as is, to an Ollama-API client; the counts are in its final
    object."""

    __slots__ = ()

    def finish(self) -> bytes:
        # Ollama ends a stream that failed midway with an `{"error": ...}` line.
        tail = self.previous + self.last
        line = tail.rstrip(b"\n").rpartition(b"\n")[2]
        if line.startswith(b'{"error"'):
            self.failed = line.decode("utf-8", "replace")
        return b""

    def error(self, message: str, code: str) -> bytes:
        prefix = b"" if not self.last or self.last.endswith(b"\n") else b"\n"
        return prefix + stream_error_ollama(message)

    def counts(self) -> tuple[int | None, int | None]:
        return find_ollama_counts(self.previous + self.last)


__all__ = [
    "Codec",
    "NdjsonPassthrough",
    "SsePassthrough",
    "StreamPassthrough",
    "find_ollama_counts",
    "find_usage",
    "usage_counts",
]
