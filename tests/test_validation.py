"""Bad specs are refused with a message that names the field and the fix."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from inferops.api.spec import InferenceBackendSpec
from inferops.validation import describe_errors
from tests.conftest import OWNER, make_spec

VLLM = {"model": "m"}
OLLAMA = {"model": "llama3.2:3b"}


def bad_vllm(key: str, value: Any, words: str) -> tuple[dict[str, Any], str, str]:
    """A spec whose `spec.vllm.<key>` is `value`, refused with `words` naming it."""
    return {"model": "x", "vllm": {**VLLM, key: value}}, f"spec.vllm.{key}", words


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        bad_vllm("tensorParallelSize", 0, "greater than or equal to 1"),
        bad_vllm("gpuMemoryUtilization", 1.5, "less than or equal to 1"),
        bad_vllm("gpuMemoryUtilization", 0, "greater than 0"),
        bad_vllm("tensorParalelSize", 2, "Extra inputs are not permitted"),
        ({"model": "bad name!", "vllm": VLLM}, "spec.model", "should match pattern"),
        bad_vllm(
            "extraArgs", ["--tensor-parallel-size=2"], "set spec.vllm.tensorParallelSize instead"
        ),
        bad_vllm("extraArgs", ["--served-model-name", "y"], "set spec.model instead"),
        (
            {"model": "x", "vllm": {**VLLM, "resources": {"limits": {"nvidia.com/gpu": 2}}}},
            "spec.vllm.resources.limits",
            "set GPUs with vllm.tensorParallelSize",
        ),
        bad_vllm("shmSize", "lots", "not a Kubernetes quantity"),
        (
            {"model": "x", "vllm": {**VLLM, "cache": {}}},
            "spec.vllm.cache",
            "exactly one of cache.size or cache.existingClaim",
        ),
        (
            {"model": "x", "vllm": VLLM, "ollama": {"enabled": True}},
            "spec.ollama",
            "ollama.model is required",
        ),
        (
            {"model": "x", "vllm": VLLM, "ollama": {**OLLAMA, "keepAlive": "forever"}},
            "spec.ollama.keepAlive",
            "use -1 (keep the model loaded for good), a Go duration",
        ),
        (
            {"model": "x", "vllm": VLLM, "ollama": {**OLLAMA, "keepAlive": "5 minutes"}},
            "spec.ollama.keepAlive",
            "'5 minutes' is not a keep-alive",
        ),
        (
            {"model": "x", "vllm": VLLM, "ollama": {**OLLAMA, "numParallel": 0}},
            "spec.ollama.numParallel",
            "greater than or equal to 1",
        ),
        (
            {"model": "x", "vllm": VLLM, "ollama": {**OLLAMA, "contextLength": 0}},
            "spec.ollama.contextLength",
            "greater than or equal to 1",
        ),
        (
            {"model": "x", "vllm": VLLM, "ollama": {**OLLAMA, "admission": {"maxConcurrent": 0}}},
            "spec.ollama.admission.maxConcurrent",
            "greater than or equal to 1",
        ),
        (
            {"model": "x", "vllm": {**VLLM, "admission": {"maxWaiting": -1}}},
            "spec.vllm.admission.maxWaiting",
            "greater than or equal to 0",
        ),
        (
            {"model": "x", "vllm": {**VLLM, "admission": {"maxWaitSeconds": 0}}},
            "spec.vllm.admission.maxWaitSeconds",
            "greater than 0",
        ),
        (
            {"model": "x", "vllm": {**VLLM, "admission": {"queue": 5}}},
            "spec.vllm.admission.queue",
            "Extra inputs are not permitted",
        ),
        ({"model": "x"}, "spec.vllm", "Field required"),
        (
            {"model": "x", "vllm": VLLM, "migration": {"steps": [{"shadow": {}}]}},
            "spec.migration",
            "the last step must have weight 100",
        ),
        (
            {
                "model": "x",
                "vllm": VLLM,
                "migration": {"steps": [{"weight": 10}, {"shadow": {}}, {"weight": 100}]},
            },
            "spec.migration",
            "only the first step may be a shadow step",
        ),
        (
            {
                "model": "x",
                "vllm": VLLM,
                "migration": {"steps": [{"weight": 10, "shadow": {}}, {"weight": 100}]},
            },
            "spec.migration.steps.0",
            "set either weight or shadow in a step, not both",
        ),
        (
            {
                "model": "x",
                "vllm": VLLM,
                "migration": {"steps": [{"shadow": {"percent": 0}}, {"weight": 100}]},
            },
            "spec.migration.steps.0.shadow.percent",
            "greater than 0",
        ),
        (
            {
                "model": "x",
                "vllm": VLLM,
                "migration": {"steps": [{"shadow": {"timeout": "1h"}}, {"weight": 100}]},
            },
            "spec.migration.steps.0.shadow.timeout",
            "timeout may be at most 10m",
        ),
        (
            {
                "model": "x",
                "vllm": VLLM,
                "migration": {"steps": [{"shadow": {"maxAgreementDrop": 1.5}}, {"weight": 100}]},
            },
            "spec.migration.steps.0.shadow.maxAgreementDrop",
            "less than or equal to 1",
        ),
    ],
)
def test_invalid_spec_names_field_and_fix(raw: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        InferenceBackendSpec.model_validate(raw)
    message = describe_errors(caught.value)
    assert field in message and words in message, message


@pytest.mark.parametrize(
    "raw",
    [
        {"model": "llama3.2", "vllm": VLLM},
        {"model": "meta-llama/Llama-3.2-3B-Instruct", "vllm": VLLM},
        {"model": "llama3.2:3b-q4", "vllm": {**VLLM, "extraArgs": ["--model-impl=vllm"]}},
        {"model": "x", "vllm": VLLM, "ollama": {"enabled": False}},
        {"model": "x", "vllm": {**VLLM, "cache": {"existingClaim": "models"}}},
    ],
)
def test_valid_specs_are_accepted(raw: dict[str, Any]) -> None:
    InferenceBackendSpec.model_validate(raw)


def test_defaults() -> None:
    spec = InferenceBackendSpec.model_validate({"model": "x", "vllm": VLLM, "ollama": OLLAMA})
    assert spec.vllm.tensor_parallel_size == 1
    assert spec.vllm.gpu_memory_utilization == 0.9
    assert spec.vllm.replicas is None  # left to an HPA or a person; see tests/test_replicas.py
    # Never unload, as vLLM never does; context and admission follow vLLM and numParallel.
    assert spec.ollama is not None and spec.ollama.keep_alive == "-1"
    assert spec.ollama.context_length is None and spec.ollama.num_parallel == 4


def test_a_consumer_service_may_not_take_another_childs_name() -> None:
    from inferops.validation import service_name_clashes

    consumers = [
        {"name": "notes", "serviceName": "llama32-vllm"},
        {"name": "rag"},
        {"name": "ner", "serviceName": "llama32-rag"},
    ]
    spec = make_spec(consumers=consumers)
    message = service_name_clashes(spec, OWNER)
    assert "spec.consumers[0].serviceName: llama32-vllm is the name of vLLM's Service" in message
    assert "spec.consumers[2].serviceName: llama32-rag is the name of consumer rag's Service" in (
        message
    )
    assert service_name_clashes(make_spec(consumers=[{"name": "notes"}]), OWNER) == ""


def test_model_names_must_match_their_grammar() -> None:
    for bad in ({"vllm": {"model": "meta-llama/Llama 3.2"}}, {"ollama": {"model": "llama3.2 3b"}}):
        with pytest.raises(ValidationError):
            make_spec(**bad)
