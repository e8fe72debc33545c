"""Ollama's model endpoints through the router, with the official `ollama` client: `show` and
`ps` describe the model from what the engines report; pull, push, create, copy, delete and
blob uploads are refused, naming where the model is changed instead."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ollama
import pytest
from testsupport.standin import OLLAMA_SHOW, EngineStandin

from inferops.router import inquiry
from tests.router.conftest import Router


def asked(engine: EngineStandin) -> list[tuple[str, dict[str, Any]]]:
    return [(seen.path, seen.body) for seen in engine.seen]


async def test_show_is_ollamas_description_with_the_context_every_engine_accepts(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    shown = await router.ollama().show("llama3.2:3b")  # an alias: Ollama knows the model only
    assert isinstance(shown, ollama.ShowResponse)
    assert shown.details is not None
    assert (
        shown.details.format,
        shown.details.family,
        shown.details.parameter_size,
        shown.details.quantization_level,
    ) == ("gguf", "llama", "3.2B", "Q4_K_M")
    assert shown.modelinfo is not None
    # vLLM's max_model_len (2048) is below Ollama's loaded context (4096) and the trained one.
    assert shown.modelinfo["llama.context_length"] == 2048
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.capabilities == ["completion", "tools"]
    assert shown.template == OLLAMA_SHOW["template"]
    assert asked(vllm) == [("/v1/models", {})]
    assert sorted(asked(ollama_engine), key=str) == [
        ("/api/ps", {}),
        ("/api/show", {"model": "llama3.2", "verbose": False}),
    ]


async def test_show_context_follows_the_smallest_engine(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    vllm.behaviour.max_model_len = 32768
    ollama_engine.behaviour.context_length = 8192
    shown = await router.ollama().show("llama3.2")
    assert shown.modelinfo is not None and shown.modelinfo["llama.context_length"] == 8192


async def test_show_without_ollama_has_vllms_context_and_the_consumers_capabilities(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    await router.set_engine("ollama", ready=False)
    shown = await router.ollama().show("llama3.2")
    assert shown.details is not None and shown.details.family == ""
    assert shown.modelinfo is not None
    arch = shown.modelinfo["general.architecture"]
    assert shown.modelinfo[f"{arch}.context_length"] == 2048  # where `ollama show` looks
    assert shown.capabilities == ["completion", "embedding"]  # chat and embeddings consumers
    assert ollama_engine.seen == []  # an engine without Ready pods is not asked


async def test_show_answers_when_the_engines_do_not(
    router: Router,
    vllm: EngineStandin,
    ollama_engine: EngineStandin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vllm.behaviour.fail_status = 500
    ollama_engine.behaviour.delay = 5.0
    monkeypatch.setattr(inquiry, "ASK_SECONDS", 0.3)
    started = time.monotonic()
    shown = await router.ollama().show("llama3.2")
    assert time.monotonic() - started < 3.0  # not the engine's 5 s
    assert shown.modelinfo == {"general.architecture": ""}  # no context length claimed
    assert shown.capabilities == ["completion", "embedding"]


async def test_show_refusals_in_ollamas_dialect(router: Router) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        await router.ollama().show("mistral")
    assert caught.value.status_code == 404
    assert caught.value.error == "model 'mistral' not found: this endpoint serves 'llama3.2'"
    async with router.http.post(f"{router.url}/api/show", data=b"[1]") as response:
        assert response.status == 400
        assert (await response.json())["error"] == "the request body must be a JSON object"


async def test_ps_lists_the_model_vllm_holds_forever(router: Router) -> None:
    listed = await router.ollama().ps()
    assert isinstance(listed, ollama.ProcessResponse)
    (model,) = listed.models
    assert model.model == model.name == "llama3.2:latest"
    assert model.context_length == 2048
    assert model.expires_at is not None
    assert model.expires_at.year > datetime.now(UTC).year + 20  # what `ollama ps` calls Forever
    assert model.size == 3_400_000_000  # Ollama's figure: vLLM reports no memory
    assert model.details is not None and model.details.quantization_level == "Q4_K_M"
    tags = await router.ollama().list()
    assert model.digest == tags.models[0].digest  # one model, one digest, on every endpoint


async def test_ps_follows_the_engines_that_hold_the_model(
    router: Router, ollama_engine: EngineStandin
) -> None:
    await router.set_engine("vllm", ready=False)
    (model,) = (await router.ollama().ps()).models
    assert model.expires_at == datetime(2030, 1, 1, tzinfo=UTC)  # Ollama's keep-alive
    assert model.context_length == 4096
    ollama_engine.behaviour.loaded = False  # its keep-alive ran out
    assert (await router.ollama().ps()).models == []


async def test_show_and_ps_wait_for_a_table(router: Router) -> None:
    router.state.routes = None
    for answer in (router.ollama().show("llama3.2"), router.ollama().ps()):
        with pytest.raises(ollama.ResponseError) as caught:
            await answer
        assert caught.value.status_code == 503
        assert caught.value.error == "no routing table loaded yet"


async def test_model_management_is_refused_naming_the_inferencebackend(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin, tmp_path: Path
) -> None:
    client = router.ollama()
    blob = tmp_path / "adapter.bin"
    blob.write_bytes(b"\0" * 1024)
    attempts = {
        "POST /api/pull": client.pull("llama3.2"),
        "POST /api/push": client.push("llama3.2"),
        "POST /api/create": client.create("mine", from_="llama3.2"),
        "POST /api/copy": client.copy("llama3.2", "backup"),
        "DELETE /api/delete": client.delete("llama3.2"),
    }
    for request, attempt in attempts.items():
        with pytest.raises(ollama.ResponseError) as caught:
            await attempt
        assert caught.value.status_code == 403, request
        assert caught.value.error == (
            f"{request} is not served here: the model 'llama3.2' is declared in its "
            "InferenceBackend resource and rolled out by the inferops operator. To change it, "
            "edit the InferenceBackend's spec.ollama.model (the Ollama tag) and "
            "spec.vllm.model (the vLLM model)"
        )
    with pytest.raises(ollama.ResponseError) as caught:
        await client.create_blob(blob)
    assert caught.value.status_code == 403 and "spec.ollama.model" in caught.value.error
    with pytest.raises(ollama.ResponseError) as caught:  # streamed progress, refused alike
        async for _ in await client.pull("llama3.2", stream=True):
            pass
    assert caught.value.status_code == 403
    async with router.http.head(f"{router.url}/api/blobs/sha256:00") as response:
        assert response.status == 403  # "does this blob exist?", asked before an upload
    assert vllm.seen == [] and ollama_engine.seen == []


async def test_a_refused_upload_is_answered_before_it_is_sent(router: Router) -> None:
    """A blob upload is refused as soon as its headers arrive, not after the router took in
    (or buffered) gigabytes only to throw them away."""
    reader, writer = await asyncio.open_connection("127.0.0.1", router.server.port)
    writer.write(
        b"POST /api/blobs/sha256:00 HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 10000000000\r\n\r\n" + b"\0" * 65536
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 403 ")
    writer.close()


async def test_management_is_refused_before_a_table_arrives(router: Router) -> None:
    router.state.routes = None
    with pytest.raises(ollama.ResponseError) as caught:
        await router.ollama().pull("llama3.2")
    assert caught.value.status_code == 403
    assert caught.value.error.startswith("POST /api/pull is not served here: the model is ")
