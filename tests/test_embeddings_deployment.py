"""vLLM's embeddings deployment (spec.vllm.embeddings): its spec and validation, its children
(a Deployment of vLLM's pooling runner and a Service), its place in the routing table and in
the resource's status."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from pydantic import ValidationError

from inferops.api.routing import RoutingTable
from inferops.api.status import InferenceBackendStatus, VectorCheck
from inferops.builders import desired_children
from inferops.migration import vectors
from inferops.migration.planner import Observations
from inferops.plan import Snapshot, decide
from inferops.validation import describe_errors, service_name_clashes
from tests.conftest import OWNER, make_spec
from tests.test_decide import ready_deployment as ready_engine

VLLM = {"model": "meta-llama/Llama-3.2-3B-Instruct"}
EMBEDDINGS = {"model": "BAAI/bge-small-en-v1.5", "dtype": "float32", "replicas": 2}
CONSUMERS = [{"name": "notes"}, {"name": "rag"}]
NOW = datetime(2026, 1, 1, 12, 0, 0)


def spec_with(embeddings: dict[str, Any] | None = None, **more: Any) -> Any:
    vllm: dict[str, Any] = {**VLLM, **more}
    if embeddings is not None:
        vllm["embeddings"] = embeddings
    return make_spec(vllm=vllm, consumers=CONSUMERS)


def by_name(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def test_the_deployment_runs_the_pooling_runner_under_the_logical_model_name() -> None:
    children = by_name(desired_children(spec_with(EMBEDDINGS), OWNER))
    deployment = children[("Deployment", "llama32-vllm-embeddings")]
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == [
        "--model", "BAAI/bge-small-en-v1.5", "--served-model-name", "llama3.2",
        "--host", "0.0.0.0", "--port", "8000", "--tensor-parallel-size", "1",
        "--gpu-memory-utilization", "0.9", "--dtype", "float32", "--runner", "pooling",
    ]  # fmt: skip
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["inferops.io/component"] == "vllm-embeddings"
    service = children[("Service", "llama32-vllm-embeddings")]
    assert service["spec"]["selector"]["inferops.io/component"] == "vllm-embeddings"
    # The generation vLLM is unchanged.
    main = children[("Deployment", "llama32-vllm")]["spec"]["template"]["spec"]["containers"][0]
    assert "--runner" not in main["args"]


def test_children_count_two_more_with_the_deployment_and_three_with_its_cache() -> None:
    without = desired_children(spec_with(), OWNER)
    with_it = desired_children(spec_with(EMBEDDINGS), OWNER)
    added = set(by_name(with_it)) - set(by_name(without))
    assert added == {
        ("Deployment", "llama32-vllm-embeddings"),
        ("Service", "llama32-vllm-embeddings"),
    }
    cached = desired_children(spec_with({**EMBEDDINGS, "cache": {"size": "5Gi"}}), OWNER)
    assert ("PersistentVolumeClaim", "llama32-vllm-embeddings-cache") in by_name(cached)
    assert len(cached) == len(without) + 3


def test_extra_args_come_after_the_runner_and_the_token_is_the_main_vllms() -> None:
    spec = spec_with(
        {**EMBEDDINGS, "extraArgs": ["--pooler-config", '{"pooling_type": "MEAN"}']},
        hfTokenSecretRef={"name": "hf", "key": "token"},
    )
    deployment = by_name(desired_children(spec, OWNER))[("Deployment", "llama32-vllm-embeddings")]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-4:] == [
        "--runner", "pooling", "--pooler-config", '{"pooling_type": "MEAN"}'
    ]  # fmt: skip
    token = next(e for e in container["env"] if e["name"] == "HF_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "token"}


@pytest.mark.parametrize(
    ("extra_args", "words"),
    [
        (["--runner", "generate"], "--runner generate starts vLLM's generate runner"),
        (["--runner=auto"], "--runner auto"),
        (["--convert", "classify"], "--convert classify makes the model a classify model"),
    ],
)
def test_a_generation_runner_is_refused_naming_the_field(extra_args: list[str], words: str) -> None:
    with pytest.raises(ValidationError) as refused:
        spec_with({**EMBEDDINGS, "extraArgs": extra_args})
    message = describe_errors(refused.value)
    assert "spec.vllm.embeddings.extraArgs" in message
    assert words in message
    assert "the operator passes --runner pooling" in message


def test_a_managed_flag_in_its_extra_args_is_refused_naming_its_item() -> None:
    with pytest.raises(ValidationError) as refused:
        spec_with(
            {**EMBEDDINGS, "extraArgs": ["--pooler-config", "{}", "--served_model_name", "x"]}
        )
    message = describe_errors(refused.value)
    assert 'spec.vllm.embeddings.extraArgs[2] "--served_model_name"' in message
    assert "set spec.model instead" in message


def test_pooling_flags_and_embed_conversion_are_accepted() -> None:
    accepted = ["--runner", "pooling", "--convert", "embed"]
    spec = spec_with({**EMBEDDINGS, "extraArgs": accepted})
    deployment = by_name(desired_children(spec, OWNER))[("Deployment", "llama32-vllm-embeddings")]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"][-4:] == accepted


def test_a_consumer_service_named_like_the_deployment_is_refused() -> None:
    spec = make_spec(
        vllm={**VLLM, "embeddings": EMBEDDINGS},
        consumers=[{"name": "notes", "serviceName": "llama32-vllm-embeddings"}],
    )
    problem = service_name_clashes(spec, OWNER)
    assert "spec.consumers[0].serviceName" in problem and "embeddings deployment" in problem
    # Without the deployment the name is free.
    free = make_spec(consumers=[{"name": "notes", "serviceName": "llama32-vllm-embeddings"}])
    assert service_name_clashes(free, OWNER) == ""


def table(objects: list[dict[str, Any]]) -> RoutingTable:
    config = by_name(objects)[("ConfigMap", "llama32-router")]
    return RoutingTable.model_validate(json.loads(config["data"]["routes.json"]))


def test_the_routing_table_lists_it_as_the_engine_of_embeddings() -> None:
    spec = spec_with(EMBEDDINGS)
    ready = {"vllm": True, "ollama": True, "vllm-embeddings": True}
    routes = table(desired_children(spec, OWNER, ready, embeddings={"rag": 100}))
    engine = routes.engines.embeddings
    assert engine is not None
    assert engine.url == "http://llama32-vllm-embeddings.ai.svc:8000"
    assert engine.kinds == ["embeddings"] and engine.ready
    # Two replicas, 256 slots each: the router's default limit for it.
    assert engine.admission is not None and engine.admission.max_concurrent == 512
    assert routes.engines.vllm.kinds == ["chat", "completions"]
    weights = {c.name: c.embeddings_weight for c in routes.consumers}
    assert weights == {"notes": 0, "rag": 100}  # missing: 0, moved by the operator only
    without = table(desired_children(spec_with(), OWNER, ready))
    assert without.engines.embeddings is None
    assert [c.embeddings_weight for c in without.consumers] == [None, None]


def ready_deployment(obj: dict[str, Any], ready: int) -> dict[str, Any]:
    replicas = obj["spec"].get("replicas", 1)
    status = {"observedGeneration": 1, "readyReplicas": ready, "updatedReplicas": replicas}
    return {**obj, "metadata": {**obj["metadata"], "generation": 1}, "status": status}


def test_status_reports_it_and_ready_waits_for_it() -> None:
    spec = spec_with(EMBEDDINGS)
    live = {}
    for obj in desired_children(spec, OWNER):
        if obj["kind"] == "Deployment":
            name = obj["metadata"]["name"]
            obj = ready_deployment(obj, 0 if name == "llama32-vllm-embeddings" else 2)
        live[(obj["kind"], obj["metadata"]["name"])] = obj
    snap = Snapshot(OWNER, 1, spec, None, InferenceBackendStatus(), live, [])
    status = decide(snap, None, NOW).status
    assert status.vllm_embeddings is not None and status.vllm_embeddings.ready == "0/2"
    assert status.vllm_embeddings.url == "http://llama32-vllm-embeddings.ai.svc:8000"
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "VLLMEmbeddingsStarting")
    live[("Deployment", "llama32-vllm-embeddings")] = ready_deployment(
        live[("Deployment", "llama32-vllm-embeddings")], 2
    )
    snap = Snapshot(OWNER, 1, spec, None, InferenceBackendStatus(), live, [])
    status = decide(snap, None, NOW).status
    assert status.phase == "Ready"
    assert snap.ready(spec)["vllm-embeddings"] is True


def test_the_planners_embeddings_weights_reach_the_routing_table() -> None:
    """`decide`: the consumer the migration started gets its embeddings moved in the table
    it writes (the vectors agreed), the other keeps them on Ollama."""
    spec = make_spec(
        vllm={**VLLM, "embeddings": EMBEDDINGS},
        consumers=CONSUMERS,
        migration={"steps": [{"weight": 10}, {"weight": 100}]},
    )
    agreed = VectorCheck(
        verdict="Pass",
        cosine=0.9991,
        min_cosine=0.99,
        inputs=4,
        time="2026-01-01T12:00:00Z",
        key=vectors.key(spec),
        message="vectors alike",
    )
    # Engines with Ready pods: before, the routing table is not written at all.
    live = {("Deployment", f"llama32-{c}"): ready_engine(c) for c in ("vllm", "ollama")}
    snap = Snapshot(OWNER, 1, spec, None, InferenceBackendStatus(), live, [])
    plan = decide(snap, Observations(vllm_ready=True, vectors=agreed), NOW)
    assert plan.desired is not None
    routes = table(plan.desired)
    assert {c.name: (c.weight, c.embeddings_weight) for c in routes.consumers} == {
        "notes": (10, 100),
        "rag": (0, 0),
    }
    notes = plan.status.consumers[0]
    assert notes.embeddings is not None and notes.embeddings.message == "on vLLM: vectors alike"
    assert plan.status.migration is not None and plan.status.migration.vectors == agreed
