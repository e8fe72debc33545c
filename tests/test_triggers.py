"""Which InferenceBackend watch events reconcile (`inferops.triggers`): the replacement of
kopf's change handlers, which cost an annotation patch per handled change."""

from __future__ import annotations

import json
from typing import Any

import pytest

from inferops.api.migration import ACTION_ANNOTATION
from inferops.triggers import Generations


def resource(
    generation: int = 1, action: str | None = None, acknowledged: str | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": "ai", "name": "llama", "generation": generation}
    if action is not None:
        meta["annotations"] = {ACTION_ANNOTATION: json.dumps({"id": action, "action": "promote"})}
    status = {"migration": {"lastAction": {"id": acknowledged}}} if acknowledged else {}
    return {"metadata": meta, "status": status}


# (what was handled before, the event's resource, reconcile?)
CASES = [
    ("first sight (new, or after a restart)", None, resource(), True),
    ("its own status patch", resource(), resource(), False),
    ("a label or annotation edit", resource(), resource(), False),
    ("a spec change", resource(1), resource(2), True),
    ("a spec change rolled back by a later event", resource(2), resource(1), True),
    ("a manual action not acknowledged", resource(), resource(action="a1"), True),
    ("the action acknowledged", resource(), resource(action="a1", acknowledged="a1"), False),
    ("a second action", resource(), resource(action="a2", acknowledged="a1"), True),
]


@pytest.mark.parametrize(
    ("handled", "event", "wanted"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_what_reconciles(
    handled: dict[str, Any] | None, event: dict[str, Any], wanted: bool
) -> None:
    generations = Generations()
    if handled is not None:
        generations.handled(handled)
    assert generations.wanted(event) is wanted


def test_a_deleted_resource_is_new_again() -> None:
    generations = Generations()
    generations.handled(resource())
    generations.forget("ai", "llama")
    assert generations.wanted(resource())
