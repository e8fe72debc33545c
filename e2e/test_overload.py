"""Overload is shed, not queued: vLLM lost, every consumer on Ollama, and several times what
Ollama's admission takes, for a bounded time (`DURATION`).

The router is its own process, fed a routing table file in which vLLM has no Ready pod and
Ollama admits `NUM_PARALLEL` requests at once with `4 * NUM_PARALLEL` waiting (the
operator's defaults for an Ollama with `numParallel: 2`). `CLIENTS` loops, half OpenAI
streams on `/v1`, half Ollama streams on `/api`, each with a client timeout, send request
after request. What must hold: no request hangs until its client timeout, every admitted
request succeeds in full, every refusal is a well-formed 503 with `Retry-After` in its API's
dialect and is counted by the router, and Ollama serves again right after. The figures
(refusal times, success rate, the router's memory) are printed for docs/reliability.md;
they are not asserted (speed belongs to bench/).

The engine is real Ollama (built from its Go module, e2e/engines/ollama.py) serving the tiny
model with OLLAMA_NUM_PARALLEL=NUM_PARALLEL, as the operator would configure it.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from testsupport.markers import needs
from testsupport.process import free_port
from testsupport.programs import RouterProcess, scrape, total

from e2e.engines.ollama_server import OllamaServer

pytestmark = needs("ollama")

MODEL = "llama3.2"
HOST = "llama32-notes"
NUM_PARALLEL = 2
ADMISSION = {"maxConcurrent": NUM_PARALLEL, "maxWaiting": 4 * NUM_PARALLEL, "maxWaitSeconds": 2}
CLIENTS = 24
"""Client loops at once: 12 times what Ollama serves at once, twice what it admits and
lets wait."""
DURATION = 60.0
CLIENT_TIMEOUT = 30.0
"""Past this a request counts as hung: far beyond the longest wait plus an answer."""
REFUSED_PAUSE = 0.1
"""A refused loop tries again after this (impatient: the router asks for 1 s)."""
TOKENS = 64
"""Answers long enough that Ollama's two slots, not the network, set the capacity."""


@pytest.fixture(scope="module")
def ollama_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OllamaServer]:
    log = tmp_path_factory.mktemp("ollama") / "ollama.log"
    with OllamaServer(model_names=[MODEL], num_parallel=NUM_PARALLEL, log_path=log) as engine:
        engine.start()
        yield engine


@pytest.fixture(scope="module")
def router(
    ollama_engine: OllamaServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RouterProcess]:
    directory = tmp_path_factory.mktemp("overload")
    table = {
        "model": MODEL,
        # vLLM lost: no Ready pod (and nothing listens there either).
        "engines": {
            "vllm": {"url": f"http://127.0.0.1:{free_port()}", "ready": False},
            "ollama": {"url": ollama_engine.url, "ready": True, "admission": ADMISSION},
        },
        "consumers": [{"name": "notes", "hosts": [HOST], "weight": 100, "api": "chat"}],
        "fallback": True,
        "timeouts": {"connectSeconds": 2, "firstByteSeconds": 30, "totalSeconds": 120},
    }
    table_file = directory / "routes.json"
    table_file.write_text(json.dumps(table))
    process = RouterProcess(["--table-file", str(table_file)], directory / "router.log")
    process.start()
    yield process
    process.stop()


@dataclass(frozen=True)
class Outcome:
    api: str
    """`openai` or `ollama`."""
    kind: str
    """ok, refused, hung (client timeout), broken (anything else)."""
    seconds: float
    detail: str = ""


def openai_request() -> tuple[str, dict[str, Any]]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": TOKENS,
        "stream": True,
    }
    return "/v1/chat/completions", body


def ollama_request() -> tuple[str, dict[str, Any]]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hello"}],
        "options": {"num_predict": TOKENS},
        "stream": True,
    }
    return "/api/chat", body


def refusal_problem(api: str, response: httpx.Response, body: bytes) -> str:
    """Why a 503 is not a clean overload refusal in its API's dialect ("" when it is)."""
    retry = response.headers.get("retry-after", "")
    if not retry.isdigit():
        return f"Retry-After {retry!r}"
    if not response.headers.get("content-type", "").startswith("application/json"):
        return f"content type {response.headers.get('content-type')!r}"
    doc = json.loads(body)
    if api == "openai":
        error = doc.get("error") if isinstance(doc, dict) else None
        if not (
            isinstance(error, dict)
            and error.get("code") == "engine_overloaded"
            and "is overloaded" in error.get("message", "")
        ):
            return f"not an OpenAI overload error: {doc}"
    elif not (isinstance(doc, dict) and set(doc) == {"error"} and "is overloaded" in doc["error"]):
        return f"not an Ollama error: {doc}"
    return ""


def answer_problem(api: str, body: bytes) -> str:
    """Why a 200 stream is not a whole answer ("" when it is)."""
    text = body.decode()
    if api == "openai":
        events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        if not events or events[-1] != "[DONE]" or any('"error"' in e for e in events):
            return f"SSE stream not whole: {text[-200:]!r}"
    else:
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        if not lines or lines[-1].get("done") is not True or any("error" in x for x in lines):
            return f"NDJSON stream not whole: {text[-200:]!r}"
    return ""


async def one(client: httpx.AsyncClient, api: str) -> Outcome:
    path, body = openai_request() if api == "openai" else ollama_request()
    start = time.monotonic()
    try:
        async with client.stream("POST", path, json=body) as response:
            data = await response.aread()
    except httpx.TimeoutException as error:
        return Outcome(api, "hung", time.monotonic() - start, repr(error))
    except httpx.HTTPError as error:
        return Outcome(api, "broken", time.monotonic() - start, repr(error))
    seconds = time.monotonic() - start
    if response.status_code == 503:
        problem = refusal_problem(api, response, data)
        return Outcome(
            api,
            "broken" if problem else "refused",
            seconds,
            problem or json.dumps(json.loads(data)),
        )
    if response.status_code == 200:
        problem = answer_problem(api, data)
        return Outcome(api, "broken" if problem else "ok", seconds, problem)
    return Outcome(api, "broken", seconds, f"HTTP {response.status_code}: {data[:200]!r}")


async def load(url: str) -> list[Outcome]:
    """`CLIENTS` loops for `DURATION` seconds."""
    outcomes: list[Outcome] = []
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(
        base_url=url, headers={"Host": HOST}, limits=limits, timeout=CLIENT_TIMEOUT
    ) as client:
        end = time.monotonic() + DURATION

        async def loop(index: int) -> None:
            api = "openai" if index % 2 == 0 else "ollama"
            while time.monotonic() < end:
                outcome = await one(client, api)
                outcomes.append(outcome)
                if outcome.kind != "ok":
                    await asyncio.sleep(REFUSED_PAUSE)

        await asyncio.gather(*(loop(i) for i in range(CLIENTS)))
    return outcomes


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_overload_is_shed_fast_and_admitted_requests_succeed(router: RouterProcess) -> None:
    pid = router.process.pid
    assert pid is not None
    # Warm up: both dialects served while there is room.
    warm = asyncio.run(warmup(router.url))
    assert [o.kind for o in warm] == ["ok", "ok"], warm
    before = scrape(f"{router.url}/metrics")
    rss_before = rss_kib(pid)

    outcomes = asyncio.run(load(router.url))

    rss_after = rss_kib(pid)
    after = scrape(f"{router.url}/metrics")
    kinds = {
        kind: [o for o in outcomes if o.kind == kind]
        for kind in ("ok", "refused", "hung", "broken")
    }
    refused = kinds["refused"]
    at_once = [o.seconds for o in refused if "no slot freed" not in o.detail]
    waited = [o.seconds for o in refused if "no slot freed" in o.detail]

    def counted(name: str, **labels: str) -> float:
        return (total(after, name, **labels) or 0) - (total(before, name, **labels) or 0)

    shed = counted("inferops_router_shed_total")
    served = counted("inferops_router_requests_total", engine="ollama", code="200")
    print(
        f"\noverload: {CLIENTS} client loops for {DURATION:.0f}s against Ollama admitting "
        f"{NUM_PARALLEL} at once and {4 * NUM_PARALLEL} waiting up to 2 s (vLLM lost)"
    )
    print(
        f"  requests {len(outcomes)}: ok {len(kinds['ok'])}, refused {len(refused)} "
        f"(queue full {len(at_once)}, wait ran out {len(waited)}), "
        f"hung {len(kinds['hung'])}, broken {len(kinds['broken'])}"
    )
    if at_once:
        print(
            f"  time to an immediate refusal: p50 {1000 * statistics.median(at_once):.1f} ms, "
            f"p99 {1000 * quantile(at_once, 0.99):.1f} ms, max {1000 * max(at_once):.1f} ms"
        )
    if waited:
        print(
            f"  time to a refusal after the bounded wait: p50 {statistics.median(waited):.2f} s,"
            f" max {max(waited):.2f} s (bound 2 s)"
        )
    if kinds["ok"]:
        ok_seconds = [o.seconds for o in kinds["ok"]]
        print(
            f"  admitted: {len(kinds['ok'])} of {len(kinds['ok']) + len(kinds['broken'])} "
            f"succeeded in full; duration p50 {statistics.median(ok_seconds):.2f} s, "
            f"p99 {quantile(ok_seconds, 0.99):.2f} s"
        )
    print(
        f"  router RSS before {rss_before / 1024:.1f} MiB, after {rss_after / 1024:.1f} MiB; "
        f"router counted {shed:.0f} shed, {served:.0f} served"
    )

    assert not kinds["hung"], kinds["hung"][:3]
    assert not kinds["broken"], kinds["broken"][:3]  # every admitted request succeeded
    assert refused and kinds["ok"], "the load must both overload and be served"
    assert {o.api for o in refused} == {"openai", "ollama"}
    # The router's own counts agree with what the clients saw.
    assert shed == len(refused)
    assert served == len(kinds["ok"])
    # Ollama recovers at once: both dialects served again, no slot left taken.
    again = asyncio.run(warmup(router.url))
    assert [o.kind for o in again] == ["ok", "ok"], again
    assert total(scrape(f"{router.url}/metrics"), "inferops_router_in_flight_requests") == 0


async def warmup(url: str) -> list[Outcome]:
    async with httpx.AsyncClient(
        base_url=url, headers={"Host": HOST}, timeout=CLIENT_TIMEOUT
    ) as client:
        return [await one(client, "openai"), await one(client, "ollama")]
