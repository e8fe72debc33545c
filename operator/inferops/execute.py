"""Writes a reconciliation's plan: one server-side apply per child that must be created or
changed, one delete per child no longer wanted, one status patch, the plan's Events.

Creating a child never takes over someone else's object of the same name: a child the watch
cache does not have is applied with a resourceVersion no stored object has
(`CREATE_ONLY_VERSION`), so the API server creates it when the name is free and answers
409 Conflict when something exists there; only then is that object read (one GET) to tell
a stranger's object (a conflict) from this resource's own or an earlier incarnation's.

A new set of children is all or nothing: when the API server refuses one of them (a rule
our models do not check) or one is someone else's, the children created before it in the
same run are deleted again and the resource is InvalidSpec with a message naming the spec
section, the child, and the server's reason or the owner problem. The one refusal known to
be beyond the schema on a change (a claim's immutable fields) is caught before any write
by `reconcile.read`'s dry run; any other refused change leaves what was applied before it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from inferops import replicas
from inferops.builders.common import BACKEND_LABEL, Owner
from inferops.kube import Kube, KubeError, Obj, object_path
from inferops.plan import Plan
from inferops.validation import conflict, from_earlier_incarnation, refusal, refused_for_good

CREATE_ONLY_VERSION = "1"
"""A resourceVersion no child can have (etcd's first revision belongs to the cluster's
bootstrap): server-side apply then creates a missing object and refuses an existing one."""


class Children(Protocol):
    """Where the executor reports its writes (the watch cache), so a run right after this
    one does not apply them again before their watch events arrive."""

    def wrote(self, namespace: str, name: str, replaced: Obj | None, obj: Obj | None) -> None: ...


@dataclass(frozen=True)
class Written:
    """What writing the children did: how many writes, and the reason the new children
    could not be written (an InvalidSpec message; those created in the run were deleted)."""

    writes: int
    refused: str = ""


def _backend(obj: Obj) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta["namespace"], meta["labels"][BACKEND_LABEL]


async def write_children(
    kube: Kube, plan: Plan, owner: Owner, log: logging.Logger, children: Children
) -> Written:
    """Creates, then changes, then deletes the plan's children; stops at a refused or
    conflicting new child (see the module's docstring)."""
    created, refused = await _create(kube, plan.create, owner, log, children)
    if refused:
        for obj in created:
            log.info(
                "%s/%s: deleting %s %s again: %s",
                *_backend(obj),
                obj["kind"],
                obj["metadata"]["name"],
                "a sibling was refused",
            )
            await kube.delete(obj)
            children.wrote(*_backend(obj), obj, None)
        return Written(2 * len(created), refused)
    writes = len(created)
    for current, obj in plan.update:
        writes += await _hand_over_replicas(kube, current, obj, log)
        log.info("%s/%s: applying %s %s", *_backend(obj), obj["kind"], obj["metadata"]["name"])
        try:
            answer = await kube.apply(obj)
        except KubeError as error:
            if not refused_for_good(error):
                raise
            return Written(writes, refusal(obj, error))
        children.wrote(*_backend(obj), current, answer)
        writes += 1
    for obj in plan.delete:
        log.info(
            "%s/%s: deleting %s %s, no longer in the spec",
            *_backend(obj),
            obj["kind"],
            obj["metadata"]["name"],
        )
        await kube.delete(obj)
        children.wrote(*_backend(obj), obj, None)
        writes += 1
    return Written(writes)


async def _create(
    kube: Kube, new: list[Obj], owner: Owner, log: logging.Logger, children: Children
) -> tuple[list[Obj], str]:
    """Applies the new children one after another, each only if its name is free, and stops
    at the first that cannot be (a later run that tries the spec again names every problem:
    `validation.tried_again`). One at a time: a thousand new backends at once would
    otherwise queue hundreds of requests on the client's connections. Returns the objects
    created and what stops the set (empty when nothing does)."""
    created: list[Obj] = []
    for obj in new:
        meta = obj["metadata"]
        log.info("%s/%s: creating %s %s", *_backend(obj), obj["kind"], meta["name"])
        answer: Obj | str | None
        try:
            answer = await create_only(kube, obj, partial(_ours, obj=obj, owner=owner))
        except KubeError as error:
            if not refused_for_good(error):
                raise  # not about the object (API server unavailable): retried
            answer = refusal(obj, error)
        if answer is None:
            answer = conflict(obj)
        if isinstance(answer, str):
            return created, answer
        children.wrote(*_backend(obj), None, answer)
        created.append(answer)
    return created, ""


async def create_only(kube: Kube, obj: Obj, ours: Callable[[Obj], bool]) -> Obj | None:
    """Applies `obj` only where its name is free (`CREATE_ONLY_VERSION`), or over the object
    there when `ours` says it is the operator's; None when it is someone else's."""
    only_new = {**obj["metadata"], "resourceVersion": CREATE_ONLY_VERSION}
    try:
        return await kube.apply({**obj, "metadata": only_new})
    except KubeError as error:
        if error.status != 409:
            raise
    existing = await kube.get(object_path(obj))
    if existing is None:
        raise KubeError(409, f"{obj['kind']} {obj['metadata']['name']} vanished; again")
    return await kube.apply(obj) if ours(existing) else None


def _ours(existing: Obj, obj: Obj, owner: Owner) -> bool:
    """A new child's name is taken by this resource's own object (not in the cache yet) or
    an earlier incarnation's (a deleted resource of the same name, not yet
    garbage-collected)."""
    refs = existing["metadata"].get("ownerReferences", [])
    return any(ref.get("uid") == owner.uid for ref in refs) or from_earlier_incarnation(
        existing, obj
    )


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
    log.info(
        "%s/%s: handing the replicas of Deployment %s over: the spec leaves them unset",
        meta["namespace"],
        meta["labels"][BACKEND_LABEL],
        meta["name"],
    )
    await kube.apply(handover, field_manager=replicas.HANDOVER_MANAGER)
    return 1


async def write_status(
    kube: Kube, body: Obj, plan: Plan, log: logging.Logger, now: str
) -> tuple[int, Obj | None]:
    """The one status patch (if the status changed) and the plan's Events. Returns the
    writes and the resource as the status patch left it."""
    writes, answer = 0, None
    if plan.status_patch is not None:
        answer = await kube.patch_status(body, plan.status_patch)
        writes += 1
    meta = body["metadata"]
    for event in plan.events:
        log.info("%s/%s %s: %s", meta["namespace"], meta["name"], event.reason, event.message)
        try:
            await kube.post_event(
                body, event.type, event.reason, event.message, now, "inferops-operator"
            )
            writes += 1
        except KubeError as error:  # an Event is a courtesy: never fail a reconcile for one
            log.warning("could not post Event %s: %s", event.reason, error)
    return writes, answer


__all__ = ["CREATE_ONLY_VERSION", "Children", "Written", "write_children", "write_status"]
