"""Run an aiohttp application on 127.0.0.1 for a test: the one way the in-process stand-ins
(fake engines, fake API endpoints, canned answers) listen."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Served:
    """A running application: its runner and the port it listens on."""

    runner: web.AppRunner
    port: int

    @property
    def url(self) -> str:
        """Base URL without a path, e.g. ``http://127.0.0.1:41234``."""
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        """Stop listening and close open connections."""
        await self.runner.cleanup()


async def serve(app: web.Application, *, port: int = 0, **runner_options: Any) -> Served:
    """Serve ``app`` on 127.0.0.1 and ``port`` (0: a free one, chosen by the kernel).

    ``runner_options`` go to ``web.AppRunner`` on top of no access log and a 0.1 s shutdown
    (a test's open streams need not be waited for). The socket may take over a port a
    stopped stand-in had, so that it restarts where its clients look for it.
    """
    runner = web.AppRunner(app, **{"access_log": None, "shutdown_timeout": 0.1, **runner_options})
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    await web.SockSite(runner, sock).start()
    return Served(runner, sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(app: web.Application, **runner_options: Any) -> AsyncIterator[str]:
    """``serve`` for the duration of a block; yields the base URL."""
    served = await serve(app, **runner_options)
    try:
        yield served.url
    finally:
        await served.close()
