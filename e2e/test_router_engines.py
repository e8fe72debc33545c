"""The router with real engines, seen through the official clients.

Both engines are the real thing, serving the same tiny model generated here (see
docs/engines.md): vLLM's CPU build from the Hugging Face files, Ollama built from its Go
module from a GGUF of the same weights, registered under the logical model name. Consumers
are the official `openai` and `ollama` Python clients, streaming and not, on both sides of
the split: weight 100 sends a consumer to vLLM, weight 0 to Ollama. Where a request went is
counted at the engine (Ollama's own access log) as well as in the router's answer header.
The router is its own process, fed a routing table file. The test that kills vLLM runs last.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ollama
import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionChunk
from testsupport.markers import needs
from testsupport.programs import RouterProcess
from testsupport.standin import WEATHER_TOOL

from e2e.engines.ollama_server import OllamaServer
from e2e.engines.tiny_model import ensure_tiny_model
from e2e.engines.vllm_cpu import ensure_vllm_env
from e2e.engines.vllm_server import VLLMServer
from e2e.harness import wait_for

pytestmark = needs("vllm", "ollama")

MODEL = "llama3.2"
HOST = "llama32-notes"  # the consumer's Service name, as a pod would send it
SEARCH_HOST = "llama32-search"  # an embeddings consumer, kept on Ollama


@pytest.fixture(scope="module")
def vllm_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    ensure_vllm_env()
    server = VLLMServer(
        ensure_tiny_model(),
        served_model_name=MODEL,
        log_path=tmp_path_factory.mktemp("vllm") / "vllm.log",
    )
    server.start()
    yield server
    server.stop()


class TableRouter(RouterProcess):
    """The router fed a routing table file that the test rewrites."""

    def __init__(self, table: dict[str, Any], directory: Path) -> None:
        self.table = table
        self.table_file = directory / "routes.json"
        self.table_file.write_text(json.dumps(table))
        super().__init__(["--table-file", str(self.table_file)], directory / "router.log")

    def set_weight(self, consumer: str, weight: int) -> None:
        for entry in self.table["consumers"]:
            if entry["name"] == consumer:
                entry["weight"] = weight
        self.table_file.write_text(json.dumps(self.table))

        def installed() -> bool:
            found = self.metric(
                "inferops_router_consumer_weight", consumer=consumer, kind="configured"
            )
            return found == weight

        wait_for(f"weight {weight} for {consumer} in the router", installed, 10)


@pytest.fixture(scope="module")
def router(
    vllm_engine: VLLMServer, ollama_engine: OllamaServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TableRouter]:
    table = {
        "model": MODEL,
        "engines": {
            # What the operator writes for vLLM's generation runner and for Ollama.
            # (no tool-call parser: started without --enable-auto-tool-choice)
            "vllm": {
                "url": vllm_engine.url,
                "ready": True,
                "kinds": ["chat", "completions"],
                "toolCalling": False,
            },
            "ollama": {"url": ollama_engine.url, "ready": True},
        },
        "consumers": [
            {"name": "notes", "hosts": [HOST], "weight": 100, "api": "chat"},
            {"name": "search", "hosts": [SEARCH_HOST], "weight": 0, "api": "embeddings"},
        ],
        "fallback": True,
        "timeouts": {"connectSeconds": 2, "firstByteSeconds": 30, "totalSeconds": 120},
        "maxBodyBytes": 1 << 20,
    }
    handle = TableRouter(table, tmp_path_factory.mktemp("router"))
    handle.start()
    yield handle
    handle.stop()


def openai_client(router: TableRouter) -> OpenAI:
    return OpenAI(
        base_url=f"{router.url}/v1", api_key="unused", max_retries=0, default_headers={"Host": HOST}
    )


def ollama_client(router: TableRouter, host: str = HOST) -> ollama.Client:
    return ollama.Client(host=router.url, headers={"Host": host})


def answered_by(client: OpenAI, engine: str) -> None:
    """The models list, then a chat answer through the router from `engine`."""
    assert [m.id for m in client.models.list().data] == [MODEL]
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}], max_tokens=8
    )
    assert raw.headers["x-inferops-engine"] == engine
    answer = raw.parse()
    assert answer.model == MODEL and answer.choices[0].message.role == "assistant"
    assert answer.usage is not None and answer.usage.completion_tokens >= 1


def streamed(
    client: OpenAI, max_tokens: int, content: str = "Hello", **options: Any
) -> list[ChatCompletionChunk]:
    """A streamed (SSE) chat answer, chunk by chunk."""
    messages = [{"role": "user", "content": content}]
    create = client.chat.completions.create
    return list(
        create(model=MODEL, messages=messages, max_tokens=max_tokens, stream=True, **options)
    )


def stream_and_complete(client: OpenAI, **options: Any) -> list[ChatCompletionChunk]:
    """A streamed chat answer of up to 16 tokens, returned for the caller to judge, then a
    completion."""
    chunks = streamed(client, 16, **options)
    completion = client.completions.create(model=MODEL, prompt="Once upon", max_tokens=4)
    assert completion.choices[0].finish_reason in ("length", "stop")
    return chunks


def chat_and_generate(client: ollama.Client) -> ollama.GenerateResponse:
    """Ollama's API: a chat answer, a streamed one (NDJSON, part by part), then `generate`'s
    answer for the caller to judge."""
    reply = client.chat(
        model=MODEL,
        messages=[{"role": "user", "content": "Hello"}],
        options={"num_predict": 8, "temperature": 0},
    )
    assert reply.message.role == "assistant" and reply.done
    assert reply.eval_count is not None and reply.eval_count >= 1

    parts = list(
        client.chat(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            options={"num_predict": 12},
        )
    )
    assert len(parts) >= 2 and parts[-1].done and not parts[0].done

    generated = client.generate(
        model=MODEL, prompt="Why is the sky blue?", options={"num_predict": 6}
    )
    return generated


def test_openai_client_reaches_real_vllm(router: TableRouter) -> None:
    client = openai_client(router)
    router.set_weight("notes", 100)
    answered_by(client, "vllm")

    chunks = stream_and_complete(client, extra_body={"ignore_eos": True})
    assert len(chunks) >= 16  # token by token, not buffered into one
    assert chunks[-1].choices[0].finish_reason == "length"


def test_ollama_client_reaches_real_vllm(router: TableRouter) -> None:
    client = ollama_client(router)
    router.set_weight("notes", 100)
    before = router.metric("inferops_router_requests_total", engine="vllm") or 0.0

    generated = chat_and_generate(client)
    assert generated.done and generated.response is not None

    assert [m.model for m in client.list().models] == [f"{MODEL}:latest"]  # as Ollama names it
    after = router.metric("inferops_router_requests_total", engine="vllm") or 0.0
    assert after - before >= 3


def test_ollama_client_show_and_ps_see_real_vllm(router: TableRouter) -> None:
    """`show` is the Ollama engine's description with the context real vLLM serves (its
    max_model_len, 256, below the stand-in's trained 131072 and loaded 4096); `ps` lists the
    model vLLM holds for good; pulling is refused."""
    client = ollama_client(router)
    shown = client.show(MODEL)
    assert shown.details is not None
    assert (shown.details.format, shown.details.family) == ("gguf", "llama")
    assert shown.modelinfo is not None and shown.modelinfo["llama.context_length"] == 256
    (model,) = client.ps().models
    assert model.model == f"{MODEL}:latest" and model.context_length == 256
    assert model.expires_at is not None
    assert model.expires_at.year > datetime.now(UTC).year + 20
    with pytest.raises(ollama.ResponseError) as caught:
        client.pull(MODEL)
    assert caught.value.status_code == 403 and "spec.vllm.model" in caught.value.error


def test_openai_client_reaches_real_ollama(
    router: TableRouter, ollama_engine: OllamaServer
) -> None:
    """Weight 0: the OpenAI API through the router lands on real Ollama's `/v1`, SSE
    streaming included, under the logical name and its `:latest` form."""
    client = openai_client(router)
    router.set_weight("notes", 0)
    served_before = ollama_engine.served()
    answered_by(client, "ollama")

    chunks = stream_and_complete(client, stream_options={"include_usage": True})
    finished = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(chunks) >= 3 and finished[-1].choices[0].finish_reason in ("length", "stop")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    hi = [{"role": "user", "content": "Hi"}]
    tagged = client.chat.completions.create(model=f"{MODEL}:latest", messages=hi, max_tokens=4)  # type: ignore[arg-type]
    assert tagged.choices[0].message.role == "assistant"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=hi, max_tokens=4)  # type: ignore[arg-type]
    # Four answered by Ollama itself; the unknown model never left the router.
    wait_for("4 answers in Ollama's log", lambda: ollama_engine.served() - served_before == 4, 10)


def test_ollama_client_reaches_real_ollama(
    router: TableRouter, ollama_engine: OllamaServer
) -> None:
    """Weight 0: Ollama's own API through the router, passed through to real Ollama's own
    `/api/` endpoints, NDJSON streaming included; names as Ollama gives them."""
    client = ollama_client(router)
    router.set_weight("notes", 0)
    served_before = ollama_engine.served("/api/")

    generated = chat_and_generate(client)
    assert generated.done and generated.response

    tagged = client.chat(
        model=f"{MODEL}:latest",
        messages=[{"role": "user", "content": "Hi"}],
        options={"num_predict": 4},
    )
    assert tagged.done and tagged.model == f"{MODEL}:latest"  # the name sent, as Ollama does
    assert [m.model for m in client.list().models] == [f"{MODEL}:latest"]
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.status_code == 404 and "no-such-model" in caught.value.error
    wait_for(
        "4 answers in Ollama's log",
        lambda: ollama_engine.served("/api/") - served_before == 4,
        10,
    )


def test_embeddings_from_real_ollama(router: TableRouter, ollama_engine: OllamaServer) -> None:
    """An embeddings consumer on Ollama: `embed` through the router (translated to Ollama's
    `/v1/embeddings`) gives the vectors Ollama's own `/api/embed` gives."""
    through_router = ollama_client(router, SEARCH_HOST).embed(MODEL, input=["notes", "rag"])
    direct = ollama.Client(host=ollama_engine.url).embed(MODEL, input=["notes", "rag"])
    assert len(through_router.embeddings) == 2
    for got, want in zip(through_router.embeddings, direct.embeddings, strict=True):
        assert len(got) == len(want) == 128  # the tiny model's hidden size
        assert cosine(got, want) > 0.9999
    assert cosine(*through_router.embeddings) < 0.9999  # different texts, different vectors
    vectors = OpenAI(
        base_url=f"{router.url}/v1",
        api_key="unused",
        max_retries=0,
        default_headers={"Host": SEARCH_HOST},
    ).embeddings.create(model=MODEL, input="notes")
    assert cosine(vectors.data[0].embedding, direct.embeddings[0]) > 0.9999


def test_ollama_options_reach_real_ollama_unchanged(
    router: TableRouter, ollama_engine: OllamaServer
) -> None:
    """Weight 0: an Ollama-API request goes to Ollama's own `/api/chat` as the client wrote
    it, so options Ollama's OpenAI API would drop still act: `num_predict` caps the answer
    (Ollama's own count says so), `num_ctx` and `top_k` are taken, `keep_alive` sets the
    model's expiry in Ollama's `/api/ps`."""
    client = ollama_client(router)
    router.set_weight("notes", 0)
    options = {"num_predict": 5, "temperature": 0, "top_k": 1, "num_ctx": 512, "min_p": 0.0}
    reply = client.chat(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me a long story"}],
        options=options,
        keep_alive="7m",
    )
    assert reply.done_reason == "length" and reply.eval_count == 5
    assert reply.load_duration is not None  # Ollama's own field, passed through
    (loaded,) = ollama.Client(host=ollama_engine.url).ps().models
    assert loaded.expires_at is not None
    left = (loaded.expires_at - datetime.now(UTC)).total_seconds()
    assert 5 * 60 < left <= 7 * 60 + 5  # the request's 7m, not the server's long default
    assert loaded.context_length == 512
    streamed = list(
        client.generate(
            model=MODEL, prompt="Once upon", raw=True, stream=True, options=options, keep_alive=-1
        )
    )
    assert streamed[-1].done and streamed[-1].eval_count == 5
    assert "".join(p.response for p in streamed)
    (loaded,) = ollama.Client(host=ollama_engine.url).ps().models
    assert loaded.expires_at is not None and loaded.expires_at.year > datetime.now(UTC).year + 20


def test_embeddings_of_a_migrated_consumer_come_from_real_ollama(
    router: TableRouter, ollama_engine: OllamaServer
) -> None:
    """Weight 100, but vLLM's generation runner serves no embeddings: `ollama.embed` and
    `openai.embeddings.create` get Ollama's vectors (they used to get "engine answered HTTP
    404"), while chat still goes to vLLM."""
    router.set_weight("notes", 100)
    direct = ollama.Client(host=ollama_engine.url).embed(MODEL, input=["notes", "rag"])
    embedded = ollama_client(router).embed(MODEL, input=["notes", "rag"])
    for got, want in zip(embedded.embeddings, direct.embeddings, strict=True):
        assert cosine(got, want) > 0.9999
    raw = openai_client(router).embeddings.with_raw_response.create(model=MODEL, input="notes")
    assert raw.headers["x-inferops-engine"] == "ollama"
    assert cosine(raw.parse().data[0].embedding, direct.embeddings[0]) > 0.9999
    chat = openai_client(router).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )
    assert chat.headers["x-inferops-engine"] == "vllm"
    routed = router.metric("inferops_router_rerouted_total", consumer="notes", route="embeddings")
    assert routed == 1


TOOL = WEATHER_TOOL


def test_tools_without_a_tool_call_parser_go_to_real_ollama(
    router: TableRouter, vllm_engine: VLLMServer
) -> None:
    """Real vLLM without a tool-call parser refuses `tools`; the table says so
    (`toolCalling: false`), so at weight 100 such requests go to Ollama, which answers as it
    answers for this model (the tiny one has no tools in its template: its own 400)."""
    router.set_weight("notes", 100)
    hi = [{"role": "user", "content": "Weather in Paris?"}]
    with pytest.raises(openai.BadRequestError) as direct:  # what the rule spares the consumer
        OpenAI(
            base_url=f"{vllm_engine.url}/v1", api_key="unused", max_retries=0
        ).chat.completions.create(
            model=MODEL,
            messages=hi,
            tools=[TOOL],
            max_tokens=4,  # type: ignore[arg-type,list-item]
        )
    assert "--enable-auto-tool-choice" in str(direct.value)
    with pytest.raises(ollama.ResponseError) as native:
        ollama_client(router).chat(model=MODEL, messages=hi, tools=[TOOL])
    assert native.value.status_code == 400 and "does not support tools" in native.value.error
    with pytest.raises(openai.BadRequestError) as through:
        openai_client(router).chat.completions.create(
            model=MODEL,
            messages=hi,
            tools=[TOOL],
            max_tokens=4,  # type: ignore[arg-type,list-item]
        )
    assert through.value.response.headers["x-inferops-engine"] == "ollama"
    assert "does not support tools" in str(through.value)
    for route in ("ollama_chat", "chat"):
        rerouted = router.metric(
            "inferops_router_rerouted_total",
            consumer="notes",
            route=route,
            reason="vllm_has_no_tool_parser",
        )
        assert rerouted == 1
    chat = openai_client(router).chat.completions.with_raw_response.create(
        model=MODEL, messages=hi, max_tokens=2
    )
    assert chat.headers["x-inferops-engine"] == "vllm"  # without tools: by weight


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_weight_change_while_streams_are_open(
    router: TableRouter, ollama_engine: OllamaServer
) -> None:
    client = openai_client(router)
    router.set_weight("notes", 100)
    streams = [
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=64,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        for _ in range(4)
    ]
    first = [next(iter(stream)) for stream in streams]  # every stream is open on vLLM
    assert all(chunk.model == MODEL for chunk in first)
    served_before = ollama_engine.served()
    router.set_weight("notes", 0)
    for stream in streams:  # the open streams finish on the engine they started on
        rest = list(stream)
        assert rest[-1].choices[0].finish_reason == "length"
    answer = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert answer.headers["x-inferops-engine"] == "ollama"
    wait_for("the answer in Ollama's log", lambda: ollama_engine.served() == served_before + 1, 10)
    assert ollama_engine.served() == served_before + 1  # and no more: open streams stayed


def test_no_request_sent_after_vllm_is_killed_fails(
    router: TableRouter, vllm_engine: VLLMServer, ollama_engine: OllamaServer
) -> None:
    router.set_weight("notes", 100)
    fallbacks_before = router.metric("inferops_router_fallbacks_total", engine="vllm") or 0.0
    results: list[str] = []
    # (monotonic start of the request, its error): requests already on the wire when vLLM dies
    # may be streaming tokens, and a stream cut after its first byte cannot move to Ollama.
    failures: list[tuple[float, Exception]] = []
    lock = threading.Lock()
    done = threading.Event()

    def consumer(stream: bool) -> None:
        client = openai_client(router)
        while not done.is_set():
            started = time.monotonic()
            try:
                if stream:
                    chunks = streamed(client, 4, "Hi")
                    assert chunks[-1].choices[0].finish_reason is not None
                else:
                    raw = client.chat.completions.with_raw_response.create(
                        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
                    )
                    assert raw.parse().choices
                with lock:
                    results.append("ok")
            except Exception as error:  # every failure is the finding
                with lock:
                    failures.append((started, error))

    threads = [threading.Thread(target=consumer, args=(i % 2 == 0,)) for i in range(4)]
    for thread in threads:
        thread.start()
    wait_for("traffic on vLLM", lambda: len(results) >= 20, 60)
    killed_at_time = time.monotonic()
    vllm_engine.kill()
    killed_at = len(results)
    served_before = ollama_engine.served()
    wait_for("40 more answers after vLLM died", lambda: len(results) >= killed_at + 40, 60)
    done.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a client request hung"
    after_kill = [error for started, error in failures if started >= killed_at_time]
    in_flight = [error for started, error in failures if started < killed_at_time]
    print(f"\nrequests cut by the SIGKILL while in flight: {len(in_flight)} {in_flight[:2]}")
    assert after_kill == [], f"{len(after_kill)} sent after the kill failed: {after_kill[:3]}"
    # At most one request per client thread can be on the wire at the kill.
    assert len(in_flight) <= len(threads), in_flight
    wait_for("40 answers in Ollama's log", lambda: ollama_engine.served() - served_before >= 40, 10)
    fallbacks = router.metric("inferops_router_fallbacks_total", engine="vllm") or 0.0
    assert fallbacks > fallbacks_before
