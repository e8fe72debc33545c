"""Ollama's native API: passed through to Ollama as it is when a request goes to Ollama, and
translated to vLLM's OpenAI API and back when it goes to vLLM, so that consumers written
against Ollama keep working when their traffic moves to vLLM, and lose nothing while it has
not (options, `keep_alive`, `format`, `images`, `think`, ... reach Ollama untouched; its
NDJSON stream is relayed as it comes; only an alias in `model` is rewritten).

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
from collections.abc import Callable
from typing import Any

from inferops.router import errors, inquiry, modelinfo, translate, usage
from inferops.router.errors import OLLAMA as OLLAMA_DIALECT
from inferops.router.errors import RouterError
from inferops.router.http1 import Reply, Request
from inferops.router.openai_api import Passthrough
from inferops.router.proxy import Endpoint, Intake, Plan, PlanByEngine, json_reply, parse_object
from inferops.router.relay import Codec, NdjsonPassthrough, find_ollama_counts, usage_counts
from inferops.router.routes import CHAT_PATH, EMBEDDINGS_PATH, OLLAMA, VLLM
from inferops.router.state import RouterState
from inferops.router.upstream import Answer, forwarded

# The Ollama version reported by /api/version: one whose API this router's translation
# covers, so clients that gate features on the version enable the ones served here.
OLLAMA_COMPAT_VERSION = "0.12.0"

NDJSON = translate.OllamaStream.content_type.encode()


def _elapsed_ns(intake: Intake) -> int:
    return time.monotonic_ns() - int(intake.ex.start * 1e9)


def _whole(answer: Answer, intake: Intake) -> dict[str, Any] | Reply:
    """A non-stream answer's JSON, or the engine's error in Ollama's dialect."""
    if answer.status >= 300:
        message = translate.error_message(answer.body, answer.status)
        return json_reply({"error": message}, answer.status, intake.tags(answer.target))
    try:
        doc = json.loads(answer.body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise RouterError(502, "the engine's answer is not a JSON object", "bad_engine_answer")
    return doc


def _finish(intake: Intake, answer: Answer, payload: dict[str, Any], usage: object) -> Reply:
    intake.ex.tokens(*usage_counts(usage))
    return json_reply(payload, headers=intake.tags(answer.target))


def _wants_stream(intake: Intake) -> bool:
    return intake.doc.get("stream") is not False


class Native(Passthrough):
    """The request as the client sent it (bar an alias in `model`), to Ollama's own endpoint;
    the answer as Ollama sent it."""

    __slots__ = ()
    find_counts = staticmethod(find_ollama_counts)
    stream = NdjsonPassthrough


def _native(path: str, intake: Intake) -> Native:
    body = intake.raw
    if intake.model not in intake.routes.ollama_names:  # an alias Ollama does not know
        intake.doc["model"] = intake.routes.model
        body = translate.dumps(intake.doc)
    return Native(path, body)


def _by_engine(
    path: str, intake: Intake, translated: Callable[[], Plan | Reply]
) -> PlanByEngine | Reply:
    """The plan for each engine the request may try: native to Ollama, `translated` to vLLM
    (built only when vLLM is among them). When the translation needs no engine (nothing to
    generate: the router answers "loaded"), that answer is the reply; vLLM, when chosen, is
    always tried first, so this happens only where vLLM would have answered."""
    plans: PlanByEngine = {}
    for target in intake.chosen:
        if target.name == OLLAMA:
            plans[OLLAMA] = _native(path, intake)
        else:
            plan = translated()
            if isinstance(plan, Reply):
                return plan
            plans[target.name] = plan
    if VLLM not in plans and intake.consumer.shadow is not None:
        # A shadow step asks both engines the OpenAI form of the request (`router.shadow`),
        # built only if the request is sampled.
        intake.mirror = translated
    return plans


class Generation:
    """A chat or generate request, as a chat or completion upstream."""

    __slots__ = ("body", "chat_api", "path", "stream")

    def __init__(self, path: str, body: dict[str, Any], chat_api: bool, stream: bool) -> None:
        self.path = path
        self.body = translate.dumps(body)
        self.chat_api = chat_api
        self.stream = stream

    def whole(self, intake: Intake, answer: Answer) -> Reply:
        doc = _whole(answer, intake)
        if isinstance(doc, Reply):
            return doc
        total = _elapsed_ns(intake)
        if self.chat_api:
            payload = translate.chat_answer(doc, intake.model, total)
        else:
            payload = translate.generate_answer(doc, intake.model, total, self.path == CHAT_PATH)
        reply = _finish(intake, answer, payload, doc.get("usage"))
        if self.stream:  # the engine did not stream after all: one NDJSON line is a stream
            reply.content_type = NDJSON
        return reply

    def codec(self, intake: Intake, answer: Answer) -> Codec:
        chat_upstream = self.path == CHAT_PATH
        start_ns = int(intake.ex.start * 1e9)
        return translate.OllamaStream(intake.model, self.chat_api, chat_upstream, start_ns)


class Embedding:
    """An embed (`legacy`: embeddings) request, as an embeddings request upstream."""

    __slots__ = ("body", "legacy", "path")

    def __init__(self, body: dict[str, Any], legacy: bool) -> None:
        self.path = EMBEDDINGS_PATH
        self.body = translate.dumps(body)
        self.legacy = legacy

    def whole(self, intake: Intake, answer: Answer) -> Reply:
        doc = _whole(answer, intake)
        if isinstance(doc, Reply):
            return doc
        if self.legacy:
            return _finish(intake, answer, translate.embeddings_answer(doc), doc.get("usage"))
        payload = translate.embed_answer(doc, intake.model, _elapsed_ns(intake))
        return _finish(intake, answer, payload, doc.get("usage"))

    def codec(self, intake: Intake, answer: Answer) -> Codec:
        # An engine does not stream embeddings; if one did, its events are not embeddings.
        raise RouterError(502, "the engine streamed an embeddings answer", "bad_engine_answer")


def _chat_to_vllm(intake: Intake) -> Plan | Reply:
    stream = _wants_stream(intake)
    if not intake.doc.get("messages"):
        return json_reply(translate.loaded(intake.model, chat=True))
    body = translate.chat_request(intake.doc, intake.routes.model, stream)
    return Generation(CHAT_PATH, body, True, stream)


def _generate_to_vllm(intake: Intake) -> Plan | Reply:
    stream = _wants_stream(intake)
    if not intake.doc.get("prompt") and not intake.doc.get("images"):
        return json_reply(translate.loaded(intake.model, chat=False))
    path, body = translate.generate_request(intake.doc, intake.routes.model, stream)
    return Generation(path, body, False, stream)


def _embed_to_vllm(intake: Intake) -> Plan | Reply:
    inputs = translate.embed_inputs(intake.doc)
    if inputs == []:
        return json_reply({"model": intake.model, "embeddings": []})
    return Embedding(translate.embed_request(intake.doc, intake.routes.model, inputs), False)


def _embeddings_to_vllm(intake: Intake) -> Plan | Reply:
    """The older single-prompt endpoint: `prompt` in, `embedding` out."""
    prompt = intake.doc.get("prompt") or ""
    if not isinstance(prompt, str):
        raise errors.bad_request("'prompt' must be a string")
    if not prompt:
        return json_reply({"embedding": []})
    return Embedding(translate.embed_request(intake.doc, intake.routes.model, prompt), True)


def _endpoint(
    path: str,
    route: str,
    kind: str,
    to_vllm: Callable[[Intake], Plan | Reply],
    uses: Callable[[dict[str, Any], usage.Limits], usage.Usage],
) -> Endpoint:
    def prepare(intake: Intake) -> PlanByEngine | Reply:
        return _by_engine(path, intake, lambda: to_vllm(intake))

    return Endpoint(route, OLLAMA_DIALECT, prepare, kind, uses)


ENDPOINTS = {
    "/api/chat": _endpoint("/api/chat", "ollama_chat", "chat", _chat_to_vllm, usage.ollama_chat),
    "/api/generate": _endpoint(
        "/api/generate", "ollama_generate", "completions", _generate_to_vllm, usage.ollama_generate
    ),
    "/api/embed": _endpoint(
        "/api/embed", "ollama_embed", "embeddings", _embed_to_vllm, usage.ollama_embed
    ),
    "/api/embeddings": _endpoint(
        "/api/embeddings",
        "ollama_embeddings",
        "embeddings",
        _embeddings_to_vllm,
        usage.ollama_embed,
    ),
}
"""Client path -> the inference endpoint."""


# -- the model endpoints -----------------------------------------------------------------------


def tags(state: RouterState, request: Request) -> Reply:
    routes = state.routes
    if routes is None:
        return errors.render(OLLAMA_DIALECT, errors.no_table())
    names = [routes.model, *routes.table.aliases]
    return json_reply({"models": [modelinfo.tag(n, state.loaded_at) for n in names]})


async def show(state: RouterState, request: Request) -> Reply:
    """The model's description: Ollama's, with the context length every engine accepts
    (`inferops.router.modelinfo`). Like `/api/tags` it needs no consumer: it describes the
    model, not a consumer's traffic."""
    routes = state.routes
    if routes is None:
        return errors.render(OLLAMA_DIALECT, errors.no_table())
    try:
        doc = parse_object(request.body)
        verbose = modelinfo.show_request(doc, routes.model_names, routes.model)
    except RouterError as err:
        return errors.render(OLLAMA_DIALECT, err)
    headers = forwarded(request.headers)
    facts = await inquiry.facts(state.pool, routes, headers, show=True, verbose=verbose)
    apis = {consumer.api for consumer in routes.consumers}
    return json_reply(modelinfo.show_answer(facts, apis, state.loaded_at))


async def ps(state: RouterState, request: Request) -> Reply:
    """The model while an engine holds it loaded."""
    routes = state.routes
    if routes is None:
        return errors.render(OLLAMA_DIALECT, errors.no_table())
    headers = forwarded(request.headers)
    facts = await inquiry.facts(state.pool, routes, headers, show=False)
    return json_reply(modelinfo.ps_answer(routes.model, facts, time.time()))


# Ollama's model management. The operator owns the model (`errors.managed_model`).
MANAGEMENT_PATHS = ("/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete")
BLOBS = "/api/blobs/"
"""`/api/blobs/<digest>`, also refused."""


def is_management(path: str) -> bool:
    if path in MANAGEMENT_PATHS:
        return True
    digest = path[len(BLOBS) :] if path.startswith(BLOBS) else ""
    return bool(digest) and "/" not in digest


def refuse(state: RouterState, request: Request) -> Reply:
    """Answered as soon as the headers are in: the body is never read (a blob upload can be
    gigabytes)."""
    model = state.routes.model if state.routes else None
    return errors.render(OLLAMA_DIALECT, errors.managed_model(request.method, request.path, model))


def version(state: RouterState, request: Request) -> Reply:
    return json_reply({"version": OLLAMA_COMPAT_VERSION})


def root(state: RouterState, request: Request) -> Reply:
    # Ollama's own liveness answer; clients probe it before their first request.
    return Reply(200, b"Ollama is running", b"text/plain; charset=utf-8")


__all__ = [
    "ENDPOINTS",
    "MANAGEMENT_PATHS",
    "OLLAMA_COMPAT_VERSION",
    "is_management",
    "ps",
    "refuse",
    "root",
    "show",
    "tags",
    "version",
]
