"""The router's server: its lifecycle and a graceful stop.

Start-up creates the engines' connection pool, starts the table source and listens
(`http1.HttpServer` serving `app.RouterApp`); `/healthz` answers as long as the process runs,
`/readyz` once a table is installed (and until a stop begins; a stale table still serves, so
it stays ready and says so), and `/metrics` serves the
router's own registry. Stopping (SIGTERM) stops accepting connections, turns `/readyz` to
503, lets requests and streams in flight finish within the grace period, cuts what is left
(which closes their engine connections, so the engines stop working for nobody), then closes
the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from inferops.router.app import RouterApp
from inferops.router.http1 import BACKLOG, HttpServer
from inferops.router.pool import Pool
from inferops.router.sources import TableSource
from inferops.router.state import RouterState

log = logging.getLogger("inferops.router")


def bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening socket; port 0 picks a free one (see `getsockname()`).

    `reuse_port` (workers): processes of the same user may listen on the port too, and the
    kernel spreads new connections across them. Off for a single router, so that a second
    router started on a port in use fails instead of silently taking half its traffic."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


class RouterServer:
    """The router running in this event loop: `await start()`, later `await stop()`."""

    def __init__(
        self,
        state: RouterState,
        source: TableSource | None,
        host: str = "127.0.0.1",
        port: int = 0,
        grace_seconds: float = 25.0,
        access_log: bool = False,
        connection_limit: int = 4096,
        keepalive_seconds: float = 4.0,
        reuse_port: bool = False,
    ) -> None:
        self.state = state
        self.source = source
        self.host = host
        self.port = port
        self.grace_seconds = grace_seconds
        self.connection_limit = connection_limit
        self.keepalive_seconds = keepalive_seconds
        self.reuse_port = reuse_port
        self.app = RouterApp(state)
        self.http = HttpServer(self.app, access_log=log if access_log else None)
        self._source_task: asyncio.Task[None] | None = None
        self._started = False

    async def start(self) -> None:
        self.state.pool = Pool(self.connection_limit, self.keepalive_seconds)
        if self.source is not None:
            log.info("routing table from %s", self.source.describe())
            self._source_task = asyncio.create_task(self.source.run(self.state))
        sock = bind(self.host, self.port, self.reuse_port)
        self.port = sock.getsockname()[1]
        await self.http.start(sock)
        self._started = True
        log.info("router listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self.state.draining or not self._started:
            return
        self.state.draining = True
        log.info("stopping: waiting up to %.0fs for requests in flight", self.grace_seconds)
        await self.http.stop(self.grace_seconds)
        await self.app.stop()
        self.state.pool.close()
        if self._source_task is not None:
            self._source_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._source_task
        log.info("stopped")


__all__ = ["RouterServer", "bind"]
