"""The engines' connection pool against a scripted server: keep-alive reuse, the one retry of a
connection the engine closed while it sat idle, answers without a length, and the limits
(idle time, number of connections)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from testsupport.standin import EngineStandin

from inferops.api.routing import RoutingTable
from inferops.router.alarms import Alarms
from inferops.router.pool import Connection, Origin, Pool
from inferops.router.routes import Target, compile_table
from inferops.router.upstream import EngineError, fetch
from tests.router.conftest import Router

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


@dataclass
class Scripted:
    """A server that answers each request with `answer(connection number, request number)`:
    bytes to send (then keep the connection), or None (close it without a word)."""

    answer: Callable[[int, int], bytes | None]
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number, served = self.connections, 0
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                self.requests.append(head + await reader.readexactly(length))
                served += 1
                answer = self.answer(number, served)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


async def started(script: Scripted) -> Scripted:
    server = await asyncio.start_server(script.handle, "127.0.0.1", 0)
    script.port = server.sockets[0].getsockname()[1]
    return script


def target(port: int) -> Target:
    table = RoutingTable.model_validate(
        {"model": "m", "engines": {"vllm": {"url": f"http://127.0.0.1:{port}"}}, "consumers": []}
    )
    return compile_table(table).targets["vllm"]


async def get(pool: Pool, port: int) -> tuple[int, bytes]:
    return await fetch(pool, target(port), "GET", "/v1/models", b"", None, 1.0)


async def test_a_connection_is_reused() -> None:
    script = await started(Scripted(lambda conn, n: OK))
    pool = Pool()
    for _ in range(3):
        assert await get(pool, script.port) == (200, b"{}")
    assert script.connections == 1
    assert pool.open == 1
    pool.close()


async def test_an_idle_connection_closed_by_the_engine_is_retried_once() -> None:
    # Every connection answers one request, then closes when the next one arrives: the
    # race of an engine closing an idle connection just as the router takes it.
    script = await started(Scripted(lambda conn, n: OK if n == 1 else None))
    pool = Pool()
    assert await get(pool, script.port) == (200, b"{}")
    assert await get(pool, script.port) == (200, b"{}")  # retried on a new connection
    assert script.connections == 2
    pool.close()


async def test_a_new_connection_that_fails_is_not_retried() -> None:
    script = await started(Scripted(lambda conn, n: None))
    pool = Pool()
    with pytest.raises(EngineError):
        await get(pool, script.port)
    assert script.connections == 1
    pool.close()


async def test_an_answer_without_a_length_ends_with_the_connection() -> None:
    unframed = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(unframed + b'{"a": 1}')
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    pool = Pool()
    port = server.sockets[0].getsockname()[1]
    assert await get(pool, port) == (200, b'{"a": 1}')
    await asyncio.sleep(0.05)
    assert pool.open == 0  # not kept: the engine closed it
    pool.close()
    server.close()


async def test_an_engine_answering_twice_loses_its_connection() -> None:
    script = await started(Scripted(lambda conn, n: OK + OK))  # one answer too many
    pool = Pool()
    assert await get(pool, script.port) == (200, b"{}")
    await asyncio.sleep(0.05)
    assert pool.open == 0 and not pool.idle.get(target(script.port).origin.key)
    assert await get(pool, script.port) == (200, b"{}")
    assert script.connections == 2
    pool.close()


async def test_idle_connections_expire() -> None:
    script = await started(Scripted(lambda conn, n: OK))
    pool = Pool(keepalive_seconds=0.1)
    await get(pool, script.port)
    assert pool.open == 1
    for _ in range(50):
        await asyncio.sleep(0.02)
        if pool.open == 0:
            break
    assert pool.open == 0
    await get(pool, script.port)
    assert script.connections == 2
    pool.close()


async def test_the_connection_limit_queues_requests() -> None:
    slow = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            await slow.wait()
            writer.write(OK)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Pool(limit=2)
    asks = [asyncio.create_task(get(pool, port)) for _ in range(5)]
    await asyncio.sleep(0.1)
    assert pool.open == 2 and len(pool.waiting) == 3
    slow.set()
    assert await asyncio.gather(*asks) == [(200, b"{}")] * 5
    assert pool.open <= 2
    pool.close()
    server.close()


def test_a_paused_connection_reads_again_before_it_is_reused() -> None:
    class Transport:
        reading = True

        def pause_reading(self) -> None:
            self.reading = False

        def resume_reading(self) -> None:
            self.reading = True

        def is_closing(self) -> bool:
            return False

    async def release() -> None:  # in a running loop, where the pool lives
        pool.release(conn)

    pool = Pool()
    conn = Connection(pool, Origin.parse("http://127.0.0.1:1"))
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.pause()
    assert not transport.reading
    asyncio.run(release())
    assert transport.reading


def test_origins() -> None:
    origin = Origin.parse("http://llama32-vllm.ai.svc:8000")
    assert (origin.host, origin.port, origin.prefix) == ("llama32-vllm.ai.svc", 8000, "")
    assert origin.request_head("POST", "/v1/x", b"") == (
        b"POST /v1/x HTTP/1.1\r\nHost: llama32-vllm.ai.svc:8000\r\n"
    )
    assert Origin.parse("http://e").host_header == b"Host: e\r\n"
    assert (
        Origin.parse("https://e/base/")
        .request_head("GET", "/p", b"")
        .startswith(b"GET /base/p HTTP/1.1\r\nHost: e\r\n")
    )
    with pytest.raises(ValueError):
        Origin.parse("ftp://e")


async def test_alarms_go_off_once_in_order_and_can_be_cleared() -> None:
    rang: list[str] = []

    @dataclass(eq=False)
    class Owner:
        name: str
        alarm_tick: int = 0

        def alarm(self) -> None:
            rang.append(self.name)

    alarms = Alarms()
    now = time.monotonic()
    late, early, never = Owner("late"), Owner("early"), Owner("never")
    alarms.set(late, now + 0.1)
    alarms.set(early, now + 0.03)
    alarms.set(never, now + 0.05)
    alarms.clear(never)
    alarms.set(early, now + 0.02)  # replaced, not doubled
    await asyncio.sleep(0.2)
    assert rang == ["early", "late"]
    assert early.alarm_tick == late.alarm_tick == never.alarm_tick == 0
    alarms.close()


async def test_the_router_retries_an_engine_connection_closed_while_idle(
    router: Router, ollama_engine: EngineStandin
) -> None:
    """Through the router: the engine closes each kept-alive connection when the next
    request arrives on it; every request still gets its answer, and from the engine it was
    sent to (no fallback: nothing failed)."""
    body = json.dumps(
        {"choices": [{"message": {"role": "assistant", "content": "scripted"}}]}
    ).encode()
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body)
    )
    script = await started(Scripted(lambda conn, n: answer if n == 1 else None))
    await router.set_engine("vllm", url=f"http://127.0.0.1:{script.port}")
    client = router.openai("llama32-notes")  # weight 100: vLLM
    for _ in range(3):
        completion = await client.chat.completions.create(
            model="llama3.2", messages=[{"role": "user", "content": "hi"}]
        )
        assert completion.choices[0].message.content == "scripted"
    assert script.connections == 3 and len(script.requests) == 5  # 2 closed, retried
    assert ollama_engine.hits == 0
