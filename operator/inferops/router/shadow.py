"""The shadow step's mirror: a bounded sample of a consumer's requests, once Ollama has
answered the client, asked again of Ollama and of vLLM, and the answers compared
(`inferops.router.compare`); the verdicts are counted per consumer (`Series.shadow`, the
metric `inferops_router_shadow_total`), which the migration's analysis judges.

The client never waits for the mirror and never sees it: a request is offered only after
its answer is out (`forward.Forward` calls `offer` last), the mirror's requests skip the
admission gates (they take no slot a live request could have had) and are bounded instead by
`maxConcurrent` per consumer and router process: a sampled request beyond it is dropped and
counted, never queued, and so is one sampled while Ollama is at its own admission limit
(live requests first). They are not counted in the consumer's requests, errors or
latencies.

Both engines are asked the same non-streaming request rather than comparing vLLM with the
answer the client got: the client's answer may be a stream in either API's dialect, while
two whole OpenAI answers compare like with like. For `noisePercent` of the mirrored requests
Ollama is asked twice: how often it disagrees with itself is the noise floor vLLM is held to.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import weakref
from collections import deque
from collections.abc import Awaitable, Callable

from inferops.api.routing import Mirror
from inferops.router import compare
from inferops.router.metrics import RouterMetrics
from inferops.router.pool import Pool
from inferops.router.proxy import Intake, Plan
from inferops.router.routes import OLLAMA, OPENAI_PATHS, VLLM, Target
from inferops.router.upstream import fetch

log = logging.getLogger("inferops.router.shadow")

EXAMPLES = 5
"""Mismatches kept per consumer (`Mirrors.examples`), for the log and for tests."""

Result = tuple[int, bytes] | BaseException


class Mirrors:
    """One router's mirrored requests under way, per consumer."""

    def __init__(self, pool: Pool, metrics: RouterMetrics) -> None:
        self.pool = pool
        self.metrics = metrics
        self.active: dict[str, int] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.examples: dict[str, deque[str]] = {}
        """consumer -> its latest mismatches, described without content unless the
        consumer's mirror allows it."""

    def count(self, consumer: str, engine: str, route: str, kind: str, verdict: str) -> None:
        shadow = self.metrics.series(consumer, engine, route).shadow
        key = f"{kind}:{verdict}"
        shadow[key] = shadow.get(key, 0) + 1

    def offer(self, consumer: str, route: str, config: Mirror, intake: Intake, plan: Plan) -> None:
        """A sampled request answered by Ollama: mirrored, or counted as not comparable or
        dropped."""
        if plan.path not in OPENAI_PATHS:
            # Only an OpenAI request can be asked of both engines as it is; anything else
            # (a native Ollama request) would read as vLLM failing.
            self.count(consumer, VLLM, route, "other", "dropped")
            return
        try:
            doc = json.loads(plan.body)
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        kind = compare.kind_of(plan.path, doc)
        if kind == "other":
            self.count(consumer, VLLM, route, kind, "uncomparable")
            return
        targets = intake.routes.targets
        vllm, ollama = targets.get(VLLM), targets.get(OLLAMA)
        if kind == "embeddings" and intake.routes.embeddings is not None:
            vllm = intake.routes.embeddings  # vLLM's embeddings deployment serves them
        active = self.active.get(consumer, 0)
        if (
            vllm is None
            or ollama is None
            or not vllm.ready
            or active >= config.max_concurrent
            # Ollama at its admission limit: live requests first (its reference answers
            # would queue in Ollama ahead of them).
            or ollama.gate.active >= ollama.gate.limit
            or ollama.gate.queue
        ):
            self.count(consumer, VLLM, route, kind, "dropped")
            return
        doc["stream"] = False
        doc.pop("stream_options", None)
        body = json.dumps(doc).encode()
        noise = random.random() * 100.0 < config.noise_percent
        self.active[consumer] = active + 1
        job = self.run(
            consumer, route, kind, config, plan.path, body, intake.forwarded, vllm, ollama, noise
        )
        task = asyncio.get_running_loop().create_task(job)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(
        self,
        consumer: str,
        route: str,
        kind: str,
        config: Mirror,
        path: str,
        body: bytes,
        headers: bytes,
        vllm: Target,
        ollama: Target,
        noise: bool,
    ) -> None:
        try:

            def ask(target: Target) -> Awaitable[tuple[int, bytes]]:
                connect = min(config.timeout_seconds, 5.0)
                request = fetch(self.pool, target, "POST", path, headers, body, connect)
                return asyncio.wait_for(request, config.timeout_seconds)

            asks = [ask(ollama), ask(vllm)] + ([ask(ollama)] if noise else [])
            results: list[Result] = await asyncio.gather(*asks, return_exceptions=True)
            self.judge(consumer, route, kind, config, results)
        except Exception:  # a bug here must never reach the data path
            log.exception("shadow comparison of consumer %s failed", consumer)
        finally:
            self.active[consumer] -= 1

    def judge(
        self, consumer: str, route: str, kind: str, config: Mirror, results: list[Result]
    ) -> None:
        reference, candidate = results[0], results[1]
        if _failure(reference) is not None:
            # Nothing to hold vLLM to: neither a verdict on vLLM nor on the noise floor.
            log.debug("shadow: Ollama's reference failed: %s", _failure(reference))
            self.count(consumer, VLLM, route, kind, "dropped")
            return
        assert isinstance(reference, tuple)
        failed = _failure(candidate)
        if failed is not None:
            outcome = compare.Outcome("error", f"vLLM {failed}")
        else:
            assert isinstance(candidate, tuple)
            outcome = compare.compare(
                kind, reference[1], candidate[1], config.min_cosine, config.record_content
            )
        self.count(consumer, VLLM, route, kind, outcome.verdict)
        if outcome.verdict in ("disagree", "error"):
            self.example(consumer, route, kind, outcome)
        if len(results) > 2:
            second = results[2]
            failed = _failure(second)
            if failed is not None:
                verdict = "error"
            else:
                assert isinstance(second, tuple)
                verdict = compare.compare(kind, reference[1], second[1], config.min_cosine).verdict
            self.count(consumer, OLLAMA, route, kind, verdict)

    def example(self, consumer: str, route: str, kind: str, outcome: compare.Outcome) -> None:
        text = f"{route} {kind} {outcome.verdict}: {outcome.detail}"
        self.examples.setdefault(consumer, deque(maxlen=EXAMPLES)).append(text)
        log.info("shadow mismatch for consumer %s: %s", consumer, text)


def _failure(result: Result) -> str | None:
    """Why an engine's answer cannot be compared; None for a 2xx answer."""
    if isinstance(result, TimeoutError):
        return "timed out"
    if isinstance(result, BaseException):
        return f"failed: {result!r}"
    status, _ = result
    return None if status < 300 else f"answered HTTP {status}"


_MIRRORS: weakref.WeakKeyDictionary[Pool, Mirrors] = weakref.WeakKeyDictionary()
"""One `Mirrors` per router (its engine connection pool), made on first use."""


def mirrors(pool: Pool, metrics: RouterMetrics) -> Mirrors:
    found = _MIRRORS.get(pool)
    if found is None:
        found = _MIRRORS[pool] = Mirrors(pool, metrics)
    return found


def offer(pool: Pool, intake: Intake, plan: Callable[[], Plan], engine: str, status: int) -> None:
    """Called by `forward.Forward` once a request's answer is out: mirrors a sample of the
    requests of a consumer at a shadow step that Ollama answered (2xx). Probes are left out:
    they measure one engine on purpose. `plan` builds the mirrored request, only for a
    request in the sample."""
    config: Mirror | None = intake.consumer.shadow
    if config is None or engine != OLLAMA or status >= 300 or intake.pin is not None:
        return
    if random.random() * 100.0 >= config.percent:
        return
    ex = intake.ex
    mirrors(pool, ex.metrics).offer(ex.consumer, ex.route, config, intake, plan())


__all__ = ["EXAMPLES", "Mirrors", "mirrors", "offer"]
