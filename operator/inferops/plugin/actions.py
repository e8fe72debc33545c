"""One-shot actions (`promote`, `pause`, `resume`, `abort`, `retry`): request, then wait for
the acknowledgement.

The request is JSON in the `inferops.io/action` annotation, where GitOps never writes, so a
sync cannot undo it; the operator handles it once and copies its id to
`status.migration.lastAction`, with the result. Choosing the consumer and refusing requests
that cannot apply are pure functions of the resource (`plan`); the operator re-checks
everything, the local checks only spare the user a round trip and a confusing rejection.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from inferops.api import API_VERSION, KIND, SINGULAR
from inferops.api.migration import (
    ACTION_ANNOTATION,
    ACTION_REFUSALS,
    ACTIONS,
    APPLIES_TO,
    IN_PROGRESS,
    STOPPED,
    action_request,
    last_action_id,
)
from inferops.kube import Kube, KubeError, path

Obj = dict[str, Any]

CONFLICT_RETRIES = 5


class Refused(Exception):
    """The request cannot apply; nothing was written. The text says why."""


@dataclass(frozen=True)
class Outcome:
    """What the command prints, and its exit code: 0 done, 1 refused or rejected, 2 no
    acknowledgement in time."""

    code: int
    message: str


def _dict(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Obj]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def ref(obj: Obj) -> str:
    meta = _dict(obj.get("metadata"))
    return f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"


def consumer_names(obj: Obj) -> list[str]:
    """The consumers in spec order."""
    return [str(c["name"]) for c in _list(_dict(obj.get("spec")).get("consumers")) if "name" in c]


def consumer_status(obj: Obj, name: str) -> Obj | None:
    consumers = _list(_dict(obj.get("status")).get("consumers"))
    return next((c for c in consumers if c.get("name") == name), None)


def pending_request(obj: Obj) -> Obj | None:
    """The request in the annotation when the operator has not acknowledged it yet. An
    unreadable annotation is not pending: the operator cannot acknowledge it, so a new
    request replaces it."""
    request = action_request(obj)
    if not isinstance(request, dict):
        return None
    return None if request["id"] == last_action_id(obj) else request


def _names(obj: Obj) -> str:
    return ", ".join(consumer_names(obj)) or "(none)"


def select_consumer(obj: Obj, action: str, consumer: str | None) -> str:
    """The named consumer if it exists; else the one the action naturally applies to: the
    consumer in progress, or for retry the first one rolled back or aborted."""
    if consumer is not None:
        if consumer not in consumer_names(obj):
            raise Refused(f"{ref(obj)} has no consumer {consumer!r}; name one of: {_names(obj)}")
        return consumer
    wanted = STOPPED if action == "retry" else IN_PROGRESS
    for status in _list(_dict(obj.get("status")).get("consumers")):
        if action == "ack":
            if _dict(status.get("features")).get("held") and "name" in status:
                return str(status["name"])
        elif status.get("phase") in wanted and "name" in status:
            return str(status["name"])
    what = {
        "retry": "is rolled back or aborted",
        "ack": "is held for features vLLM would not honour",
    }.get(action, "is in progress")
    raise Refused(f"no consumer of {ref(obj)} {what}; name one of: {_names(obj)}")


def check_phase(obj: Obj, action: str, consumer: str) -> None:
    """Refuses an action that obviously does not apply to the consumer's phase. Without a
    status for the consumer yet, the operator decides."""
    status = consumer_status(obj, consumer)
    if status is None or "phase" not in status:
        return
    phase = str(status["phase"])
    paused = bool(status.get("paused"))
    if action == "pause" and paused:
        raise Refused(f"{consumer} is already paused")
    if action == "resume":
        held_by_spec = bool(_dict(_dict(obj.get("spec")).get("migration")).get("paused"))
        if paused or (phase == "Paused" and not held_by_spec):
            return
        if held_by_spec:
            raise Refused(
                f"{consumer} is held by spec.migration.paused, not by kubectl ib pause; "
                "set spec.migration.paused to false"
            )
        raise Refused(f"{consumer} is not paused (phase {phase})")
    if phase not in APPLIES_TO[action]:
        raise Refused(f"{consumer} is {phase}: {ACTION_REFUSALS[action]}")
    total = len(_list(_dict(_dict(obj.get("spec")).get("migration")).get("steps")))
    if action == "promote" and total and status.get("step") == total:
        meta = _dict(obj.get("metadata"))
        full = f"kubectl ib promote {meta.get('name')} {consumer} --full -n {meta.get('namespace')}"
        raise Refused(
            f"{consumer} is at its last step ({total}/{total}, {status.get('weight', '?')}%): "
            f"its analysis at 100% marks it Migrated; `{full}` marks it Migrated now, "
            "without that analysis"
        )


def plan(obj: Obj, action: str, consumer: str | None) -> str:
    """Checks that the request can apply and returns the consumer it is for; raises Refused
    with the reason otherwise."""
    if action not in ACTIONS:
        raise Refused(f"unknown action {action!r}; one of: {', '.join(ACTIONS)}")
    if not isinstance(_dict(obj.get("spec")).get("migration"), dict):
        raise Refused(
            f"{ref(obj)} has no spec.migration: weights are set in spec.consumers[].weight"
        )
    pending = pending_request(obj)
    if pending is not None:
        what = f"{pending.get('action', '?')} {pending.get('consumer', '')}".rstrip()
        meta = _dict(obj.get("metadata"))
        raise Refused(
            f"an earlier request ({what}) is not acknowledged yet; is the operator running? "
            f"To drop it: kubectl annotate {SINGULAR} -n {meta.get('namespace')} "
            f"{meta.get('name')} {ACTION_ANNOTATION}-"
        )
    chosen = select_consumer(obj, action, consumer)
    check_phase(obj, action, chosen)
    return chosen


def new_request(action: str, consumer: str) -> Obj:
    return {"id": uuid.uuid4().hex, "action": action, "consumer": consumer}


def _seconds(value: float) -> str:
    return f"{value:g}s"


async def request_action(
    kube: Kube,
    namespace: str,
    name: str,
    action: str,
    consumer: str | None,
    *,
    wait: bool = True,
    timeout: float = 30.0,
    poll: float = 0.5,
) -> Outcome:
    """Writes the request (checked against the freshest resource, retried on a conflicting
    write) and, unless `wait` is false, waits for the operator's acknowledgement."""
    url = path(API_VERSION, KIND, namespace, name)
    not_found = Outcome(1, f"{SINGULAR} {namespace}/{name} not found")
    for _ in range(CONFLICT_RETRIES):
        obj = await kube.get(url)
        if obj is None:
            return not_found
        try:
            chosen = plan(obj, action, consumer)
        except Refused as refused:
            return Outcome(1, str(refused))
        request = new_request(action, chosen)
        patch = {"annotations": {ACTION_ANNOTATION: json.dumps(request)}}
        try:
            await kube.patch_metadata(obj, patch)
        except KubeError as error:
            if error.status == 409:
                continue  # written in between: check again against the new version
            if error.status == 404:
                return not_found
            raise
        break
    else:
        return Outcome(1, f"{namespace}/{name} kept changing under {CONFLICT_RETRIES} attempts")

    if not wait:
        return Outcome(0, f"requested {action} of {chosen} on {namespace}/{name} ({request['id']})")
    return await wait_for_ack(kube, url, request, timeout=timeout, poll=poll)


async def wait_for_ack(
    kube: Kube, url: str, request: Obj, *, timeout: float, poll: float = 0.5
) -> Outcome:
    """Polls until status.migration.lastAction carries the request's id."""
    deadline = time.monotonic() + timeout
    while True:
        obj = await kube.get(url)
        if obj is None:
            return Outcome(1, f"{SINGULAR} {url.rsplit('/', 1)[-1]} was deleted while waiting")
        last = _dict(_dict(_dict(obj.get("status")).get("migration")).get("lastAction"))
        if last.get("id") == request["id"]:
            what = f"{request['action']} {request['consumer']}"
            message = str(last.get("message") or "")
            if last.get("result") == "Done":
                return Outcome(0, message or f"{what}: done")
            return Outcome(1, f"{what} rejected: {message or 'no reason given'}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Outcome(
                2,
                f"the operator has not acknowledged the request within {_seconds(timeout)}; "
                "is it running?",
            )
        await asyncio.sleep(min(poll, remaining))


__all__ = [
    "Outcome",
    "Refused",
    "consumer_names",
    "pending_request",
    "plan",
    "request_action",
    "select_consumer",
    "wait_for_ack",
]
