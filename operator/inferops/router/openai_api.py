"""The OpenAI API: `/v1/chat/completions`, `/v1/completions` and `/v1/embeddings` pass through
to the chosen engine with only `model` rewritten; `/v1/models` lists the logical model.

The body is parsed once (to check the model) and forwarded as received when the model is
already the logical name, so the common case re-encodes nothing; answers and streams are
relayed byte for byte.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from inferops.router import errors, translate
from inferops.router.errors import OPENAI
from inferops.router.proxy import Intake, handle, json_response
from inferops.router.relay import SsePassthrough, find_usage, relay
from inferops.router.routes import CHAT_PATH, COMPLETIONS_PATH, EMBEDDINGS_PATH
from inferops.router.state import RouterState
from inferops.router.upstream import send, upstream_headers

# Upstream path -> the `route` label of its metrics.
ROUTE_NAMES = {CHAT_PATH: "chat", COMPLETIONS_PATH: "completions", EMBEDDINGS_PATH: "embeddings"}


def passthrough(state: RouterState, path: str) -> Handler:
    route = ROUTE_NAMES[path]

    async def serve(request: web.Request, intake: Intake) -> web.StreamResponse:
        routes = intake.routes
        body = intake.raw
        if intake.model != routes.model:
            intake.doc["model"] = routes.model
            body = translate.dumps(intake.doc)
        answer = await send(
            state.session,
            routes,
            intake.targets(),
            path,
            body,
            upstream_headers(request.headers),
            intake.deadline,
            intake.ex,
        )
        headers = intake.headers(answer.target)
        if answer.stream is not None:
            codec = SsePassthrough(answer.content_type)
            return await relay(
                request,
                answer,
                codec,
                intake.ex,
                intake.deadline,
                routes.first_byte_seconds,
                headers,
            )
        ex = intake.ex
        if answer.status < 300:
            ex.tokens(*find_usage(answer.body))
        elif answer.status >= 500:
            ex.error("upstream_5xx")
        headers["Content-Type"] = answer.content_type
        response = web.Response(status=answer.status, body=answer.body, headers=headers)
        ex.done(answer.status)
        return response

    async def handler(request: web.Request) -> web.StreamResponse:
        return await handle(request, state, route, OPENAI, serve)

    return handler


def models(state: RouterState) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        routes = state.routes
        if routes is None:
            return errors.render(OPENAI, errors.no_table())
        entry = {
            "id": routes.model,
            "object": "model",
            "created": int(state.loaded_at),
            "owned_by": "inferops",
        }
        return json_response({"object": "list", "data": [entry]})

    return handler


def add_routes(app: web.Application, state: RouterState) -> None:
    for path in ROUTE_NAMES:
        app.router.add_post(path, passthrough(state, path))
    app.router.add_get("/v1/models", models(state))


__all__ = ["ROUTE_NAMES", "add_routes"]
