"""A routing table compiled for the data path: the lookups and the engine choice. Pure.

Everything a request needs is precomputed when a table is installed (host and name lookups,
the accepted model names, each consumer's effective vLLM share after readiness, the order of
engines to try, the upstream URLs), so routing a request is two dict lookups and one random
number. A request keeps the `Routes` object it started with, so swapping tables never changes
the engine of a request in flight.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from inferops.api.routing import KINDS, Admission, Kind, Mirror, RoutingTable, normalize_host
from inferops.router.admission import Gate
from inferops.router.pool import Origin
from inferops.router.usage import Limits

VLLM = "vllm"
OLLAMA = "ollama"
ENGINES = (VLLM, OLLAMA)
EMBEDDINGS_GATE = "vllm-embeddings"
"""The admission gate of vLLM's embeddings deployment. Its target is named `vllm` (metrics,
probes, translation: it is vLLM), but it is another server with its own limits."""
GATES = (*ENGINES, EMBEDDINGS_GATE)

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
OLLAMA_PATHS = ("/api/chat", "/api/generate", "/api/embed", "/api/embeddings")
"""Ollama's native inference paths: an Ollama-API request that goes to Ollama goes there."""
OPENAI_PATHS = (CHAT_PATH, COMPLETIONS_PATH, EMBEDDINGS_PATH)
UPSTREAM_PATHS = (*OPENAI_PATHS, *OLLAMA_PATHS)

KIND_BY_WEIGHT = "weight"
"""`KindRoute.reason` when the consumer's weight decides (vLLM serves the kind)."""
VLLM_LACKS_KIND = "vllm_does_not_serve_kind"
"""`KindRoute.reason` of a kind vLLM does not serve: it goes to Ollama whatever the weight."""

# Engines must not compress: the router relays bytes and does not want to re-encode them.
BASE_HEADERS = b"Content-Type: application/json\r\nAccept-Encoding: identity\r\n"


@dataclass(frozen=True, slots=True)
class Target:
    """One engine as the data path sees it."""

    name: str
    base_url: str
    ready: bool
    urls: dict[str, str]
    """Upstream path -> absolute URL (for messages)."""
    origin: Origin
    heads: dict[str, bytes]
    """Upstream path -> the request line and fixed headers of a POST to it, built once."""
    gate: Gate
    """The engine's admission: the router's, shared by every table (`admission.Gate`)."""


@dataclass(frozen=True, slots=True)
class KindRoute:
    """How one consumer's requests of one kind are routed, precomputed."""

    kind: Kind
    vllm_share: float
    """Percent of requests that start on vLLM once readiness and the kinds the engines serve
    are applied (0, 100 or the weight)."""
    via_vllm: tuple[Target, ...]
    """Engines tried, in order, for a request that starts on vLLM (vLLM, then maybe Ollama)."""
    via_ollama: tuple[Target, ...]
    reason: str = KIND_BY_WEIGHT
    """Why the engine is what it is: the weight, or `VLLM_LACKS_KIND` (counted per request)."""
    refusal: str | None = None
    """Set when no engine serves the kind: the message of the error the client gets."""

    def pick(self, draw: float) -> tuple[Target, ...]:
        """The engines to try for a request, given `draw`, uniform in [0, 1)."""
        return self.via_vllm if draw * 100.0 < self.vllm_share else self.via_ollama


@dataclass(frozen=True, slots=True)
class ConsumerRoute:
    """One consumer's routing decision inputs, precomputed."""

    name: str
    api: str
    weight: int
    """The weight the operator set."""
    vllm_share: float
    """Percent of requests that start on vLLM once readiness is applied (0, 100 or weight),
    for a kind vLLM serves (`kinds` has the share of each kind)."""
    via_vllm: tuple[Target, ...]
    """Engines tried, in order, for a request that starts on vLLM (vLLM, then maybe Ollama)."""
    via_ollama: tuple[Target, ...]
    tags: dict[str, bytes] = field(default_factory=dict)
    """Engine -> the header lines that name engine and consumer on an engine's answer."""
    shadow: Mirror | None = None
    """At a shadow step: what to mirror of its requests (`inferops.router.shadow`)."""
    kinds: dict[str, KindRoute] = field(default_factory=dict)
    """Request kind -> its route, which picks the engines of each request (`KindRoute.pick`)."""


@dataclass(frozen=True, slots=True)
class Routes:
    """A compiled `RoutingTable`."""

    table: RoutingTable
    generation: int
    model: str
    model_names: frozenset[str]
    by_host: dict[str, ConsumerRoute]
    by_name: dict[str, ConsumerRoute]
    consumers: tuple[ConsumerRoute, ...]
    connect_seconds: float
    first_byte_seconds: float
    total_seconds: float
    max_body_bytes: int
    targets: dict[str, Target] = field(default_factory=dict)
    embeddings: Target | None = None
    """vLLM's embeddings deployment, when the table has one."""
    limits: Limits = field(default_factory=Limits)
    """What the table says vLLM is started for (the `ollama` rules of `api.features`)."""
    ollama_names: frozenset[str] = frozenset()
    """The model names Ollama itself knows (the logical name, with and without `:latest`):
    a request passed through to Ollama keeps these; an alias is rewritten."""

    def consumer(self, host: str | None, override: str | None) -> ConsumerRoute | None:
        """The consumer a request belongs to: `override` (the `X-Inferops-Consumer` header,
        passed only by a router that trusts it) names it, else the Host."""
        if override:
            return self.by_name.get(override)
        if not host:
            return None
        found = self.by_host.get(host)
        if found is None:
            # Only now pay for normalising: most Host headers arrive exactly as listed.
            found = self.by_host.get(normalize_host(host))
        return found

    def accepts(self, model: str) -> bool:
        return model in self.model_names


def _target(name: str, url: str, ready: bool, gate: Gate) -> Target:
    base = url.rstrip("/")
    origin = Origin.parse(base)
    return Target(
        name,
        base,
        ready,
        {path: base + path for path in UPSTREAM_PATHS},
        origin,
        {path: origin.request_head("POST", path, BASE_HEADERS) for path in UPSTREAM_PATHS},
        gate,
    )


def _tags(consumer: str) -> dict[str, bytes]:
    # Only visible ASCII may go into a header line (the table is the operator's, but a
    # stray newline must still not split the answer's head).
    value = "".join(c for c in consumer if " " <= c <= "~").encode()
    return {
        engine: b"X-Inferops-Engine: %s\r\nX-Inferops-Consumer: %s\r\n" % (engine.encode(), value)
        for engine in ENGINES
    }


def _model_names(model: str, aliases: list[str]) -> frozenset[str]:
    # Ollama treats `name` and `name:latest` as one model; so do its clients, so accept both.
    names: set[str] = set()
    for name in (model, *aliases):
        names.add(name)
        if ":" not in name.rpartition("/")[2]:
            names.add(name + ":latest")
    return frozenset(names)


ENABLE_KIND = {
    "embeddings": "spec.ollama (Ollama serves embeddings for any model), or "
    "spec.vllm.embeddings (a vLLM deployment of an embedding model), or `--runner pooling` "
    "in spec.vllm.extraArgs",
}
"""Kind -> the spec field that would make an engine serve it (the refusal's advice)."""
ENABLE_ANY = "spec.ollama (Ollama serves every kind)"


def _kind_route(
    table: RoutingTable,
    kind: Kind,
    share: float,
    via_vllm: tuple[Target, ...],
    via_ollama: tuple[Target, ...],
    ollama: Target | None,
) -> KindRoute:
    vllm_serves = table.engines.vllm.serves(kind)
    ollama_engine = table.engines.ollama
    ollama_serves = ollama is not None and ollama_engine is not None and ollama_engine.serves(kind)
    if vllm_serves and (ollama_serves or ollama is None):
        return KindRoute(kind, share, via_vllm, via_ollama)
    if vllm_serves:  # Ollama does not serve it: vLLM only, no fallback
        only = via_vllm[:1]
        return KindRoute(kind, 100.0, only, only)
    if ollama_serves and ollama is not None:
        return KindRoute(kind, 0.0, (ollama,), (ollama,), VLLM_LACKS_KIND)
    served = ", ".join(table.engines.vllm.kinds or ())
    message = (
        f"this backend serves no {kind} requests: vLLM serves {served or 'no kind'}"
        f"{' and Ollama does not serve ' + kind if ollama_engine else ' and there is no Ollama'}"
        f"; to serve them set {ENABLE_KIND.get(kind, ENABLE_ANY)}"
    )
    return KindRoute(kind, 0.0, via_vllm, via_ollama, VLLM_LACKS_KIND, message)


def _embeddings_route(
    weight: int | None, embeddings: Target, ollama: Target | None, fallback: bool
) -> KindRoute:
    """Embeddings when the table has vLLM's embeddings deployment: by the consumer's
    embeddings weight, apart from its chat, readiness applied like the main vLLM's."""
    share: float = weight or 0
    if ollama is None or (embeddings.ready and not ollama.ready):
        share = 100.0
    elif ollama.ready and not embeddings.ready:
        share = 0.0
    fallback_ok = fallback and ollama is not None and ollama.ready
    via_vllm = (embeddings, ollama) if fallback_ok and ollama is not None else (embeddings,)
    via_ollama = (ollama,) if ollama is not None else via_vllm
    return KindRoute("embeddings", share, via_vllm, via_ollama)


def admissions(table: RoutingTable) -> dict[str, Admission | None]:
    """Each engine's admission limits in `table` (None: no limit)."""
    ollama, embeddings = table.engines.ollama, table.engines.embeddings
    return {
        VLLM: table.engines.vllm.admission,
        OLLAMA: ollama.admission if ollama else None,
        EMBEDDINGS_GATE: embeddings.admission if embeddings else None,
    }


def compile_table(
    table: RoutingTable, generation: int = 0, gates: Mapping[str, Gate] | None = None
) -> Routes:
    """`gates` are the router's, one per engine; a table compiled without them gets gates
    of its own, configured from it (tests, tools)."""
    if gates is None:
        gates = {name: Gate(name) for name in GATES}
        for name, admission in admissions(table).items():
            gates[name].configure(admission)
    vllm = _target(VLLM, table.engines.vllm.url, table.engines.vllm.ready, gates[VLLM])
    ollama = (
        _target(OLLAMA, table.engines.ollama.url, table.engines.ollama.ready, gates[OLLAMA])
        if table.engines.ollama
        else None
    )
    pooling = table.engines.embeddings
    embeddings = (
        _target(VLLM, pooling.url, pooling.ready, gates[EMBEDDINGS_GATE]) if pooling else None
    )
    consumers: list[ConsumerRoute] = []
    for consumer in table.consumers:
        share: float = consumer.weight
        if ollama is None or (vllm.ready and not ollama.ready):
            share = 100.0
        elif ollama.ready and not vllm.ready:
            share = 0.0
        # Neither ready: keep the weight. The table may lag behind the endpoints, and an
        # attempt costs one refused connection where refusing the request costs it for sure.
        fallback_ok = table.fallback and ollama is not None and ollama.ready
        via_vllm = (vllm, ollama) if fallback_ok and ollama is not None else (vllm,)
        via_ollama = (ollama,) if ollama is not None else via_vllm
        kinds: dict[str, KindRoute] = {
            kind: _kind_route(table, kind, share, via_vllm, via_ollama, ollama) for kind in KINDS
        }
        if embeddings is not None:
            kinds["embeddings"] = _embeddings_route(
                consumer.embeddings_weight, embeddings, ollama, table.fallback
            )
        consumers.append(
            ConsumerRoute(
                consumer.name,
                consumer.api,
                consumer.weight,
                share,
                via_vllm,
                via_ollama,
                _tags(consumer.name),
                consumer.shadow,
                kinds,
            )
        )
    by_name = {c.name: c for c in consumers}
    by_host: dict[str, ConsumerRoute] = {}
    for consumer, route in zip(table.consumers, consumers, strict=True):
        for host in consumer.hosts:
            by_host[normalize_host(host)] = route
    targets = {VLLM: vllm} | ({OLLAMA: ollama} if ollama else {})
    return Routes(
        table=table,
        generation=generation,
        model=table.model,
        model_names=_model_names(table.model, table.aliases),
        by_host=by_host,
        by_name=by_name,
        consumers=tuple(consumers),
        connect_seconds=table.timeouts.connect_seconds,
        first_byte_seconds=table.timeouts.first_byte_seconds,
        total_seconds=table.timeouts.total_seconds,
        max_body_bytes=table.max_body_bytes,
        targets=targets,
        embeddings=embeddings,
        limits=Limits.of(table.engines.vllm),
        ollama_names=_model_names(table.model, []),
    )


__all__ = [
    "BASE_HEADERS",
    "CHAT_PATH",
    "COMPLETIONS_PATH",
    "EMBEDDINGS_GATE",
    "EMBEDDINGS_PATH",
    "ENGINES",
    "GATES",
    "KIND_BY_WEIGHT",
    "OLLAMA",
    "OLLAMA_PATHS",
    "VLLM",
    "VLLM_LACKS_KIND",
    "ConsumerRoute",
    "KindRoute",
    "Routes",
    "Target",
    "admissions",
    "compile_table",
]
