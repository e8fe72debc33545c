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
from dataclasses import dataclass, replace
from datetime import UTC, datetime

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
from inferops.drift import contains
from inferops.kube import Kube, KubeError, Obj, path
from inferops.migration import planner
from inferops.migration.observe import MigrationReader
from inferops.migration.planner import Event, Observations, stamp
from inferops.migration.probe import Prober, probe_targets
from inferops.status import EngineObservation, compute, ready_replicas
from inferops.validation import describe_errors, name_conflicts, service_name_clashes


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


async def _owned_children(kube: Kube, owner: Owner) -> dict[tuple[str, str], Obj]:
    """Live objects this resource owns, by (kind, name)."""
    selector = f"{BACKEND_LABEL}={owner.name}"
    found: dict[tuple[str, str], Obj] = {}
    for api_version, kind in CHILD_KINDS:
        for obj in await kube.list(path(api_version, kind, owner.namespace), selector):
            if _owned_by(obj, owner.uid):
                obj.setdefault("apiVersion", api_version)
                obj.setdefault("kind", kind)
                found[(kind, obj["metadata"]["name"])] = obj
    return found


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
    desired = desired_children(spec, owner, ready, weights, images)
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


async def read(kube: Kube, body: Obj) -> Snapshot:
    meta = body["metadata"]
    owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
    invalid: str | None = None
    spec: InferenceBackendSpec | None = None
    try:
        spec = InferenceBackendSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        invalid = describe_errors(error)
    live = await _owned_children(kube, owner)
    pods = await kube.list(path("v1", "Pod", owner.namespace), f"{BACKEND_LABEL}={owner.name}")
    snap = Snapshot(owner, meta.get("generation"), spec, invalid, _previous_status(body), live,
                    pods)  # fmt: skip
    if spec is not None:
        # Child names do not depend on weights or readiness.
        conflicts = service_name_clashes(spec, owner) or await name_conflicts(
            kube, desired_children(spec, owner), live
        )
        if conflicts:
            snap = replace(snap, invalid=conflicts)
    return snap


async def reconcile(
    kube: Kube,
    body: Obj,
    log: logging.Logger,
    reader: MigrationReader | None = None,
    prober: Prober | None = None,
    now: datetime | None = None,
    images: Images = DEFAULT_IMAGES,
) -> Outcome:
    """Read, decide (pure), write. Without a `reader`, migrations are not driven (the
    consumers' spec weights apply)."""
    now = now or datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    snap = await read(kube, body)
    observations = None
    spec = snap.spec
    if reader is not None and spec is not None and spec.migration and snap.invalid is None:
        vllm_ready = snap.ready(spec).get(vllm.ENGINE, False)
        observations = await reader.observe(
            spec, snap.owner, body, snap.previous, snap.live, vllm_ready, now
        )
    decision = decide(snap, observations, now, images)
    if snap.invalid is not None:
        log.error("invalid spec, children left unchanged: %s", snap.invalid)

    writes = 0
    if decision.desired is not None:
        writes += await _apply(kube, decision.desired, dict(snap.live), log)
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
    kube: Kube, desired: list[Obj], live: dict[tuple[str, str], Obj], log: logging.Logger
) -> int:
    """Applies what differs from the live objects, deletes owned objects no longer desired,
    and keeps `live` current. Returns the number of writes."""
    writes = 0
    for obj in desired:
        key = (obj["kind"], obj["metadata"]["name"])
        current = live.get(key)
        if current is not None and contains(current, obj):
            continue
        if (handover := replicas.handover(current, obj, kube.field_manager)) is not None:
            log.info("handing the replicas of %s %s over: the spec leaves them unset", *key)
            await kube.apply(handover, field_manager=replicas.HANDOVER_MANAGER)
            writes += 1
        log.info("applying %s %s", *key)
        live[key] = await kube.apply(replicas.as_created(current, obj))
        writes += 1
    wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
    for key, obj in list(live.items()):
        if key not in wanted:
            log.info("deleting %s %s, no longer in the spec", *key)
            await kube.delete(obj)
            del live[key]
            writes += 1
    return writes


def _status_patch(previous: InferenceBackendStatus, status: InferenceBackendStatus) -> Obj:
    """A merge patch that also clears fields the new status no longer has."""
    new = status.dump()
    return {key: new.get(key) for key in set(previous.dump()) | set(new)}


MAX_RETRY_DELAY = 300.0


class Reconciler:
    """Runs reconciliations one at a time per resource, and coalesces bursts of child
    events: while one waits for its turn, further triggers for the same resource are
    dropped, since the waiting one will read the latest state anyway."""

    def __init__(
        self,
        kube: Kube,
        log: logging.Logger,
        reader: MigrationReader | None = None,
        prober: Prober | None = None,
        images: Images = DEFAULT_IMAGES,
    ) -> None:
        self.kube = kube
        self.log = log
        self.images = images
        self.reader = reader
        self.prober = prober
        self._timers: dict[tuple[str, str], tuple[float, asyncio.TimerHandle]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._users: collections.Counter[tuple[str, str]] = collections.Counter()
        self._queued: set[tuple[str, str]] = set()
        self._retries: dict[tuple[str, str], asyncio.Task[None]] = {}

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
            async with self._locks.setdefault(key, asyncio.Lock()):
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
                self.kube, body, self.log, self.reader, self.prober, images=self.images
            )
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
