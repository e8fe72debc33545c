"""The shadow step's mirror in the router, against engine stand-ins: the client is answered by
Ollama as before; a sample of the consumer's requests is asked again of Ollama and of vLLM,
compared, and counted per verdict; not-comparable requests, the concurrency bound, failing
engines and probes; mismatch examples without content unless the table allows it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from testsupport.standin import EngineStandin

from inferops.router import shadow
from tests.router.conftest import Router
from tests.router.test_routing import sample

MESSAGES = [{"role": "user", "content": "what is my account number?"}]
SHADOW = "inferops_router_shadow_total"


async def at_shadow_step(router: Router, consumer: str = "rag", **mirror: Any) -> None:
    config = {"percent": 100, "noisePercent": 100, "maxConcurrent": 4, "timeoutSeconds": 10}
    config |= mirror
    consumers = [
        {**c, "weight": 0, "shadow": config} if c["name"] == consumer else c
        for c in router.table["consumers"]
    ]
    await router.set_table(consumers=consumers)


def mirrors(router: Router) -> shadow.Mirrors:
    return shadow.mirrors(router.state.pool, router.state.metrics)


async def counted(router: Router, total: float, **labels: str) -> str:
    """Waits until the shadow counter with `labels` reaches `total`; the metrics page."""
    page = ""
    for _ in range(200):
        page = await router.metrics()
        if sample(page, SHADOW, **labels) >= total:
            return page
        await asyncio.sleep(0.05)
    raise AssertionError(f"{SHADOW}{labels} never reached {total}: {page}")


async def test_same_answers_agree_and_the_client_is_answered_by_ollama(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    await at_shadow_step(router)
    client = router.openai("llama32-rag")
    for _ in range(3):
        raw = await client.chat.completions.with_raw_response.create(
            model="llama3.2",
            messages=MESSAGES,
            temperature=0,  # type: ignore[arg-type]
        )
        assert raw.headers["X-Inferops-Engine"] == "ollama"
        assert raw.parse().choices[0].message.content == "Hello from ollama"
    # Ollama against itself agrees; "Hello from vllm" against "Hello from ollama" does not.
    page = await counted(router, 3, consumer="rag", engine="ollama", verdict="exact")
    assert sample(page, SHADOW, consumer="rag", engine="vllm", verdict="disagree") == 3
    assert sample(page, SHADOW, consumer="rag", engine="vllm", kind="deterministic") == 3
    # Mirrored requests are not the consumer's: vLLM counts no request for it.
    assert sample(page, "inferops_router_requests_total", consumer="rag", engine="vllm") == 0
    assert sample(page, "inferops_router_requests_total", consumer="rag", engine="ollama") == 3
    # Both engines were asked the same non-streaming request.
    mirrored = [s for s in vllm.seen if s.path == "/v1/chat/completions"]
    assert len(mirrored) == 3 and all(s.body["stream"] is False for s in mirrored)
    assert ollama_engine.hits == 3 + 3 * 2  # the client's, the reference and the noise copy


async def test_an_ollama_api_consumer_is_mirrored_in_the_openai_form(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    """Its request goes natively to Ollama for the client; the mirror asks both engines the
    OpenAI form vLLM would be asked, so its comparisons count (not dropped)."""
    await at_shadow_step(router)
    answer = await router.ollama("llama32-rag").chat(
        model="llama3.2", messages=MESSAGES, options={"temperature": 0}, stream=False
    )
    assert answer.message.content == "Hello from ollama"
    assert [s.path for s in ollama_engine.seen][:1] == ["/api/chat"]
    page = await counted(router, 1, consumer="rag", engine="vllm", verdict="disagree")
    assert sample(page, SHADOW, consumer="rag", verdict="dropped") == 0
    mirrored = [s for s in vllm.seen if s.path == "/v1/chat/completions"]
    assert len(mirrored) == 1 and mirrored[0].body["temperature"] == 0


async def test_a_request_without_an_openai_form_is_dropped_never_sent_natively_to_vllm(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    """A chat with no messages (Ollama loads the model) has no form vLLM could be asked: the
    mirror counts it as dropped instead of sending Ollama's native request to vLLM."""
    await at_shadow_step(router)
    await router.ollama("llama32-rag").chat(model="llama3.2", messages=[], stream=False)
    assert [s.path for s in ollama_engine.seen][:1] == ["/api/chat"]
    await counted(router, 1, consumer="rag", engine="vllm", kind="other", verdict="dropped")
    assert vllm.seen == []


async def test_identical_answers_are_exact(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    vllm.behaviour.words = ollama_engine.behaviour.words = ["Your", " number", " is", " 42"]
    await at_shadow_step(router)
    stream = await router.openai("llama32-rag").chat.completions.create(
        model="llama3.2",
        messages=MESSAGES,
        temperature=0,
        stream=True,  # type: ignore[arg-type]
    )
    assert "".join([c.choices[0].delta.content or "" async for c in stream]) == "Your number is 42"
    page = await counted(router, 1, consumer="rag", engine="vllm", verdict="exact")
    assert sample(page, SHADOW, consumer="rag", engine="ollama", verdict="exact") == 1
    assert not mirrors(router).examples.get("rag")


async def test_mismatch_examples_hold_no_content_unless_allowed(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    vllm.behaviour.words = ["Your", " code", " is", " omega"]
    ollama_engine.behaviour.words = ["Your", " code", " is", " alpha"]
    await at_shadow_step(router, noisePercent=0)
    client = router.ollama("llama32-rag")
    answer = await client.chat(
        model="llama3.2", messages=MESSAGES, options={"temperature": 0}, stream=False
    )
    assert answer.message.content == "Your code is alpha"
    await counted(router, 1, consumer="rag", engine="vllm", verdict="disagree", route="ollama_chat")
    (example,) = mirrors(router).examples["rag"]
    assert not any(word in example for word in ("code", "alpha", "omega"))
    assert "lengths 18/18 chars, first difference at char 13" in example

    await at_shadow_step(router, noisePercent=0, recordContent=True)
    await client.chat(model="llama3.2", messages=MESSAGES, options={"temperature": 0}, stream=False)
    await counted(router, 2, consumer="rag", engine="vllm", verdict="disagree")
    assert "alpha" in mirrors(router).examples["rag"][-1]
    assert "omega" in mirrors(router).examples["rag"][-1]


async def test_sampled_requests_are_not_comparable_and_not_mirrored(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    await at_shadow_step(router)
    client = router.openai("llama32-rag")
    await client.chat.completions.create(model="llama3.2", messages=MESSAGES)  # type: ignore[arg-type]
    await client.chat.completions.create(
        model="llama3.2",
        messages=MESSAGES,
        temperature=0.7,
        seed=3,  # type: ignore[arg-type]
    )
    page = await counted(router, 2, consumer="rag", verdict="uncomparable", kind="other")
    assert vllm.hits == 0 and ollama_engine.hits == 2
    assert sample(page, SHADOW, consumer="rag", verdict="exact") == 0


async def test_json_answers_by_validity_and_fields(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    ollama_engine.behaviour.words = ['{"name": "Ann", ', '"age": 31}']
    vllm.behaviour.words = ['{"name": "Bob", ', '"age": 30}']
    await at_shadow_step(router, noisePercent=0)
    client = router.openai("llama32-rag")
    await client.chat.completions.create(
        model="llama3.2",
        messages=MESSAGES,  # type: ignore[arg-type]
        response_format={"type": "json_object"},
        temperature=0.8,
    )
    await counted(router, 1, consumer="rag", engine="vllm", kind="json", verdict="similar")
    vllm.behaviour.words = ['{"name": "Bob"']  # cut: not valid JSON
    await client.chat.completions.create(
        model="llama3.2",
        messages=MESSAGES,  # type: ignore[arg-type]
        response_format={"type": "json_object"},
    )
    await counted(router, 1, consumer="rag", engine="vllm", kind="json", verdict="disagree")
    assert "json: not valid JSON" in mirrors(router).examples["rag"][-1]
    assert "Bob" not in mirrors(router).examples["rag"][-1]


@pytest.mark.parametrize(("min_cosine", "verdict"), [(0.99, "disagree"), (0.95, "similar")])
async def test_embeddings_by_cosine(
    router: Router, vllm: EngineStandin, min_cosine: float, verdict: str
) -> None:
    # The stand-ins' vectors: [2, len, 0.5] on Ollama, [1, len, 0.5] on vLLM; for "hello"
    # their cosine is 0.9835.
    await at_shadow_step(router, noisePercent=0, minCosine=min_cosine)
    await router.openai("llama32-rag").embeddings.create(model="llama3.2", input="hello")
    await counted(router, 1, consumer="rag", kind="embeddings", verdict=verdict)


async def test_a_failing_vllm_is_an_error_and_the_client_never_sees_it(
    router: Router, vllm: EngineStandin
) -> None:
    vllm.behaviour.fail_status = 500
    await at_shadow_step(router, noisePercent=0)
    answer = await router.openai("llama32-rag").chat.completions.create(
        model="llama3.2",
        messages=MESSAGES,
        temperature=0,  # type: ignore[arg-type]
    )
    assert answer.choices[0].message.content == "Hello from ollama"
    await counted(router, 1, consumer="rag", engine="vllm", verdict="error")
    assert "vLLM answered HTTP 500" in mirrors(router).examples["rag"][-1]


async def test_beyond_the_bound_a_sample_is_dropped_not_queued(
    router: Router, vllm: EngineStandin
) -> None:
    vllm.behaviour.delay = 3.0  # longer than the mirror's timeout: it times out
    await at_shadow_step(router, noisePercent=0, maxConcurrent=1, timeoutSeconds=1)
    client = router.openai("llama32-rag")
    for _ in range(2):  # the second arrives while the first's mirror waits for vLLM
        answer = await client.chat.completions.create(
            model="llama3.2",
            messages=MESSAGES,
            temperature=0,  # type: ignore[arg-type]
        )
        assert answer.choices[0].message.content == "Hello from ollama"
    page = await counted(router, 1, consumer="rag", engine="vllm", verdict="error")
    assert sample(page, SHADOW, consumer="rag", engine="vllm", verdict="dropped") == 1
    assert "vLLM timed out" in mirrors(router).examples["rag"][-1]
    assert mirrors(router).active["rag"] == 0


async def test_probes_and_other_consumers_are_not_mirrored(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    await at_shadow_step(router)
    probe = router.openai("llama32-rag", **{"X-Inferops-Probe": "ollama"})
    await probe.chat.completions.create(model="llama3.2", messages=MESSAGES, temperature=0)  # type: ignore[arg-type]
    other = router.openai("llama32-ner")  # weight 30, no shadow
    for _ in range(5):
        await other.chat.completions.create(model="llama3.2", messages=MESSAGES, temperature=0)  # type: ignore[arg-type]
    page = await router.metrics()
    assert not [line for line in page.splitlines() if line.startswith(SHADOW)]
    assert ollama_engine.hits == 1 + (5 - vllm.hits)  # nothing asked a second time


async def test_a_sample_is_dropped_while_ollama_is_at_its_admission_limit(
    router: Router, ollama_engine: EngineStandin
) -> None:
    """Live requests first: a request that leaves Ollama with another one waiting for its
    slot is not mirrored (its reference answers would queue in Ollama ahead of it)."""
    await router.set_engine(
        "ollama", admission={"maxConcurrent": 1, "maxWaiting": 4, "maxWaitSeconds": 10}
    )
    await at_shadow_step(router, noisePercent=0)
    ollama_engine.behaviour.delay = 0.5
    client = router.openai("llama32-rag")
    answers = await asyncio.gather(
        *(
            client.chat.completions.create(
                model="llama3.2",
                messages=MESSAGES,  # type: ignore[arg-type]
                temperature=0,
            )
            for _ in range(2)
        )
    )
    assert [a.choices[0].message.content for a in answers] == ["Hello from ollama"] * 2
    # The first answer left the second holding Ollama's only slot: dropped. The second
    # left Ollama idle: mirrored (and compared: the stand-ins' words differ).
    page = await counted(router, 1, consumer="rag", engine="vllm", verdict="disagree")
    assert sample(page, SHADOW, consumer="rag", engine="vllm", verdict="dropped") == 1
