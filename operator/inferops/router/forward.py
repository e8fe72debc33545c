"""One inference request's way through the engines: the attempts with their fallback, then the
answer, whole or relayed as it streams. Callbacks only: the client connection
(`http1.Request`) and the engine connection (`pool.Connection`) call into a `Forward`, which
keeps the request's state between them.

An attempt fails, and the next engine (the fallback) is tried, when it fails before anything
was sent to the client: connect error, connection lost, HTTP 5xx, or no first byte in time.
"First byte" means the answer's head and, for a stream, its first piece; a whole answer is
read in full before the client sees any of it, so a failure while reading it still falls
back. 4xx answers are the client's problem and pass through unchanged.

Once a stream's first byte is out there is no fallback any more: an engine that breaks off or
falls silent for `firstByteSeconds` ends the stream with an in-band error the official
clients raise on. The silence is watched without per-piece timers: each piece stamps the
time, and one alarm (`alarms.Alarms`) per silence limit checks the stamp when it goes off.
A client that goes away closes the engine's connection, which makes the engine stop
generating; a client that reads slowly pauses the reading from the engine (backpressure).
"""

from __future__ import annotations

import logging
import time

from inferops.router import admission, errors, shadow
from inferops.router.admission import Gate
from inferops.router.alarms import Alarms
from inferops.router.errors import RouterError
from inferops.router.http1 import Reply, Request
from inferops.router.metrics import CLIENT_CLOSED
from inferops.router.pool import Connection, Pool
from inferops.router.proxy import Intake, Plan, PlanByEngine
from inferops.router.relay import Codec
from inferops.router.routes import VLLM
from inferops.router.upstream import Answer

log = logging.getLogger("inferops.router.forward")


# Phases of a Forward.
HEAD, WHOLE, FIRST, STREAMING, FINISHED, WAITING = range(6)
"""Waiting for the answer's head; reading a whole answer; waiting for a stream's first piece;
relaying a stream; over; waiting for a slot on the engine (`admission.Gate`)."""

SSE = b"text/event-stream"
NDJSON = b"application/x-ndjson"
"""Ollama's native stream (relayed as is to an Ollama-API client)."""


def _describe(error: BaseException | None) -> str:
    return repr(error) if error is not None else "the connection closed"


class Forward:
    """Serves one checked inference request (see the module's docstring)."""

    __slots__ = (
        "alarm_tick",
        "alarms",
        "attempt",
        "can_fall_back",
        "codec",
        "conn",
        "content_type",
        "dialect",
        "held",
        "idle_seconds",
        "index",
        "intake",
        "last",
        "limit",
        "parts",
        "phase",
        "plan",
        "plans",
        "pool",
        "request",
        "status",
        "target",
        "targets",
        "waited_since",
    )

    def __init__(
        self,
        pool: Pool,
        alarms: Alarms,
        request: Request,
        intake: Intake,
        plan: Plan | PlanByEngine,
        dialect: str,
    ) -> None:
        self.pool = pool
        self.alarms = alarms
        self.alarm_tick = 0
        self.request = request
        self.intake = intake
        self.targets = intake.chosen
        self.plans: PlanByEngine | None = None
        """The plan of each engine, for a request asked differently of each (`_send` picks)."""
        if isinstance(plan, dict):
            self.plans = plan
            plan = plan[self.targets[0].name]
        self.plan: Plan = plan
        self.dialect = dialect
        self.index = 0
        self.attempt = 0
        """Counts attempts: the token that tells a late word about an earlier one."""
        self.target = self.targets[0]
        self.can_fall_back = False
        self.conn: Connection | None = None
        self.phase = HEAD
        self.status = 0
        self.content_type = b""
        self.parts: list[bytes] = []
        self.codec: Codec | None = None
        self.limit = 0.0
        self.idle_seconds = intake.routes.first_byte_seconds
        self.last = 0.0
        """When the last piece of a stream arrived (monotonic)."""
        self.held: Gate | None = None
        """The gate whose slot the current attempt holds, until it ends."""
        self.waited_since = 0.0

    def start(self) -> None:
        self.request.listener = self
        self._attempt()

    # -- attempts ------------------------------------------------------------------------------

    def _attempt(self) -> None:
        target = self.target = self.targets[self.index]
        self.can_fall_back = self.index < len(self.targets) - 1
        gate = target.gate
        if gate.active < gate.limit:  # `Gate.enter` inline: a method call per request saved
            gate.active += 1
            self.held = gate
            self._send()
        elif gate.wait(self) == admission.QUEUED:
            self.phase = WAITING
            self.waited_since = now = time.monotonic()
            self.alarms.set(self, min(now + gate.wait_seconds, self.intake.deadline))
        else:
            self._shed(admission.QUEUE_FULL)

    def admitted(self) -> None:
        """A slot freed up for the waiting attempt (`admission.Waiter`)."""
        self.alarms.clear(self)
        self.held = self.target.gate
        self._send()

    def _shed(self, reason: str) -> None:
        """The engine is at its limit: refused at once, without asking it. No other engine
        is tried: vLLM's overflow would swamp the consumers still on the smaller Ollama."""
        self.phase = FINISHED
        intake = self.intake
        gate = self.target.gate
        intake.ex.metrics.shed(intake.ex.consumer, gate.name, intake.ex.route, reason)
        waited = time.monotonic() - self.waited_since
        error = errors.overloaded(
            gate.name, reason == admission.QUEUE_FULL, gate.limit, len(gate.queue), waited
        )
        self.request.reply(errors.render(self.dialect, error, errors.RETRY_AFTER))

    def _release(self) -> None:
        gate = self.held
        if gate is not None:
            self.held = None
            gate.release()

    def _send(self) -> None:
        """The attempt holds a slot on its engine: the request goes out."""
        intake = self.intake
        routes = intake.routes
        target = self.target
        can_fall_back = self.can_fall_back
        self.attempt += 1
        self.phase = HEAD
        self.conn = None
        intake.ex.begin(target.name)
        remaining = intake.deadline - time.monotonic()
        # The first-byte limit exists to give up on an engine in favour of the fallback; on the
        # last engine there is nothing better to do than wait for the request's deadline.
        limit = min(routes.first_byte_seconds, remaining) if can_fall_back else remaining
        self.limit = limit
        self.alarms.set(self, time.monotonic() + limit)
        plans = self.plans
        plan = self.plan = plans[target.name] if plans is not None else self.plan
        body = plan.body
        data = b"".join(
            (
                target.heads[plan.path],
                intake.forwarded,
                b"Content-Length: %d\r\n\r\n" % len(body),
                body,
            )
        )
        self.pool.request(target.origin, data, self, self.attempt, routes.connect_seconds)

    def _failed(self, code: int, reason: str, message: str) -> None:
        """The attempt failed before anything reached the client: the next engine, or the
        error answer."""
        self._drop_engine()
        ex = self.intake.ex
        ex.failed(code, reason, fallback=self.can_fall_back)
        # Per request, so debug only: the metrics carry the rate.
        log.debug("%s%s", message, "; falling back" if self.can_fall_back else "")
        if self.can_fall_back:
            self.index += 1
            self._attempt()
            return
        self.phase = FINISHED
        error = RouterError(code, message, f"engine_{reason}", "server_error")
        self.request.reply(errors.render(self.dialect, error))

    def _drop_engine(self) -> None:
        """Stops waiting for the current engine: no alarm, its slot freed, its connection
        closed."""
        self.alarms.clear(self)
        self._release()
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()

    def alarm(self) -> None:
        phase = self.phase
        if phase == STREAMING:
            self._check_silence()
        elif phase == WAITING:
            self.target.gate.leave(self)
            self._shed(admission.WAIT_TIMEOUT)
        else:
            self._no_first_byte()

    def _no_first_byte(self) -> None:
        if self.phase in (HEAD, WHOLE, FIRST):
            name = self.target.name
            message = f"engine {name!r} sent no response within {self.limit:.3g}s"
            self._failed(504, "timeout", message)

    # -- the engine's side (pool.Listener) -----------------------------------------------------

    def attach(self, conn: Connection, token: int) -> bool:
        # Attached twice in one attempt when the pool retried a connection found closed.
        if token != self.attempt or self.phase != HEAD:
            return False  # an attempt given up on: its connection goes back to the pool
        self.conn = conn
        if self.request.conn.writing_paused:  # the client is behind already (pipelining)
            conn.pause()
        return True

    def connect_failed(self, error: OSError, token: int) -> None:
        if token != self.attempt or self.phase != HEAD:
            return
        name = self.target.name
        if isinstance(error, TimeoutError):
            self._failed(504, "connect", f"engine {name!r} is unreachable: {error}")
        else:
            self._failed(502, "connect", f"engine {name!r} is unreachable: {error}")

    def head(self, status: int, content_type: bytes) -> None:
        if self.phase != HEAD:
            return
        if status >= 500 and self.can_fall_back:
            self._failed(status, "upstream_5xx", f"engine {self.target.name!r} answered {status}")
            return
        self.status = status
        self.content_type = content_type
        streams = content_type.startswith(SSE) or content_type.startswith(NDJSON)
        self.phase = FIRST if streams else WHOLE

    def body(self, data: bytes) -> None:
        phase = self.phase
        if phase == STREAMING:
            self.last = time.monotonic()
            try:
                out = self.codec.feed(data)  # type: ignore[union-attr]
            except Exception:
                self._crashed()
                return
            if out:
                self.request.write(out)
                ex = self.intake.ex
                if ex.first_at is None:  # the codec held back the first pieces (Ollama's)
                    ex.first_byte()
        elif phase == WHOLE:
            self.parts.append(data)
        elif phase == FIRST:
            self._stream(data)

    def end(self) -> None:
        phase = self.phase
        self.conn = None  # answered in full: the pool keeps the connection
        self._release()
        if phase == STREAMING:
            self._stream_end()
        elif phase == WHOLE:
            self._whole()
        elif phase == FIRST:  # a stream without a single piece
            self._stream(b"")
            if self.phase == STREAMING:
                self._stream_end()

    def lost(self, error: Exception | None) -> None:
        self.conn = None
        phase = self.phase
        name = self.target.name
        if phase == STREAMING:
            message = f"engine {name!r} broke off the stream: {_describe(error)}"
            self._stream_failed("stream_broken", "engine_stream_broken", message)
        elif phase != FINISHED:
            message = f"engine {name!r} failed before answering: {_describe(error)}"
            self._failed(502, "upstream_disconnect", message)

    # -- the client's side (http1.Listener) ----------------------------------------------------

    def client_lost(self) -> None:
        phase = self.phase
        if phase == FINISHED:
            return
        self.phase = FINISHED
        if phase == WAITING:  # never reached the engine: a refusal of the client's making
            self.alarms.clear(self)
            self.target.gate.leave(self)
            ex = self.intake.ex
            ex.metrics.refused(ex.consumer, ex.route, CLIENT_CLOSED)
            return
        self._drop_engine()
        self.intake.ex.done(CLIENT_CLOSED)

    def pause(self) -> None:
        if self.conn is not None:
            self.conn.pause()

    def resume(self) -> None:
        if self.conn is not None:
            self.conn.resume()

    # -- answers -------------------------------------------------------------------------------

    def _answer(self, body: bytes) -> Answer:
        return Answer(self.target, self.status, self.content_type, body)

    def _whole(self) -> None:
        self.alarms.clear(self)
        self.phase = FINISHED
        parts = self.parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        self.parts = []
        answer = self._answer(body)
        ex = self.intake.ex
        try:
            reply = self.plan.whole(self.intake, answer)
        except RouterError as err:  # an engine answer that cannot be translated
            ex.error(err.code)
            ex.done(err.status)
            self.request.reply(errors.render(self.dialect, err))
            return
        except Exception:
            self._crashed()
            return
        if answer.status >= 500:
            ex.error("upstream_5xx")
        ex.done(answer.status)
        self.request.reply(reply)
        if self.intake.consumer.shadow is not None:  # a shadow step: after the answer
            shadow.offer(self.pool, self.intake, self._mirrored, self.target.name, answer.status)

    def _mirrored(self) -> Plan:
        """The request as a shadow step mirrors it: the OpenAI form vLLM is asked (an
        Ollama-API request goes natively to Ollama, `ollama_api._by_engine`)."""
        plans = self.plans
        if plans is not None and VLLM in plans:
            return plans[VLLM]
        if self.intake.mirror is not None:
            plan = self.intake.mirror()
            if not isinstance(plan, Reply):
                return plan
        return self.plan  # none: `shadow` drops what has no OpenAI form

    def _stream(self, first: bytes) -> None:
        """The first piece of a stream arrived: the answer starts."""
        self.alarms.clear(self)
        intake = self.intake
        try:
            codec = self.codec = self.plan.codec(intake, self._answer(b""))
            out = codec.feed(first)
        except RouterError as err:  # a stream the route cannot relay
            self.phase = FINISHED
            self._drop_engine()
            intake.ex.error(err.code)
            intake.ex.done(err.status)
            self.request.reply(errors.render(self.dialect, err))
            return
        except Exception:
            self._crashed()
            return
        self.phase = STREAMING
        request = self.request
        request.start(
            self.status,
            codec.content_type.encode(),
            intake.tags(self.target) + b"Cache-Control: no-cache\r\n",
            out,
        )
        if out:
            intake.ex.first_byte()
        self.last = time.monotonic()
        self._watch(self.last + self.idle_seconds)

    def _watch(self, at: float) -> None:
        self.alarms.set(self, min(at, self.intake.deadline))

    def _check_silence(self) -> None:
        if self.phase != STREAMING:
            return
        now = time.monotonic()
        if now >= self.intake.deadline:
            message = "the request exceeded its time limit"
            self._stream_failed("stream_timeout", "engine_timeout", message)
        elif now - self.last >= self.idle_seconds:
            name = self.target.name
            message = f"engine {name!r} sent nothing for {self.idle_seconds:.3g}s"
            self._stream_failed("stream_stalled", "engine_timeout", message)
        else:
            self._watch(self.last + self.idle_seconds)

    def _stream_end(self) -> None:
        self.alarms.clear(self)
        self.phase = FINISHED
        codec = self.codec
        assert codec is not None
        ex = self.intake.ex
        try:
            tail = codec.finish()
        except Exception:
            self._crashed()
            return
        if codec.failed:
            ex.error("engine_stream_error")
        ex.tokens(*codec.counts())
        self.request.end(tail)
        ex.done(self.status)
        if self.intake.consumer.shadow is not None and not codec.failed:  # after the answer
            shadow.offer(self.pool, self.intake, self._mirrored, self.target.name, self.status)

    def _stream_failed(self, reason: str, code: str, message: str) -> None:
        """A stream the client has part of cannot go on: it ends with an in-band error."""
        self._drop_engine()
        self.phase = FINISHED
        codec = self.codec
        assert codec is not None
        ex = self.intake.ex
        ex.error(reason)
        self.request.end(codec.error(message, code))
        ex.done(self.status)

    def _crashed(self) -> None:
        """A bug in translating an answer: logged, counted, and the client told (a 500 if
        nothing was sent yet, else a cut connection)."""
        log.exception("failed relaying an answer of engine %r", self.target.name)
        self._drop_engine()
        self.phase = FINISHED
        ex = self.intake.ex
        ex.error("router_error")
        ex.done(500)
        request = self.request
        if request.started:
            request.abort()
        else:
            error = RouterError(500, "the router failed on this answer", "router_error")
            request.reply(errors.render(self.dialect, error))


__all__ = ["Forward"]
