"""Status is computed from the children's real state: table-driven over observations."""

from __future__ import annotations

from typing import Any

import pytest

from inferops.api.status import InferenceBackendStatus
from inferops.status import EngineObservation, compute

NOW = "2026-11-26T10:00:00Z"
LATER = "2026-11-26T10:05:00Z"


def deployment(ready: int, replicas: int, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"generation": 2},
        "status": {
            "observedGeneration": 2,
            "readyReplicas": ready,
            "updatedReplicas": replicas,
            "replicas": replicas,
            **status,
        },
    }


def unschedulable_pod(name: str = "llama32-vllm-abc") -> dict[str, Any]:
    message = "0/6 nodes are available: 2 node(s) didn't match, 4 Insufficient nvidia.com/gpu."
    return {
        "metadata": {"name": name},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                }
            ],
        },
    }


def crashing_pod() -> dict[str, Any]:
    return {
        "metadata": {"name": "llama32-vllm-xyz"},
        "status": {
            "containerStatuses": [
                {
                    "name": "vllm",
                    "state": {
                        "waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": "back-off 5m0s restarting",
                        }
                    },
                }
            ]
        },
    }


def obs(engine: str, desired: int, dep: Any, pods: list[Any] | None = None) -> EngineObservation:
    return EngineObservation(engine, desired, f"http://x-{engine}.ns.svc", dep, pods or [])


def conditions(status: InferenceBackendStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


@pytest.mark.parametrize(
    ("engines", "phase", "ready", "degraded_reason"),
    [
        (
            [obs("vllm", 1, deployment(1, 1)), obs("ollama", 1, deployment(1, 1))],
            "Ready",
            ("True", "EnginesReady"),
            "AsExpected",
        ),
        (
            [obs("vllm", 1, None), obs("ollama", 1, None)],
            "Progressing",
            ("False", "VLLMCreating"),
            "AsExpected",
        ),
        (
            [obs("vllm", 2, deployment(1, 2)), obs("ollama", 1, deployment(1, 1))],
            "Progressing",
            ("False", "VLLMStarting"),
            "AsExpected",
        ),
        (
            [
                obs("vllm", 1, deployment(0, 1), [unschedulable_pod()]),
                obs("ollama", 1, deployment(1, 1)),
            ],
            "Degraded",
            ("False", "VLLMUnschedulable"),
            "VLLMUnschedulable",
        ),
        (
            [obs("vllm", 1, deployment(0, 1), [crashing_pod()])],
            "Degraded",
            ("False", "VLLMCrashLoopBackOff"),
            "VLLMCrashLoopBackOff",
        ),
        (
            [
                obs(
                    "vllm",
                    1,
                    deployment(
                        0,
                        1,
                        conditions=[
                            {
                                "type": "Progressing",
                                "status": "False",
                                "reason": "ProgressDeadlineExceeded",
                                "message": "ReplicaSet has timed out progressing.",
                            }
                        ],
                    ),
                )
            ],
            "Degraded",
            ("False", "VLLMProgressDeadlineExceeded"),
            "VLLMProgressDeadlineExceeded",
        ),
        ([obs("vllm", 0, deployment(0, 0))], "Ready", ("True", "EnginesReady"), "AsExpected"),
    ],
)
def test_phase_and_conditions(
    engines: list[EngineObservation], phase: str, ready: tuple[str, str], degraded_reason: str
) -> None:
    status = compute(generation=3, engines=engines, previous=InferenceBackendStatus(), now=NOW)
    assert status.phase == phase
    assert conditions(status)["Ready"] == ready
    assert conditions(status)["Degraded"][1] == degraded_reason
    assert status.observed_generation == 3


def test_unschedulable_message_names_the_gpu_shortage() -> None:
    status = compute(
        generation=1,
        engines=[obs("vllm", 1, deployment(0, 1), [unschedulable_pod()])],
        previous=InferenceBackendStatus(),
        now=NOW,
    )
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert "Insufficient nvidia.com/gpu" in ready.message


def test_engine_status_for_printer_columns() -> None:
    status = compute(
        generation=1,
        engines=[obs("vllm", 2, deployment(1, 2)), obs("ollama", 1, deployment(1, 1))],
        previous=InferenceBackendStatus(),
        now=NOW,
    )
    assert status.vllm is not None and status.vllm.ready == "1/2"
    assert status.vllm.url == "http://x-vllm.ns.svc"
    assert status.ollama is not None and status.ollama.ready == "1/1"


def test_invalid_spec_keeps_reporting_engines() -> None:
    status = compute(
        generation=4,
        engines=[obs("vllm", 1, deployment(1, 1))],
        previous=InferenceBackendStatus(),
        now=NOW,
        invalid="spec.vllm.model: Field required",
    )
    assert status.phase == "InvalidSpec"
    assert conditions(status)["InvalidSpec"] == ("True", "InvalidSpec")
    assert conditions(status)["Ready"] == ("False", "InvalidSpec")
    assert status.vllm is not None and status.vllm.ready == "1/1"


def test_transition_time_moves_only_on_change() -> None:
    engines = [obs("vllm", 1, deployment(1, 1))]
    first = compute(generation=1, engines=engines, previous=InferenceBackendStatus(), now=NOW)
    again = compute(generation=1, engines=engines, previous=first, now=LATER)
    assert again == first  # unchanged: nothing to write
    broken = [obs("vllm", 1, deployment(0, 1), [crashing_pod()])]
    changed = compute(generation=1, engines=broken, previous=first, now=LATER)
    times = {c.type: c.last_transition_time for c in changed.conditions}
    assert times["Ready"] == times["Degraded"] == LATER
    assert times["InvalidSpec"] == NOW


def test_progressing_says_stalled_when_only_failures_remain() -> None:
    engines = [obs("vllm", 1, deployment(0, 1), [unschedulable_pod()])]
    status = compute(generation=1, engines=engines, previous=InferenceBackendStatus(), now=NOW)
    assert conditions(status)["Progressing"] == ("False", "Stalled")
    healthy = [obs("vllm", 1, deployment(1, 1))]
    status = compute(generation=1, engines=healthy, previous=InferenceBackendStatus(), now=NOW)
    assert conditions(status)["Progressing"] == ("False", "Stable")
