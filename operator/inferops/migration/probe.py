"""Synthetic probes: tiny real requests sent through a consumer's endpoint to each engine
while the consumer migrates, so a consumer with little traffic of its own is still judged on
real generation, measured by the router like any other request of that consumer.

Probes send what the consumer sends: each router route it was seen using
(`status.consumers[].routes`: chat, completions or embeddings, in the OpenAI or the Ollama
form), so a consumer whose embeddings fail on vLLM fails its gates even when chat passes.
A route of a kind vLLM does not serve is not probed: the router sends that kind to Ollama
whatever the weight, and no gate judges it.

Each probe names its engine in the router's `X-Inferops-Probe` header (no fallback: a failing
vLLM must show as an error) and the consumer's Service in `Host`, which is how the router
tells consumers apart. Generation probes stream, so time to first token and per output token
are measured too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from inferops.api.migration import seconds
from inferops.api.routing import PROBE_HEADER, ROUTE_KINDS
from inferops.api.spec import InferenceBackendSpec
from inferops.api.status import ConsumerStatus, InferenceBackendStatus
from inferops.migration.analysis import vllm_kinds
from inferops.migration.shadow import mirrors

MAX_PENDING_PROBES = 32


@dataclass(frozen=True)
class ProbeTarget:
    """Where and how to probe one consumer."""

    url: str
    """The router's base URL as the operator reaches it (the consumer's endpoint)."""
    host: str
    """The consumer's Service host name, sent as `Host`."""
    model: str
    sends: tuple[tuple[str, tuple[str, ...]], ...]
    """(route, engines) pairs: each route the consumer uses of a kind vLLM serves, to both
    engines during a canary, to vLLM alone at 100%."""
    every: float
    """Seconds between two rounds (one probe per route and engine each)."""
    prompt: str
    max_tokens: int


def probe_request(route: str, model: str, prompt: str, max_tokens: int) -> tuple[str, object]:
    """The path and body of a probe of `route` (a key of `ROUTE_KINDS`)."""
    messages = [{"role": "user", "content": prompt}]
    # vLLM reports usage in a stream only when asked; the router needs it to measure the
    # time per output token.
    usage = {"include_usage": True}
    options = {"num_predict": max_tokens}
    requests: dict[str, tuple[str, dict[str, object]]] = {
        "chat": (
            "/v1/chat/completions",
            {"messages": messages, "max_tokens": max_tokens, "stream": True},
        ),
        "completions": (
            "/v1/completions",
            {"prompt": prompt, "max_tokens": max_tokens, "stream": True},
        ),
        "embeddings": ("/v1/embeddings", {"input": prompt}),
        "ollama_chat": ("/api/chat", {"messages": messages, "stream": True, "options": options}),
        "ollama_generate": (
            "/api/generate",
            {"prompt": prompt, "stream": True, "options": options},
        ),
        "ollama_embed": ("/api/embed", {"input": prompt}),
        "ollama_embeddings": ("/api/embeddings", {"prompt": prompt}),
    }
    path, body = requests[route]
    if route in ("chat", "completions"):
        body["stream_options"] = usage
    return path, {"model": model, **body}


async def probe_once(
    http: httpx.AsyncClient, target: ProbeTarget, engine: str, route: str = "chat"
) -> int:
    """One probe of `route`; returns the HTTP status (0 when the router could not be
    reached)."""
    headers = {PROBE_HEADER: engine, "Host": target.host}
    path, body = probe_request(route, target.model, target.prompt, target.max_tokens)
    try:
        async with http.stream("POST", target.url + path, json=body, headers=headers) as answer:
            async for _ in answer.aiter_bytes():
                pass  # read to the end: the router measures the whole stream
            return answer.status_code
    except httpx.HTTPError:
        return 0


class Prober:
    """One probing task per consumer in progress; `update` starts, retargets and stops them."""

    def __init__(
        self, log: logging.Logger, router_url: str | None = None, timeout: float = 60.0
    ) -> None:
        self.log = log
        self.router_url = router_url
        """Replaces the consumers' endpoints: a router run outside the cluster."""
        self.http = httpx.AsyncClient(timeout=timeout)
        self._tasks: dict[tuple[str, str, str], tuple[ProbeTarget, asyncio.Task[None]]] = {}

    def update(self, namespace: str, backend: str, targets: Mapping[str, ProbeTarget]) -> None:
        """Probes exactly `targets` (by consumer) of this backend from now on."""
        for key in [k for k in self._tasks if k[:2] == (namespace, backend)]:
            wanted = targets.get(key[2])
            current, task = self._tasks[key]
            if wanted != current:
                task.cancel()
                del self._tasks[key]
        for consumer, target in targets.items():
            key = (namespace, backend, consumer)
            if key not in self._tasks:
                self._tasks[key] = (target, asyncio.create_task(self._run(key, target)))

    async def _run(self, key: tuple[str, str, str], target: ProbeTarget) -> None:
        """Starts one probe per route and engine every `target.every` seconds without
        waiting for the previous ones: a slow engine must not get fewer probes, or a latency
        problem would look like too little traffic (Inconclusive) instead of a failure."""
        failures = 0
        pending: set[asyncio.Task[int]] = set()

        def done(task: asyncio.Task[int], *, engine: str, route: str) -> None:
            nonlocal failures
            pending.discard(task)
            code = 0 if task.cancelled() or task.exception() else task.result()
            if code != 200:
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:  # visible, not flooding
                    self.log.info(
                        "%s/%s probe of %s (%s) on %s: HTTP %s (failure %d)",
                        *key[:2],
                        key[2],
                        route,
                        engine,
                        code or "unreachable",
                        failures,
                    )

        try:
            while True:
                # A bound, so an engine that never answers cannot pile up probes.
                for route, engines in target.sends:
                    for engine in engines:
                        if len(pending) >= MAX_PENDING_PROBES:
                            break
                        task = asyncio.create_task(probe_once(self.http, target, engine, route))
                        pending.add(task)
                        task.add_done_callback(functools.partial(done, engine=engine, route=route))
                await asyncio.sleep(target.every)
        finally:
            for task in pending:
                task.cancel()

    async def aclose(self) -> None:
        for _, task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
        await self.http.aclose()


def probe_targets(
    spec: InferenceBackendSpec,
    namespace: str,
    status: InferenceBackendStatus,
    router_url: str | None,
) -> dict[str, ProbeTarget]:
    """What to probe now: every consumer in progress, unless probes are off or vLLM is
    failed over, or the consumer is at a shadow step (judged on its own requests' answers,
    which probes would not add to: they are never mirrored), or it uses no kind vLLM serves.
    `router_url` replaces the consumers' endpoints (a router run outside the cluster)."""
    migration = spec.migration
    if migration is None or not migration.probe.enabled:
        return {}
    if status.migration is not None and status.migration.failover:
        return {}
    probe = migration.probe
    every = seconds(migration.analysis.interval) / probe.requests
    api = {c.name: c.api for c in spec.consumers}
    shadowing = mirrors(migration, status.consumers, failover=False)
    served = vllm_kinds(spec)
    targets = {}
    for c in status.consumers:
        if c.phase not in ("Progressing", "Paused") or c.name not in api or c.name in shadowing:
            continue
        if not (sends := probe_sends(c, api[c.name], served)):
            continue
        targets[c.name] = ProbeTarget(
            url=router_url or c.endpoint,
            host=f"{c.service}.{namespace}.svc",
            model=spec.model,
            sends=sends,
            every=every,
            prompt=probe.prompt,
            max_tokens=probe.max_tokens,
        )
    return targets


def probe_sends(
    c: ConsumerStatus, api: str, served: frozenset[str]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(route, engines) of one consumer's probes: the routes it was seen using, or the
    OpenAI route of its `api` when none was seen (a consumer quiet so far), of the kinds
    vLLM serves; both engines below 100%, vLLM alone at 100% (Ollama has no share to
    compare with)."""
    routes = [r for r in c.routes if r in ROUTE_KINDS] or [api]
    engines = ("vllm",) if c.weight == 100 else ("vllm", "ollama")
    return tuple((r, engines) for r in sorted(routes) if ROUTE_KINDS[r] in served)


__all__ = ["ProbeTarget", "Prober", "probe_once", "probe_request", "probe_sends", "probe_targets"]
