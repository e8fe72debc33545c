"""The router's own HTTP/1.1 server, spoken to byte by byte: what general-purpose clients do
not send but the protocol allows (pipelining, chunked bodies, HTTP/1.0, `Expect`,
`Connection: close`, malformed input), and the connection-level promises (keep-alive to the
engines, the engine's work stopped when the client leaves)."""

from __future__ import annotations

import asyncio
import json

import pytest
from testsupport.standin import EngineStandin

from inferops.router.pool import Connection
from tests.router.conftest import MESSAGES, Router, wait_for
from tests.router.test_routing import sample

BODY = json.dumps({"model": "llama3.2", "messages": MESSAGES}).encode()
STREAM_BODY = json.dumps({"model": "llama3.2", "messages": MESSAGES, "stream": True}).encode()


def post(body: bytes, *headers: bytes, version: bytes = b"1.1") -> bytes:
    head = b"".join(h + b"\r\n" for h in headers)
    return (
        b"POST /v1/chat/completions HTTP/%s\r\nHost: llama32-notes\r\nContent-Length: %d\r\n%s\r\n"
        % (version, len(body), head)
        + body
    )


async def exchange(router: Router, data: bytes, timeout: float = 5.0) -> bytes:
    """Sends `data`, returns everything the router sends until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", router.server.port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def dechunk(body: bytes) -> bytes:
    """The payload of a chunked body."""
    out = b""
    while True:
        size, _, body = body.partition(b"\r\n")
        length = int(size, 16)
        if length == 0:
            return out
        out += body[:length]
        body = body[length + 2 :]


def answers(raw: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of each answer with a Content-Length in `raw`."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        found.append((status, rest[:length]))
        raw = rest[length:]
    return found


async def test_pipelined_requests_are_answered_in_order(
    router: Router, vllm: EngineStandin
) -> None:
    other = json.dumps({"model": "gpt-4", "messages": MESSAGES}).encode()
    raw = await exchange(router, post(BODY) + post(other) + post(BODY, b"Connection: close"))
    got = answers(raw)
    assert [status for status, _ in got] == [200, 404, 200]
    assert json.loads(got[0][1])["choices"][0]["message"]["content"] == "Hello from vllm"
    assert b"'gpt-4'" in got[1][1]
    assert vllm.hits == 2


async def test_keep_alive_on_both_sides(router: Router, vllm: EngineStandin) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", router.server.port)
    try:
        for _ in range(5):  # one after the other on one client connection
            writer.write(post(BODY))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 ")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
    finally:
        writer.close()
    assert vllm.hits == 5
    assert router.state.pool.open == 1  # the engine connection was reused each time


async def test_a_chunked_request_body(router: Router, vllm: EngineStandin) -> None:
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (BODY[:7], BODY[7:]))
    raw = await exchange(
        router,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: llama32-notes\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks + b"0\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert vllm.seen[0].body == {"model": "llama3.2", "messages": MESSAGES}


async def test_connection_close_is_honoured(router: Router) -> None:
    raw = await exchange(router, post(BODY, b"Connection: close"))  # returns once closed
    assert raw.startswith(b"HTTP/1.1 200 ") and b"\r\nConnection: close\r\n" in raw


async def test_an_http_1_0_stream_ends_with_its_connection(router: Router) -> None:
    raw = await exchange(router, post(STREAM_BODY, version=b"1.0"))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in head.lower()  # HTTP/1.0 has no chunks
    assert body.endswith(b"data: [DONE]\n\n")
    assert body.count(b"data: ") == 6  # role, three words, finish, [DONE]: unframed


async def test_an_http_1_1_stream_is_chunked(router: Router) -> None:
    raw = await exchange(router, post(STREAM_BODY, b"Connection: close"))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"\r\nTransfer-Encoding: chunked\r\n" in head
    assert b"\r\nCache-Control: no-cache\r\n" in head
    assert body.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")


async def test_expect_100_continue(router: Router) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", router.server.port)
    try:
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: llama32-notes\r\n"
            b"Content-Length: %d\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n" % len(BODY)
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(BODY)
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200 ")
    finally:
        writer.close()


async def test_a_refused_request_is_answered_before_its_body(router: Router) -> None:
    """Refused at its headers (here: announced larger than the limit), a request is answered
    at once, and the rest of its body is not waited for."""
    reader, writer = await asyncio.open_connection("127.0.0.1", router.server.port)
    try:
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: llama32-notes\r\n"
            b"Content-Length: 10000000\r\n\r\n{"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 413 ") and b"\r\nConnection: close\r\n" in head
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nX-Big: " + b"x" * 20000 + b"\r\n\r\n", 431),
        (b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n", 414),
    ],
)
async def test_malformed_http_gets_a_json_error_and_a_closed_connection(
    router: Router, request_bytes: bytes, status: int
) -> None:
    raw = await exchange(router, request_bytes)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status)
    assert json.loads(body)["error"]["message"]


async def test_head_answers_without_a_body(router: Router) -> None:
    raw = await exchange(router, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(b"\r\n\r\n")
    assert b"Content-Length: 17\r\n" in raw  # what GET would have sent: "Ollama is running"


async def test_a_client_gone_before_the_first_token_stops_the_engine(
    router: Router, vllm: EngineStandin
) -> None:
    vllm.behaviour.delay = 5.0
    reader, writer = await asyncio.open_connection("127.0.0.1", router.server.port)
    writer.write(post(STREAM_BODY))
    await writer.drain()
    await wait_for(lambda: vllm.hits == 1, "the request at the engine")
    writer.close()
    await wait_for(lambda: vllm.cancelled == 1, "the engine's work to stop", timeout=2.0)
    assert await reader.read() == b""  # nothing was answered
    metrics = await router.metrics()
    labels = {"consumer": "notes", "engine": "vllm"}
    assert sample(metrics, "inferops_router_requests_total", code="499", **labels) == 1
    assert sample(metrics, "inferops_router_in_flight_requests", **labels) == 0


async def test_a_slow_reader_pauses_the_engine_without_losing_bytes(
    router: Router, vllm: EngineStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backpressure: a client that does not read stalls the relay (the engine connection
    stops being read); once it reads, every event arrives, and the engine connection is
    whole again for the next request."""
    paused = []
    pause = Connection.pause
    monkeypatch.setattr(Connection, "pause", lambda conn: paused.append(1) or pause(conn))
    vllm.behaviour.words = ["x" * 65536] * 100  # 6.5 MB of events, more than socket buffers
    reader, writer = await asyncio.open_connection("127.0.0.1", router.server.port)
    try:
        writer.write(post(STREAM_BODY, b"Connection: close"))
        await asyncio.sleep(0.5)  # not reading: the router's buffer to this client fills
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    events = dechunk(raw.partition(b"\r\n\r\n")[2])
    assert paused
    assert events.count(b'"content": "' + b"x" * 65536 + b'"') == 100
    assert events.endswith(b"data: [DONE]\n\n")
    vllm.behaviour.words = ["ok"]
    completion = await router.openai().chat.completions.create(model="llama3.2", messages=MESSAGES)
    assert completion.choices[0].message.content == "ok"


async def test_a_stop_closes_idle_connections_and_lets_answers_under_way_end(
    router: Router, vllm: EngineStandin
) -> None:
    vllm.behaviour.chunk_delay = 0.1
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", router.server.port)
    busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", router.server.port)
    try:
        idle_writer.write(post(BODY))
        head = await asyncio.wait_for(idle_reader.readuntil(b"\r\n\r\n"), 5)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await idle_reader.readexactly(length)  # answered; the connection stays open, idle
        busy_writer.write(post(STREAM_BODY))
        await wait_for(lambda: vllm.streams_open == 1, "the stream")
        stopping = asyncio.create_task(router.server.stop())
        assert await asyncio.wait_for(idle_reader.read(), 1) == b""  # closed at once
        raw = await asyncio.wait_for(busy_reader.read(), 5)  # the stream ends, then it closes
        events = dechunk(raw.partition(b"\r\n\r\n")[2])
        assert events.endswith(b"data: [DONE]\n\n") and b" vllm" in events
        await stopping
    finally:
        idle_writer.close()
        busy_writer.close()


async def test_a_request_sent_as_the_stop_begins_on_an_idle_connection_is_answered(
    router: Router, vllm: EngineStandin
) -> None:
    """Closing idle keep-alive connections at once would reset a request already on the
    wire; for a moment they still answer, with `Connection: close`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", router.server.port)
    try:
        writer.write(post(BODY))
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)  # answered; the connection is idle now
        stopping = asyncio.create_task(router.server.stop())
        await wait_for(lambda: router.state.draining, "the stop to begin")
        writer.write(post(BODY))
        raw = await asyncio.wait_for(reader.read(), 5.0)  # until the router closes it
        [(status, body)] = answers(raw)
        assert status == 200 and b"connection: close" in raw.lower()
        assert json.loads(body)["choices"][0]["message"]["content"] == "Hello from vllm"
        await stopping
    finally:
        writer.close()
