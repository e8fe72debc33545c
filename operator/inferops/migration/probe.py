"""Synthetic probes: tiny real completions sent through a consumer's endpoint to each engine
while the consumer migrates, so a consumer with little traffic of its own is still judged on
real generation, measured by the router like any other request of that consumer.

Each probe names its engine in the router's `X-Inferops-Probe` header (no fallback: a failing
vLLM must show as an error) and the consumer's Service in `Host`, which is how the router
tells consumers apart. Probes stream, so time to first token and per output token are
measured too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from inferops.api.migration import seconds
from inferops.api.routing import PROBE_HEADER
from inferops.api.spec import InferenceBackendSpec
from inferops.api.status import InferenceBackendStatus
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
    api: str
    """chat or embeddings."""
    engines: tuple[str, ...]
    """Engines to probe: both during a canary, vLLM alone at 100%."""
    every: float
    """Seconds between two rounds (one probe per engine each)."""
    prompt: str
    max_tokens: int


async def probe_once(http: httpx.AsyncClient, target: ProbeTarget, engine: str) -> int:
    """One probe; returns the HTTP status (0 when the router could not be reached)."""
    headers = {PROBE_HEADER: engine, "Host": target.host}
    if target.api == "embeddings":
        path = "/v1/embeddings"
        body: dict[str, object] = {"model": target.model, "input": target.prompt}
    else:
        path = "/v1/chat/completions"
        body = {
            "model": target.model,
            "messages": [{"role": "user", "content": target.prompt}],
            "max_tokens": target.max_tokens,
            "stream": True,
            # vLLM reports usage in a stream only when asked; the router needs it to measure
            # the time per output token.
            "stream_options": {"include_usage": True},
        }
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
        """Starts one probe per engine every `target.every` seconds without waiting for the
        previous ones: a slow engine must not get fewer probes, or a latency problem would
        look like too little traffic (Inconclusive) instead of a failure."""
        failures = 0
        pending: set[asyncio.Task[int]] = set()

        def done(task: asyncio.Task[int], *, engine: str) -> None:
            nonlocal failures
            pending.discard(task)
            code = 0 if task.cancelled() or task.exception() else task.result()
            if code != 200:
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:  # visible, not flooding
                    self.log.info(
                        "%s/%s probe of %s on %s: HTTP %s (failure %d)",
                        *key[:2],
                        key[2],
                        engine,
                        code or "unreachable",
                        failures,
                    )

        try:
            while True:
                # A bound, so an engine that never answers cannot pile up probes.
                if len(pending) < MAX_PENDING_PROBES:
                    for engine in target.engines:
                        task = asyncio.create_task(probe_once(self.http, target, engine))
                        pending.add(task)
                        task.add_done_callback(functools.partial(done, engine=engine))
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
    which probes would not add to: they are never mirrored). `router_url` replaces the
    consumers' endpoints (a router run outside the cluster)."""
    migration = spec.migration
    if migration is None or not migration.probe.enabled:
        return {}
    if status.migration is not None and status.migration.failover:
        return {}
    probe = migration.probe
    every = seconds(migration.analysis.interval) / probe.requests
    api = {c.name: c.api for c in spec.consumers}
    shadowing = mirrors(migration, status.consumers, failover=False)
    return {
        c.name: ProbeTarget(
            url=router_url or c.endpoint,
            host=f"{c.service}.{namespace}.svc",
            model=spec.model,
            api=api[c.name],
            engines=("vllm",) if c.weight == 100 else ("vllm", "ollama"),
            every=every,
            prompt=probe.prompt,
            max_tokens=probe.max_tokens,
        )
        for c in status.consumers
        if c.phase in ("Progressing", "Paused") and c.name in api and c.name not in shadowing
    }


__all__ = ["ProbeTarget", "Prober", "probe_once", "probe_targets"]
