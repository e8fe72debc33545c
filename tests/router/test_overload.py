"""Overload is shed, not queued: the router admits a bounded number of requests per engine,
lets a bounded number wait for a bounded time, and refuses the rest at once with 503 and
`Retry-After`, in the dialect of the API used; counted in the metrics, and memory stays flat.

The engine stand-ins are slow on purpose (`Behaviour.delay`): the order of events, not the
clock, shows that a refusal did not wait for the engine."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from testsupport.standin import EngineStandin

from inferops.api.routing import Admission
from inferops.router.admission import ADMITTED, FULL, QUEUED, Gate
from tests.router.conftest import Router, retained, wait_for

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
OLLAMA_CHAT = {**CHAT, "stream": False}


def limits(concurrent: int, waiting: int, wait_seconds: float = 5.0) -> dict[str, Any]:
    return {"maxConcurrent": concurrent, "maxWaiting": waiting, "maxWaitSeconds": wait_seconds}


async def only_ollama(
    router: Router, engine: EngineStandin, admission: dict[str, Any], delay: float
) -> str:
    """vLLM lost: every consumer's traffic on Ollama, behind `admission`, and Ollama taking
    `delay` seconds to answer. Returns the router's chat URL."""
    await router.set_engine("vllm", ready=False)
    await router.set_engine("ollama", admission=admission)
    engine.behaviour.delay = delay
    return f"{router.url}/v1/chat/completions"


async def post(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], host: str = "llama32-notes"
) -> tuple[int, dict[str, str], Any]:
    async with session.post(url, json=body, headers={"Host": host}) as response:
        return response.status, dict(response.headers), await response.json()


def shed_counts(text: str) -> dict[tuple[str, str, str], float]:
    """`inferops_router_shed_total` by (consumer, engine, reason)."""
    return {
        (s.labels["consumer"], s.labels["engine"], s.labels["reason"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "inferops_router_shed_total"
    }


def assert_openai_refusal(status: int, headers: dict[str, str], body: Any, engine: str) -> None:
    assert status == 503
    assert headers["Retry-After"] == "1"
    error = body["error"]
    assert error["code"] == "engine_overloaded" and error["type"] == "server_error"
    assert f"engine {engine!r} is overloaded" in error["message"]


async def test_past_the_limit_and_the_wait_room_requests_are_refused_at_once(
    router: Router, ollama_engine: EngineStandin
) -> None:
    url = await only_ollama(router, ollama_engine, limits(2, 2), 1.0)
    requests = [asyncio.create_task(post(router.http, url, CHAT)) for _ in range(8)]
    # Two reach the engine, two wait; the other four are answered before the engine answered
    # anything (it takes a second): no refusal waited for it.
    finished: list[tuple[int, dict[str, str], Any]] = []
    for done in asyncio.as_completed(requests):
        answer = await done
        if answer[0] != 503:
            break
        assert ollama_engine.hits <= 2 and router.state.gates["ollama"].active == 2
        assert not any(r.done() and r.result()[0] == 200 for r in requests)
        finished.append(answer)
    assert len(finished) == 4
    for status, headers, body in finished:
        assert_openai_refusal(status, headers, body, "ollama")
        assert "2 requests under way and 2 waiting" in body["error"]["message"]
    answers = await asyncio.gather(*requests)
    # Every admitted request, the waiters included, is served in full.
    assert sorted(a[0] for a in answers) == [200] * 4 + [503] * 4
    assert ollama_engine.hits == 4
    assert shed_counts(await router.metrics()) == {("notes", "ollama", "queue_full"): 4}
    gate = router.state.gates["ollama"]
    assert gate.active == 0 and not gate.queue


async def test_a_waiter_past_the_bounded_wait_is_refused(
    router: Router, ollama_engine: EngineStandin
) -> None:
    await only_ollama(router, ollama_engine, limits(1, 1, wait_seconds=0.2), 3.0)
    client = router.ollama()
    first = asyncio.create_task(client.chat(model="llama3.2", messages=CHAT["messages"]))
    await wait_for(lambda: ollama_engine.hits == 1, "the first request on the engine")
    url = f"{router.url}/api/chat"
    status, headers, body = await post(router.http, url, OLLAMA_CHAT)  # waits, then refused
    assert ollama_engine.hits == 1 and not first.done()
    assert status == 503 and headers["Retry-After"] == "1"
    # Ollama's dialect on /api/*: a bare error string, which Ollama's clients raise.
    assert set(body) == {"error"}
    assert "engine 'ollama' is overloaded: no slot freed within 0.2" in body["error"]
    assert shed_counts(await router.metrics()) == {("notes", "ollama", "wait_timeout"): 1}
    reply = await first
    assert reply.message.content == "Hello from ollama"


async def test_the_official_clients_see_a_clean_503(
    router: Router, ollama_engine: EngineStandin
) -> None:
    await only_ollama(router, ollama_engine, limits(1, 0), 2.0)
    first = asyncio.create_task(router.openai().chat.completions.create(**CHAT))  # type: ignore[call-overload]
    await wait_for(lambda: ollama_engine.hits == 1, "the first request on the engine")
    import ollama
    import openai

    with pytest.raises(openai.InternalServerError) as refused:
        await router.openai(host="llama32-rag").chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert refused.value.status_code == 503
    assert refused.value.response.headers["retry-after"] == "1"
    assert refused.value.code == "engine_overloaded"
    with pytest.raises(ollama.ResponseError) as refused_ollama:
        await router.ollama(host="llama32-ner").chat(model="llama3.2", messages=CHAT["messages"])
    assert refused_ollama.value.status_code == 503
    assert "engine 'ollama' is overloaded" in refused_ollama.value.error
    assert (await first).choices[0].message.content == "Hello from ollama"
    assert shed_counts(await router.metrics()) == {
        ("rag", "ollama", "queue_full"): 1,
        ("ner", "ollama", "queue_full"): 1,
    }


async def test_a_full_vllm_does_not_spill_onto_ollama(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    await router.set_engine("vllm", admission=limits(1, 0))
    vllm.behaviour.delay = 1.0
    url = f"{router.url}/v1/chat/completions"  # notes: weight 100, fallback on
    first = asyncio.create_task(post(router.http, url, CHAT))
    await wait_for(lambda: vllm.hits == 1, "the first request on vLLM")
    status, headers, body = await post(router.http, url, CHAT)
    assert_openai_refusal(status, headers, body, "vllm")
    assert ollama_engine.hits == 0  # overflow is refused, not moved to the smaller engine
    assert (await first)[0] == 200


async def test_a_fallback_into_a_full_ollama_is_refused(
    router: Router, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    await router.set_engine("ollama", admission=limits(1, 0))
    ollama_engine.behaviour.delay = 1.0
    busy = asyncio.create_task(
        post(router.http, f"{router.url}/v1/chat/completions", CHAT, host="llama32-rag")
    )
    await wait_for(lambda: ollama_engine.hits == 1, "Ollama's one slot taken")
    vllm.behaviour.fail_status = 500
    status, headers, body = await post(router.http, f"{router.url}/v1/chat/completions", CHAT)
    assert vllm.hits == 1 and ollama_engine.hits == 1
    assert_openai_refusal(status, headers, body, "ollama")
    assert (await busy)[0] == 200


async def test_slots_come_back_whatever_ends_a_request(
    router: Router, ollama_engine: EngineStandin
) -> None:
    """Answers, engine errors, clients leaving while admitted or while waiting: no slot
    stays taken and no waiter stays queued."""
    url = await only_ollama(router, ollama_engine, limits(2, 3), 0.3)
    gate = router.state.gates["ollama"]
    tasks = [asyncio.create_task(post(router.http, url, CHAT)) for _ in range(5)]
    await wait_for(lambda: gate.active == 2 and len(gate.queue) == 3, "two admitted, 3 waiting")
    tasks[0].cancel()  # admitted, gone
    tasks[4].cancel()  # waiting, gone
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [r[0] for r in results if isinstance(r, tuple)] == [200, 200, 200]
    await wait_for(lambda: gate.active == 0 and not gate.queue, "every slot released")
    ollama_engine.behaviour.fail_status = 503  # the last engine: its 503 passes through
    status, _, _ = await post(router.http, url, CHAT)
    assert status == 503 and gate.active == 0
    ollama_engine.behaviour.fail_status = None
    ollama_engine.behaviour.delay = 0.0
    assert (await post(router.http, url, CHAT))[0] == 200 and gate.active == 0


async def test_a_new_table_keeps_the_slots_of_requests_under_way(
    router: Router, ollama_engine: EngineStandin
) -> None:
    url = await only_ollama(router, ollama_engine, limits(1, 1), 0.5)
    gate = router.state.gates["ollama"]
    first = asyncio.create_task(post(router.http, url, CHAT))
    second = asyncio.create_task(post(router.http, url, CHAT))
    await wait_for(lambda: len(gate.queue) == 1, "one waiting")
    await router.set_engine("ollama", admission=limits(2, 0))  # room for the waiter now
    await wait_for(lambda: ollama_engine.hits == 2, "the waiter admitted by the new table")
    assert gate.active == 2
    assert [r[0] for r in await asyncio.gather(first, second)] == [200, 200]
    assert gate.active == 0


async def test_memory_stays_flat_under_overload(
    router: Router, ollama_engine: EngineStandin
) -> None:
    """Rounds of 40 requests at once against 2 slots and 2 waiting places: after a warm-up
    round, two more may leave only a few hundred bytes per request behind."""
    url = await only_ollama(router, ollama_engine, limits(2, 2), 0.05)

    async def round_() -> None:
        answers = await asyncio.gather(*(post(router.http, url, CHAT) for _ in range(40)))
        assert {a[0] for a in answers} == {200, 503}
        ollama_engine.seen.clear()  # the stand-in keeps every request it saw

    await round_()
    gc.collect()
    tracemalloc.start(1)
    try:
        await round_()
        gc.collect()
        before = tracemalloc.take_snapshot()
        await round_()
        await round_()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # The router uses no aiohttp: that is the test's client and the engine stand-in.
    grown, top = retained(before, after, "*/aiohttp/*")
    assert grown / 80 < 256, f"{grown} bytes more after 80 requests:\n{top}"


# -- the gate alone ----------------------------------------------------------------------------


class Waiter:
    def __init__(self, gate: Gate, log: list[str], name: str, fail: bool = False) -> None:
        self.gate, self.log, self.name, self.fail = gate, log, name, fail

    def admitted(self) -> None:
        self.log.append(self.name)
        if self.fail:  # an attempt that fails at once gives its slot straight back
            self.gate.release()


def test_the_gate_admits_waiters_in_order_and_never_recurses() -> None:
    gate = Gate("ollama")
    gate.configure(Admission(max_concurrent=1, max_waiting=2000, max_wait_seconds=1))
    log: list[str] = []
    assert gate.enter(Waiter(gate, log, "a")) == ADMITTED
    waiters = [Waiter(gate, log, f"w{i}", fail=True) for i in range(1500)]
    assert all(gate.enter(w) == QUEUED for w in waiters)
    gone = waiters[3]
    gate.leave(gone)
    gate.release()  # each waiter fails at once: 1499 admissions, one loop, no recursion
    assert log == [w.name for w in waiters if w is not gone]
    assert gate.active == 0 and not gate.queue


def test_the_gate_refuses_when_full_and_follows_new_limits() -> None:
    gate = Gate("vllm")
    log: list[str] = []
    assert all(gate.enter(Waiter(gate, log, "x")) == ADMITTED for _ in range(1000))  # no limit
    gate.configure(Admission(max_concurrent=1000, max_waiting=1, max_wait_seconds=1))
    assert gate.enter(Waiter(gate, log, "w")) == QUEUED
    assert gate.enter(Waiter(gate, log, "r")) == FULL
    gate.configure(Admission(max_concurrent=1001, max_waiting=1, max_wait_seconds=1))
    assert log == ["w"] and gate.active == 1001
    gate.configure(None)  # a table without limits: everything admitted again
    assert gate.enter(Waiter(gate, log, "y")) == ADMITTED
