"""Which InferenceBackend watch events call for a reconciliation.

kopf's change handlers (create, update, resume) would tell, but they remember what they
handled in an annotation on the resource: a patch per handled change, a request per new
backend that changes nothing the user asked for. The operator decides from the event
instead, remembering in memory the generation it last reconciled: a resource seen for the
first time (new, or every resource after a restart), a spec change (a new
`metadata.generation`), or a manual action not acknowledged yet. Its own status patches and
changes to labels or annotations leave the generation alone and reconcile nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from inferops.api.migration import last_action_id
from inferops.migration.observe import requested_action


def action_pending(body: Mapping[str, Any]) -> bool:
    """`kubectl ib promote|abort|...` wrote a request the status has not acknowledged."""
    action = requested_action(dict(body))
    return action is not None and action.id != last_action_id(body)


class Generations:
    """The generation of each resource that a reconciliation last finished with."""

    def __init__(self) -> None:
        self._handled: dict[tuple[str, str], int | None] = {}

    def wanted(self, body: Mapping[str, Any]) -> bool:
        """Whether this state of the resource needs a reconciliation."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if key not in self._handled or self._handled[key] != meta.get("generation"):
            return True
        return action_pending(body)

    def handled(self, body: Mapping[str, Any]) -> None:
        """A reconciliation of this state finished (a valid spec or an InvalidSpec one: the
        latter waits for the next spec change, as trying again cannot help)."""
        meta = body["metadata"]
        self._handled[(meta["namespace"], meta["name"])] = meta.get("generation")

    def forget(self, namespace: str, name: str) -> None:
        self._handled.pop((namespace, name), None)


__all__ = ["Generations", "action_pending"]
