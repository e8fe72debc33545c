"""Asking the engines what they know of the model, for Ollama's `/api/show` and `/api/ps`:
vLLM's `/v1/models` (its context length), Ollama's own `/api/show` and `/api/ps`.

Only engines the table has ready are asked (the others get no traffic, so their figures do
not apply), all at once, each within a few seconds. An engine that fails, is slow or does not
list the model just leaves its part of the answer out: a description missing a figure is more
use to a client than an error, and nothing here may hold a client for an engine's whole
first-byte limit.
"""

from __future__ import annotations

import asyncio
import json
import logging

from inferops.router.modelinfo import Facts, Json, ollama_running, vllm_model
from inferops.router.pool import Pool
from inferops.router.routes import OLLAMA, VLLM, Routes, Target
from inferops.router.upstream import EngineError, fetch

log = logging.getLogger("inferops.router.inquiry")

# Metadata answers come at once from a live engine; one that takes longer is not worth the
# client's wait.
ASK_SECONDS = 5.0


async def _ask(
    pool: Pool,
    routes: Routes,
    target: Target,
    path: str,
    headers: bytes,
    body: Json | None = None,
) -> object:
    """The engine's JSON answer to `GET path` (`POST` with `body`); None if it has none."""
    try:
        async with asyncio.timeout(min(ASK_SECONDS, routes.first_byte_seconds)):
            method = "GET" if body is None else "POST"
            data = None if body is None else json.dumps(body).encode()
            status, answer = await fetch(
                pool, target, method, path, headers, data, routes.connect_seconds
            )
    except (OSError, EngineError) as err:  # TimeoutError is an OSError too
        # Per request, so debug only: a failing engine shows in the inference metrics.
        log.debug("engine %s did not answer %s: %r", target.name, path, err)
        return None
    if status >= 300:
        log.debug("engine %s answered %d to %s", target.name, status, path)
        return None
    try:
        return json.loads(answer)
    except ValueError:
        log.debug("engine %s answered %s with something else than JSON", target.name, path)
        return None


async def _nothing() -> object:
    return None


def _ready(routes: Routes, engine: str) -> Target | None:
    target = routes.targets.get(engine)
    return target if target is not None and target.ready else None


async def facts(
    pool: Pool,
    routes: Routes,
    headers: bytes,
    show: bool,
    verbose: bool = False,
) -> Facts:
    """What the ready engines say about the model. `show` also asks Ollama's `/api/show`
    (with `verbose`, its full tokenizer arrays); `/api/ps` needs only the rest."""
    vllm, ollama = _ready(routes, VLLM), _ready(routes, OLLAMA)
    served = routes.model
    show_body = {"model": served, "verbose": verbose}
    models, running, described = await asyncio.gather(
        _ask(pool, routes, vllm, "/v1/models", headers) if vllm else _nothing(),
        _ask(pool, routes, ollama, "/api/ps", headers) if ollama else _nothing(),
        _ask(pool, routes, ollama, "/api/show", headers, show_body)
        if ollama and show
        else _nothing(),
    )
    return Facts(
        vllm=vllm_model(models, served),
        ollama_show=described if isinstance(described, dict) else None,
        ollama_running=ollama_running(running, served),
    )


__all__ = ["ASK_SECONDS", "facts"]
