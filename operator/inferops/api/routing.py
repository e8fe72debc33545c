"""The routing table: the one model of the document the operator writes and the router reads.

The operator builds it (`inferops.builders.router`) and writes it as JSON with camelCase keys
into the ConfigMap key `routes.json`; the router validates it with these same models and
compiles it into lookups (`inferops.router.routes`). It lives in the api layer because both
sides import it and the builders must not import the router.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from inferops.api.base import Model

ROUTES_KEY = "routes.json"
"""The ConfigMap key that holds the table."""

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024

REVISION_METRIC = "inferops_router_table_revision"
"""The router's gauge of the `revision` of the table it serves; the operator scrapes it to
know when every router serves a weight it wrote."""


PROBE_HEADER = "X-Inferops-Probe"
"""Request header of the operator's synthetic probes: it pins the request to one engine."""


class TableModel(Model):
    """Base of the table's models.

    Unknown fields are ignored rather than refused (unlike the CRD models): during an upgrade
    a newer operator may write fields an older router does not know yet, and refusing the
    whole table would freeze that router on its previous weights.
    """

    model_config = ConfigDict(extra="ignore")


class Admission(TableModel):
    """How much of an engine one router process may use: requests under way at once, and a
    bounded wait for the others. Past either bound a request is refused at once (503 with
    `Retry-After`) instead of queueing without limit on the engine."""

    max_concurrent: Annotated[int, Field(ge=1)]
    """Requests this router process has under way on the engine at once."""
    max_waiting: Annotated[int, Field(ge=0)] = 0
    """Requests that may wait for a free slot; one more is refused at once."""
    max_wait_seconds: Annotated[float, Field(gt=0)] = 10.0
    """The longest a request waits for a slot before it is refused."""


Kind = Literal["chat", "completions", "embeddings"]
"""A request kind: chat (OpenAI chat, Ollama chat), completions (OpenAI completions, Ollama
generate) or embeddings (OpenAI embeddings, Ollama embed and embeddings)."""

KINDS: tuple[Kind, ...] = ("chat", "completions", "embeddings")

GENERATION_KINDS: tuple[Kind, ...] = ("chat", "completions")
"""What vLLM's generation runner serves (it has no embeddings route)."""

ROUTE_KINDS: dict[str, Kind] = {
    "chat": "chat",
    "completions": "completions",
    "embeddings": "embeddings",
    "ollama_chat": "chat",
    "ollama_generate": "completions",
    "ollama_embed": "embeddings",
    "ollama_embeddings": "embeddings",
}
"""The `route` label of the router's metrics -> the request kind it serves: the router labels
its series by route, the operator's analysis and probes work by kind."""


class Engine(TableModel):
    """One engine's OpenAI-compatible API."""

    url: Annotated[str, Field(pattern=r"^https?://[^/\s]+/?$")]
    """Base URL without a path (`http://svc.ns.svc:8000`); `/v1/...` is appended."""
    ready: bool = True
    """False when the engine has no Ready endpoints: it then gets no traffic."""
    admission: Admission | None = None
    """The router's limit of requests to this engine; none when absent (a table written by
    an operator that predates it)."""
    kinds: list[Kind] | None = None
    """The request kinds the engine serves; every kind when absent (a table written by an
    operator that predates kinds). A kind vLLM does not serve goes to Ollama whatever the
    consumer's weight."""
    tool_calling: bool | None = None
    """vLLM only: started with a tool-call parser (`--enable-auto-tool-choice` and
    `--tool-call-parser` in spec.vllm.extraArgs), so it honours `tools`. Unknown when absent."""
    max_model_len: int | None = None
    """vLLM only: the longest context it accepts (spec.vllm.maxModelLen); unknown when
    absent (the model's own)."""
    multimodal: bool | None = None
    """vLLM only: accepts images (`--limit-mm-per-prompt` set in spec.vllm.extraArgs).
    Unknown when absent."""

    def serves(self, kind: Kind) -> bool:
        return self.kinds is None or kind in self.kinds


class Engines(TableModel):
    """The engines; Ollama is optional (no fallback engine without it), and so is vLLM's
    embeddings deployment."""

    vllm: Engine
    ollama: Engine | None = None
    embeddings: Engine | None = None
    """vLLM's embeddings deployment (spec.vllm.embeddings, the pooling runner): it serves
    the embeddings kind, by each consumer's `embeddingsWeight`; vLLM's metrics and probes
    name it `vllm` like the main one."""


class Mirror(TableModel):
    """A consumer at a shadow step: the router mirrors a sample of its requests to vLLM,
    after the client has its answer from Ollama, and compares the answers
    (`inferops.router.shadow`)."""

    percent: Annotated[float, Field(gt=0, le=100)]
    """Percent of the consumer's requests mirrored."""
    noise_percent: Annotated[int, Field(ge=0, le=100)] = 50
    """Percent of the mirrored requests also asked of Ollama a second time (noise floor)."""
    max_concurrent: Annotated[int, Field(ge=1)] = 2
    """Mirrored requests under way at once in this router process; more are dropped."""
    timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    """Time limit of one mirrored comparison."""
    min_cosine: Annotated[float, Field(ge=0, le=1)] = 0.99
    """Cosine similarity at or above which two embeddings agree."""
    record_content: bool = False
    """Answer excerpts may go into the router's log of mismatches."""


class Consumer(TableModel):
    """One consuming service and its share of vLLM."""

    name: Annotated[str, Field(min_length=1)]
    """The consumer's name, as used in metrics and in the `X-Inferops-Consumer` header."""
    hosts: list[str] = []
    """Host names (without port) under which the consumer's Service reaches the router."""
    weight: Annotated[int, Field(ge=0, le=100)] = 0
    """Percent of this consumer's requests sent to vLLM; the rest go to Ollama."""
    api: Literal["chat", "embeddings"] = "chat"
    """What the consumer uses; the operator keeps embeddings consumers at 0 or 100."""
    shadow: Mirror | None = None
    """Set at a shadow step (weight 0): mirror and compare a sample of its requests."""
    embeddings_weight: Annotated[int | None, Field(ge=0, le=100)] = None
    """With an embeddings engine: percent of the consumer's embeddings requests sent to it
    (0 or 100), decided apart from `weight`; absent: 0."""


class Timeouts(TableModel):
    """Upstream time limits."""

    connect_seconds: Annotated[float, Field(gt=0)] = 2.0
    """Limit for opening a TCP connection to an engine."""
    first_byte_seconds: Annotated[float, Field(gt=0)] = 60.0
    """Limit for an engine's first response byte while a fallback engine remains; also the
    longest silence tolerated between two chunks of a stream."""
    total_seconds: Annotated[float, Field(gt=0)] = 600.0
    """Limit for a whole request, fallback included."""


class RoutingTable(TableModel):
    """Everything the router needs to route one InferenceBackend's traffic."""

    model: Annotated[str, Field(min_length=1)]
    """The logical model name; upstream requests always carry it."""
    aliases: list[str] = []
    """Other model names clients may send; they are rewritten to `model`."""
    engines: Engines
    consumers: list[Consumer] = []
    fallback: bool = True
    """Retry a request that failed on vLLM before any byte was sent, once, on Ollama."""
    timeouts: Timeouts = Timeouts()
    max_body_bytes: Annotated[int, Field(gt=0)] = DEFAULT_MAX_BODY_BYTES
    """Largest request body accepted; larger ones get 413."""
    revision: Annotated[int, Field(ge=0)] = 0
    """A checksum of the rest of the table, set by the operator (`with_revision`); the router
    exports the revision it serves so the operator knows when every router serves a weight."""

    @model_validator(mode="after")
    def _unique_names_and_hosts(self) -> RoutingTable:
        names: set[str] = set()
        owners: dict[str, str] = {}
        for consumer in self.consumers:
            if consumer.name in names:
                raise ValueError(f"consumer {consumer.name!r} is listed twice")
            names.add(consumer.name)
            for host in consumer.hosts:
                key = normalize_host(host)
                if key in owners and owners[key] != consumer.name:
                    raise ValueError(
                        f"host {host!r} belongs to both {owners[key]!r} and {consumer.name!r}"
                    )
                owners[key] = consumer.name
        return self


def with_revision(table: RoutingTable) -> RoutingTable:
    """The table with `revision` set to the CRC-32 of its canonical JSON without `revision`.

    Pure and deterministic, so every reconcile of the same inputs writes the same revision and
    an unchanged table does not look like a new one. CRC-32 rather than a cryptographic hash:
    it only has to tell successive tables apart, and it fits a Prometheus gauge exactly.
    """
    doc = table.model_dump(by_alias=True, exclude_none=True, mode="json", exclude={"revision"})
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return table.model_copy(update={"revision": zlib.crc32(canonical.encode())})


def with_engine_urls(table: RoutingTable, urls: Mapping[str, str]) -> RoutingTable:
    """The table with engine URLs replaced, for a router run outside the cluster (development,
    the e2e tier) where the in-cluster Service names do not resolve. The revision is kept: it
    names the operator's table, which this still is."""
    engines = {}
    for name in ("vllm", "ollama", "embeddings"):
        engine: Engine | None = getattr(table.engines, name)
        if engine is not None and name in urls:
            engine = engine.model_copy(update={"url": urls[name]})
        engines[name] = engine
    return table.model_copy(update={"engines": Engines(**engines)})


def normalize_host(host: str) -> str:
    """A Host header value reduced to the name it names: no port, no trailing dot, lowercase."""
    if host.startswith("["):  # IPv6 literal, `[::1]:8080`
        end = host.find("]")
        name = host[: end + 1] if end != -1 else host
    else:
        name = host.partition(":")[0]
    return name.rstrip(".").lower()


__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "GENERATION_KINDS",
    "KINDS",
    "PROBE_HEADER",
    "REVISION_METRIC",
    "ROUTES_KEY",
    "ROUTE_KINDS",
    "Admission",
    "Consumer",
    "Engine",
    "Engines",
    "Kind",
    "Mirror",
    "RoutingTable",
    "TableModel",
    "Timeouts",
    "normalize_host",
    "with_engine_urls",
    "with_revision",
]
