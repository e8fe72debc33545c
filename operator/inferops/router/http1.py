"""The router's HTTP/1.1 server: one asyncio Protocol per client connection, parsed by httptools,
answered through callbacks.

There is no task and no await per request: that, and not the routing, is where a
general-purpose server spends its time. An application (`App`) sees each request twice: at
`head()`, when its headers are complete, it may refuse it before reading any of the body (a
blob upload can be gigabytes) or set the body limit; at `handle()`, once the body is complete
and it is the request's turn (pipelined requests are answered in order), it answers with
`reply()` (a whole body) or `start()`/`write()`/`end()` (a stream: chunked for HTTP/1.1
clients, close-delimited for HTTP/1.0 ones). The request's `listener` hears that the client
went away (which is what stops the engine's work) and that the client's socket buffer filled
or drained (backpressure).

A request refused at its headers is answered at once when its body is still on the way, with
`Connection: close`; what the client still sends is read and dropped for at most
`LINGER_SECONDS` (closing at once would reset the connection and could destroy the answer
before the client read it), then the connection closes.
"""

from __future__ import annotations

import asyncio
import http
import logging
import socket
import time
from collections import deque
from collections.abc import Mapping
from email.utils import formatdate
from typing import Protocol, cast
from urllib.parse import unquote

import httptools

log = logging.getLogger("inferops.router.http")

MAX_HEAD_BYTES = 64 * 1024
"""Request line and headers together: more is refused (431) before the parser holds it all."""
MAX_FIELD_BYTES = 8190
"""One URL or header value (aiohttp's limit, which the router's clients have met so far)."""
KEEPALIVE_SECONDS = 75.0
"""An idle client connection is closed after this long (aiohttp's default, kept)."""
LINGER_SECONDS = 10.0
IDLE_LINGER_SECONDS = 0.5
"""On stop, how long idle keep-alive connections stay open for requests already on the way."""
# Pending connections the kernel queues; Python's default of 100 is overflowed by a burst of
# new streams (measured by bench/router).
BACKLOG = 1024

_REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus}
_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        reason = _REASONS.get(status, b"Unknown")
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, reason)
    return line


_REPLY_STARTS: dict[tuple[int, bytes], bytes] = {}


def reply_start(status: int, content_type: bytes) -> bytes:
    """`<status line>Content-Type: ...\r\nContent-Length: `, built once per pair."""
    key = (status, content_type)
    start = _REPLY_STARTS.get(key)
    if start is None:
        start = status_line(status) + b"Content-Type: " + content_type + b"\r\nContent-Length: "
        if len(_REPLY_STARTS) < 1024:  # content types come from engines: keep it bounded
            _REPLY_STARTS[key] = start
    return start


_date_second = 0
_date_header = b""


def date_header() -> bytes:
    """`Date: ...\\r\\n`, formatted once per second."""
    global _date_second, _date_header
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_header = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
    return _date_header


class Reply:
    """A whole answer: status, body, content type and extra header lines (`Name: v\\r\\n`)."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: bytes = b"application/json",
        headers: bytes = b"",
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers


class Listener(Protocol):
    """What the application attaches to a request it answers asynchronously."""

    def client_lost(self) -> None:
        """The client connection closed before the answer was complete."""

    def pause(self) -> None:
        """The client's socket buffer is full: stop producing."""

    def resume(self) -> None:
        """The client's socket buffer drained: produce again."""


class App(Protocol):
    @property
    def wanted(self) -> Mapping[bytes, str]:
        """Lowercase header names the application reads -> the key it reads them under;
        other headers are not kept."""

    def head(self, request: Request) -> Reply | None:
        """Headers complete: a refusal, or None to read the body (up to `request.limit`)."""

    def overflow(self, request: Request) -> Reply:
        """The body grew past `request.limit`."""

    def handle(self, request: Request) -> None:
        """Body complete and the request's turn: answer it, now or later."""

    def malformed(self, path: str | None, status: int, message: str) -> Reply:
        """The answer to a request the parser refused."""


class _Refused(Exception):
    """Raised inside a parser callback (which httptools turns into HttpParserCallbackError)
    after `HttpConnection.refusal` was set."""


WAITING, STREAMING, DONE = 0, 1, 2


class Request:
    """One request, and the way to answer it."""

    __slots__ = (
        "body",
        "chunked",
        "complete",
        "conn",
        "context",
        "early",
        "headers",
        "keep_alive",
        "limit",
        "listener",
        "method",
        "parts",
        "path",
        "size",
        "state",
        "status",
        "version",
    )

    def __init__(self, conn: HttpConnection) -> None:
        self.conn = conn
        self.method = ""
        self.path = ""
        self.version = "1.1"
        self.headers: dict[str, str] = {}
        self.parts: list[bytes] | None = []
        self.body = b""
        self.size = 0
        self.limit = 0
        """Largest body read; set by `App.head` (0: no body)."""
        self.complete = False
        self.keep_alive = True
        self.early: Reply | None = None
        """The answer `App.head` gave: the body is dropped, the request is not handled."""
        self.listener: Listener | None = None
        self.context: object = None
        """The application's own per-request data."""
        self.state = WAITING
        self.status = 0
        self.chunked = False

    # -- answering -----------------------------------------------------------------------------

    def reply(self, reply: Reply) -> None:
        """Answers with a whole body; the request is done."""
        if self.state == DONE:
            return
        self.state = DONE
        self.status = reply.status
        conn = self.conn
        body = reply.body
        head = b"".join(
            (
                reply_start(reply.status, reply.content_type),
                b"%d\r\n" % len(body),
                reply.headers,
                date_header(),
                conn.connection_header(self),
                b"\r\n",
            )
        )
        if self.method == "HEAD":
            conn.send(head)
        elif len(body) < 65536:
            conn.send(head + body)
        else:  # a large body is not copied once more to save a system call
            conn.send(head)
            conn.send(body)
        conn.finished(self)

    def start(
        self, status: int, content_type: bytes, headers: bytes = b"", first: bytes = b""
    ) -> None:
        """Starts a streamed answer with its `first` piece (in the same write as the head:
        one system call less, and no moment where the client has a head and no body); then
        `write()` the other pieces and `end()` it."""
        conn = self.conn
        self.state = STREAMING
        self.status = status
        if self.version == "1.1":
            self.chunked = True
            framing = b"Transfer-Encoding: chunked\r\n"
            if first:
                first = b"%x\r\n%b\r\n" % (len(first), first)
        else:  # HTTP/1.0 knows no chunks: the body ends when the connection closes
            self.keep_alive = False
            framing = b""
        conn.send(
            b"".join(
                (
                    status_line(status),
                    b"Content-Type: ",
                    content_type,
                    b"\r\n",
                    framing,
                    headers,
                    date_header(),
                    conn.connection_header(self),
                    b"\r\n",
                    first,
                )
            )
        )

    def write(self, data: bytes) -> None:
        if self.state != STREAMING or not data:
            return
        if self.chunked:
            self.conn.send(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.conn.send(data)

    def end(self, tail: bytes = b"") -> None:
        """Ends a streamed answer, `tail` its last piece."""
        if self.state != STREAMING:
            return
        self.state = DONE
        if self.chunked:
            last = b"%x\r\n%b\r\n0\r\n\r\n" % (len(tail), tail) if tail else b"0\r\n\r\n"
            self.conn.send(last)
        elif tail:
            self.conn.send(tail)
        self.conn.finished(self)

    def abort(self) -> None:
        """Drops the connection: the client sees its answer cut short."""
        self.state = DONE
        self.listener = None
        self.conn.close(abort=True)

    @property
    def started(self) -> bool:
        """Whether any of the answer was sent."""
        return self.state != WAITING


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests, queues pipelined ones, writes answers."""

    __slots__ = (
        "active",
        "app",
        "closed",
        "closing",
        "current",
        "head_bytes",
        "idle_since",
        "linger",
        "parser",
        "queue",
        "refusal",
        "server",
        "transport",
        "url",
        "wanted",
        "writing_paused",
    )

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.app = server.app
        self.wanted = server.wanted
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.current: Request | None = None
        """The request being parsed."""
        self.active: Request | None = None
        """The request being answered."""
        self.queue: deque[Request] = deque()
        """Requests received in full, waiting for the active one to finish (pipelining)."""
        self.url = b""
        self.head_bytes = 0
        self.refusal: Reply | None = None
        self.closing = False
        """Close once the active request is answered (draining, or the client asked)."""
        self.closed = False
        self.writing_paused = False
        self.linger: asyncio.TimerHandle | None = None
        self.idle_since = time.monotonic()

    # -- transport callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.linger is not None:
            self.linger.cancel()
        active = self.active
        if active is not None and active.listener is not None:
            listener, active.listener = active.listener, None
            listener.client_lost()
        self.queue.clear()

    def eof_received(self) -> bool:
        # A half-closed client is treated as gone (as aiohttp does): its answer could not be
        # told apart from one to a client that left.
        return False

    def pause_writing(self) -> None:
        self.writing_paused = True
        active = self.active
        if active is not None and active.listener is not None:
            active.listener.pause()

    def resume_writing(self) -> None:
        self.writing_paused = False
        active = self.active
        if active is not None and active.listener is not None:
            active.listener.resume()

    def data_received(self, data: bytes) -> None:
        current = self.current
        if current is not None and not current.method:
            # Inside a head across reads: httptools gathers a header whole before calling
            # back, so what it may gather is bounded here (within one read, by the read).
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(self.app.malformed(self._path(), 400, "protocol upgrades are not served"))
            return
        except httptools.HttpParserError as err:
            refusal = self.refusal or self.app.malformed(
                self._path(), 400, f"malformed HTTP request: {err}"
            )
            self._refuse(refusal)
            return
        current = self.current
        if current is not None and not current.method and self.head_bytes > MAX_HEAD_BYTES:
            self._refuse(self.app.malformed(None, 431, "the request head is too large"))
            return
        if current is not None and current.early is not None:
            self._answer_early()

    # -- parser callbacks ----------------------------------------------------------------------

    # No on_message_begin (one callback less per request): a request starts with its URL.

    def on_url(self, url: bytes) -> None:
        if self.current is None:
            self.current = Request(self)
            self.url = url
            self.head_bytes = 0
        else:  # the URL may come in several pieces
            self.url += url
        if len(self.url) > MAX_FIELD_BYTES:
            self.refusal = self.app.malformed(None, 414, "the request URL is too long")
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(value) > MAX_FIELD_BYTES:
            self.refusal = self.app.malformed(
                self._path(), 431, f"the header {name.decode('latin-1')!r} is too long"
            )
            raise _Refused
        key = self.wanted.get(name.lower())
        if key is not None:
            request = self.current
            assert request is not None
            if key not in request.headers:  # the first of repeated headers counts
                request.headers[key] = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        request = self.current
        if request is None:  # no URL (the parser would have refused): be safe all the same
            request = self.current = Request(self)
        parser = self.parser
        request.method = parser.get_method().decode("latin-1")
        request.version = parser.get_http_version()
        request.path = self._path() or "/"
        try:
            early = self.app.head(request)
        except Exception:  # a bug must not leave the client waiting
            log.exception("refusing %s %s", request.method, request.path)
            early = self.app.malformed(request.path, 500, "the router failed on this request")
        if early is not None:
            request.early = early
            request.parts = None
        elif (
            request.headers.get("expect", "").lower() == "100-continue"
            and self.active is None
            and not self.queue
        ):
            self.send(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        request = self.current
        assert request is not None
        parts = request.parts
        if parts is None:  # refused: dropped
            return
        request.size += len(body)
        if request.size > request.limit:
            request.parts = None
            request.early = self.app.overflow(request)
            return
        parts.append(body)

    def on_message_complete(self) -> None:
        request = self.current
        assert request is not None
        self.current = None
        self.url = b""
        # Only here is httptools' answer right (read after feed_data it is always False).
        request.keep_alive = self.parser.should_keep_alive()
        request.complete = True
        parts = request.parts
        if parts:
            request.body = parts[0] if len(parts) == 1 else b"".join(parts)
        request.parts = None
        if request.state == DONE:  # refused early, its body read and dropped since
            self.close()
            return
        self.queue.append(request)
        if self.active is None:
            self._next()

    # -- answering -----------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if not self.closed:
            assert self.transport is not None
            self.transport.write(data)

    def connection_header(self, request: Request) -> bytes:
        if self.closing or not request.keep_alive:
            request.keep_alive = False
            return b"Connection: close\r\n"
        if request.version == "1.0":  # keep-alive is not HTTP/1.0's default: confirm it
            return b"Connection: keep-alive\r\n"
        return b""

    def finished(self, request: Request) -> None:
        """`request` is answered: close, or go on with the next one."""
        request.listener = None
        server = self.server
        if server.access_log is not None:
            server.access_log.info('"%s %s" %d', request.method, request.path, request.status)
        if self.active is request:
            self.active = None
        # Draining, a connection goes once nothing received is left to answer (an answer
        # started before the drain did not say `Connection: close`).
        if not request.keep_alive or (self.closing and not self.queue and self.current is None):
            if request.complete:
                self.close()
            else:
                self._start_linger()
            return
        self.idle_since = time.monotonic()
        if self.queue:
            self._next()

    def _next(self) -> None:
        # A loop rather than recursion: an answer given at once starts the next request.
        # Draining (`closing`), a request already received is still answered, with
        # `Connection: close`.
        while self.active is None and self.queue and not self.closed:
            request = self.active = self.queue.popleft()
            early = request.early
            if early is not None:
                request.reply(early)
                continue
            try:
                self.app.handle(request)
            except Exception:
                log.exception("failed on %s %s", request.method, request.path)
                if request.state == WAITING:
                    request.reply(self.app.malformed(request.path, 500, "the router failed"))
                else:
                    request.abort()
        current = self.current
        if self.active is None and current is not None and current.early is not None:
            self._answer_early()

    def _answer_early(self) -> None:
        """Answers a request refused at its headers while its body is still coming, if it is
        the connection's turn."""
        request = self.current
        assert request is not None and request.early is not None
        if self.active is not None or self.queue or request.state != WAITING:
            return
        self.active = request
        request.keep_alive = False
        request.reply(request.early)

    def _start_linger(self) -> None:
        assert self.transport is not None
        if self.linger is None and not self.closed:
            self.linger = asyncio.get_running_loop().call_later(LINGER_SECONDS, self.close)

    def _refuse(self, reply: Reply) -> None:
        """The parser refused the input: answer (if nothing else is being answered) and close."""
        self.refusal = None
        self.closing = True
        if self.active is not None or self.linger is not None or self.closed:
            # Something else is being (or was) answered on this connection: just end it.
            self.close(abort=self.active is not None)
            return
        request = self.current or Request(self)
        self.current = None
        self.active = request
        request.keep_alive = False
        request.complete = True
        request.reply(reply)

    def _path(self) -> str | None:
        if not self.url:
            return None
        path = self.url.partition(b"?")[0].decode("latin-1")
        return unquote(path) if "%" in path else path

    def close(self, abort: bool = False) -> None:
        if self.closed or self.transport is None:
            return
        self.closed = True
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        if abort:
            self.transport.abort()
        else:
            self.transport.close()

    def drain(self) -> None:
        """Stop: close after the answer under way; an idle connection is closed later, by
        `close_if_idle`."""
        self.closing = True

    def close_if_idle(self) -> None:
        if self.active is None and not self.queue and self.current is None:
            self.close()

    def idle_for(self, now: float) -> float:
        if self.active is not None or self.queue:
            return 0.0
        return now - self.idle_since


class HttpServer:
    """Listens on a socket and serves `app` until `stop()`."""

    def __init__(self, app: App, access_log: logging.Logger | None = None) -> None:
        self.app = app
        self.wanted = {b"expect": "expect", **app.wanted}
        self.access_log = access_log
        self.connections: set[HttpConnection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpConnection(self), sock=sock, backlog=BACKLOG
        )
        self._sweeper = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Closes client connections idle longer than `KEEPALIVE_SECONDS`."""
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS / 5)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.idle_for(now) > KEEPALIVE_SECONDS:
                    conn.close()

    async def stop(self, grace_seconds: float) -> None:
        """Stops accepting, lets requests under way finish within `grace_seconds`, then cuts
        the rest (which tells their listeners the client is gone)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.drain()
        # An idle keep-alive connection is not closed at once: a request its client sent as
        # the stop began may be on the wire, and closing would reset it. For a moment such
        # a request is still answered (with `Connection: close`); then the idle ones go.
        now = time.monotonic()
        deadline = now + grace_seconds
        idle_cut = now + min(IDLE_LINGER_SECONDS, grace_seconds)
        while self.connections and time.monotonic() < deadline:
            if time.monotonic() >= idle_cut:
                for conn in list(self.connections):
                    conn.close_if_idle()
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.close(abort=True)
        # Let the transports report their loss (and the listeners stop their upstream work).
        await asyncio.sleep(0)


__all__ = [
    "BACKLOG",
    "App",
    "HttpConnection",
    "HttpServer",
    "Listener",
    "Reply",
    "Request",
    "date_header",
    "status_line",
]
