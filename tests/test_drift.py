"""A live object matches when it contains everything the operator applied."""

from __future__ import annotations

from typing import Any

import pytest

from inferops.drift import contains

DESIRED = {
    "metadata": {"labels": {"a": "1"}},
    "spec": {
        "replicas": 1,
        "template": {
            "spec": {
                "containers": [
                    {"name": "vllm", "resources": {"limits": {"memory": "1Gi", "cpu": "1000m"}}}
                ]
            }
        },
    },
}


def live(**changes: Any) -> dict[str, Any]:
    container = {
        "name": "vllm",
        "terminationMessagePath": "/dev/termination-log",
        "resources": {"limits": {"memory": "1024Mi", "cpu": "1"}},
    }
    container.update(changes.pop("container", {}))
    obj = {
        "metadata": {"labels": {"a": "1", "extra": "x"}, "resourceVersion": "5"},
        "spec": {
            "replicas": changes.pop("replicas", 1),
            "strategy": {},
            "template": {"spec": {"containers": [container], "dnsPolicy": "ClusterFirst"}},
        },
        "status": {"readyReplicas": 1},
    }
    return obj


def test_server_defaults_and_canonical_quantities_are_not_drift() -> None:
    assert contains(live(), DESIRED)


@pytest.mark.parametrize(
    "changed",
    [
        live(replicas=3),
        live(container={"resources": {"limits": {"memory": "2Gi", "cpu": "1"}}}),
        live(container={"name": "other"}),
        {"metadata": {"labels": {"a": "1"}}},
    ],
)
def test_hand_edits_are_drift(changed: dict[str, Any]) -> None:
    assert not contains(changed, DESIRED)


def test_booleans_are_not_numbers() -> None:
    assert not contains({"x": 1}, {"x": True})
    assert contains({"x": 0.9}, {"x": 0.9})
