"""What the router answers on which route: the `http1.App` of the router.

Inference routes (`POST` to the OpenAI and Ollama generation and embedding paths) take the
fast path: their headers are checked as soon as they are in (`proxy.take_head`), their body
once it is (`proxy.take_body`), and a `forward.Forward` carries them through the engines,
all in callbacks. Every other route is cold: a small function, or a coroutine for the ones
that ask the engines (`/api/show`, `/api/ps`), run as a task. An unknown route, or a known
one with another method, is a JSON 404 in the path's dialect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from inferops.router import errors, ollama_api, openai_api
from inferops.router.alarms import Alarms
from inferops.router.errors import RouterError
from inferops.router.forward import Forward
from inferops.router.http1 import Reply, Request
from inferops.router.metrics import UNKNOWN_CONSUMER
from inferops.router.proxy import WANTED, Endpoint, Intake, check_framing, take_body, take_head
from inferops.router.state import RouterState

if TYPE_CHECKING:  # a single router never loads it
    from inferops.router.podmetrics import PodMetrics

log = logging.getLogger("inferops.router")

COLD_BODY_BYTES = 1 << 20
"""The most of a body a cold route reads (aiohttp's default request size, kept)."""

ColdHandler = Callable[[RouterState, Request], Reply | Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Cold:
    handler: ColdHandler
    reads_body: bool = False
    """The body is read, with the table's limits (`/api/show`); else up to
    `COLD_BODY_BYTES`, unread."""


def healthz(state: RouterState, request: Request) -> Reply:
    return Reply(200, b"ok", b"text/plain; charset=utf-8")


def readyz(state: RouterState, request: Request) -> Reply:
    if state.draining:
        return Reply(503, b"stopping", b"text/plain; charset=utf-8")
    if state.routes is None:
        return Reply(503, b"no routing table loaded", b"text/plain; charset=utf-8")
    if state.stale is not None:
        # Still ready: the last good table serves, which beats no router at all.
        text = f"ok: table {state.generation}, stale: {state.stale}"
        return Reply(200, text.encode(), b"text/plain; charset=utf-8")
    return Reply(200, b"ok: table %d" % state.generation, b"text/plain; charset=utf-8")


def metrics(state: RouterState, request: Request) -> Reply | Awaitable[Reply]:
    if state.pod is not None:
        return pod_metrics(state.pod)
    body = generate_latest(state.metrics.registry)
    return Reply(200, body, CONTENT_TYPE_LATEST.encode())


async def pod_metrics(pod: PodMetrics) -> Reply:
    """A worker of several answers for the pod: its siblings' figures and its own."""
    view = await pod.render()
    body = generate_latest(view)
    return Reply(200, body, CONTENT_TYPE_LATEST.encode())


COLD: dict[tuple[str, str], Cold] = {
    ("GET", "/healthz"): Cold(healthz),
    ("GET", "/readyz"): Cold(readyz),
    ("GET", "/metrics"): Cold(metrics),
    ("GET", "/v1/models"): Cold(openai_api.models),
    ("GET", "/api/tags"): Cold(ollama_api.tags),
    ("POST", "/api/show"): Cold(ollama_api.show, reads_body=True),
    ("GET", "/api/ps"): Cold(ollama_api.ps),
    ("GET", "/api/version"): Cold(ollama_api.version),
    ("GET", "/"): Cold(ollama_api.root),
}

HOT: dict[str, Endpoint] = {**openai_api.ENDPOINTS, **ollama_api.ENDPOINTS}


class _Task:
    """The listener of a cold route's coroutine: a client that leaves cancels it."""

    __slots__ = ("task",)

    def __init__(self, task: asyncio.Task[Reply]) -> None:
        self.task = task

    def client_lost(self) -> None:
        self.task.cancel()

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass


class RouterApp:
    """Dispatches requests to the fast path or the cold routes (see the module's docstring)."""

    wanted = WANTED

    def __init__(self, state: RouterState) -> None:
        self.state = state
        self.alarms = Alarms()
        self._tasks: set[asyncio.Task[Reply]] = set()

    # -- http1.App -------------------------------------------------------------------------

    def head(self, request: Request) -> Reply | None:
        method, path = request.method, request.path
        if method == "POST":
            endpoint = HOT.get(path)
            if endpoint is not None:
                try:
                    request.context = take_head(self.state, request, endpoint)
                except RouterError as err:
                    self._refused(err, endpoint)
                    return errors.render(endpoint.dialect, err)
                return None
        cold = COLD.get((method, path)) or (COLD.get(("GET", path)) if method == "HEAD" else None)
        if cold is None:
            if ollama_api.is_management(path):
                return ollama_api.refuse(self.state, request)
            dialect = errors.dialect_of(path)
            error = RouterError(404, f"no route {method} {path} on this router", "unknown_route")
            return errors.render(dialect, error)
        request.context = cold
        request.limit = COLD_BODY_BYTES
        routes = self.state.routes
        if cold.reads_body and routes is not None:
            try:
                check_framing(request, routes.max_body_bytes)
            except RouterError as err:
                return errors.render(errors.dialect_of(path), err)
        return None

    def overflow(self, request: Request) -> Reply:
        context = request.context
        error = errors.too_large(request.limit)
        if isinstance(context, Intake):
            error.consumer = context.consumer.name
            self._refused(error, context.endpoint)
            return errors.render(context.endpoint.dialect, error)
        return errors.render(errors.dialect_of(request.path), error)

    def handle(self, request: Request) -> None:
        context = request.context
        if isinstance(context, Intake):
            self._hot(request, context)
        elif isinstance(context, Cold):
            self._cold(request, context)
        else:  # pragma: no cover - every request passed head()
            raise AssertionError(f"no route decided for {request.method} {request.path}")

    def malformed(self, path: str | None, status: int, message: str) -> Reply:
        codes = {414: "url_too_long", 431: "headers_too_large", 500: "router_error"}
        error = RouterError(status, message, codes.get(status, "malformed_request"))
        return errors.render(errors.dialect_of(path), error)

    # -- the routes ------------------------------------------------------------------------

    def _refused(self, err: RouterError, endpoint: Endpoint) -> None:
        self.state.metrics.refused(err.consumer or UNKNOWN_CONSUMER, endpoint.route, err.status)

    def _hot(self, request: Request, intake: Intake) -> None:
        endpoint = intake.endpoint
        try:
            take_body(request, intake)
            intake.choose()
            plan = endpoint.prepare(intake)
        except RouterError as err:
            # Refused for its consumer (set by the checks; a translation's refusal is the
            # consumer's too).
            err.consumer = err.consumer or intake.consumer.name
            self._refused(err, endpoint)
            request.reply(errors.render(endpoint.dialect, err))
            return
        if isinstance(plan, Reply):  # nothing to ask an engine
            request.reply(plan)
            return
        Forward(self.state.pool, self.alarms, request, intake, plan, endpoint.dialect).start()

    def _cold(self, request: Request, cold: Cold) -> None:
        answer = cold.handler(self.state, request)
        if isinstance(answer, Reply):
            request.reply(answer)
            return
        task = asyncio.ensure_future(answer)
        self._tasks.add(task)
        request.listener = _Task(task)

        def done(task: asyncio.Task[Reply]) -> None:
            self._tasks.discard(task)
            if task.cancelled():
                return
            error = task.exception()
            if error is None:
                request.reply(task.result())
                return
            log.error("failed on %s %s", request.method, request.path, exc_info=error)
            failed = RouterError(500, "the router failed on this request", "router_error")
            request.reply(errors.render(errors.dialect_of(request.path), failed))

        task.add_done_callback(done)

    async def stop(self) -> None:
        """Cancels cold routes still running (their clients were cut)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.alarms.close()


__all__ = ["COLD", "HOT", "RouterApp"]
