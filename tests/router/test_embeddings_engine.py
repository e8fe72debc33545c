"""vLLM's embeddings deployment in the routing table (`engines.embeddings`, spec.vllm.embeddings):
a consumer's embeddings requests go to it by the consumer's own `embeddingsWeight`, apart from
its chat, which follows `weight` to the generation vLLM. It is vLLM to the metrics, the probes
and the translation of Ollama-API requests; an engine that is not ready, or fails, leaves
embeddings to Ollama. The official `ollama` and `openai` clients are the consumers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from testsupport.standin import EngineStandin

from tests.router.conftest import Router
from tests.router.test_routing import sample

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def pooling() -> AsyncIterator[EngineStandin]:
    """The embeddings deployment's stand-in."""
    fake = EngineStandin("vllm-embeddings")
    await fake.start()
    yield fake
    await fake.stop()


async def with_embeddings_engine(router: Router, pooling: EngineStandin, **weights: int) -> None:
    """The table with the embeddings deployment, vLLM serving generation only, and each
    named consumer's embeddings weight (the others 0)."""
    engines: dict[str, Any] = dict(router.table["engines"])
    engines["vllm"] = {**engines["vllm"], "kinds": ["chat", "completions"]}
    engines["embeddings"] = {"url": pooling.url, "ready": True, "kinds": ["embeddings"]}
    consumers = [
        {**c, "embeddingsWeight": weights.get(c["name"], 0)} for c in router.table["consumers"]
    ]
    await router.set_table(engines=engines, consumers=consumers)


async def test_embeddings_follow_their_own_weight_and_chat_its_own(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin, pooling: EngineStandin
) -> None:
    # notes: chat at 100 on vLLM, embeddings still on Ollama; rag: the other way round.
    await with_embeddings_engine(router, pooling, rag=100)
    notes = await router.ollama("llama32-notes").embed(model="llama3.2", input="abc")
    assert [list(v) for v in notes.embeddings] == [[3.0, 3.0, 0.5]]  # Ollama's native answer
    chat = await router.ollama("llama32-notes").chat(model="llama3.2", messages=MESSAGES)
    assert chat.message.content == "Hello from vllm"
    assert pooling.seen == []

    rag = await router.ollama("llama32-rag").embed(model="llama3.2", input=["a", "bb"])
    assert [list(v) for v in rag.embeddings] == [[2.0, 1.0, 0.5], [2.0, 2.0, 0.5]]
    vectors = await router.openai("llama32-rag").embeddings.create(model="llama3.2", input="ab")
    assert vectors.data[0].embedding == [2.0, 2.0, 0.5]
    # The Ollama-API request was translated for vLLM, like any request to vLLM.
    assert [s.path for s in pooling.seen] == ["/v1/embeddings", "/v1/embeddings"]
    chat = await router.ollama("llama32-rag").chat(model="llama3.2", messages=MESSAGES)
    assert chat.message.content == "Hello from ollama"
    assert [s.path for s in vllm.seen] == ["/v1/chat/completions"]
    assert not [s for s in ollama_engine.seen if "embed" in s.path and s.body.get("input") == "ab"]

    metrics = await router.metrics()
    for route in ("ollama_embed", "embeddings"):
        labels = {"consumer": "rag", "engine": "vllm", "route": route, "code": "200"}
        assert sample(metrics, "inferops_router_requests_total", **labels) == 1
    # By weight, not rerouted: the kind is served on the vLLM side.
    assert sample(metrics, "inferops_router_rerouted_total", consumer="rag") == 0


async def test_embeddings_go_to_ollama_while_the_deployment_is_not_ready(
    router: Router, ollama_engine: EngineStandin, pooling: EngineStandin
) -> None:
    await with_embeddings_engine(router, pooling, rag=100)
    await router.set_engine("embeddings", ready=False)
    embedded = await router.ollama("llama32-rag").embed(model="llama3.2", input="abc")
    assert [list(v) for v in embedded.embeddings] == [[3.0, 3.0, 0.5]]
    assert pooling.seen == []


async def test_a_failing_deployment_falls_back_to_ollama(
    router: Router, ollama_engine: EngineStandin, pooling: EngineStandin
) -> None:
    await with_embeddings_engine(router, pooling, rag=100)
    pooling.behaviour.fail_status = 500
    vectors = await router.openai("llama32-rag").embeddings.create(model="llama3.2", input="ab")
    assert vectors.data[0].embedding == [2.0, 2.0, 0.5]  # Ollama's /v1 after vLLM's 500
    assert len(pooling.seen) == 1
    metrics = await router.metrics()
    labels = {"consumer": "rag", "engine": "vllm", "route": "embeddings"}
    assert sample(metrics, "inferops_router_errors_total", **labels) == 1


async def test_a_probe_pinned_to_vllm_reaches_the_engine_that_serves_its_kind(
    router: Router, vllm: EngineStandin, pooling: EngineStandin
) -> None:
    """The operator's probes and vector check say `vllm`: embeddings go to the embeddings
    deployment, chat to the generation vLLM, whatever the weights (rag's are 0 for chat)."""
    await with_embeddings_engine(router, pooling)
    pinned = router.openai("llama32-rag", **{"X-Inferops-Probe": "vllm"})
    await pinned.embeddings.create(model="llama3.2", input=["x", "yy"])
    assert [s.path for s in pooling.seen] == ["/v1/embeddings"]
    await pinned.chat.completions.create(model="llama3.2", messages=MESSAGES)  # type: ignore[arg-type]
    assert [s.path for s in vllm.seen] == ["/v1/chat/completions"]
    await router.set_engine("embeddings", ready=False)
    with pytest.raises(Exception, match="has no Ready pods"):
        await pinned.embeddings.create(model="llama3.2", input="x")
