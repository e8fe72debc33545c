"""Time per output token: observed once per stream from the first body byte, the last byte and
the engine's completion count; never for answers it cannot be derived from."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from testsupport.standin import EngineStandin

from inferops.router import metrics as metrics_module
from inferops.router.metrics import Exchange, RouterMetrics
from tests.router.conftest import MESSAGES, Router
from tests.router.test_routing import sample

TPOT = "inferops_router_time_per_output_token_seconds"
LABELS = {"consumer": "notes", "engine": "vllm", "route": "chat"}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A clock for the recorder only (the module's `time`), so nothing else sees it."""
    fake = Clock()
    monkeypatch.setattr(metrics_module, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def observed(metrics: RouterMetrics, suffix: str) -> float | None:
    return metrics.registry.get_sample_value(TPOT + suffix, LABELS)


def test_a_stream_observes_its_gaps_between_tokens(clock: Clock) -> None:
    metrics = RouterMetrics()
    ex = Exchange(metrics, "notes", "chat", start=0.0)
    ex.begin("vllm")
    clock.now = 0.3
    ex.first_byte()
    ex.tokens(7, 5)
    clock.now = 1.1
    ex.done(200)
    assert observed(metrics, "_count") == 1
    assert observed(metrics, "_sum") == pytest.approx(0.8 / 4)  # five tokens, four gaps
    clock.now = 9.0
    ex.done(200)  # later exits do not count again
    assert observed(metrics, "_count") == 1


@pytest.mark.parametrize(
    ("stream", "completion"),
    [
        (False, 50),  # not a stream: no first body byte to measure from
        (True, 1),  # one token has no gap
        (True, None),  # the engine reported no usage
    ],
)
def test_nothing_is_observed_without_a_stream_and_two_tokens(
    clock: Clock, stream: bool, completion: int | None
) -> None:
    metrics = RouterMetrics()
    ex = Exchange(metrics, "notes", "chat", start=0.0)
    ex.begin("vllm")
    clock.now = 0.2
    if stream:
        ex.first_byte()
    ex.tokens(7, completion)
    clock.now = 1.0
    ex.done(200)
    assert observed(metrics, "_count") in (None, 0)
    assert metrics.registry.get_sample_value(
        "inferops_router_request_duration_seconds_count", LABELS
    )


async def test_a_relayed_stream_with_usage_is_observed(router: Router, vllm: EngineStandin) -> None:
    vllm.behaviour.chunk_delay = 0.02  # six events ~20 ms apart, three completion tokens
    client = router.openai("llama32-notes")
    text = ""
    async for chunk in await client.chat.completions.create(
        model="llama3.2",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    ):
        text += chunk.choices[0].delta.content or "" if chunk.choices else ""
    assert text == "Hello from vllm"
    metrics = await router.metrics()
    assert sample(metrics, TPOT + "_count", **LABELS) == 1
    # ~100 ms between the first and the last event over two gaps: well above 10 ms a token.
    assert sample(metrics, TPOT + "_sum", **LABELS) > 0.01
    assert sample(metrics, TPOT + "_bucket", le="0.001", **LABELS) == 0


async def test_streams_without_usage_and_whole_answers_are_not_observed(
    router: Router, vllm: EngineStandin
) -> None:
    client = router.openai("llama32-notes")
    async for _ in await client.chat.completions.create(
        model="llama3.2", messages=MESSAGES, stream=True
    ):
        pass
    await client.chat.completions.create(model="llama3.2", messages=MESSAGES)
    metrics = await router.metrics()
    assert sample(metrics, "inferops_router_requests_total", code="200", **LABELS) == 2
    assert sample(metrics, TPOT + "_count", **LABELS) == 0


async def test_ollama_streams_are_observed_under_their_route(
    router: Router, ollama_engine: EngineStandin
) -> None:
    ollama_engine.behaviour.chunk_delay = 0.01
    # The router asks the engine for usage itself when it translates an Ollama stream.
    async for _ in await router.ollama("llama32-rag").chat(
        model="llama3.2", messages=MESSAGES, stream=True
    ):
        pass
    metrics = await router.metrics()
    labels = {"consumer": "rag", "engine": "ollama", "route": "ollama_chat"}
    assert sample(metrics, TPOT + "_count", **labels) == 1
    assert sample(metrics, TPOT + "_sum", **labels) > 0
