"""The pure middle of a reconciliation: from what was read (a `Snapshot`) to what to write
(a `Plan`): the children to create, change and delete, the status, the Events and when to
look again. No I/O, no clock: `reconcile.read` gathers the snapshot, `execute` writes the
plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError

from inferops import replicas
from inferops.api.spec import InferenceBackendSpec
from inferops.api.status import ConsumerStatus, InferenceBackendStatus
from inferops.builders import Images, Owner, desired_children, ollama, router, vllm
from inferops.builders.common import COMPONENT_LABEL, DEFAULT_IMAGES, child_name, service_url
from inferops.builders.network_policy import NetworkPolicyConfig
from inferops.drift import contains
from inferops.kube import Obj
from inferops.migration import planner, shadow
from inferops.migration.planner import Event, Observations, stamp
from inferops.registry import KINDS
from inferops.status import EngineObservation, compute, ready_replicas

CHILD_KIND_NAMES = frozenset(k.kind for k in KINDS if k.role in ("child", "shared"))
"""Kinds whose objects labelled for a backend and owned by it are its children. A shared
kind's are never wanted any more: the ServiceAccount, Role and RoleBinding each router had
before the namespace's identity (`inferops.identities`), deleted here after an upgrade."""


def previous_status(body: Obj) -> InferenceBackendStatus:
    try:
        return InferenceBackendStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return InferenceBackendStatus()  # written by an older operator: start afresh


def _owned_by(obj: Obj, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences", []))


def split(
    owner: Owner, objects: Mapping[tuple[str, str], Obj]
) -> tuple[dict[tuple[str, str], Obj], list[Obj]]:
    """The children this resource owns, by (kind, name), and its pods."""
    live = {
        k: o for k, o in objects.items() if k[0] in CHILD_KIND_NAMES and _owned_by(o, owner.uid)
    }
    pods = [o for k, o in objects.items() if k[0] == "Pod"]
    return live, pods


# A component's URL port in status; the router's URLs are the consumers' endpoints instead.
URL_PORTS = {vllm.ENGINE: vllm.PORT, ollama.ENGINE: ollama.PORT, vllm.EMBEDDINGS: vllm.PORT}


def _components(
    spec: InferenceBackendSpec, owner: Owner, live: dict[tuple[str, str], Obj]
) -> dict[str, int]:
    """Desired pods of every component the spec asks for (the Deployment's own count when
    the spec leaves it to an HPA or a person)."""
    wanted = {vllm.ENGINE: spec.vllm.replicas}
    if (fallback := ollama.enabled(spec)) is not None:
        wanted[ollama.ENGINE] = fallback.replicas
    if spec.vllm.embeddings is not None:
        wanted[vllm.EMBEDDINGS] = spec.vllm.embeddings.replicas
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
    for component in (vllm.ENGINE, ollama.ENGINE, vllm.EMBEDDINGS, router.COMPONENT):
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
        return (
            self.generation != self.previous.observed_generation
            or self.previous.phase == "InvalidSpec"
        )

    def ready(self, spec: InferenceBackendSpec) -> dict[str, bool]:
        """Engines with Ready pods; the routing table sends traffic only to those."""
        components = _components(spec, self.owner, self.live)
        observed = _observe(self.owner, components, self.live, self.pods)
        return {obs.engine: ready_replicas(obs) > 0 for obs in observed}


@dataclass(frozen=True)
class Plan:
    """What to write. `desired` is every child the spec asks for (None: the spec cannot be
    acted on, children stay as they are); `create`, `update` and `delete` are the writes it
    takes from the live children; `status_patch` is None when the status is unchanged."""

    desired: list[Obj] | None
    status: InferenceBackendStatus
    events: list[Event]
    requeue_after: float | None
    create: list[Obj] = field(default_factory=list)
    update: list[tuple[Obj, Obj]] = field(default_factory=list)
    """(live, desired) of each existing child that no longer carries what is wanted."""
    delete: list[Obj] = field(default_factory=list)
    status_patch: Obj | None = None


Decision = Plan
"""The name the tests of the middle use."""


def changes(
    desired: list[Obj], live: Mapping[tuple[str, str], Obj]
) -> tuple[list[Obj], list[tuple[Obj, Obj]], list[Obj]]:
    """The children to create (not live), to update (live, but not containing what is
    wanted) and to delete (owned, no longer wanted)."""
    create, update = [], []
    for obj in desired:
        current = live.get((obj["kind"], obj["metadata"]["name"]))
        if current is None:
            create.append(replicas.as_created(None, obj))
        elif not contains(current, obj):
            update.append((current, obj))
    wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
    delete = [obj for key, obj in live.items() if key not in wanted]
    return create, update, delete


def _plan(
    previous: InferenceBackendStatus,
    desired: list[Obj] | None,
    live: Mapping[tuple[str, str], Obj],
    status: InferenceBackendStatus,
    events: list[Event],
    requeue_after: float | None,
) -> Plan:
    create, update, delete = changes(desired, live) if desired is not None else ([], [], [])
    patch = _status_patch(previous, status) if status != previous else None
    return Plan(desired, status, events, requeue_after, create, update, delete, patch)


def decide(
    snap: Snapshot,
    migration: Observations | None,
    now: datetime,
    images: Images = DEFAULT_IMAGES,
    network_policy: NetworkPolicyConfig | None = None,
) -> Plan:
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
        return _plan(previous, None, snap.live, status, _phase_events(previous, status), None)

    ready = snap.ready(spec)
    consumers = _manual_consumers(spec, owner)
    rollout = None
    if spec.migration is not None and migration is not None:
        rollout = planner.plan(
            spec, consumers, previous.consumers, previous.migration, migration, now
        )
        consumers = rollout.consumers
        if rollout.scale_down_ollama and spec.ollama is not None:
            spec = spec.model_copy(
                update={"ollama": spec.ollama.model_copy(update={"replicas": 0})}
            )
    weights = {c.name: c.weight for c in consumers}
    embeddings = {c.name: c.embeddings.weight for c in consumers if c.embeddings is not None}
    mirrors = (
        shadow.mirrors(spec.migration, consumers, rollout.migration.failover) if rollout else {}
    )
    desired = _withhold_table(
        desired_children(
            spec,
            owner,
            ready,
            weights,
            images,
            network_policy,
            mirrors=mirrors,
            embeddings=embeddings,
        ),
        owner,
        ready,
        snap.live,
    )
    status = compute(
        generation=snap.generation,
        engines=_observe(owner, _components(spec, owner, snap.live), snap.live, snap.pods),
        previous=previous,
        now=stamp(now),
        consumers=consumers,
        migration=rollout.migration if rollout else None,
        migrating=rollout.condition.triple() if rollout else None,
        failover=rollout.failover_message if rollout else None,
        watch=rollout.watch_message if rollout else None,
    )
    events = (rollout.events if rollout else []) + _phase_events(previous, status)
    return _plan(
        previous, desired, snap.live, status, events, rollout.requeue_after if rollout else None
    )


def _withhold_table(
    desired: list[Obj], owner: Owner, ready: Mapping[str, bool], live: Mapping[tuple[str, str], Obj]
) -> list[Obj]:
    """A new backend's routing table waits for an engine with a Ready pod. Before that the
    routers have nothing to send traffic to (without a table they wait for it, not Ready,
    as they would be anyway), and the table is then written once, knowing its engines'
    readiness, instead of once with none ready and again when they come up: a request per
    new backend. A table written once stays, whatever its engines do later."""
    key = ("ConfigMap", router.name(owner))
    if any(ready.values()) or key in live:
        return desired
    return [obj for obj in desired if (obj["kind"], obj["metadata"]["name"]) != key]


def _phase_events(previous: InferenceBackendStatus, status: InferenceBackendStatus) -> list[Event]:
    """One Event per change of phase, naming the Ready condition's reason. A new resource's
    first step, to Progressing, gets none: `kubectl get` shows it, and at a thousand new
    resources it would be a thousand requests saying nothing went wrong."""
    if previous.phase == status.phase:
        return []
    if previous.observed_generation is None and status.phase == "Progressing":
        return []
    ready = next(c for c in status.conditions if c.type == "Ready")
    kind = "Warning" if status.phase in ("Degraded", "InvalidSpec") else "Normal"
    return [Event(kind, ready.reason, f"{previous.phase} -> {status.phase}: {ready.message}")]


def _status_patch(previous: InferenceBackendStatus, status: InferenceBackendStatus) -> Obj:
    """A merge patch that also clears fields the new status no longer has."""
    new = status.dump()
    return {key: new.get(key) for key in set(previous.dump()) | set(new)}
