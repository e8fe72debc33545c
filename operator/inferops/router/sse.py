"""Incremental parsing of a server-sent event stream into the events' `data` payloads.

Only the Ollama translation needs events; the OpenAI passthrough relays bytes untouched.
Chunk boundaries fall anywhere (mid-line, mid-event, between `\\r` and `\\n`), so the parser
keeps the unfinished tail for the next chunk.
"""

from __future__ import annotations


class SseParser:
    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The `data` of every event completed by `chunk` (multi-line data joined by `\\n`)."""
        buffer = self._tail + chunk if self._tail else chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        if b"\n\n" not in buffer:
            self._tail = buffer
            return []
        *events, self._tail = buffer.split(b"\n\n")
        out: list[bytes] = []
        for event in events:
            data: list[bytes] = []
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    value = line[5:]
                    data.append(value[1:] if value.startswith(b" ") else value)
            if data:
                out.append(data[0] if len(data) == 1 else b"\n".join(data))
        return out


__all__ = ["SseParser"]
