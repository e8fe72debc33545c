"""One level-triggered reconciliation of an InferenceBackend: read, build, apply what
differs, delete what is no longer wanted, observe, write status if it changed.

It works from the current state only, so it can run any number of times, after any event or
restart, with the same result; with nothing changed it makes no write at all.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from pydantic import ValidationError

from inferops import metrics, replicas
from inferops.api import API_VERSION, KIND
from inferops.api.spec import InferenceBackendSpec
from inferops.api.status import ConsumerStatus, InferenceBackendStatus
from inferops.builders import CHILD_KINDS, Images, Owner, desired_children, ollama, router, vllm
from inferops.builders.common import (
    BACKEND_LABEL,
    COMPONENT_LABEL,
    DEFAULT_IMAGES,
    child_name,
    service_url,
)
from inferops.builders.network_policy import NetworkPolicyConfig
from inferops.drift import contains
from inferops.kube import Kube, KubeError, Obj, object_path, path
from inferops.migration import planner
from inferops.migration.observe import MigrationReader
from inferops.migration.planner import Event, Observations, stamp
from inferops.migration.probe import Prober, probe_targets
from inferops.status import EngineObservation, compute, ready_replicas
from inferops.validation import (
    describe_errors,
    name_conflicts,
    service_name_clashes,
    tried_children,
)

CHILD_KIND_NAMES = frozenset(kind for _, kind in CHILD_KINDS)


@dataclass(frozen=True)
class Outcome:
    """What one reconciliation did; `invalid` holds the InvalidSpec message."""

    phase: str
    writes: int
    invalid: str | None = None
    requeue_after: float | None = None
    """Seconds until the migration needs another look (a sample, a pause ending)."""


def _previous_status(body: Obj) -> InferenceBackendStatus:
    try:
        return InferenceBackendStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return InferenceBackendStatus()  # written by an older operator: start afresh


def _owned_by(obj: Obj, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences", []))


def _split(
    owner: Owner, objects: Mapping[tuple[str, str], Obj]
) -> tuple[dict[tuple[str, str], Obj], list[Obj]]:
    """The children this resource owns, by (kind, name), and its pods."""
    live = {
        k: o for k, o in objects.items() if k[0] in CHILD_KIND_NAMES and _owned_by(o, owner.uid)
    }
    pods = [o for k, o in objects.items() if k[0] == "Pod"]
    return live, pods


class Children(Protocol):
    """Where a reconciliation reads the children and pods of a resource (the watch cache),
    and reports its own writes to them."""

    def objects(self, namespace: str, name: str) -> dict[tuple[str, str], Obj]: ...

    def wrote(self, namespace: str, name: str, replaced: Obj | None, obj: Obj | None) -> None: ...


# A component's URL port in status; the router's URLs are the consumers' endpoints instead.
URL_PORTS = {vllm.ENGINE: vllm.PORT, ollama.ENGINE: ollama.PORT}


def _components(
    spec: InferenceBackendSpec, owner: Owner, live: dict[tuple[str, str], Obj]
) -> dict[str, int]:
    """Desired pods of every component the spec asks for (the Deployment's own count when
    the spec leaves it to an HPA or a person)."""
    wanted = {vllm.ENGINE: spec.vllm.replicas}
    if (fallback := ollama.enabled(spec)) is not None:
        wanted[ollama.ENGINE] = fallback.replicas
    if spec.consumers:
        wanted[router.COMPONENT] = spec.router.replicas
    return {
        component: replicas.desired(
            component, count, live.get(("Deployment", child_name(owner, component)))
        )
        for component, count in wanted.items()
    }


def _existing_components(owner: Owner, live: dict[tuple[str, str], Obj]) -> dict[str, int]:
    """The components that exist, for when the spec cannot be acted on."""
    out = {}
    for component in (vllm.ENGINE, ollama.ENGINE, router.COMPONENT):
        if deployment := live.get(("Deployment", child_name(owner, component))):
            out[component] = int(deployment["spec"].get("replicas", 1))
    return out


def _observe(
    owner: Owner, components: dict[str, int], live: dict[tuple[str, str], Obj], pods: list[Obj]
) -> list[EngineObservation]:
    return [
        EngineObservation(
            engine=component,
            desired=desired,
            url=service_url(owner, component, URL_PORTS[component])
            if component in URL_PORTS
            else None,
            deployment=live.get(("Deployment", child_name(owner, component))),
            pods=[p for p in pods if p["metadata"]["labels"].get(COMPONENT_LABEL) == component],
        )
        for component, desired in components.items()
    ]


def _manual_consumers(spec: InferenceBackendSpec, owner: Owner) -> list[ConsumerStatus]:
    """Each consumer of the spec with its Service and endpoint, at its spec weight."""
    return [
        ConsumerStatus(
            name=c.name,
            weight=c.weight,
            service=router.service_name(owner, c),
            endpoint=router.endpoint(owner, c),
        )
        for c in spec.consumers
    ]


@dataclass(frozen=True)
class Snapshot:
    """What one reconciliation read: the resource, its children, its pods."""

    owner: Owner
    generation: int | None
    spec: InferenceBackendSpec | None
    invalid: str | None
    """Why the spec cannot be acted on (schema or name conflicts)."""
    previous: InferenceBackendStatus
    live: dict[tuple[str, str], Obj]
    pods: list[Obj]

    @property
    def untried(self) -> bool:
        """The spec's children were never tried against the API server: the spec is new or
        changed (a generation not observed yet), or was refused."""
        return (self.generation != self.previous.observed_generation
                or self.previous.phase == "InvalidSpec")  # fmt: skip

    def ready(self, spec: InferenceBackendSpec) -> dict[str, bool]:
        """Engines with Ready pods; the routing table sends traffic only to those."""
        components = _components(spec, self.owner, self.live)
        observed = _observe(self.owner, components, self.live, self.pods)
        return {obs.engine: ready_replicas(obs) > 0 for obs in observed}


@dataclass(frozen=True)
class Decision:
    """What to write: children (None leaves them as they are), status, Events."""

    desired: list[Obj] | None
    status: InferenceBackendStatus
    events: list[Event]
    requeue_after: float | None


def decide(
    snap: Snapshot,
    migration: Observations | None,
    now: datetime,
    images: Images = DEFAULT_IMAGES,
    network_policy: NetworkPolicyConfig | None = None,
) -> Decision:
    """The pure middle of a reconciliation: from what was read to what to write."""
    spec, owner, previous = snap.spec, snap.owner, snap.previous
    if spec is None or snap.invalid is not None:
        # Progress is kept as it was: an invalid edit must not lose a migration's state.
        status = compute(
            generation=snap.generation,
            engines=_observe(owner, _existing_components(owner, snap.live), snap.live, snap.pods),
            previous=previous,
            now=stamp(now),
            invalid=snap.invalid or "invalid spec",
            consumers=previous.consumers,
            migration=previous.migration,
        )
        return Decision(None, status, _phase_events(previous, status), None)

    ready = snap.ready(spec)
    consumers = _manual_consumers(spec, owner)
    plan = None
    if spec.migration is not None and migration is not None:
        plan = planner.plan(spec, consumers, previous.consumers, previous.migration, migration, now)
        consumers = plan.consumers
        if plan.scale_down_ollama and spec.ollama is not None:
            spec = spec.model_copy(
                update={"ollama": spec.ollama.model_copy(update={"replicas": 0})}
            )
    weights = {c.name: c.weight for c in consumers}
    desired = desired_children(spec, owner, ready, weights, images, network_policy)
    status = compute(
        generation=snap.generation,
        engines=_observe(owner, _components(spec, owner, snap.live), snap.live, snap.pods),
        previous=previous,
        now=stamp(now),
        consumers=consumers,
        migration=plan.migration if plan else None,
        migrating=plan.condition.triple() if plan else None,
        failover=plan.failover_message if plan else None,
    )
    events = (plan.events if plan else []) + _phase_events(previous, status)
    return Decision(desired, status, events, plan.requeue_after if plan else None)


def _phase_events(previous: InferenceBackendStatus, status: InferenceBackendStatus) -> list[Event]:
    """One Event per change of phase, naming the Ready condition's reason."""
    if previous.phase == status.phase:
        return []
    ready = next(c for c in status.conditions if c.type == "Ready")
    kind = "Warning" if status.phase in ("Degraded", "InvalidSpec") else "Normal"
    return [Event(kind, ready.reason, f"{previous.phase} -> {status.phase}: {ready.message}")]


async def read(
    kube: Kube, body: Obj, children: Children, network_policy: NetworkPolicyConfig | None = None
) -> Snapshot:
    meta = body["metadata"]
    owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
    invalid: str | None = None
    spec: InferenceBackendSpec | None = None
    try:
        spec = InferenceBackendSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        invalid = describe_errors(error)
    live, pods = _split(owner, children.objects(owner.namespace, owner.name))
    snap = Snapshot(owner, meta.get("generation"), spec, invalid, _previous_status(body), live,
                    pods)  # fmt: skip
    if spec is not None:
        # Child names do not depend on weights or readiness. An untried spec's children are
        # checked by the dry run instead (`tried_children`), which answers this too.
        conflicts = service_name_clashes(spec, owner)
        if not conflicts and not snap.untried:
            desired = desired_children(spec, owner, network_policy=network_policy)
            conflicts = await name_conflicts(kube, desired, live)
        if conflicts:
            snap = replace(snap, invalid=conflicts)
    return snap


async def reconcile(
    kube: Kube,
    body: Obj,
    children: Children,
    log: logging.Logger,
    reader: MigrationReader | None = None,
    prober: Prober | None = None,
    now: datetime | None = None,
    images: Images = DEFAULT_IMAGES,
    network_policy: NetworkPolicyConfig | None = None,
) -> Outcome:
    """Read, decide (pure), write. Without a `reader`, migrations are not driven (the
    consumers' spec weights apply)."""
    now = now or datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    snap = await read(kube, body, children, network_policy)
    observations = None
    spec = snap.spec
    if reader is not None and spec is not None and spec.migration and snap.invalid is None:
        vllm_ready = snap.ready(spec).get(vllm.ENGINE, False)
        observations = await reader.observe(
            spec, snap.owner, body, snap.previous, snap.live, vllm_ready, now
        )
    decision = decide(snap, observations, now, images, network_policy)
    # A spec's children are tried (dry run) once, when the spec is new or was refused: later
    # changes (weights, readiness) come from a spec the API server already accepted, and a
    # dry run per changed child would double the requests of every reconciliation.
    refused = ""
    if decision.desired is not None and snap.untried:
        refused = await tried_children(kube, decision.desired, snap.live)
    if refused:
        # A child the API server refuses, or someone else's: apply none, as for any invalid
        # spec.
        snap = replace(snap, invalid=refused)
        decision = decide(snap, observations, now, images, network_policy)
    if snap.invalid is not None:
        log.error("invalid spec, children left unchanged: %s", snap.invalid)

    writes = 0
    if decision.desired is not None:
        writes += await _apply(kube, decision.desired, dict(snap.live), log, children)
    if decision.status.migration is not None:
        metrics.record_migration(snap.owner.namespace, snap.owner.name, snap.previous,
                                 decision.status)  # fmt: skip
    if decision.status != snap.previous:
        await kube.patch_status(body, _status_patch(snap.previous, decision.status))
        writes += 1
    for event in decision.events:
        log.info("%s/%s %s: %s", snap.owner.namespace, snap.owner.name, event.reason,
                 event.message)  # fmt: skip
        try:
            await kube.post_event(body, event.type, event.reason, event.message, stamp(now),
                                  "inferops-operator")  # fmt: skip
            writes += 1
        except KubeError as error:  # an Event is a courtesy: never fail a reconcile for one
            log.warning("could not post Event %s: %s", event.reason, error)
    if prober is not None and snap.spec is not None:
        prober.update(snap.owner.namespace, snap.owner.name,
                      probe_targets(snap.spec, snap.owner.namespace, decision.status,
                                    prober.router_url))  # fmt: skip
    return Outcome(
        phase=decision.status.phase,
        writes=writes,
        invalid=snap.invalid,
        requeue_after=decision.requeue_after,
    )


async def _apply(
    kube: Kube,
    desired: list[Obj],
    live: dict[tuple[str, str], Obj],
    log: logging.Logger,
    children: Children,
) -> int:
    """Applies what differs from the live objects, deletes owned objects no longer desired,
    and tells `children` of each write. Returns the number of writes."""
    writes = 0
    for obj in desired:
        meta = obj["metadata"]
        key = (obj["kind"], meta["name"])
        current = live.get(key)
        if current is not None and contains(current, obj):
            continue
        backend = meta["labels"][BACKEND_LABEL]
        writes += await _hand_over_replicas(kube, current, obj, log)
        log.info("%s/%s: applying %s %s", meta["namespace"], backend, *key)
        children.wrote(meta["namespace"], backend, current,
                       await kube.apply(replicas.as_created(current, obj)))  # fmt: skip
        writes += 1
    wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
    for key, obj in live.items():
        if key not in wanted:
            meta = obj["metadata"]
            backend = meta["labels"][BACKEND_LABEL]
            log.info("%s/%s: deleting %s %s, no longer in the spec", meta["namespace"], backend,
                     *key)  # fmt: skip
            await kube.delete(obj)
            children.wrote(meta["namespace"], backend, obj, None)
            writes += 1
    return writes


async def _hand_over_replicas(
    kube: Kube, current: Obj | None, obj: Obj, log: logging.Logger
) -> int:
    """Before an apply that leaves a Deployment's replicas out, hands them to a second field
    manager if the operator still owns them (`inferops.replicas`). The watch cache keeps no
    managedFields, so the live object is read; only on such an apply, never at rest.
    Returns the writes made."""
    if current is None or not replicas.leaves_replicas(obj):
        return 0
    handover = replicas.handover(await kube.get(object_path(obj)), obj, kube.field_manager)
    if handover is None:
        return 0
    meta = obj["metadata"]
    log.info("%s/%s: handing the replicas of Deployment %s over: the spec leaves them unset",
             meta["namespace"], meta["labels"][BACKEND_LABEL], meta["name"])  # fmt: skip
    await kube.apply(handover, field_manager=replicas.HANDOVER_MANAGER)
    return 1


def _status_patch(previous: InferenceBackendStatus, status: InferenceBackendStatus) -> Obj:
    """A merge patch that also clears fields the new status no longer has."""
    new = status.dump()
    return {key: new.get(key) for key in set(previous.dump()) | set(new)}


MAX_RETRY_DELAY = 300.0
MAX_CONCURRENT = 32
"""Reconciliations running at once; more would only queue for the API client's connections."""
SETTLE_SECONDS = 0.2
"""How long a child change waits for the rest of its burst (a rollout changes a Deployment,
its ReplicaSets and pods within milliseconds): one reconciliation then reads them all."""


class Reconciler:
    """Runs reconciliations one at a time per resource, and coalesces bursts of child
    events: they wait `SETTLE_SECONDS` for the rest of the burst, and while one run waits for
    its turn, further triggers for the same resource are dropped, since the waiting one will
    read the latest state anyway."""

    def __init__(
        self,
        kube: Kube,
        children: Children,
        log: logging.Logger,
        reader: MigrationReader | None = None,
        prober: Prober | None = None,
        images: Images = DEFAULT_IMAGES,
        network_policy: NetworkPolicyConfig | None = None,
    ) -> None:
        self.kube = kube
        self.children = children
        self.log = log
        self.images = images
        self.network_policy = network_policy
        self.reader = reader
        self.prober = prober
        self._timers: dict[tuple[str, str], tuple[float, asyncio.TimerHandle]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._users: collections.Counter[tuple[str, str]] = collections.Counter()
        self._queued: set[tuple[str, str]] = set()
        self._retries: dict[tuple[str, str], asyncio.Task[None]] = {}
        # A thousand resources created at once would otherwise each hold their built
        # children while waiting for the API: memory the allocator keeps afterwards.
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)

    def retry_later(self, namespace: str, name: str, delay: float = 5.0) -> None:
        """Runs again after `delay`, doubling it (up to 5 minutes) while the API keeps
        failing: for triggers kopf does not retry itself (child events). One pending retry
        per resource is enough, as it reads the state of its time."""
        key = (namespace, name)
        if key in self._retries:
            return

        async def later() -> None:
            await asyncio.sleep(delay)
            del self._retries[key]
            try:
                await self.run(namespace, name, coalesce=True)
            except KubeError as error:
                self.log.warning("reconciling %s/%s failed again: %s", namespace, name, error)
                self.retry_later(namespace, name, min(delay * 2, MAX_RETRY_DELAY))

        self._retries[key] = asyncio.create_task(later())

    def poke(self, namespace: str, name: str) -> None:
        """A child of the resource changed: reconcile it once its burst has settled."""
        self.schedule(namespace, name, SETTLE_SECONDS)

    def schedule(self, namespace: str, name: str, delay: float) -> None:
        """Runs again in `delay` seconds (a migration's next sample or step); an earlier
        timer already set for the resource wins, as that run schedules the next one."""
        key = (namespace, name)
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        if key in self._timers:
            if self._timers[key][0] <= when:
                return
            self._timers[key][1].cancel()

        def fire() -> None:
            del self._timers[key]
            task = asyncio.create_task(self.run(namespace, name, coalesce=True))
            task.add_done_callback(lambda t: self._after_timer(namespace, name, t))

        self._timers[key] = (when, loop.call_at(when, fire))

    def _after_timer(self, namespace: str, name: str, task: asyncio.Task[Outcome | None]) -> None:
        if not task.cancelled() and isinstance(task.exception(), KubeError):
            self.log.warning("reconciling %s/%s failed: %s", namespace, name, task.exception())
            self.retry_later(namespace, name)

    async def run(self, namespace: str, name: str, *, coalesce: bool = False) -> Outcome | None:
        key = (namespace, name)
        if coalesce and key in self._queued:
            return None
        self._queued.add(key)
        self._users[key] += 1
        try:
            async with self._locks.setdefault(key, asyncio.Lock()), self._slots:
                # Triggers that came while this run waited are covered by what it reads now.
                self._queued.discard(key)
                return await self._reconcile(namespace, name)
        finally:
            # A lock per resource ever seen would grow without bound: drop it with its last user.
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key]
                del self._locks[key]

    async def _reconcile(self, namespace: str, name: str) -> Outcome | None:
        body = await self.kube.get(path(API_VERSION, KIND, namespace, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            if self.prober is not None:
                self.prober.update(namespace, name, {})
            if self.reader is not None:
                self.reader.forget(namespace, name)
            return None  # deleted: the garbage collector removes the children
        body.setdefault("apiVersion", API_VERSION)
        body.setdefault("kind", KIND)
        started = time.perf_counter()
        try:
            outcome = await reconcile(
                self.kube, body, self.children, self.log, self.reader, self.prober,
                images=self.images, network_policy=self.network_policy,
            )  # fmt: skip
        except KubeError as error:
            if error.namespace_terminating:
                # Its deletion removes the resource too; recreating children is pointless.
                metrics.RECONCILES.labels(namespace=namespace, outcome="terminating").inc()
                return None
            metrics.RECONCILES.labels(namespace=namespace, outcome="error").inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        if outcome.requeue_after is not None:
            self.schedule(namespace, name, outcome.requeue_after)
        result = "invalid" if outcome.invalid else "ok"
        metrics.RECONCILES.labels(namespace=namespace, outcome=result).inc()
        return outcome
