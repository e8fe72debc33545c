"""What every proxied request goes through, whichever API it speaks: find its consumer, read
and check its body, then hand it to the API's own handler; turn refusals into error answers
in that API's dialect and count them.

A request carrying `X-Inferops-Probe: vllm|ollama` (the operator's synthetic probe) goes to
that engine only, never elsewhere: the probe exists to measure one engine, so a fallback
would hide exactly what it is looking for. It is counted like the consumer's other requests.

A request's consumer is the Service it called (`Host`). `X-Inferops-Consumer: <name>` names
another one, and is honoured only by a router started with `--trust-consumer-header` (tests,
benchmarks): otherwise any caller could act as any consumer (its weight, its metrics, its
migration verdict). Without the flag a request carrying the header is refused with 400 rather
than silently routed by its Host, so a caller relying on it learns at once that it does not
work, instead of its traffic being counted against another consumer.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from inferops.api.routing import PROBE_HEADER
from inferops.router import errors, translate
from inferops.router.errors import RouterError
from inferops.router.metrics import CLIENT_CLOSED, NO_ENGINE, UNKNOWN_CONSUMER, Exchange
from inferops.router.routes import ENGINES, ConsumerRoute, Routes, Target
from inferops.router.state import RouterState

CONSUMER_HEADER = "X-Inferops-Consumer"
ENGINE_HEADER = "X-Inferops-Engine"
"""Pins a request to one engine, without fallback; sent by the operator's probes."""


@dataclass(slots=True)
class Intake:
    """A request that passed the checks: its table, consumer, body and recorder."""

    routes: Routes
    consumer: ConsumerRoute
    raw: bytes
    doc: dict[str, Any]
    model: str
    """The model name the client asked for (echoed back by the Ollama API)."""
    ex: Exchange
    deadline: float
    pin: Target | None = None
    """The engine a probe asked for: the only one tried."""

    def targets(self) -> tuple[Target, ...]:
        if self.pin is not None:
            return (self.pin,)
        return self.consumer.pick(random.random())

    def headers(self, target: Target) -> dict[str, str]:
        return {ENGINE_HEADER: target.name, CONSUMER_HEADER: self.consumer.name}


async def read_body(request: web.Request, limit: int) -> bytes:
    """The body as sent, at most `limit` bytes. Compressed bodies are refused: neither
    engine takes them, and inflating one would let a small request cost the limit many
    times over (the server runs with aiohttp's decompression off, see `server`)."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise errors.unsupported_encoding(encoding)
    length = request.content_length
    if length is not None and length > limit:
        raise errors.too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            raise errors.too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def probe_target(routes: Routes, value: str) -> Target:
    """The engine an `X-Inferops-Probe` value pins, if the table has it ready."""
    engine = value.strip().lower()
    if engine not in ENGINES:
        allowed = " or ".join(repr(e) for e in ENGINES)
        raise RouterError(
            400,
            f"{PROBE_HEADER} {value!r} names no engine: use {allowed}",
            "invalid_probe_engine",
        )
    target = routes.targets.get(engine)
    if target is None or not target.ready:
        why = "is not in the routing table" if target is None else "has no Ready pods"
        raise RouterError(
            503,
            f"{PROBE_HEADER} pins engine {engine!r}, which {why}",
            "probe_engine_unavailable",
            "server_error",
        )
    return target


def parse_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object."""
    try:
        doc = json.loads(raw)
    except ValueError as err:
        raise errors.bad_json(str(err)) from None
    except RecursionError:  # `[[[[...` deeper than Python's recursion limit
        raise errors.bad_json("nested too deeply") from None
    if not isinstance(doc, dict):
        raise errors.bad_request("the request body must be a JSON object")
    return doc


async def take(request: web.Request, state: RouterState, route: str) -> Intake:
    # The clock the metrics read (`Exchange`): uvloop's `loop.time()` is the same monotonic
    # clock but cached per loop iteration in whole milliseconds, too coarse for TTFT.
    start = time.monotonic()
    routes = state.routes
    if routes is None:
        raise errors.no_table()
    headers = request.headers
    host, override = headers.get("Host"), headers.get(CONSUMER_HEADER)
    if override is not None and not state.trust_consumer_header:
        refused = errors.untrusted_consumer_header()
        by_host = routes.consumer(host, None)
        refused.consumer = by_host.name if by_host else None
        raise refused
    consumer = routes.consumer(host, override)
    if consumer is None:
        raise errors.unknown_consumer(host, override)
    try:
        probe = headers.get(PROBE_HEADER)
        pin = probe_target(routes, probe) if probe is not None else None
        raw = await read_body(request, routes.max_body_bytes)
        doc = parse_object(raw)
        model = doc.get("model")
        if not isinstance(model, str) or not model:
            raise errors.bad_request("the request names no 'model'")
        if model not in routes.model_names:
            raise errors.unknown_model(model, routes.model)
    except RouterError as err:
        err.consumer = consumer.name
        raise
    ex = Exchange(state.metrics, consumer.name, route, start)
    return Intake(routes, consumer, raw, doc, model, ex, start + routes.total_seconds, pin)


Serve = Callable[[web.Request, Intake], Awaitable[web.StreamResponse]]


async def handle(
    request: web.Request, state: RouterState, route: str, dialect: str, serve: Serve
) -> web.StreamResponse:
    """Runs `serve` on a checked request; every way out is counted exactly once."""
    intake: Intake | None = None
    try:
        intake = await take(request, state, route)
        return await serve(request, intake)
    except RouterError as err:
        ex = intake.ex if intake else None
        if ex is None or ex.engine == NO_ENGINE:
            state.metrics.refused(err.consumer or UNKNOWN_CONSUMER, route, err.status)
        elif ex.active:
            ex.error(err.code)
            ex.done(err.status)
        # else: `upstream.send` counted the failed attempt already.
        return errors.render(dialect, err)
    except ConnectionResetError:  # the client went away before its answer was written
        if intake:
            intake.ex.done(CLIENT_CLOSED)
        raise
    finally:
        if intake is not None and intake.ex.active:
            # Cancellation or a bug: whatever happened, the attempt is over.
            intake.ex.done(CLIENT_CLOSED if _cancelled() else 500)


def _cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def json_response(
    payload: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=translate.dumps(payload),
        content_type="application/json",
        headers=headers,
    )


__all__ = [
    "CONSUMER_HEADER",
    "ENGINE_HEADER",
    "PROBE_HEADER",
    "Intake",
    "handle",
    "json_response",
    "parse_object",
    "probe_target",
    "read_body",
    "take",
]
