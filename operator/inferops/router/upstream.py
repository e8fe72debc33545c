"""Talking to the engines: the shared connection pool, and one request's attempts with fallback.

An attempt counts as failed, and the next engine (the fallback) is tried, when it fails before
anything was sent to the client: connect error, connection lost, HTTP 5xx, or no first byte in
time. "First byte" means the response headers and, for a stream, its first chunk; a non-stream
answer is read whole before the client sees any of it, so a failure while reading it is still
a fallback trigger. 4xx answers are the client's problem and pass through unchanged.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from inferops.router.errors import RouterError
from inferops.router.metrics import Exchange
from inferops.router.routes import Routes, Target

log = logging.getLogger("inferops.router.upstream")

# Client headers worth passing on: credentials (an engine started with --api-key checks them)
# and tracing. Everything else is the router's business.
FORWARDED_HEADERS = ("Authorization", "X-Request-Id", "Traceparent", "Tracestate")

# Engines must not compress: the router relays bytes and does not want to re-encode them.
BASE_HEADERS = {"Content-Type": "application/json", "Accept-Encoding": "identity"}


def new_session(
    connection_limit: int = 4096, keepalive_seconds: float = 4.0
) -> aiohttp.ClientSession:
    """The one upstream session: a keep-alive pool per engine host.

    The keep-alive limit stays below uvicorn's (vLLM) 5 s idle timeout, so the router does not
    reuse a connection the engine is closing (which would look like an engine failure).
    """
    connector = aiohttp.TCPConnector(
        limit=connection_limit,
        limit_per_host=0,
        keepalive_timeout=keepalive_seconds,
        ttl_dns_cache=10,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def upstream_headers(client_headers: Mapping[str, str]) -> dict[str, str]:
    headers = dict(BASE_HEADERS)
    for name in FORWARDED_HEADERS:
        value = client_headers.get(name)
        if value is not None:
            headers[name] = value
    return headers


@dataclass(slots=True)
class Answer:
    """What an engine answered, ready to relay: a whole body, or an open stream."""

    target: Target
    status: int
    content_type: str
    body: bytes
    """The whole body when `stream` is None; else the stream's first chunk."""
    stream: aiohttp.ClientResponse | None


@functools.lru_cache(maxsize=16)
def _client_timeout(connect_seconds: float) -> aiohttp.ClientTimeout:
    # Only the TCP connect is bounded here; every other limit is a deadline the caller owns.
    return aiohttp.ClientTimeout(total=None, sock_connect=connect_seconds)


async def send(
    session: aiohttp.ClientSession,
    routes: Routes,
    targets: tuple[Target, ...],
    path: str,
    body: bytes,
    headers: dict[str, str],
    deadline: float,
    ex: Exchange,
) -> Answer:
    """Tries `targets` in order until one answers; raises `RouterError` (502/504) when the
    last one fails. The caller owns `Answer.stream` and must close it."""
    loop = asyncio.get_running_loop()
    timeout = _client_timeout(routes.connect_seconds)
    last = len(targets) - 1
    for index, target in enumerate(targets):
        can_fall_back = index < last
        ex.begin(target.name)
        remaining = deadline - loop.time()
        # The first-byte limit exists to give up on an engine in favour of the fallback; on the
        # last engine there is nothing better to do than wait for the request's deadline.
        limit = min(routes.first_byte_seconds, remaining) if can_fall_back else remaining
        response: aiohttp.ClientResponse | None = None
        try:
            async with asyncio.timeout(max(limit, 0.0)):
                response = await session.post(
                    target.urls[path], data=body, headers=headers, timeout=timeout
                )
                status = response.status
                if status >= 500 and can_fall_back:
                    response.close()
                    ex.failed(status, "upstream_5xx", fallback=True)
                    # Per request, so debug only: the metrics carry the rate.
                    log.debug("engine %s answered %d; falling back", target.name, status)
                    continue
                content_type = response.headers.get("Content-Type", "application/json")
                if content_type.startswith("text/event-stream"):
                    first = await response.content.readany()
                    return Answer(target, status, content_type, first, response)
                payload = await response.read()
                response.release()
                return Answer(target, status, content_type, payload, None)
        except TimeoutError:
            code, reason = 504, "timeout"
            message = f"engine {target.name!r} sent no response within {limit:.3g}s"
        except aiohttp.ClientConnectorError as err:
            code, reason = 502, "connect"
            message = f"engine {target.name!r} is unreachable: {err.os_error or err}"
        except aiohttp.ClientError as err:
            code, reason = 502, "upstream_disconnect"
            message = f"engine {target.name!r} failed before answering: {err!r}"
        except BaseException:
            if response is not None:
                response.close()
            raise
        if response is not None:
            response.close()
        ex.failed(code, reason, fallback=can_fall_back)
        log.debug("%s%s", message, "; falling back" if can_fall_back else "")
        if not can_fall_back:
            raise RouterError(code, message, f"engine_{reason}", "server_error")
    raise AssertionError("unreachable: there is always at least one target")


__all__ = ["Answer", "new_session", "send", "upstream_headers"]
