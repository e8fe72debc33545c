"""Ollama's native API, served by translating to the engines' OpenAI API and back, so that
consumers written against Ollama keep working when their traffic moves to vLLM.

Routes: `POST /api/chat`, `/api/generate`, `/api/embed`, `/api/embeddings`, `/api/show`;
`GET /api/tags`, `/api/ps`, `/api/version`, and `GET`/`HEAD /` ("Ollama is running"). Ollama
streams unless told otherwise (`stream` absent means true). The translation rules are in
`inferops.router.translate`; what the model endpoints answer is in
`inferops.router.modelinfo`. Model management (`/api/pull`, `/api/push`, `/api/create`,
`/api/copy`, `/api/delete`, `/api/blobs/...`) is refused with 403: the operator owns the
model.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from inferops.router import errors, inquiry, modelinfo, translate
from inferops.router.errors import OLLAMA, RouterError
from inferops.router.proxy import Intake, handle, json_response, parse_object, read_body
from inferops.router.relay import relay
from inferops.router.routes import CHAT_PATH, EMBEDDINGS_PATH
from inferops.router.state import RouterState
from inferops.router.upstream import Answer, send, upstream_headers

# The Ollama version reported by /api/version: one whose API this router's translation
# covers, so clients that gate features on the version enable the ones served here.
OLLAMA_COMPAT_VERSION = "0.12.0"


async def _ask(
    request: web.Request, state: RouterState, intake: Intake, path: str, body: dict[str, Any]
) -> Answer:
    return await send(
        state.session,
        intake.routes,
        intake.targets(),
        path,
        translate.dumps(body),
        upstream_headers(request.headers),
        intake.deadline,
        intake.ex,
    )


def _elapsed_ns(intake: Intake) -> int:
    return time.monotonic_ns() - int(intake.ex.start * 1e9)


def _whole(answer: Answer, intake: Intake) -> dict[str, Any] | web.Response:
    """A non-stream answer's JSON, or the engine's error in Ollama's dialect."""
    ex = intake.ex
    if answer.status >= 300:
        if answer.status >= 500:
            ex.error("upstream_5xx")
        ex.done(answer.status)
        message = translate.error_message(answer.body, answer.status)
        return json_response({"error": message}, answer.status, intake.headers(answer.target))
    try:
        doc = json.loads(answer.body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise RouterError(502, "the engine's answer is not a JSON object", "bad_engine_answer")
    return doc


def _finish(intake: Intake, answer: Answer, payload: dict[str, Any], usage: object) -> web.Response:
    intake.ex.tokens(*translate.usage_counts(usage))
    response = json_response(payload, headers=intake.headers(answer.target))
    intake.ex.done(answer.status)
    return response


def _wants_stream(intake: Intake) -> bool:
    return intake.doc.get("stream") is not False


async def _generation(
    request: web.Request,
    state: RouterState,
    intake: Intake,
    path: str,
    body: dict[str, Any],
    chat_api: bool,
    stream: bool,
) -> web.StreamResponse:
    answer = await _ask(request, state, intake, path, body)
    chat_upstream = path == CHAT_PATH
    if answer.stream is not None:
        codec = translate.OllamaStream(
            intake.model, chat_api, chat_upstream, int(intake.ex.start * 1e9)
        )
        return await relay(
            request,
            answer,
            codec,
            intake.ex,
            intake.deadline,
            intake.routes.first_byte_seconds,
            intake.headers(answer.target),
        )
    doc = _whole(answer, intake)
    if isinstance(doc, web.Response):
        return doc
    total = _elapsed_ns(intake)
    if chat_api:
        payload = translate.chat_answer(doc, intake.model, total)
    else:
        payload = translate.generate_answer(doc, intake.model, total, chat_upstream)
    response = _finish(intake, answer, payload, doc.get("usage"))
    if stream:  # the engine did not stream after all: one NDJSON line is a valid stream
        response.content_type = translate.OllamaStream.content_type
    return response


def chat(state: RouterState) -> Handler:
    async def serve(request: web.Request, intake: Intake) -> web.StreamResponse:
        stream = _wants_stream(intake)
        if not intake.doc.get("messages"):
            return json_response(translate.loaded(intake.model, chat=True))
        body = translate.chat_request(intake.doc, intake.routes.model, stream)
        return await _generation(request, state, intake, CHAT_PATH, body, True, stream)

    async def handler(request: web.Request) -> web.StreamResponse:
        return await handle(request, state, "ollama_chat", OLLAMA, serve)

    return handler


def generate(state: RouterState) -> Handler:
    async def serve(request: web.Request, intake: Intake) -> web.StreamResponse:
        stream = _wants_stream(intake)
        if not intake.doc.get("prompt") and not intake.doc.get("images"):
            return json_response(translate.loaded(intake.model, chat=False))
        path, body = translate.generate_request(intake.doc, intake.routes.model, stream)
        return await _generation(request, state, intake, path, body, False, stream)

    async def handler(request: web.Request) -> web.StreamResponse:
        return await handle(request, state, "ollama_generate", OLLAMA, serve)

    return handler


def embed(state: RouterState) -> Handler:
    async def serve(request: web.Request, intake: Intake) -> web.StreamResponse:
        inputs = translate.embed_inputs(intake.doc)
        if inputs == []:
            return json_response({"model": intake.model, "embeddings": []})
        body = translate.embed_request(intake.doc, intake.routes.model, inputs)
        answer = await _ask(request, state, intake, EMBEDDINGS_PATH, body)
        doc = _whole(answer, intake)
        if isinstance(doc, web.Response):
            return doc
        payload = translate.embed_answer(doc, intake.model, _elapsed_ns(intake))
        return _finish(intake, answer, payload, doc.get("usage"))

    async def handler(request: web.Request) -> web.StreamResponse:
        return await handle(request, state, "ollama_embed", OLLAMA, serve)

    return handler


def embeddings(state: RouterState) -> Handler:
    """The older single-prompt endpoint: `prompt` in, `embedding` out."""

    async def serve(request: web.Request, intake: Intake) -> web.StreamResponse:
        prompt = intake.doc.get("prompt") or ""
        if not isinstance(prompt, str):
            raise errors.bad_request("'prompt' must be a string")
        if not prompt:
            return json_response({"embedding": []})
        body = translate.embed_request(intake.doc, intake.routes.model, prompt)
        answer = await _ask(request, state, intake, EMBEDDINGS_PATH, body)
        doc = _whole(answer, intake)
        if isinstance(doc, web.Response):
            return doc
        return _finish(intake, answer, translate.embeddings_answer(doc), doc.get("usage"))

    async def handler(request: web.Request) -> web.StreamResponse:
        return await handle(request, state, "ollama_embeddings", OLLAMA, serve)

    return handler


def tags(state: RouterState) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        routes = state.routes
        if routes is None:
            return errors.render(OLLAMA, errors.no_table())
        names = [routes.model, *routes.table.aliases]
        return json_response({"models": [modelinfo.tag(n, state.loaded_at) for n in names]})

    return handler


def show(state: RouterState) -> Handler:
    """The model's description: Ollama's, with the context length every engine accepts
    (`inferops.router.modelinfo`). Like `/api/tags` it needs no consumer: it describes the
    model, not a consumer's traffic."""

    async def handler(request: web.Request) -> web.StreamResponse:
        routes = state.routes
        if routes is None:
            return errors.render(OLLAMA, errors.no_table())
        try:
            doc = parse_object(await read_body(request, routes.max_body_bytes))
            verbose = modelinfo.show_request(doc, routes.model_names, routes.model)
        except RouterError as err:
            return errors.render(OLLAMA, err)
        headers = upstream_headers(request.headers)
        facts = await inquiry.facts(state.session, routes, headers, show=True, verbose=verbose)
        apis = {consumer.api for consumer in routes.consumers}
        return json_response(modelinfo.show_answer(facts, apis, state.loaded_at))

    return handler


def ps(state: RouterState) -> Handler:
    """The model while an engine holds it loaded."""

    async def handler(request: web.Request) -> web.StreamResponse:
        routes = state.routes
        if routes is None:
            return errors.render(OLLAMA, errors.no_table())
        headers = upstream_headers(request.headers)
        facts = await inquiry.facts(state.session, routes, headers, show=False)
        return json_response(modelinfo.ps_answer(routes.model, facts, time.time()))

    return handler


# Ollama's model management. The operator owns the model (`errors.managed_model`).
MANAGEMENT_PATHS = (
    "/api/pull",
    "/api/push",
    "/api/create",
    "/api/copy",
    "/api/delete",
    "/api/blobs/{digest}",
)


def refuse(state: RouterState) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        model = state.routes.model if state.routes else None
        error = errors.managed_model(request.method, request.path, model)
        # The body is not read (a blob upload can be gigabytes): aiohttp discards what the
        # client still sends for at most its lingering time (10 s), then hangs up.
        return errors.render(OLLAMA, error)

    return handler


async def version(request: web.Request) -> web.StreamResponse:
    return json_response({"version": OLLAMA_COMPAT_VERSION})


async def root(request: web.Request) -> web.StreamResponse:
    # Ollama's own liveness answer; clients probe it before their first request.
    return web.Response(text="Ollama is running")


def add_routes(app: web.Application, state: RouterState) -> None:
    app.router.add_post("/api/chat", chat(state))
    app.router.add_post("/api/generate", generate(state))
    app.router.add_post("/api/embed", embed(state))
    app.router.add_post("/api/embeddings", embeddings(state))
    app.router.add_get("/api/tags", tags(state))
    app.router.add_post("/api/show", show(state))
    app.router.add_get("/api/ps", ps(state))
    for path in MANAGEMENT_PATHS:
        app.router.add_route("*", path, refuse(state))
    app.router.add_get("/api/version", version)
    app.router.add_get("/", root)  # HEAD / comes with it


__all__ = ["MANAGEMENT_PATHS", "OLLAMA_COMPAT_VERSION", "add_routes"]
