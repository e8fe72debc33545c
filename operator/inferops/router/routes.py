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

from inferops.api.routing import Admission, Mirror, RoutingTable, normalize_host
from inferops.router.admission import Gate
from inferops.router.pool import Origin

VLLM = "vllm"
OLLAMA = "ollama"
ENGINES = (VLLM, OLLAMA)

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
UPSTREAM_PATHS = (CHAT_PATH, COMPLETIONS_PATH, EMBEDDINGS_PATH)

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
class ConsumerRoute:
    """One consumer's routing decision inputs, precomputed."""

    name: str
    api: str
    weight: int
    """The weight the operator set."""
    vllm_share: float
    """Percent of requests that start on vLLM once readiness is applied (0, 100 or weight)."""
    via_vllm: tuple[Target, ...]
    """Engines tried, in order, for a request that starts on vLLM (vLLM, then maybe Ollama)."""
    via_ollama: tuple[Target, ...]
    tags: dict[str, bytes] = field(default_factory=dict)
    """Engine -> the header lines that name engine and consumer on an engine's answer."""
    shadow: Mirror | None = None
    """At a shadow step: what to mirror of its requests (`inferops.router.shadow`)."""

    def pick(self, draw: float) -> tuple[Target, ...]:
        """The engines to try for a request, given `draw`, uniform in [0, 1)."""
        return self.via_vllm if draw * 100.0 < self.vllm_share else self.via_ollama


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


def admissions(table: RoutingTable) -> dict[str, Admission | None]:
    """Each engine's admission limits in `table` (None: no limit)."""
    ollama = table.engines.ollama
    return {VLLM: table.engines.vllm.admission, OLLAMA: ollama.admission if ollama else None}


def compile_table(
    table: RoutingTable, generation: int = 0, gates: Mapping[str, Gate] | None = None
) -> Routes:
    """`gates` are the router's, one per engine; a table compiled without them gets gates
    of its own, configured from it (tests, tools)."""
    if gates is None:
        gates = {name: Gate(name) for name in ENGINES}
        for name, admission in admissions(table).items():
            gates[name].configure(admission)
    vllm = _target(VLLM, table.engines.vllm.url, table.engines.vllm.ready, gates[VLLM])
    ollama = (
        _target(OLLAMA, table.engines.ollama.url, table.engines.ollama.ready, gates[OLLAMA])
        if table.engines.ollama
        else None
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
    )


__all__ = [
    "BASE_HEADERS",
    "CHAT_PATH",
    "COMPLETIONS_PATH",
    "EMBEDDINGS_PATH",
    "ENGINES",
    "OLLAMA",
    "VLLM",
    "ConsumerRoute",
    "Routes",
    "Target",
    "admissions",
    "compile_table",
]
