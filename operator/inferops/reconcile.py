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
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from inferops import metrics
from inferops.api import API_VERSION, KIND
from inferops.api.spec import InferenceBackendSpec
from inferops.api.status import ConsumerStatus, InferenceBackendStatus
from inferops.builders import CHILD_KINDS, Owner, desired_children, ollama, router, vllm
from inferops.builders.common import BACKEND_LABEL, COMPONENT_LABEL, child_name, service_url
from inferops.drift import contains
from inferops.kube import Kube, KubeError, Obj, path
from inferops.status import EngineObservation, compute, ready_replicas
from inferops.validation import describe_errors, name_conflicts


@dataclass(frozen=True)
class Outcome:
    """What one reconciliation did; `invalid` holds the InvalidSpec message."""

    phase: str
    writes: int
    invalid: str | None = None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def _components(spec: InferenceBackendSpec) -> dict[str, int]:
    """Desired pods of every component the spec asks for."""
    out = {vllm.ENGINE: spec.vllm.replicas}
    if (fallback := ollama.enabled(spec)) is not None:
        out[ollama.ENGINE] = fallback.replicas
    if spec.consumers:
        out[router.COMPONENT] = spec.router.replicas
    return out


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


def _consumers(spec: InferenceBackendSpec | None, owner: Owner) -> list[ConsumerStatus]:
    if spec is None:
        return []
    return [
        ConsumerStatus(
            name=c.name,
            weight=c.weight,
            service=router.service_name(owner, c),
            endpoint=router.endpoint(owner, c),
        )
        for c in spec.consumers
    ]


async def reconcile(kube: Kube, body: Obj, log: logging.Logger) -> Outcome:
    meta = body["metadata"]
    owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
    writes = 0
    invalid: str | None = None
    spec: InferenceBackendSpec | None = None
    try:
        spec = InferenceBackendSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        invalid = describe_errors(error)

    live = await _owned_children(kube, owner)
    pods = await kube.list(path("v1", "Pod", owner.namespace), f"{BACKEND_LABEL}={owner.name}")
    if spec is not None:
        components = _components(spec)
        # Engines without Ready pods get no traffic: the routing table carries readiness.
        ready = {
            obs.engine: ready_replicas(obs) > 0 for obs in _observe(owner, components, live, pods)
        }
        desired = desired_children(spec, owner, ready)
        conflicts = await name_conflicts(kube, desired, live)
        if conflicts:
            invalid = conflicts
        else:
            writes += await _apply(kube, desired, live, log)
    if invalid is not None:
        log.error("invalid spec, children left unchanged: %s", invalid)

    previous = _previous_status(body)
    valid_spec = spec if invalid is None else None
    components = _components(valid_spec) if valid_spec else _existing_components(owner, live)
    status = compute(
        generation=meta.get("generation"),
        engines=_observe(owner, components, live, pods),
        previous=previous,
        now=_now(),
        invalid=invalid,
        consumers=_consumers(valid_spec, owner),
    )
    if status != previous:
        await kube.patch_status(body, _status_patch(previous, status))
        writes += 1
    return Outcome(phase=status.phase, writes=writes, invalid=invalid)


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
        log.info("applying %s %s", *key)
        live[key] = await kube.apply(obj)
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

    def __init__(self, kube: Kube, log: logging.Logger) -> None:
        self.kube = kube
        self.log = log
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
            return None  # deleted: the garbage collector removes the children
        body.setdefault("apiVersion", API_VERSION)
        body.setdefault("kind", KIND)
        started = time.perf_counter()
        try:
            outcome = await reconcile(self.kube, body, self.log)
        except KubeError as error:
            if error.namespace_terminating:
                # Its deletion removes the resource too; recreating children is pointless.
                metrics.RECONCILES.labels(namespace=namespace, outcome="terminating").inc()
                return None
            metrics.RECONCILES.labels(namespace=namespace, outcome="error").inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        result = "invalid" if outcome.invalid else "ok"
        metrics.RECONCILES.labels(namespace=namespace, outcome=result).inc()
        return outcome
