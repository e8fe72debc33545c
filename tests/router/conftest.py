"""Fixtures of the router tests: two engine stand-ins, and the router in this event loop
reading its table from a file, with the official `openai` and `ollama` clients as consumers."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import ollama
import openai
import pytest
from testsupport.standin import EngineStandin

from inferops.router.server import RouterServer
from inferops.router.sources import FileSource
from inferops.router.state import RouterState

NS = "ai"
MESSAGES = [{"role": "user", "content": "hi"}]


def hosts(service: str) -> list[str]:
    return [service, f"{service}.{NS}", f"{service}.{NS}.svc", f"{service}.{NS}.svc.cluster.local"]


def base_table(vllm_url: str, ollama_url: str | None) -> dict[str, Any]:
    engines: dict[str, Any] = {"vllm": {"url": vllm_url, "ready": True}}
    if ollama_url:
        engines["ollama"] = {"url": ollama_url, "ready": True}
    return {
        "model": "llama3.2",
        "aliases": ["llama3.2:3b"],
        "engines": engines,
        "consumers": [
            {"name": "notes", "hosts": hosts("llama32-notes"), "weight": 100, "api": "chat"},
            {"name": "rag", "hosts": hosts("llama32-rag"), "weight": 0, "api": "chat"},
            {"name": "ner", "hosts": hosts("llama32-ner"), "weight": 30, "api": "chat"},
            {
                "name": "search",
                "hosts": hosts("llama32-search"),
                "weight": 100,
                "api": "embeddings",
            },
        ],
        "fallback": True,
        "timeouts": {"connectSeconds": 1, "firstByteSeconds": 2, "totalSeconds": 20},
        "maxBodyBytes": 65536,
    }


class Router:
    """The router under test, its table file and ways to talk to it."""

    def __init__(self, server: RouterServer, path: Path, table: dict[str, Any]) -> None:
        self.server = server
        self.path = path
        self.table = table
        self.http: aiohttp.ClientSession = aiohttp.ClientSession()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def state(self) -> RouterState:
        return self.server.state

    async def ndjson(self, path: str, body: dict[str, Any], host: str) -> list[dict[str, Any]]:
        """POSTs `body` to the Ollama API at `path` as consumer `host`: the objects of its
        200 NDJSON answer."""
        url, headers = f"{self.url}{path}", {"Host": host}
        async with self.http.post(url, json=body, headers=headers) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("application/x-ndjson")
            return [json.loads(line) for line in (await response.text()).splitlines()]

    async def set_table(self, **changes: Any) -> None:
        """Writes the table with `changes` (top-level keys) and waits until it is installed."""
        new = {**self.table, **changes}
        if new == self.table:
            return
        self.table = new
        generation = self.state.generation
        self.path.write_text(json.dumps(self.table))
        await wait_for(lambda: self.state.generation > generation, "the new table")

    async def set_weight(self, consumer: str, weight: int) -> None:
        consumers = [
            {**c, "weight": weight} if c["name"] == consumer else c for c in self.table["consumers"]
        ]
        await self.set_table(consumers=consumers)

    async def set_engine(self, engine: str, **fields: Any) -> None:
        engines = dict(self.table["engines"])
        engines[engine] = {**engines[engine], **fields}
        await self.set_table(engines=engines)

    def openai(self, host: str = "llama32-notes", **headers: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"{self.url}/v1",
            api_key="sk-test",
            max_retries=0,
            timeout=10,
            default_headers={"Host": host, **headers},
        )

    def ollama(self, host: str = "llama32-notes", **headers: str) -> ollama.AsyncClient:
        return ollama.AsyncClient(host=self.url, timeout=10, headers={"Host": host, **headers})

    async def metrics(self) -> str:
        async with self.http.get(f"{self.url}/metrics") as response:
            return await response.text()


async def streamed_text(client: openai.AsyncOpenAI) -> str:
    """A streamed chat answer about llama3.2, put together chunk by chunk."""
    text = ""
    async for chunk in await client.chat.completions.create(
        model="llama3.2", messages=MESSAGES, stream=True
    ):
        text += chunk.choices[0].delta.content or "" if chunk.choices else ""
    return text


@pytest.fixture(params=[False, True], ids=["False", "True"])
def stream(request: pytest.FixtureRequest) -> bool:
    """Each test using it runs twice: the answer whole, then streamed."""
    return bool(request.param)


async def answer_text(client: openai.AsyncOpenAI, stream: bool) -> str:
    """A chat answer about llama3.2, streamed or not."""
    if stream:
        return await streamed_text(client)
    completion = await client.chat.completions.create(model="llama3.2", messages=MESSAGES)
    return completion.choices[0].message.content or ""


async def wait_for(probe: Any, what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def engine_fixture(name: str) -> Any:
    """A fixture: a running stand-in for the engine `name`."""

    @pytest.fixture
    async def engine() -> AsyncIterator[EngineStandin]:
        fake = EngineStandin(name)
        await fake.start()
        yield fake
        await fake.stop()

    return engine


vllm = engine_fixture("vllm")
ollama_engine = engine_fixture("ollama")


def retained(
    before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, *ignored: str
) -> tuple[int, str]:
    """Bytes allocated between two snapshots and still held, outside tracemalloc and the
    files matching `ignored` (globs), and the 8 lines that hold the most of them."""
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        *(tracemalloc.Filter(False, pattern) for pattern in ignored),
    ]
    growth = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "lineno")
    return sum(stat.size_diff for stat in growth), "\n".join(str(stat) for stat in growth[:8])


@pytest.fixture
async def router(
    tmp_path: Path, vllm: EngineStandin, ollama_engine: EngineStandin
) -> AsyncIterator[Router]:
    path = tmp_path / "routes.json"
    table = base_table(vllm.url, ollama_engine.url)
    path.write_text(json.dumps(table))
    server = RouterServer(RouterState(), FileSource(path, interval=0.01), grace_seconds=2.0)
    await server.start()
    harness = Router(server, path, table)
    await wait_for(lambda: server.state.routes is not None, "the first table")
    yield harness
    await harness.http.close()
    await server.stop()
