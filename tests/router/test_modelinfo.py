"""What `/api/tags`, `/api/show` and `/api/ps` answer, from what the engines reported: pure,
no network. Every answer is also parsed with the official client's own types."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from ollama import ProcessResponse, ShowResponse
from testsupport.standin import OLLAMA_SHOW

from inferops.router import modelinfo
from inferops.router.errors import RouterError
from inferops.router.modelinfo import Facts, VllmModel

NOW = 1_750_000_000.0  # 2025-06-15
NAMES = frozenset({"llama3.2", "llama3.2:latest", "llama3.2:3b"})


def running(**fields: Any) -> dict[str, Any]:
    """Ollama's `/api/ps` entry for the model."""
    entry = {
        "name": "llama3.2:latest",
        "model": "llama3.2:latest",
        "size": 3_400_000_000,
        "digest": "a80c4f17",
        "details": OLLAMA_SHOW["details"],
        "expires_at": "2025-06-16T00:00:00Z",
        "size_vram": 3_000_000_000,
        "context_length": 4096,
    }
    entry.update(fields)
    return entry


def show(**model_info: Any) -> dict[str, Any]:
    doc = copy.deepcopy(OLLAMA_SHOW)
    doc["model_info"].update(model_info)
    return doc


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("llama3.2", "llama3.2:latest"),
        ("llama3.2:3b", "llama3.2:3b"),
        ("registry:5000/team/llama", "registry:5000/team/llama:latest"),
        ("registry:5000/team/llama:v1", "registry:5000/team/llama:v1"),
    ],
)
def test_a_name_without_a_tag_means_latest(name: str, expected: str) -> None:
    assert modelinfo.tagged(name) == expected


def test_a_name_has_one_digest_with_or_without_its_tag() -> None:
    assert modelinfo.digest("llama3.2") == modelinfo.digest("llama3.2:latest")
    assert modelinfo.digest("llama3.2") != modelinfo.digest("llama3.2:3b")
    assert modelinfo.tag("llama3.2", NOW)["digest"] == modelinfo.digest("llama3.2")


def test_vllm_models_entry() -> None:
    listing = {
        "object": "list",
        "data": [
            {"id": "other", "max_model_len": 99},
            {"id": "llama3.2", "root": "/models/llama", "max_model_len": 4096},
        ],
    }
    assert modelinfo.vllm_model(listing, "llama3.2") == VllmModel(4096, "/models/llama")
    assert modelinfo.vllm_model(listing, "llama3.2:3b") is None  # vLLM names it exactly


@pytest.mark.parametrize(
    "listing",
    [None, [], "x", {}, {"data": None}, {"data": [None, 1, "llama3.2"]}, {"data": [{"id": 1}]}],
)
def test_vllm_models_answer_of_the_wrong_shape_lists_nothing(listing: object) -> None:
    assert modelinfo.vllm_model(listing, "llama3.2") is None


@pytest.mark.parametrize("value", [True, 0, -5, "4096", 4096.0, None])
def test_vllm_context_length_that_is_no_positive_integer_is_unknown(value: object) -> None:
    listing = {"data": [{"id": "llama3.2", "max_model_len": value, "root": 7}]}
    assert modelinfo.vllm_model(listing, "llama3.2") == VllmModel(None, None)


def test_ollama_ps_entry_by_either_name() -> None:
    entry = running()
    other = running(model="x", name="x")
    assert modelinfo.ollama_running({"models": [other, entry]}, "llama3.2") is entry
    by_name = running(model=None, name="llama3.2")
    assert modelinfo.ollama_running({"models": [by_name]}, "llama3.2") is by_name
    assert modelinfo.ollama_running({"models": []}, "llama3.2") is None
    assert modelinfo.ollama_running({"models": [running()]}, "llama3.2:3b") is None
    for junk in (None, {"models": None}, {"models": [1, "llama3.2:latest"]}, []):
        assert modelinfo.ollama_running(junk, "llama3.2") is None


@pytest.mark.parametrize(
    ("facts", "with_trained", "expected"),
    [
        (Facts(), True, None),
        (Facts(vllm=VllmModel(None, None)), True, None),
        (Facts(vllm=VllmModel(2048, None)), True, 2048),
        (Facts(ollama_running=running(context_length=8192)), False, 8192),
        (Facts(ollama_running=running(context_length="8192")), False, None),
        (
            Facts(vllm=VllmModel(2048, None), ollama_running=running(context_length=1024)),
            False,
            1024,
        ),
        (Facts(vllm=VllmModel(2048, None), ollama_show=show()), True, 2048),
        (
            Facts(vllm=VllmModel(2048, None), ollama_show=show(**{"llama.context_length": 512})),
            True,
            512,
        ),
        # `/api/ps` leaves out the trained length: a loaded context is already within it.
        (
            Facts(vllm=VllmModel(2048, None), ollama_show=show(**{"llama.context_length": 512})),
            False,
            2048,
        ),
        (Facts(ollama_show=show()), True, 131072),
    ],
)
def test_context_length_is_the_smallest_any_engine_reported(
    facts: Facts, with_trained: bool, expected: int | None
) -> None:
    assert modelinfo.context_length(facts, with_trained) == expected


def test_show_request() -> None:
    assert modelinfo.show_request({"model": "llama3.2:3b"}, NAMES, "llama3.2") is False
    assert modelinfo.show_request({"model": "llama3.2", "verbose": True}, NAMES, "llama3.2")
    # `name` is what clients older than Ollama 0.4 send.
    assert modelinfo.show_request({"name": "llama3.2"}, NAMES, "llama3.2") is False


@pytest.mark.parametrize(
    ("doc", "status", "message"),
    [
        ({}, 400, "names no 'model'"),
        ({"model": 3}, 400, "names no 'model'"),
        ({"model": ""}, 400, "names no 'model'"),
        ({"model": "mistral"}, 404, "model 'mistral' not found: this endpoint serves 'llama3.2'"),
    ],
)
def test_show_request_refused(doc: dict[str, Any], status: int, message: str) -> None:
    with pytest.raises(RouterError) as caught:
        modelinfo.show_request(doc, NAMES, "llama3.2")
    assert caught.value.status == status and message in caught.value.message


def test_show_passes_ollamas_description_on_with_the_served_context_length() -> None:
    facts = Facts(
        vllm=VllmModel(4096, "meta-llama/Llama-3.2-3B-Instruct"),
        ollama_show=show(),
        ollama_running=running(context_length=8192),
    )
    answer = modelinfo.show_answer(facts, {"chat"}, NOW)
    parsed = ShowResponse(**answer)
    assert parsed.details is not None and parsed.details.model_dump() == OLLAMA_SHOW["details"]
    assert parsed.modelinfo is not None
    assert parsed.modelinfo["llama.context_length"] == 4096  # not the trained 131072
    assert parsed.modelinfo["llama.embedding_length"] == 3072  # the rest as Ollama wrote it
    assert parsed.capabilities == ["completion", "tools"]
    assert (parsed.template, parsed.license, parsed.parameters) == (
        OLLAMA_SHOW["template"],
        OLLAMA_SHOW["license"],
        OLLAMA_SHOW["parameters"],
    )
    assert parsed.modified_at == datetime.fromtimestamp(NOW, UTC)  # the router's, as in tags
    assert OLLAMA_SHOW["model_info"]["llama.context_length"] == 131072  # input not modified


def test_show_with_vllm_alone_invents_nothing_but_the_context_length() -> None:
    answer = modelinfo.show_answer(Facts(vllm=VllmModel(2048, "x")), {"chat"}, NOW)
    parsed = ShowResponse(**answer)
    assert parsed.details is not None
    assert parsed.details.model_dump() == modelinfo.empty_details()
    # Where `ollama show` and other clients look: `<general.architecture>.context_length`,
    # `<details.family>.context_length`, or any key ending in `context_length`.
    assert parsed.modelinfo == {"general.architecture": "", ".context_length": 2048}
    assert parsed.capabilities == ["completion"]
    assert parsed.template is None and parsed.modelfile is None


def test_show_from_nothing_still_describes_the_model() -> None:
    answer = modelinfo.show_answer(Facts(), {"chat", "embeddings"}, NOW)
    assert answer["model_info"] == {"general.architecture": ""}
    assert answer["capabilities"] == ["completion", "embedding"]
    ShowResponse(**answer)


def test_show_family_follows_the_architecture_when_ollama_left_it_empty() -> None:
    doc = show(**{"general.architecture": "qwen2", "qwen2.context_length": 32768})
    doc["details"]["family"] = ""
    answer = modelinfo.show_answer(Facts(ollama_show=doc), {"chat"}, NOW)
    assert answer["details"]["family"] == "qwen2"
    assert answer["model_info"]["qwen2.context_length"] == 32768


def test_show_architecture_from_the_family_when_model_info_lacks_it() -> None:
    doc = copy.deepcopy(OLLAMA_SHOW)
    del doc["model_info"]
    answer = modelinfo.show_answer(Facts(vllm=VllmModel(1000, None), ollama_show=doc), (), NOW)
    assert answer["model_info"] == {"general.architecture": "llama", "llama.context_length": 1000}


@pytest.mark.parametrize(
    ("given", "apis", "expected"),
    [
        (["completion", "vision"], {"embeddings"}, ["completion", "vision"]),
        (None, {"embeddings"}, ["embedding"]),
        ([], {"chat", "embeddings"}, ["completion", "embedding"]),
        ("completion", set(), ["completion"]),
        ([1, "tools"], {"chat"}, ["completion"]),
    ],
)
def test_capabilities_are_ollamas_else_what_the_consumers_use(
    given: object, apis: set[str], expected: list[str]
) -> None:
    described = {"capabilities": given} if given is not None else None
    assert modelinfo.capabilities(described, apis) == expected


def test_ps_lists_nothing_while_no_engine_holds_the_model() -> None:
    assert modelinfo.ps_answer("llama3.2", Facts(), NOW) == {"models": []}
    assert ProcessResponse(**modelinfo.ps_answer("llama3.2", Facts(), NOW)).models == []


def test_ps_with_vllm_holding_the_model_never_expires() -> None:
    facts = Facts(vllm=VllmModel(2048, None), ollama_running=running(context_length=4096))
    answer = modelinfo.ps_answer("llama3.2", facts, NOW)
    (model,) = ProcessResponse(**answer).models
    assert model.model == model.name == "llama3.2:latest"
    assert model.digest == modelinfo.digest("llama3.2")  # the router's, as in /api/tags
    assert model.expires_at is not None
    assert model.expires_at.year - datetime.fromtimestamp(NOW, UTC).year > 20  # "Forever"
    assert model.context_length == 2048
    assert (model.size, model.size_vram) == (3_400_000_000, 3_000_000_000)  # Ollama's
    assert model.details is not None and model.details.family == "llama"


def test_ps_with_ollama_alone_keeps_its_expiry_and_context() -> None:
    answer = modelinfo.ps_answer("llama3.2", Facts(ollama_running=running()), NOW)
    (entry,) = answer["models"]
    assert entry["expires_at"] == "2025-06-16T00:00:00Z" and entry["context_length"] == 4096
    ProcessResponse(**answer)


def test_ps_with_vllm_alone_reports_no_sizes_and_no_details() -> None:
    answer = modelinfo.ps_answer("llama3.2", Facts(vllm=VllmModel(None, None)), NOW)
    (entry,) = answer["models"]
    assert entry["size"] == 0 and entry["size_vram"] == 0
    assert entry["details"] == modelinfo.empty_details()
    assert "context_length" not in entry  # vLLM did not say: not claimed
    ProcessResponse(**answer)


def test_ps_ignores_ollama_fields_of_the_wrong_type() -> None:
    odd = running(size="big", size_vram=-1, expires_at=5, details=[1], context_length=None)
    (entry,) = modelinfo.ps_answer("llama3.2", Facts(ollama_running=odd), NOW)["models"]
    assert entry["size"] == 0 and entry["size_vram"] == 0
    assert "expires_at" not in entry and "context_length" not in entry
    assert entry["details"] == modelinfo.empty_details()
