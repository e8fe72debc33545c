"""One level-triggered reconciliation of an InferenceBackend, in three parts: read (one
snapshot of the resource, its children and pods from the watch cache, and what the API
server would refuse of a changed claim), plan (pure: `inferops.plan`), execute (the writes:
`inferops.execute`).

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
from typing import Protocol

from pydantic import ValidationError

from inferops import metrics
from inferops.api import API_VERSION, KIND
from inferops.api.spec import InferenceBackendSpec
from inferops.bodies import Bodies
from inferops.builders import Images, Owner, desired_children, vllm
from inferops.builders.common import DEFAULT_IMAGES
from inferops.builders.network_policy import NetworkPolicyConfig
from inferops.execute import write_children, write_status
from inferops.kube import Kube, KubeError, Obj, path
from inferops.migration.observe import MigrationReader
from inferops.migration.planner import stamp
from inferops.migration.probe import Prober, probe_targets
from inferops.plan import Decision, Plan, Snapshot, decide, previous_status, split
from inferops.validation import (
    describe_errors,
    service_name_clashes,
    tried_again,
    tried_changes,
)


@dataclass(frozen=True)
class Outcome:
    """What one reconciliation did; `invalid` holds the InvalidSpec message."""

    phase: str
    writes: int
    invalid: str | None = None
    requeue_after: float | None = None
    """Seconds until the migration needs another look (a sample, a pause ending)."""
    body: Obj | None = None
    """The resource as this run's status patch left it (None: no status patch)."""


class Children(Protocol):
    """Where a reconciliation reads the children and pods of a resource (the watch cache),
    and reports its own writes to them."""

    def objects(self, namespace: str, name: str) -> dict[tuple[str, str], Obj]: ...

    def wrote(self, namespace: str, name: str, replaced: Obj | None, obj: Obj | None) -> None: ...


async def read(
    kube: Kube, body: Obj, children: Children, network_policy: NetworkPolicyConfig | None = None
) -> Snapshot:
    """The snapshot a plan is made from: the spec (or why it is invalid), the previous
    status, the owned children and pods from the watch cache. A spec not tried yet (new,
    changed or refused before) also gets its changed claims dry-run: the one refusal our
    models cannot foresee (`validation.tried_changes`); a spec found InvalidSpec before at
    the same generation is tried in full instead (`validation.tried_again`), which writes
    nothing."""
    meta = body["metadata"]
    owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
    invalid: str | None = None
    spec: InferenceBackendSpec | None = None
    try:
        spec = InferenceBackendSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        invalid = describe_errors(error)
    live, pods = split(owner, children.objects(owner.namespace, owner.name))
    snap = Snapshot(owner, meta.get("generation"), spec, invalid, previous_status(body), live, pods)
    if spec is not None:
        problems = service_name_clashes(spec, owner)
        if not problems and snap.untried:
            desired = desired_children(spec, owner, network_policy=network_policy)
            refused_before = (
                snap.previous.phase == "InvalidSpec"
                and snap.previous.observed_generation == snap.generation
            )
            check = tried_again if refused_before else tried_changes
            problems = await check(kube, desired, live)
        if problems:
            snap = replace(snap, invalid=problems)
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
    """Read, plan (pure), execute. Without a `reader`, migrations are not driven (the
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
    plan = decide(snap, observations, now, images, network_policy)
    writes, created = 0, False
    if plan.desired is not None:
        written = await write_children(kube, plan, snap.owner, log, children)
        created = bool(plan.create) and not written.refused
        writes += written.writes
        if written.refused:
            # A new child the API server refuses, or someone else's: the run's creations
            # were undone; the resource is InvalidSpec like any invalid spec.
            snap = replace(snap, invalid=written.refused)
            plan = decide(snap, observations, now, images, network_policy)
    if snap.invalid is not None:
        log.error("invalid spec, children left unchanged: %s", snap.invalid)
    if plan.status.migration is not None:
        metrics.record_migration(snap.owner.namespace, snap.owner.name, snap.previous, plan.status)
    status_writes, patched = 0, None
    # A run that created children leaves the status (and its Events) to the run their watch
    # events trigger, which sees them: what this one would write is stale already, and a
    # thousand new backends would pay a request each for it. Not during a migration, whose
    # samples taken in this run must be recorded now.
    if not (created and plan.status.migration is None):
        status_writes, patched = await write_status(kube, body, plan, log, stamp(now))
    writes += status_writes
    if prober is not None and snap.spec is not None:
        prober.update(
            snap.owner.namespace,
            snap.owner.name,
            probe_targets(snap.spec, snap.owner.namespace, plan.status, prober.router_url),
        )
    return Outcome(
        phase=plan.status.phase,
        writes=writes,
        invalid=snap.invalid,
        requeue_after=plan.requeue_after,
        body=patched,
    )


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
        bodies: Bodies | None = None,
    ) -> None:
        """`bodies`: the resources as last seen (kopf's watch), read instead of a GET."""
        self.kube = kube
        self.bodies = bodies
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
        body = self.bodies.get(namespace, name) if self.bodies is not None else None
        if body is None:
            body = await self.kube.get(path(API_VERSION, KIND, namespace, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            if self.bodies is not None:
                self.bodies.forget(namespace, name)
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
                self.kube,
                body,
                self.children,
                self.log,
                self.reader,
                self.prober,
                images=self.images,
                network_policy=self.network_policy,
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
        if outcome.body is not None and self.bodies is not None:
            self.bodies.seen(outcome.body)
        if outcome.requeue_after is not None:
            self.schedule(namespace, name, outcome.requeue_after)
        result = "invalid" if outcome.invalid else "ok"
        metrics.RECONCILES.labels(namespace=namespace, outcome=result).inc()
        return outcome


__all__ = ["Decision", "Outcome", "Plan", "Reconciler", "Snapshot", "decide", "read", "reconcile"]
