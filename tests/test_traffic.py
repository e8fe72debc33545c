"""The traffic interface: what every data-plane replica serves, with unknown kept apart from
served, and the built-in router behind it (its routing ConfigMap and the revision each
router pod reports)."""

from __future__ import annotations

from typing import Any

import pytest

from inferops.builders import desired_children, router
from inferops.traffic import ReplicaWeights, served_everywhere
from inferops.traffic.router import RouterTraffic, live_table
from tests.conftest import OWNER, make_spec

A, B = {"notes": 10, "rag": 0}, {"notes": 50, "rag": 0}


@pytest.mark.parametrize(
    ("replicas", "served"),
    [
        ([], None),  # no replica: nothing is known to be served
        ([ReplicaWeights("r1", A)], A),
        ([ReplicaWeights("r1", A), ReplicaWeights("r2", A)], A),
        ([ReplicaWeights("r1", A), ReplicaWeights("r2", None)], None),  # one unknown
        ([ReplicaWeights("r1", A), ReplicaWeights("r2", B)], None),  # still spreading
    ],
)
def test_served_everywhere(replicas: list[ReplicaWeights], served: dict[str, int] | None) -> None:
    assert served_everywhere(replicas) == served


class Revisions:
    """Stands in for the router pods' /metrics pages: (url, revision or None)."""

    def __init__(self, answers: list[tuple[str, int | None]]) -> None:
        self.answers = answers

    async def revisions_by_replica(self, namespace: str, backend: str) -> list[Any]:
        return self.answers


def live_with_table(weights: dict[str, int]) -> dict[tuple[str, str], Any]:
    spec = make_spec(consumers=[{"name": "notes"}, {"name": "rag"}])
    [config_map] = router.weights(spec, OWNER, {"vllm": True}, weights)
    return {("ConfigMap", config_map["metadata"]["name"]): config_map}


async def test_the_router_serves_the_live_table_exactly_where_its_revision_matches() -> None:
    live = live_with_table(A)
    table = live_table(live, OWNER)
    assert table is not None
    pods = Revisions(
        [("http://r1", table.revision), ("http://r2", table.revision - 1), ("http://r3", None)]
    )
    served = await RouterTraffic(pods).served(OWNER, live)  # type: ignore[arg-type]
    assert served == [
        ReplicaWeights("http://r1", A),
        ReplicaWeights("http://r2", None),
        ReplicaWeights("http://r3", None),
    ]


async def test_without_a_routing_table_nothing_is_served() -> None:
    pods = Revisions([("http://r1", 7)])
    served = await RouterTraffic(pods).served(OWNER, {})  # type: ignore[arg-type]
    assert served == [ReplicaWeights("http://r1", None)]


def test_the_weights_reach_the_children_through_the_setter() -> None:
    spec = make_spec(consumers=[{"name": "notes"}, {"name": "rag"}])
    traffic = RouterTraffic(Revisions([]))  # type: ignore[arg-type]
    children = desired_children(spec, OWNER, {"vllm": True}, A, set_weights=traffic.set_weights)
    maps = [o for o in children if o["kind"] == "ConfigMap"]
    assert maps == traffic.set_weights(spec, OWNER, {"vllm": True}, A)
    assert desired_children(spec, OWNER, set_weights=lambda *_: []) == [
        o for o in desired_children(spec, OWNER) if o["kind"] != "ConfigMap"
    ]
