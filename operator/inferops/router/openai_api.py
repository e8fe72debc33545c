"""The OpenAI API: `/v1/chat/completions`, `/v1/completions` and `/v1/embeddings` pass through
to the chosen engine with only `model` rewritten; `/v1/models` lists the logical model.

The body is parsed once (to check the model) and forwarded as received when the model is
already the logical name, so the common case re-encodes nothing; answers and streams are
relayed byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable

from inferops.router import errors, translate
from inferops.router.errors import OPENAI
from inferops.router.http1 import Reply, Request
from inferops.router.proxy import Endpoint, Intake, Plan, json_reply
from inferops.router.relay import Codec, SsePassthrough, find_usage
from inferops.router.routes import CHAT_PATH, COMPLETIONS_PATH, EMBEDDINGS_PATH
from inferops.router.state import RouterState
from inferops.router.upstream import Answer

# Upstream path -> the `route` label of its metrics.
ROUTE_NAMES = {CHAT_PATH: "chat", COMPLETIONS_PATH: "completions", EMBEDDINGS_PATH: "embeddings"}
"""Also the request kind of each path (`inferops.api.routing.KINDS`)."""


class Passthrough:
    """The request as the client sent it (bar the model name); the answer as the engine
    sent it. `find_counts` reads the token counts of a whole answer, `stream` relays a
    streamed one: the OpenAI API's here, Ollama's own in `ollama_api.Native`."""

    __slots__ = ("body", "path")
    find_counts = staticmethod(find_usage)
    stream: Callable[[str], Codec] = SsePassthrough

    def __init__(self, path: str, body: bytes) -> None:
        self.path = path
        self.body = body

    def whole(self, intake: Intake, answer: Answer) -> Reply:
        if answer.status < 300:
            intake.ex.tokens(*self.find_counts(answer.body))
        return Reply(answer.status, answer.body, answer.content_type, intake.tags(answer.target))

    def codec(self, intake: Intake, answer: Answer) -> Codec:
        return self.stream(answer.content_type.decode("latin-1"))


def _passthrough(path: str) -> Endpoint:
    def prepare(intake: Intake) -> Plan:
        body = intake.raw
        if intake.model != intake.routes.model:
            intake.doc["model"] = intake.routes.model
            body = translate.dumps(intake.doc)
        return Passthrough(path, body)

    return Endpoint(ROUTE_NAMES[path], OPENAI, prepare, ROUTE_NAMES[path])


ENDPOINTS = {path: _passthrough(path) for path in ROUTE_NAMES}
"""Client path -> the inference endpoint."""


def models(state: RouterState, request: Request) -> Reply:
    routes = state.routes
    if routes is None:
        return errors.render(OPENAI, errors.no_table())
    entry = {
        "id": routes.model,
        "object": "model",
        "created": int(state.loaded_at),
        "owned_by": "inferops",
    }
    return json_reply({"object": "list", "data": [entry]})


__all__ = ["ENDPOINTS", "ROUTE_NAMES", "Passthrough", "models"]
