"""What every proxied request goes through, whichever API it speaks: find its consumer, check
its headers (before any of the body is read), then read and check its body; a refusal is an
error in that API's dialect, counted for the consumer.

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

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from inferops.api.routing import PROBE_HEADER
from inferops.router import errors, translate
from inferops.router.errors import RouterError
from inferops.router.http1 import Reply, Request
from inferops.router.metrics import Exchange
from inferops.router.relay import Codec
from inferops.router.routes import (
    ENGINES,
    KIND_BY_WEIGHT,
    OLLAMA,
    VLLM,
    ConsumerRoute,
    KindRoute,
    Routes,
    Target,
)
from inferops.router.state import RouterState
from inferops.router.upstream import FORWARDED_HEADERS, Answer, forwarded
from inferops.router.usage import Limits, Usage, openai_request

CONSUMER_HEADER = "X-Inferops-Consumer"
ENGINE_HEADER = "X-Inferops-Engine"
"""Names the engine that answered (with `CONSUMER_HEADER`, the consumer counted)."""

# The request headers the router reads (lowercase name -> the key they are kept under).
HEADER_KEYS = (
    "host",
    CONSUMER_HEADER.lower(),
    PROBE_HEADER.lower(),
    "content-encoding",
    "content-length",
    *(name.lower() for name in FORWARDED_HEADERS),
)
WANTED = {key.encode(): key for key in HEADER_KEYS}
_CONSUMER = CONSUMER_HEADER.lower()
_PROBE = PROBE_HEADER.lower()


class Plan(Protocol):
    """What to ask the engine, and what its answer becomes for the client. An endpoint that
    asks the engines differently (the Ollama API: natively to Ollama, translated to vLLM)
    prepares a `PlanByEngine` instead."""

    path: str
    """The engine's path (`routes.UPSTREAM_PATHS`)."""
    body: bytes

    def whole(self, intake: Intake, answer: Answer) -> Reply:
        """The client's answer to a whole (non-stream) engine answer; counts the tokens.
        May raise `RouterError` (an engine answer that cannot be translated)."""

    def codec(self, intake: Intake, answer: Answer) -> Codec:
        """What the pieces of a streamed engine answer become (`answer.body` is empty)."""


PlanByEngine = dict[str, Plan]
"""Engine name -> its plan, for each engine the request may try (`Intake.chosen`)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An inference route: its metrics label, its dialect, its request kind, and what to ask
    the engine (or the answer itself, when there is nothing to ask)."""

    route: str
    dialect: str
    prepare: Callable[[Intake], Plan | PlanByEngine | Reply]
    """May raise `RouterError` (a request it cannot translate). Called once the engines to
    try are chosen (`Intake.chosen`)."""
    kind: str = "chat"
    """The request kind (`inferops.api.routing.KINDS`)."""
    usage: Callable[[dict[str, Any], Limits], Usage] = openai_request
    """The features a request uses, and whether vLLM cannot honour them (`router.usage`)."""


@dataclass(slots=True)
class Intake:
    """A request on its way through the checks: what its headers decided (`take_head`),
    then its body (`take_body`)."""

    endpoint: Endpoint
    routes: Routes
    """The table the request keeps, whatever is installed meanwhile."""
    consumer: ConsumerRoute
    kind: KindRoute
    """The consumer's route for the endpoint's request kind."""
    pin: Target | None
    """The engine a probe asked for: the only one tried."""
    forwarded: bytes
    """The client's header lines that go on to the engine."""
    ex: Exchange
    deadline: float
    """Monotonic time by which the whole answer must be out."""
    raw: bytes = b""
    doc: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    """The model name the client asked for (echoed back by the Ollama API)."""
    chosen: tuple[Target, ...] = ()
    """The engines to try, in order (`choose`)."""
    mirror: Callable[[], Plan | Reply] | None = None
    """At a shadow step, what builds the OpenAI form of a request that goes natively to
    Ollama (a `Plan`, or the router's own answer when vLLM would not be asked): called only
    for a sampled request (`router.shadow`)."""

    def choose(self) -> tuple[Target, ...]:
        """Decides the engines to try: by the consumer's weight, unless the request's kind
        or a feature vLLM cannot honour (`router.usage`) sends it to Ollama, which is
        counted with its reason. The features it uses are counted per consumer."""
        if self.pin is not None:  # a probe measures its engine, whatever it asks
            self.chosen = (self.pin,)
            return self.chosen
        kind = self.kind
        chosen = kind.pick(random.random())
        used, reason = self.endpoint.usage(self.doc, self.routes.limits)
        ex = self.ex
        if kind.reason != KIND_BY_WEIGHT:
            ex.metrics.rerouted(ex.consumer, chosen[0].name, ex.route, kind.reason)
        elif reason is not None and chosen[0].name == VLLM:
            ollama = self.routes.targets.get(OLLAMA)
            if ollama is not None and ollama.ready and ollama in kind.via_ollama:
                chosen = (ollama,)
                ex.metrics.rerouted(ex.consumer, OLLAMA, ex.route, reason)
        if used:
            ex.metrics.features(ex.consumer, chosen[0].name, ex.route, used)
        self.chosen = chosen
        return chosen

    def tags(self, target: Target) -> bytes:
        """The header lines naming engine and consumer, for an answer from `target`."""
        return self.consumer.tags[target.name]


def probe_target(routes: Routes, value: str, kind: str = "chat") -> Target:
    """The engine an `X-Inferops-Probe` value pins, if the table has it ready: `vllm` pins
    an embeddings request to vLLM's embeddings deployment when the table has one."""
    engine = value.strip().lower()
    if engine not in ENGINES:
        allowed = " or ".join(repr(e) for e in ENGINES)
        raise RouterError(
            400,
            f"{PROBE_HEADER} {value!r} names no engine: use {allowed}",
            "invalid_probe_engine",
        )
    target = routes.targets.get(engine)
    if engine == VLLM and kind == "embeddings" and routes.embeddings is not None:
        target = routes.embeddings
    if target is None or not target.ready:
        why = "is not in the routing table" if target is None else "has no Ready pods"
        raise RouterError(
            503,
            f"{PROBE_HEADER} pins engine {engine!r}, which {why}",
            "probe_engine_unavailable",
            "server_error",
        )
    return target


_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_JSON_SPACE = " \t\n\r"


def parse_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object."""
    # The common case, a UTF-8 object without surrounding space, straight to the scanner:
    # `json.loads` first guesses the encoding and matches whitespace with regular
    # expressions, which costs a small body as much again as the parse. Anything else, and
    # any error (for its message), takes `json.loads`.
    if raw[:1] == b"{" and raw[1:2] != b"\x00":  # not UTF-16/32: no NUL after the brace
        try:
            text = raw.decode("utf-8", "surrogatepass")  # as json.loads decodes
            doc, end = _scan(text, 0)
        except (ValueError, StopIteration, RecursionError):
            pass
        else:
            if end == len(text) or not text[end:].strip(_JSON_SPACE):
                return doc  # type: ignore[no-any-return]
    try:
        doc = json.loads(raw)
    except ValueError as err:
        raise errors.bad_json(str(err)) from None
    except RecursionError:  # `[[[[...` deeper than Python's recursion limit
        raise errors.bad_json("nested too deeply") from None
    if not isinstance(doc, dict):
        raise errors.bad_request("the request body must be a JSON object")
    return doc


def check_framing(request: Request, limit: int) -> None:
    """Refuses a body the engines would not take before any of it is read: compressed (and
    inflating one would let a small request cost the limit many times over), or announced
    larger than `limit`. Sets the limit for a body sent in chunks."""
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding not in ("", "identity"):
        raise errors.unsupported_encoding(encoding)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise errors.too_large(limit)
    request.limit = limit


def take_head(state: RouterState, request: Request, endpoint: Endpoint) -> Intake:
    """The checks of a request's headers; raises `RouterError` (with the consumer, when it
    is known, for the metrics)."""
    start = time.monotonic()
    routes = state.routes
    if routes is None:
        raise errors.no_table()
    headers = request.headers
    host, override = headers.get("host"), headers.get(_CONSUMER)
    if override is not None and not state.trust_consumer_header:
        refused = errors.untrusted_consumer_header()
        by_host = routes.consumer(host, None)
        refused.consumer = by_host.name if by_host else None
        raise refused
    consumer = routes.consumer(host, override)
    if consumer is None:
        raise errors.unknown_consumer(host, override)
    kind = consumer.kinds[endpoint.kind]
    try:
        if kind.refusal is not None:
            raise errors.kind_not_served(kind.refusal)
        probe = headers.get(_PROBE)
        pin = probe_target(routes, probe, endpoint.kind) if probe is not None else None
        check_framing(request, routes.max_body_bytes)
    except RouterError as err:
        err.consumer = consumer.name
        raise
    ex = Exchange(state.metrics, consumer.name, endpoint.route, start)
    return Intake(
        endpoint, routes, consumer, kind, pin, forwarded(headers), ex, start + routes.total_seconds
    )


def take_body(request: Request, intake: Intake) -> None:
    """The checks of a request's body, kept in `intake`. Raises `RouterError`."""
    try:
        raw = request.body
        doc = parse_object(raw)
        model = doc.get("model")
        if not isinstance(model, str) or not model:
            raise errors.bad_request("the request names no 'model'")
        if model not in intake.routes.model_names:
            raise errors.unknown_model(model, intake.routes.model)
    except RouterError as err:
        err.consumer = intake.consumer.name
        raise
    intake.raw = raw
    intake.doc = doc
    intake.model = model


def json_reply(payload: object, status: int = 200, headers: bytes = b"") -> Reply:
    return Reply(status, translate.dumps(payload), b"application/json", headers)


__all__ = [
    "CONSUMER_HEADER",
    "ENGINE_HEADER",
    "PROBE_HEADER",
    "WANTED",
    "Endpoint",
    "Intake",
    "Plan",
    "PlanByEngine",
    "check_framing",
    "json_reply",
    "parse_object",
    "probe_target",
    "take_body",
    "take_head",
]
