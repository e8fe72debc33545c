"""The router's lifecycle: a graceful stop lets streams in flight finish and refuses new
connections; the `python -m inferops.router` entry point serves and exits on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from testsupport.process import free_port
from testsupport.standin import EngineStandin

from inferops.router.server import RouterServer
from inferops.router.sources import FileSource
from inferops.router.state import RouterState
from tests.router.conftest import MESSAGES, Router, base_table, streamed_text, wait_for


async def test_stop_lets_open_streams_finish_and_refuses_new_connections(
    router: Router, vllm: EngineStandin
) -> None:
    vllm.behaviour.chunk_delay = 0.1  # a stream of ~0.5 s
    client = router.openai()

    async def consume() -> str:
        return await streamed_text(client)

    streams = [asyncio.create_task(consume()) for _ in range(3)]
    await wait_for(lambda: vllm.streams_open == 3, "three open streams")
    stopping = asyncio.create_task(router.server.stop())
    await wait_for(lambda: router.state.draining, "the stop to begin")
    await asyncio.sleep(0.05)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as fresh:
            await fresh.get(f"{router.url}/healthz")
    assert await asyncio.gather(*streams) == ["Hello from vllm"] * 3
    await stopping


async def test_streams_past_the_grace_period_are_cut(tmp_path: Path, vllm: EngineStandin) -> None:
    path = tmp_path / "routes.json"
    path.write_text(json.dumps(base_table(vllm.url, None)))
    state = RouterState()
    server = RouterServer(state, FileSource(path), grace_seconds=0.2)
    await server.start()
    await wait_for(lambda: state.routes is not None, "the table")
    vllm.behaviour.stall_after = 1
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{server.port}/v1/chat/completions",
            json={"model": "llama3.2", "messages": MESSAGES, "stream": True},
            headers={"Host": "llama32-notes"},
        ) as response,
    ):
        await response.content.readany()
        await server.stop()  # returns although the stream would stall forever
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    await wait_for(lambda: vllm.cancelled == 1, "the upstream stream to be closed")


async def test_module_entry_point(tmp_path: Path, vllm: EngineStandin) -> None:
    path = tmp_path / "routes.json"
    path.write_text(json.dumps(base_table(vllm.url, None)))
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "inferops.router",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--table-file",
        str(path),
        "--grace-seconds",
        "1",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        async with aiohttp.ClientSession() as http:
            ready = False
            for _ in range(200):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                        ready = response.status == 200
                except aiohttp.ClientConnectionError:
                    pass
                if ready:
                    break
                await asyncio.sleep(0.05)
            assert ready, "the router did not become ready"
            async with http.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json={"model": "llama3.2", "messages": MESSAGES},
                headers={"Host": "llama32-notes"},
            ) as response:
                assert (await response.json())["choices"][0]["message"]["content"] == (
                    "Hello from vllm"
                )
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(process.communicate, timeout=10)
        assert process.returncode == 0, stderr
        assert "routing table 1 installed" in stderr and "stopped" in stderr
    finally:
        if process.poll() is None:
            process.kill()
