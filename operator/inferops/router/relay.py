"""What a relayed stream's chunks become: the codecs (`inferops.router.forward` relays).

A codec decides what each chunk becomes: the OpenAI passthrough returns it unchanged (no
parsing, no re-encoding), the Ollama translation (`translate.OllamaStream`) turns SSE events
into NDJSON lines. A codec also writes the in-band error that ends a broken stream, and
reports the token counts of the engine's `usage`.
"""

from __future__ import annotations

import json
from typing import Protocol

from inferops.router.errors import stream_error_openai

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


__all__ = ["Codec", "SsePassthrough", "find_usage"]
