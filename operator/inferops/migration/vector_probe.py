"""Asks both engines for the vectors of the same inputs, for the check that embeddings move
only with compatible vectors (`inferops.migration.vectors`, which judges them).

The request goes through the router like the synthetic probes (`inferops.migration.probe`):
one `/v1/embeddings` with every input, through the first consumer's endpoint, pinned to each
engine in turn by `X-Inferops-Probe`, which the router honours without fallback (a vLLM that
fails must not be answered by Ollama) and sends to vLLM's embeddings deployment when the
table has one. The two requests count as that consumer's, like its probes.
"""

from __future__ import annotations

from typing import Any

import httpx

from inferops.api.routing import PROBE_HEADER
from inferops.api.spec import InferenceBackendSpec
from inferops.builders import router
from inferops.builders.common import Owner


def _vectors(answer: Any, count: int) -> list[list[float]] | str:
    """The vectors of an OpenAI embeddings answer, in input order, or what is wrong."""
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list):
        return "the answer has no data list"
    ordered = sorted(
        (item for item in data if isinstance(item, dict)), key=lambda i: i.get("index", 0)
    )
    out = []
    for item in ordered:
        vector = item.get("embedding")
        if not isinstance(vector, list) or not all(isinstance(x, int | float) for x in vector):
            return "an item of the answer has no list of numbers as embedding"
        out.append([float(x) for x in vector])
    return out if out or not count else "the answer holds no vectors"


async def ask(
    http: httpx.AsyncClient, url: str, host: str, model: str, inputs: list[str], engine: str
) -> list[list[float]] | str:
    """One engine's vectors for `inputs`, or why there are none."""
    headers = {PROBE_HEADER: engine, "Host": host}
    body = {"model": model, "input": inputs}
    try:
        answer = await http.post(url + "/v1/embeddings", json=body, headers=headers)
    except httpx.HTTPError as error:
        return f"{type(error).__name__} {error}".strip()
    if answer.status_code != 200:
        return f"HTTP {answer.status_code}: {answer.text[:200]}"
    try:
        return _vectors(answer.json(), len(inputs))
    except ValueError:
        return "the answer is not JSON"


class VectorProbe:
    """Sends the check's inputs to both engines; `router_url` replaces the consumers'
    endpoints (an operator run outside the cluster)."""

    def __init__(self, router_url: str | None = None, timeout: float = 60.0) -> None:
        self.router_url = router_url
        self.http = httpx.AsyncClient(timeout=timeout)

    async def measure(
        self, spec: InferenceBackendSpec, owner: Owner
    ) -> tuple[list[list[float]] | str, list[list[float]] | str]:
        """(vLLM's vectors, Ollama's vectors) for spec.migration.embeddings.inputs."""
        assert spec.migration is not None
        if not spec.consumers:
            problem = "no consumer: the check goes through a consumer's endpoint"
            return problem, problem
        consumer = spec.consumers[0]
        host = router.service_name(owner, consumer)
        url = (self.router_url or router.endpoint(owner, consumer)).rstrip("/")
        inputs = list(spec.migration.embeddings.inputs)
        vllm = await ask(self.http, url, host, spec.model, inputs, "vllm")
        ollama = await ask(self.http, url, host, spec.model, inputs, "ollama")
        return vllm, ollama

    async def aclose(self) -> None:
        await self.http.aclose()


__all__ = ["VectorProbe", "ask"]
