"""The router's HTTP/1.1 client to the engines: pooled keep-alive connections, parsed by
httptools, reporting to a listener through callbacks.

One `Pool` per router process: per engine origin a stack of idle connections (the most
recently used first, so the others expire), a limit on open connections, idle connections
closed after `keepalive_seconds` (below uvicorn's 5 s, so the router does not reuse a
connection the engine is closing), DNS answers kept for 10 s. A request is the bytes of its
head and body, written at once; its answer goes to a `Listener` piece by piece: `head()`,
`body()` for each piece as it arrives (de-chunked), `end()`; or `lost()` when the connection
ends first, or `connect_failed()`. A pooled connection that turns out to be closed before
any byte of its answer arrived (the engine closed it while idle) is retried once on a fresh
one, unseen by the listener.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools

log = logging.getLogger("inferops.router.pool")

DNS_TTL_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an engine listens, and how its requests start."""

    scheme: str
    host: str
    port: int
    prefix: str
    """A path the engine's URL puts before every request path."""
    host_header: bytes = field(compare=False)
    key: str = field(compare=False)
    """What the pool files connections under (a string hashes once; a dataclass every time)."""

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        default = (parts.scheme, port) in (("http", 80), ("https", 443))
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        host_header = b"Host: %s\r\n" % (shown if default else f"{shown}:{port}").encode("idna")
        key = f"{parts.scheme}://{shown}:{port}"
        return cls(parts.scheme, host, port, parts.path.rstrip("/"), host_header, key)

    def request_head(self, method: str, path: str, headers: bytes) -> bytes:
        """The request line and the fixed headers of requests for `path`."""
        return (
            b"%s %s HTTP/1.1\r\n" % (method.encode(), (self.prefix + path).encode())
            + self.host_header
            + headers
        )


class Listener(Protocol):
    """Hears how one request fares. `token` is the one the request was made with: a listener
    that tries one engine after another tells a late word about an earlier try by it."""

    def attach(self, conn: Connection, token: int) -> bool:
        """The request is on `conn`; False: the listener gave up (the connection is kept)."""

    def connect_failed(self, error: OSError, token: int) -> None:
        """No connection (a TimeoutError: not within the connect limit)."""

    def head(self, status: int, content_type: bytes) -> None: ...

    def body(self, data: bytes) -> None: ...

    def end(self) -> None: ...

    def lost(self, error: Exception | None) -> None:
        """The connection ended before the answer did."""


class Connection(asyncio.Protocol):
    """One keep-alive connection to an engine, carrying one request at a time."""

    __slots__ = (
        "chunked",
        "connect_seconds",
        "content_type",
        "framed",
        "got_bytes",
        "idle_since",
        "informational",
        "listener",
        "origin",
        "parser",
        "paused",
        "pool",
        "request",
        "responding",
        "reused",
        "token",
        "transport",
    )

    def __init__(self, pool: Pool, origin: Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.listener: Listener | None = None
        self.request = b""
        """The request under way, kept until its answer starts (for the one retry)."""
        self.reused = False
        self.token = 0
        self.connect_seconds = 0.0
        self.got_bytes = False
        self.responding = False
        """The answer's head arrived."""
        self.framed = False
        """The answer has a length or chunks; else it ends when the connection closes."""
        self.chunked = False
        self.content_type = b""
        self.informational = False
        self.paused = False
        self.idle_since = 0.0

    # -- used by the pool and the listener -----------------------------------------------------

    def send(
        self, request: bytes, listener: Listener, token: int, reused: bool, connect_seconds: float
    ) -> None:
        self.reused = reused
        self.token = token
        self.connect_seconds = connect_seconds
        self.got_bytes = False
        self.responding = False
        self.framed = False
        self.chunked = False
        self.content_type = b""
        if not listener.attach(self, token):
            self.pool.release(self)
            return
        self.listener = listener
        self.request = request
        assert self.transport is not None
        self.transport.write(request)

    def abort(self) -> None:
        """Gives up on the request: the connection is closed, so the engine stops its work.
        Safe inside a parser callback: what the parser still reports is ignored, and the
        connection never returns to the pool."""
        self.listener = None
        self.request = b""
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.abort()

    def pause(self) -> None:
        if self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and self.paused:
            self.paused = False
            self.transport.resume_reading()

    # -- transport callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.listener is None:  # nothing is expected: an idle connection the engine spoke on
            self.abort()
            return
        self.got_bytes = True
        self.request = b""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            listener = self.listener
            self.abort()
            if listener is not None:
                listener.lost(err)

    def eof_received(self) -> bool:
        return False  # the transport closes itself; connection_lost says the rest

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.pool.closed(self)
        listener = self.listener
        if listener is None:
            return
        self.listener = None
        if self.reused and not self.got_bytes and self.request:
            # The engine closed this idle connection as it was taken: once more, on a new one.
            request, self.request = self.request, b""
            self.pool.connect(self.origin, request, listener, self.token, self.connect_seconds)
        elif self.responding and not self.framed:
            listener.end()  # an answer without a length ends with its connection
        else:
            listener.lost(exc)

    # -- parser callbacks ----------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name)  # the three names that matter differ in length: skip the others
        if size == 12:
            if name.lower() == b"content-type":
                self.content_type = value
        elif size == 14:
            if name.lower() == b"content-length":
                self.framed = True
        elif size == 17 and name.lower() == b"transfer-encoding":
            self.framed = self.chunked = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim answer: the real one follows
            self.informational = True
            return
        self.responding = True
        listener = self.listener
        if listener is not None:
            listener.head(status, self.content_type or b"application/json")

    def on_body(self, body: bytes) -> None:
        listener = self.listener
        if listener is not None:
            listener.body(body)

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            self.framed = False
            self.content_type = b""
            return
        listener = self.listener
        if listener is None:  # an answer nobody asked for (or given up on): not reusable
            self.abort()
            return
        # Only here is httptools' answer right (read after feed_data it is always False).
        keep = self.parser.should_keep_alive()
        self.listener = None
        listener.end()
        if keep and self.transport is not None:
            self.pool.release(self)
        elif self.transport is not None:
            self.transport.close()


class Pool:
    """Keep-alive connections to the engines, shared by every request of the process."""

    def __init__(self, limit: int = 4096, keepalive_seconds: float = 4.0) -> None:
        self.limit = limit
        """Open connections at most (0: no limit); requests beyond it wait for one."""
        self.keepalive_seconds = keepalive_seconds
        self.idle: dict[str, list[Connection]] = {}
        """Origin key -> idle connections, the most recently used last."""
        self.open = 0
        """Connections open or being opened."""
        self.waiting: deque[tuple[Origin, bytes, Listener, int, float]] = deque()
        self._dns: dict[tuple[str, int], tuple[float, asyncio.Future[list[tuple[int, str]]]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._connecting: set[asyncio.Task[Connection]] = set()
        self._closed = False
        self._ssl: ssl.SSLContext | None = None

    def request(
        self, origin: Origin, data: bytes, listener: Listener, token: int, connect_seconds: float
    ) -> None:
        """Sends `data` to `origin` on an idle connection, or a new one."""
        stack = self.idle.get(origin.key)
        while stack:
            conn = stack.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                conn.send(data, listener, token, True, connect_seconds)
                return
        if self.limit and self.open >= self.limit and not self._evict():
            self.waiting.append((origin, data, listener, token, connect_seconds))
            return
        self.connect(origin, data, listener, token, connect_seconds)

    def release(self, conn: Connection) -> None:
        """`conn` finished a request and stays open: to the idle stack, or to a waiter."""
        if self._closed or conn.transport is None:
            conn.abort()
            return
        # A connection paused for a slow client must read again, or its next answer hangs.
        conn.resume()
        if self.waiting:
            origin, data, listener, token, connect_seconds = self.waiting.popleft()
            if origin.key == conn.origin.key:
                conn.send(data, listener, token, True, connect_seconds)
            else:
                conn.abort()  # frees its place for the waiter's engine
                self.connect(origin, data, listener, token, connect_seconds)
            return
        conn.idle_since = time.monotonic()
        key = conn.origin.key
        stack = self.idle.get(key)
        if stack is None:
            stack = self.idle[key] = []
        stack.append(conn)
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self.keepalive_seconds / 2, self._sweep)

    def closed(self, conn: Connection) -> None:
        """`conn` is gone (called once, from its connection_lost)."""
        self.open -= 1
        stack = self.idle.get(conn.origin.key)
        if stack and conn in stack:
            stack.remove(conn)
        if self.waiting and not self._closed and (not self.limit or self.open < self.limit):
            origin, data, listener, token, connect_seconds = self.waiting.popleft()
            self.connect(origin, data, listener, token, connect_seconds)

    def close(self) -> None:
        """Closes the idle connections and refuses to keep any more."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for stack in self.idle.values():
            for conn in list(stack):
                conn.abort()
        self.idle.clear()
        for task in list(self._connecting):
            task.cancel()
        for _, _, listener, token, _ in self.waiting:
            listener.connect_failed(ConnectionAbortedError("the router is stopping"), token)
        self.waiting.clear()

    # -- internals -----------------------------------------------------------------------------

    def _evict(self) -> bool:
        """Closes an idle connection (of another engine) to make room; False when there is
        none. `open` drops when the loss is reported, so it may pass the limit by one."""
        for stack in self.idle.values():
            if stack:
                stack.pop(0).abort()
                return True
        return False

    def _sweep(self) -> None:
        self._sweeper = None
        limit = time.monotonic() - self.keepalive_seconds
        left = False
        for stack in self.idle.values():
            # Oldest first: the stack is used from its top.
            while stack and stack[0].idle_since <= limit:
                stack.pop(0).abort()
            left = left or bool(stack)
        if left and not self._closed:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self.keepalive_seconds / 2, self._sweep)

    def connect(
        self, origin: Origin, data: bytes, listener: Listener, token: int, connect_seconds: float
    ) -> None:
        """Sends `data` on a new connection."""
        self.open += 1
        task = asyncio.get_running_loop().create_task(self._open(origin, connect_seconds))
        self._connecting.add(task)

        def done(task: asyncio.Task[Connection]) -> None:
            self._connecting.discard(task)
            if task.cancelled():
                self.open -= 1
                listener.connect_failed(ConnectionAbortedError("the router is stopping"), token)
                return
            error = task.exception()
            if error is not None:
                self.open -= 1
                if isinstance(error, OSError):  # TimeoutError is one too
                    listener.connect_failed(error, token)
                else:  # not a network failure: a bug, which must not go unseen
                    log.error("connecting to %s failed", origin.host, exc_info=error)
                    listener.connect_failed(OSError(str(error)), token)
                return
            conn = task.result()
            if conn.transport is None:  # lost between connecting and now
                closed = ConnectionResetError("the engine closed the new connection")
                listener.connect_failed(closed, token)
                return
            conn.send(data, listener, token, False, connect_seconds)

        task.add_done_callback(done)

    async def _open(self, origin: Origin, connect_seconds: float) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_seconds):
                addresses = await self._resolve(origin.host, origin.port)
                error: OSError | None = None
                for family, address in addresses:
                    try:
                        _, conn = await loop.create_connection(
                            lambda: Connection(self, origin),
                            address,
                            origin.port,
                            family=family,
                            ssl=self._tls() if origin.scheme == "https" else None,
                            server_hostname=origin.host if origin.scheme == "https" else None,
                        )
                        return conn
                    except OSError as err:
                        error = err
                assert error is not None
                raise error
        except TimeoutError:
            raise TimeoutError(f"no connection within {connect_seconds:.3g}s") from None

    async def _resolve(self, host: str, port: int) -> list[tuple[int, str]]:
        """`(family, address)` of `host`, asked again after `DNS_TTL_SECONDS`; concurrent
        connects share one lookup (a burst of new streams would otherwise ask hundreds of
        times, each through the search domains of a pod's resolv.conf)."""
        now = time.monotonic()
        key = (host, port)
        cached = self._dns.get(key)
        if cached is None or cached[0] < now or _failed(cached[1]):
            future: asyncio.Future[list[tuple[int, str]]] = asyncio.ensure_future(
                self._lookup(host, port)
            )
            cached = self._dns[key] = (now + DNS_TTL_SECONDS, future)
        return await asyncio.shield(cached[1])

    @staticmethod
    async def _lookup(host: str, port: int) -> list[tuple[int, str]]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        found: list[tuple[int, str]] = []
        for family, _, _, _, address in infos:
            entry = (int(family), str(address[0]))
            if entry not in found:
                found.append(entry)
        if not found:
            raise OSError(f"{host!r} has no address")
        return found

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl


def _failed(future: asyncio.Future[list[tuple[int, str]]]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


__all__ = ["Connection", "Listener", "Origin", "Pool"]
