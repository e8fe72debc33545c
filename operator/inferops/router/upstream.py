"""Talking to the engines, besides the relay of inference requests (`forward`): which client
headers go along, what an engine answered (`Answer`), and `fetch()`, one whole request from a
coroutine (the model endpoints' questions to the engines).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from inferops.router.pool import Connection, Pool
from inferops.router.routes import BASE_HEADERS, Target

# Client headers worth passing on: credentials (an engine started with --api-key checks them)
# and tracing. Everything else is the router's business.
FORWARDED_HEADERS = ("Authorization", "X-Request-Id", "Traceparent", "Tracestate")
FORWARDED_KEYS = tuple((name.lower(), name.encode() + b": ") for name in FORWARDED_HEADERS)
"""(the key the server stores a header under, the start of its line upstream)"""


def forwarded(headers: Mapping[str, str]) -> bytes:
    """The header lines passed on from a client's request (keys are lowercase names)."""
    out = b""
    for key, start in FORWARDED_KEYS:
        value = headers.get(key)
        if value is not None:
            # latin-1 both ways: the bytes go on exactly as they came.
            out += start + value.encode("latin-1") + b"\r\n"
    return out


@dataclass(slots=True)
class Answer:
    """An engine's whole answer."""

    target: Target
    status: int
    content_type: bytes
    body: bytes


class EngineError(ConnectionError):
    """The engine's connection failed before its whole answer arrived."""


class _Fetch:
    """A `pool.Listener` collecting one whole answer into a future."""

    __slots__ = ("conn", "future", "parts", "status")

    def __init__(self, future: asyncio.Future[tuple[int, bytes]]) -> None:
        self.future = future
        self.conn: Connection | None = None
        self.status = 0
        self.parts: list[bytes] = []

    def attach(self, conn: Connection, token: int) -> bool:
        if self.future.done():
            return False
        self.conn = conn
        return True

    def connect_failed(self, error: OSError, token: int) -> None:
        if not self.future.done():
            self.future.set_exception(error)

    def head(self, status: int, content_type: bytes) -> None:
        self.status = status

    def body(self, data: bytes) -> None:
        self.parts.append(data)

    def end(self) -> None:
        self.conn = None
        if not self.future.done():
            self.future.set_result((self.status, b"".join(self.parts)))

    def lost(self, error: Exception | None) -> None:
        self.conn = None
        if not self.future.done():
            self.future.set_exception(EngineError(f"connection lost: {error!r}"))

    def abort(self) -> None:
        if self.conn is not None:
            self.conn.abort()
            self.conn = None


async def fetch(
    pool: Pool,
    target: Target,
    method: str,
    path: str,
    headers: bytes,
    body: bytes | None,
    connect_seconds: float,
) -> tuple[int, bytes]:
    """`method path` on `target`: its status and whole body. Cancelling it (a timeout) closes
    the connection."""
    future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
    listener = _Fetch(future)
    head = target.origin.request_head(method, path, BASE_HEADERS + headers)
    if body is None:
        data = head + b"\r\n"
    else:
        data = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    pool.request(target.origin, data, listener, 0, connect_seconds)
    try:
        return await future
    finally:
        if not future.done():
            future.cancel()
        listener.abort()


__all__ = ["FORWARDED_HEADERS", "Answer", "EngineError", "fetch", "forwarded"]
