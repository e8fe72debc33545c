"""`python -m inferops.router --workers 2`, run as a process against engine stand-ins, with
the official `openai` client: both workers serve, `/metrics` shows the pod's totals whichever
worker answers, a table change reaches both, a killed worker is restarted while the port keeps
answering, and SIGTERM drains every worker and ends them all."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from testsupport.standin import EngineStandin

from inferops.router.podmetrics import socket_path
from tests.router.conftest import MESSAGES, base_table, streamed_text, wait_for

REQUESTS = 40
STREAMS = 20


class Pod:
    """The supervisor process, its log and ways to look at each worker."""

    def __init__(self, process: asyncio.subprocess.Process, run_dir: Path, table: Path) -> None:
        self.process = process
        self.run_dir = run_dir
        self.table_path = table
        self.log: list[str] = []
        self.port = 0
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            if match := re.search(r"2 workers on 127\.0\.0\.1:(\d+)", line):
                self.port = int(match[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> dict[int, int]:
        """The latest pid of each worker, from the supervisor's log."""
        pids = {}
        for line in self.log:
            if match := re.search(r"worker (\d+) started \(pid (\d+)\)", line):
                pids[int(match[1])] = int(match[2])
        return pids

    async def figures(self, index: int) -> list[dict[str, Any]]:
        """Worker `index`'s own figures, from its private socket."""
        reader, writer = await asyncio.open_unix_connection(str(socket_path(self.run_dir, index)))
        data = await reader.read()
        writer.close()
        result: list[dict[str, Any]] = json.loads(data)
        return result

    async def served(self, index: int, engine: str) -> int:
        return sum(
            n
            for item in await self.figures(index)
            if item["labels"][1] == engine
            for n in item["by_code"].values()
        )

    def client(self) -> openai.AsyncOpenAI:
        """A new client of the pod's port as the consumer notes (its own connections)."""
        return openai.AsyncOpenAI(
            base_url=f"{self.url}/v1",
            api_key="sk-test",
            max_retries=0,
            timeout=10,
            default_headers={"Host": "llama32-notes"},
        )

    async def ask(self, n: int) -> list[str]:
        """`n` chat completions, each from a new client (a new connection, so the kernel
        picks a worker each time)."""

        async def one() -> str:
            client = self.client()
            async with client:
                answer = await client.chat.completions.create(model="llama3.2", messages=MESSAGES)
            return answer.choices[0].message.content or ""

        answers = []
        for _ in range(n // 4):  # four at a time: several connections open at once
            answers += await asyncio.gather(*(one() for _ in range(4)))
        return answers

    async def scrape(self) -> str:
        # A new session per scrape: a new connection, any worker.
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}/metrics") as response:
            assert response.status == 200
            return await response.text()


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if match is None or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match[3])
    return total


def alive(pid: int) -> bool:
    """Running (a zombie, exited but not yet reaped by whoever inherited it, is not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


async def ready(pod: Pod) -> None:
    deadline = asyncio.get_running_loop().time() + 20
    while asyncio.get_running_loop().time() < deadline:
        sockets = all(socket_path(pod.run_dir, i).exists() for i in range(2))
        if pod.port and sockets:
            try:
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"{pod.url}/readyz") as response,
                ):
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
        await asyncio.sleep(0.1)
    raise AssertionError("the workers did not become ready:\n" + "\n".join(pod.log))


@pytest.fixture
async def pod(
    tmp_path: Path, vllm: EngineStandin, ollama_engine: EngineStandin
) -> AsyncIterator[Pod]:
    table = tmp_path / "routes.json"
    table.write_text(json.dumps(base_table(vllm.url, ollama_engine.url)))
    run_dir = tmp_path / "run"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "inferops.router",
        "--workers",
        "2",
        "--host",
        "127.0.0.1",
        "--port",
        "0",  # the supervisor picks the port
        "--table-file",
        str(table),
        "--run-dir",
        str(run_dir),
        "--grace-seconds",
        "5",
        stderr=asyncio.subprocess.PIPE,
        env=os.environ.copy(),
    )
    harness = Pod(process, run_dir, table)
    try:
        await ready(harness)
        yield harness
    finally:
        pids = harness.worker_pids().values()
        if process.returncode is None:
            process.kill()
            await process.wait()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_two_workers_share_the_port_the_table_and_the_metrics(
    pod: Pod, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    assert await pod.ask(REQUESTS) == ["Hello from vllm"] * REQUESTS
    served = [await pod.served(i, "vllm") for i in range(2)]
    assert sum(served) == REQUESTS
    assert all(served), f"one worker served everything: {served}"

    # Whichever worker answers a scrape, it shows the pod's totals.
    for _ in range(8):
        text = await pod.scrape()
        assert sample(text, "inferops_router_requests_total", engine="vllm", code="200") == (
            REQUESTS
        )
        assert (
            sample(text, "inferops_router_request_duration_seconds_count", consumer="notes")
            == REQUESTS
        )
        assert sample(text, "inferops_router_scrape_workers", source="live") == 2
        assert sample(text, "inferops_router_table_generation") == 1

    # The table changes once, in the file; both workers route by the new one.
    table = json.loads(pod.table_path.read_text())
    table["consumers"][0]["weight"] = 0  # notes: everything to Ollama
    pod.table_path.write_text(json.dumps(table))
    await wait_for(
        lambda: sum("routing table 2 installed" in line for line in pod.log) == 2,
        "both workers to install the new table",
        timeout=10,
    )
    assert await pod.ask(REQUESTS) == ["Hello from ollama"] * REQUESTS
    assert [await pod.served(i, "vllm") for i in range(2)] == served  # no more for vLLM
    assert all([await pod.served(i, "ollama") for i in range(2)])
    text = await pod.scrape()
    assert sample(text, "inferops_router_requests_total", code="200") == 2 * REQUESTS
    assert sample(text, "inferops_router_table_generation") == 2


async def test_a_killed_worker_is_restarted_while_the_port_keeps_answering(pod: Pod) -> None:
    victim = pod.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    # At once, and while it restarts, the other worker takes every new connection.
    assert await pod.ask(REQUESTS) == ["Hello from vllm"] * REQUESTS
    await wait_for(lambda: pod.worker_pids()[0] != victim, "the restart", timeout=10)
    assert any(f"worker 0 (pid {victim}) died" in line for line in pod.log)
    await wait_for(lambda: socket_path(pod.run_dir, 0).exists(), "the new worker", timeout=10)
    await wait_for(
        lambda: sum("routing table 1 installed" in line for line in pod.log) == 3,
        "the new worker to get the table from the supervisor",
        timeout=10,
    )
    assert not alive(victim)
    assert await pod.ask(8) == ["Hello from vllm"] * 8
    text = await pod.scrape()
    assert sample(text, "inferops_router_worker_restarts_total") == 1
    # The killed worker's figures died with it; everything served since is counted.
    assert REQUESTS + 8 >= sample(text, "inferops_router_requests_total") >= 8


async def test_sigterm_drains_every_worker_and_ends_them_all(pod: Pod, vllm: EngineStandin) -> None:
    vllm.behaviour.chunk_delay = 0.2  # streams of about a second

    async def stream() -> str:
        client = pod.client()
        async with client:
            return await streamed_text(client)

    streams = [asyncio.create_task(stream()) for _ in range(STREAMS)]
    await wait_for(lambda: vllm.streams_open == STREAMS, "the streams to open")
    # Both workers have streams in flight (all on one: a chance of 2 in 2^STREAMS).
    in_flight = [sum(s["in_flight"] for s in await pod.figures(i)) for i in range(2)]
    assert sum(in_flight) == STREAMS and all(in_flight), in_flight
    workers = pod.worker_pids()
    pod.process.send_signal(signal.SIGTERM)
    assert await asyncio.gather(*streams) == ["Hello from vllm"] * STREAMS
    assert await asyncio.wait_for(pod.process.wait(), 15) == 0
    await pod._reader
    assert sum("stopping: waiting up to 5s" in line for line in pod.log) == 2
    assert "all workers stopped" in pod.log[-1]
    assert not any(alive(pid) for pid in workers.values())
    assert not any(socket_path(pod.run_dir, i).exists() for i in range(2))


async def test_workers_do_not_outlive_their_supervisor(pod: Pod) -> None:
    workers = pod.worker_pids()
    pod.process.kill()  # no chance to signal anyone: the workers' stdin closes
    await pod.process.wait()
    await wait_for(
        lambda: not any(alive(pid) for pid in workers.values()), "the workers to exit", 10
    )
