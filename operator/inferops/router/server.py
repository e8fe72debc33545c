"""The router's web server: the application, its lifecycle and a graceful stop.

Start-up creates the upstream session and starts the table source; `/healthz` answers as
long as the process runs, `/readyz` once a table is installed (and until a stop begins; a
stale table still serves, so it stays ready and says so), and `/metrics` serves the
router's own registry. Stopping (SIGTERM) stops accepting connections,
turns `/readyz` to 503, lets requests and streams in flight finish within the grace period,
cancels what is left, then closes the upstream session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from inferops.router import errors, ollama_api, openai_api
from inferops.router.sources import TableSource
from inferops.router.state import RouterState
from inferops.router.upstream import new_session

log = logging.getLogger("inferops.router")

STATE = web.AppKey("state", RouterState)


def create_app(
    state: RouterState,
    source: TableSource | None,
    connection_limit: int = 4096,
    keepalive_seconds: float = 4.0,
) -> web.Application:
    app = web.Application()
    app[STATE] = state

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        session = new_session(connection_limit, keepalive_seconds)
        state.session = session
        task = asyncio.create_task(source.run(state)) if source else None
        if source:
            log.info("routing table from %s", source.describe())
        yield
        if task:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await session.close()
        state.session = None

    app.cleanup_ctx.append(lifecycle)

    async def healthz(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def readyz(request: web.Request) -> web.StreamResponse:
        if state.draining:
            return web.Response(status=503, text="stopping")
        if state.routes is None:
            return web.Response(status=503, text="no routing table loaded")
        if state.stale is not None:
            # Still ready: the last good table serves, which beats no router at all.
            return web.Response(text=f"ok: table {state.generation}, stale: {state.stale}")
        return web.Response(text=f"ok: table {state.generation}")

    async def metrics(request: web.Request) -> web.StreamResponse:
        body = generate_latest(state.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def not_found(request: web.Request) -> web.StreamResponse:
        dialect = errors.OLLAMA if request.path.startswith("/api/") else errors.OPENAI
        error = errors.RouterError(
            404, f"no route {request.method} {request.path} on this router", "unknown_route"
        )
        return errors.render(dialect, error)

    openai_api.add_routes(app, state)
    ollama_api.add_routes(app, state)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


# Pending connections the kernel queues; aiohttp's site would otherwise listen again with its
# default of 128, which a burst of new streams overflows (measured by bench/router).
BACKLOG = 1024


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free one (see `getsockname()`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
    ) -> None:
        self.state = state
        self.app = create_app(state, source, connection_limit, keepalive_seconds)
        self.host = host
        self.port = port
        self.grace_seconds = grace_seconds
        self.runner = web.AppRunner(
            self.app,
            # Cancel a request's handler when its client disconnects: that is what closes
            # the upstream connection, so the engine stops generating for nobody.
            handler_cancellation=True,
            access_log=log if access_log else None,
            shutdown_timeout=grace_seconds,
            # Request bodies are taken as sent: a compressed one is refused by the handlers
            # with a JSON error (415) instead of inflated, or refused in plain text by the
            # HTTP parser when it names an encoding aiohttp cannot decode.
            auto_decompress=False,
        )

    async def start(self) -> None:
        await self.runner.setup()
        sock = bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        await web.SockSite(self.runner, sock, backlog=BACKLOG).start()
        log.info("router listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self.state.draining:
            return
        self.state.draining = True
        log.info("stopping: waiting up to %.0fs for requests in flight", self.grace_seconds)
        await self.runner.cleanup()
        log.info("stopped")


__all__ = ["STATE", "RouterServer", "bind", "create_app"]
