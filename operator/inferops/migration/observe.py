"""The migration's reads: everything the planner observes, gathered before it plans.

- the one-shot action requested in the resource's annotation, if not yet acknowledged;
- the weights every data-plane replica serves, from the traffic interface (inferops.traffic;
  the built-in router's pods are scraped directly: it must be current within a second,
  which a Prometheus scrape interval is not); unknown on any replica means not served;
- the analysis figures of the consumers whose sample is due, from the metrics source;
- both engines' vectors for the same inputs, when a check is due (`migration.vectors`).
- the features and the routes (request kinds, in the OpenAI or Ollama form) the consumers
  not started yet use, and the routes of the consumers sampled now: what their probes send.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from inferops.api.migration import ACTION_ANNOTATION, action_request
from inferops.api.spec import InferenceBackendSpec
from inferops.api.status import InferenceBackendStatus
from inferops.builders import router
from inferops.builders.common import COMPONENT_LABEL, Owner
from inferops.kube import Obj
from inferops.migration import vectors
from inferops.migration.planner import Action, Observations, due_samples, stamp
from inferops.migration.sources import MetricsSource
from inferops.migration.vector_probe import VectorProbe
from inferops.traffic import Traffic, served_everywhere

PENDING = ("Pending", "Manual")
"""Phases before a consumer's migration starts (`Manual`: under a migration just added)."""


def requested_action(body: Obj) -> Action | None:
    """The action annotation as an Action; a malformed one becomes an action the planner
    rejects with a message, rather than being ignored silently."""
    request = action_request(body)
    if request is None:
        return None
    if isinstance(request, str):
        digest = hashlib.sha256(request.encode()).hexdigest()[:16]
        return Action(id=digest, action=f"malformed {ACTION_ANNOTATION}: {request[:60]}")
    return Action(
        id=request["id"],
        action=str(request.get("action", "")),
        consumer=str(request.get("consumer") or ""),
    )


def router_urls(pods: list[Obj], override: str | None) -> list[str]:
    """Base URLs of the ready router pods; `override` replaces them all (a router run
    outside the cluster, in development and the e2e tier)."""
    if override:
        return [override]
    urls = []
    for pod in pods:
        if pod["metadata"].get("labels", {}).get(COMPONENT_LABEL) != router.COMPONENT:
            continue
        status = pod.get("status", {})
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions", [])
        )
        if ready and status.get("podIP") and not pod["metadata"].get("deletionTimestamp"):
            urls.append(f"http://{status['podIP']}:{router.PORT}")
    return sorted(urls)


@dataclass
class MigrationReader:
    """Reads observations for the planner. `source` gives the analysis figures; `traffic`
    what each data-plane replica serves; `probe` asks both engines for vectors."""

    source: MetricsSource
    traffic: Traffic
    log: logging.Logger
    probe: VectorProbe | None = None

    async def observe(
        self,
        spec: InferenceBackendSpec,
        owner: Owner,
        body: Obj,
        previous: InferenceBackendStatus,
        live: Mapping[tuple[str, str], Obj],
        vllm_ready: bool,
        now: datetime,
    ) -> Observations:
        failover = previous.migration.failover if previous.migration else False
        due = due_samples(spec, previous.consumers, failover, now)
        figures = {
            name: await self.source.figures(owner.namespace, owner.name, name, window)
            for name, window in due.items()
        }
        for name, found in figures.items():
            if found.problem:
                self.log.info(
                    "%s/%s %s: no figures: %s", owner.namespace, owner.name, name, found.problem
                )
        features = {}
        waiting = self.waiting(spec, previous)
        for name in waiting:
            used = await self.source.features(owner.namespace, owner.name, name)
            if used is not None:
                features[name] = used
        check = None
        last = previous.migration.vectors if previous.migration else None
        if self.probe is not None and spec.migration and vectors.due(spec, last, now):
            vllm, ollama = await self.probe.measure(spec, owner)
            min_cosine = spec.migration.embeddings.min_cosine
            check = vectors.judge(vllm, ollama, min_cosine, vectors.key(spec), stamp(now))
            self.log.info(
                "%s/%s vector check: %s %s",
                owner.namespace,
                owner.name,
                check.verdict,
                check.message,
            )
        routes = {}
        for name in [*waiting, *(n for n in figures if n not in waiting)]:
            seen = await self.source.routes(owner.namespace, owner.name, name)
            if seen is not None:
                routes[name] = seen
        return Observations(
            vectors=check,
            vllm_ready=vllm_ready,
            served=served_everywhere(await self.traffic.served(owner, live)),
            figures=figures,
            action=requested_action(body),
            features=features,
            routes=routes,
        )

    @staticmethod
    def waiting(spec: InferenceBackendSpec, previous: InferenceBackendStatus) -> list[str]:
        """The consumers whose migration has not started: their features are read before
        it does (`migration.holds`)."""
        if spec.migration is None:
            return []
        phases = {c.name: c.phase for c in previous.consumers}
        return [c.name for c in spec.consumers if phases.get(c.name, "Pending") in PENDING]

    def forget(self, namespace: str, backend: str) -> None:
        """A deleted backend: its readings would otherwise stay in memory for good."""
        self.source.forget(namespace, backend)
        self.traffic.forget(namespace, backend)

    async def aclose(self) -> None:
        await self.source.aclose()
        await self.traffic.aclose()
        if self.probe is not None:
            await self.probe.aclose()


__all__ = ["MigrationReader", "requested_action", "router_urls"]
