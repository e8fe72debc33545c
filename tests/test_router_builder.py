"""Consumers get a Service each in front of a router whose routing table carries weights,
engine URLs and readiness, and whose RBAC reads that table only."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from inferops.api.spec import InferenceBackendSpec
from inferops.builders import desired_children, router
from inferops.builders.common import BACKEND_LABEL
from inferops.builders.router import routing_table
from tests.conftest import OWNER, make_spec

CONSUMERS = [
    {"name": "notes", "weight": 10},
    {"name": "rag"},
    {"name": "ner", "serviceName": "ner-llm", "api": "embeddings", "weight": 100},
]


def children(**overrides: Any) -> dict[tuple[str, str], dict[str, Any]]:
    spec = make_spec(consumers=CONSUMERS, **overrides)
    objects = desired_children(spec, OWNER, {"vllm": True, "ollama": False})
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def test_no_router_without_consumers() -> None:
    kinds = {o["kind"] for o in desired_children(make_spec(), OWNER)}
    assert kinds == {"Deployment", "Service"}
    assert not any(
        o["metadata"]["name"].endswith("-router") for o in desired_children(make_spec(), OWNER)
    )


def test_one_service_per_consumer_in_front_of_the_router() -> None:
    objects = children()
    router = objects[("Deployment", "llama32-router")]
    selector = router["spec"]["selector"]["matchLabels"]
    for name, consumer in (("llama32-notes", "notes"), ("llama32-rag", "rag"), ("ner-llm", "ner")):
        svc = objects[("Service", name)]
        assert svc["spec"]["selector"] == selector
        assert svc["metadata"]["labels"]["inferops.io/consumer"] == consumer
        assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
            ("http", 80, "http"),
            ("ollama", 11434, "http"),
        ]


TOOLS_THEN_OFF = [
    "--enable-auto-tool-choice",
    "--tool-call-parser",
    "x",
    "--no-enable-auto-tool-choice",
]


@pytest.mark.parametrize(
    ("extra_args", "max_model_len", "kinds", "tool_calling"),
    [
        ([], None, ["chat", "completions"], False),
        (["--enable-auto-tool-choice", "--tool-call-parser", "llama3_json"], 4096, None, True),
        (["--tool-call-parser=hermes"], None, None, False),  # no auto tool choice: no tools
        # The switch turned off again: the last word wins, as in vLLM.
        (TOOLS_THEN_OFF, None, None, False),
        (["--runner", "pooling"], None, ["embeddings"], False),
        (["--runner=generate"], None, ["chat", "completions"], False),
        (["--convert", "embed"], None, ["embeddings"], False),
    ],
)
def test_the_table_says_what_vllm_is_started_for(
    extra_args: list[str], max_model_len: int | None, kinds: list[str] | None, tool_calling: bool
) -> None:
    """Read from spec.vllm as vLLM reads its arguments (the last value wins)."""
    vllm: dict[str, Any] = {"model": "m", "extraArgs": extra_args}
    if max_model_len:
        vllm["maxModelLen"] = max_model_len
    spec = make_spec(vllm=vllm, consumers=CONSUMERS)
    engine = routing_table(spec, OWNER, {"vllm": True}).engines.vllm
    assert engine.kinds == (kinds or ["chat", "completions"])
    assert engine.tool_calling is tool_calling
    assert engine.max_model_len == max_model_len


def test_routing_table_content() -> None:
    table = json.loads(objects_table())
    assert table["model"] == "llama3.2"
    assert table["engines"] == {
        "vllm": {
            "url": "http://llama32-vllm.ai.svc:8000",
            "ready": True,
            "admission": {"maxConcurrent": 256, "maxWaiting": 256, "maxWaitSeconds": 10},
            "kinds": ["chat", "completions"],
            "toolCalling": False,
        },
        "ollama": {
            "url": "http://llama32-ollama.ai.svc:11434",
            "ready": False,
            "admission": {"maxConcurrent": 4, "maxWaiting": 16, "maxWaitSeconds": 10},
            "kinds": ["chat", "completions", "embeddings"],
        },
    }
    notes = table["consumers"][0]
    assert notes == {
        "name": "notes",
        "weight": 10,
        "api": "chat",
        "hosts": [
            "llama32-notes",
            "llama32-notes.ai",
            "llama32-notes.ai.svc",
            "llama32-notes.ai.svc.cluster.local",
        ],
    }
    assert [c["name"] for c in table["consumers"]] == ["notes", "rag", "ner"]
    assert table["fallback"] is True
    assert table["timeouts"] == {"connectSeconds": 2, "firstByteSeconds": 60, "totalSeconds": 600}
    assert table["maxBodyBytes"] == 10 << 20


def objects_table() -> str:
    return str(children()[("ConfigMap", "llama32-router")]["data"]["routes.json"])


def test_table_without_fallback_engine() -> None:
    spec = make_spec(consumers=CONSUMERS, ollama=None)
    assert set(routing_table(spec, OWNER, {"vllm": True}).dump()["engines"]) == {"vllm"}


@pytest.mark.parametrize(
    ("overrides", "engine", "expected"),
    [
        # Ollama: numParallel slots per replica, four times that waiting.
        ({"ollama": {"model": "m", "numParallel": 2, "replicas": 3}}, "ollama", (6, 24, 10)),
        # vLLM: its default max_num_seqs per replica, as many waiting.
        ({"vllm": {"model": "m", "replicas": 2}}, "vllm", (512, 512, 10)),
        # The spec's own figures win; a waiting room of 0 refuses as soon as slots are full.
        (
            {
                "ollama": {
                    "model": "m",
                    "admission": {"maxConcurrent": 3, "maxWaiting": 0, "maxWaitSeconds": 2.5},
                }
            },
            "ollama",
            (3, 0, 2.5),
        ),
        # Three worker processes share a pod's limits, each rounding up.
        (
            {
                "router": {"resources": {"requests": {"cpu": "3"}}},
                "ollama": {"model": "m", "numParallel": 4},
            },
            "ollama",
            (2, 6, 10),
        ),
    ],
)
def test_engine_admission_defaults_follow_the_engines(
    overrides: dict[str, Any], engine: str, expected: tuple[float, float, float]
) -> None:
    spec = make_spec(consumers=CONSUMERS, **overrides)
    table = routing_table(spec, OWNER, {"vllm": True, "ollama": True})
    found = getattr(table.engines, engine).admission
    assert (found.max_concurrent, found.max_waiting, found.max_wait_seconds) == expected


def test_the_routers_of_a_namespace_read_only_their_tables() -> None:
    """One identity per namespace: its Role names each backend's routing table, nothing
    else, and lists the backends as owners (not controllers), so it goes with the last."""
    objects = {o["kind"]: o for o in router.identity("ai", {"llama32": "u1", "mistral": "u2"})}
    assert objects["Role"]["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["llama32-router", "mistral-router"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    assert objects["RoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "inferops-router", "namespace": "ai"}
    ]
    assert objects["RoleBinding"]["roleRef"]["name"] == "inferops-router"
    for obj in objects.values():
        assert obj["metadata"]["name"] == "inferops-router"
        assert BACKEND_LABEL not in obj["metadata"]["labels"]  # no backend's own child
        refs = obj["metadata"]["ownerReferences"]
        assert [(r["name"], r["uid"], r["controller"]) for r in refs] == [
            ("llama32", "u1", False),
            ("mistral", "u2", False),
        ]
    assert router.identity_backends(objects["Role"]) == {"llama32": "u1", "mistral": "u2"}
    pod = children()[("Deployment", "llama32-router")]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "inferops-router"
    assert pod["containers"][0]["args"] == ["--configmap", "ai/llama32-router", "--port", "8080"]
    # The operator's image runs the operator by default; the router is its second entrypoint.
    assert pod["containers"][0]["command"] == ["python", "-m", "inferops.router"]


def test_apply_order_puts_the_table_before_pods() -> None:
    kinds = [o["kind"] for o in desired_children(make_spec(consumers=CONSUMERS), OWNER)]
    assert kinds.index("ConfigMap") < kinds.index("Deployment")
    assert "ServiceAccount" not in kinds  # the namespace's, written before (identities)


@pytest.mark.parametrize(
    ("consumers", "words"),
    [
        ([{"name": "a"}, {"name": "a"}], "consumer names must be unique"),
        ([{"name": "vllm"}], "may not be vllm"),
        ([{"name": "e", "api": "embeddings", "weight": 50}], "weight 0 or 100"),
        ([{"name": "a", "weight": 101}], "less than or equal to 100"),
        ([{"name": "Notes"}], "should match pattern"),
    ],
)
def test_bad_consumers_are_refused(consumers: list[dict[str, Any]], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        InferenceBackendSpec.model_validate(
            {"model": "x", "vllm": {"model": "m"}, "consumers": consumers}
        )


@pytest.mark.parametrize(
    ("resources", "workers"),
    [
        ({}, 1),
        ({"requests": {"memory": "1Gi"}}, 1),
        ({"requests": {"cpu": "100m"}}, 1),
        ({"requests": {"cpu": "500m"}}, 1),
        ({"requests": {"cpu": "1"}}, 1),
        ({"requests": {"cpu": "1000m"}}, 1),
        ({"requests": {"cpu": "1001m"}}, 2),
        ({"requests": {"cpu": "1500m"}}, 2),
        ({"requests": {"cpu": "1.5"}}, 2),
        ({"requests": {"cpu": "2"}}, 2),
        ({"requests": {"cpu": 3}}, 3),
        ({"requests": {"cpu": "2500m"}, "limits": {"cpu": "8"}}, 3),
        # Kubernetes takes a limit without a request as the request.
        ({"limits": {"cpu": "4"}}, 4),
    ],
)
def test_router_workers_follow_its_cpu_request(resources: dict[str, Any], workers: int) -> None:
    spec = make_spec(consumers=CONSUMERS, router={"resources": resources})
    objects = {(o["kind"], o["metadata"]["name"]): o for o in desired_children(spec, OWNER)}
    pod = objects[("Deployment", "llama32-router")]["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    # One process is the router's default: the flag appears only for more.
    expected = [] if workers == 1 else ["--workers", str(workers)]
    assert args == ["--configmap", "ai/llama32-router", "--port", "8080", *expected]
