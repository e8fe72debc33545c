"""Embeddings on real engines: real vLLM's pooling runner and real Ollama serve the same tiny
model, and embeddings move from Ollama to vLLM only when both engines' vectors agree.

Ollama serves the tiny model's GGUF; vLLM the same weights on its pooling runner, with the
pooler the spec gives it. Measured on the tiny model (a causal Llama): Ollama's vectors are
the last token's hidden state, L2-normalised; vLLM's pooling runner with
`--pooler-config '{"pooling_type": "LAST"}'` gives the same vectors (cosine 1.0 on every
input), with `MEAN` pooling other ones (cosine 0.53 to 0.82). So `LAST` is the pooler that
makes them agree, and `MEAN` stands for a pooling that does not.

One vLLM process per case (the machine has two cores), used in turn in both roles vLLM can
have for embeddings, each with the operator's own routing table in a router process, the
operator's vector check (`migration.vector_probe` through the router, judged by
`migration.vectors`) and the planner:

- `spec.vllm` itself on the pooling runner: a consumer using chat and embeddings is held at
  0% until the vectors agree, then migrates to 100%, its embeddings served by vLLM and its
  chat still by Ollama (vLLM's pooling runner serves no chat); where they differ it is held,
  with the figure in its status, the `Migrating` condition and an Event;
- `spec.vllm.embeddings`, vLLM's embeddings deployment: a migrated consumer's embeddings
  weight moves to 100 only when the vectors agree.

And with vLLM's generation runner (no pooling anywhere), the case the issue started from: a
consumer using chat and embeddings migrates through 50% to 100%, its chat moving to vLLM and
its embeddings served by Ollama at every step (vLLM's generation runner has no embeddings
route: before routing by kind, they answered 404 once migrated).

The clients are the official `openai` and `ollama` clients; every request of the consumer
gets its answer (vectors for embeddings) at every step.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path

import ollama
import pytest
from openai import OpenAI
from testsupport.markers import needs
from testsupport.programs import RouterProcess, scrape, total

from e2e.engines.ollama_server import OllamaServer
from e2e.engines.tiny_model import ensure_tiny_model
from e2e.engines.vllm_cpu import ensure_vllm_env
from e2e.engines.vllm_server import VLLMServer
from e2e.harness import wait_for
from inferops.api.routing import REVISION_METRIC, RoutingTable
from inferops.api.spec import InferenceBackendSpec
from inferops.api.status import ConsumerStatus, VectorCheck
from inferops.builders import router as router_builder
from inferops.builders.common import Owner
from inferops.migration import vectors
from inferops.migration.planner import Observations, Plan, plan, stamp
from inferops.migration.sources import FIRST_SCRAPE, ScrapeSource
from inferops.migration.vector_probe import VectorProbe

MODEL = "llama3.2"
pytestmark = needs("vllm", "ollama")
OWNER = Owner(name="llama32", namespace="ai", uid="uid-1")
T0 = datetime(2026, 1, 1, 12, 0, 0)
INTERVAL = 10
ROUNDS = 3
"""Rounds of the consumer's requests per step: each round is chat and embeddings through
both clients."""
MIGRATION = {
    "steps": [{"weight": 100}],
    # Chat stays on Ollama (the pooling runner serves none): only the error rate of the
    # embeddings judges vLLM, at 100% against its absolute max.
    "analysis": {
        "interval": f"{INTERVAL}s",
        "initialDelay": "0s",
        "minRequests": 2,
        "ttftP95": None,
        "tpotP95": None,
    },
}
VLLM_START_SECONDS = 900


def pooler(pooling: str) -> list[str]:
    return ["--pooler-config", json.dumps({"pooling_type": pooling})]


def pooling_spec(pooling: str) -> InferenceBackendSpec:
    """spec.vllm itself on the pooling runner."""
    return InferenceBackendSpec.model_validate(
        {
            "model": MODEL,
            "vllm": {"model": "tiny", "extraArgs": ["--runner", "pooling", *pooler(pooling)]},
            "ollama": {"model": MODEL},
            "consumers": [{"name": "rag"}],
            "migration": MIGRATION,
        }
    )


def deployment_spec(pooling: str) -> InferenceBackendSpec:
    """vLLM's embeddings deployment beside a generation vLLM."""
    return InferenceBackendSpec.model_validate(
        {
            "model": MODEL,
            "vllm": {
                "model": "tiny",
                "embeddings": {"model": "tiny", "extraArgs": pooler(pooling)},
            },
            "ollama": {"model": MODEL},
            "consumers": [{"name": "rag"}],
            "migration": MIGRATION,
        }
    )


class Plane:
    """The router process on a table file, and what the operator does with it."""

    def __init__(self, directory: Path, urls: dict[str, str]) -> None:
        self.path = directory / "routes.json"
        self.directory = directory
        self.urls = urls
        self.router: RouterProcess | None = None

    def serve(self, table: RoutingTable) -> None:
        """Writes `table` and waits until the router serves it."""
        self.path.write_text(json.dumps(table.dump()))
        if self.router is None:
            self.router = RouterProcess(
                ["--table-file", str(self.path)],
                self.directory / "router.log",
                engine_urls=self.urls,
            )
            self.router.start()
        router = self.router
        wait_for(
            f"the router to serve revision {table.revision}",
            lambda: router.metric(REVISION_METRIC) == table.revision,
            30,
        )

    @property
    def url(self) -> str:
        assert self.router is not None
        return self.router.url

    def check(self, spec: InferenceBackendSpec, at: datetime) -> VectorCheck:
        """The operator's vector check, through the router."""
        migration = spec.migration
        assert migration is not None

        async def run() -> VectorCheck:
            probe = VectorProbe(self.url)
            try:
                vllm, ollama_vectors = await probe.measure(spec, OWNER)
            finally:
                await probe.aclose()
            return vectors.judge(
                vllm,
                ollama_vectors,
                migration.embeddings.min_cosine,
                vectors.key(spec),
                stamp(at),
            )

        return asyncio.run(run())

    def stop(self) -> None:
        if self.router is not None:
            self.router.stop()


def consumer_traffic(url: str, rounds: int = ROUNDS) -> dict[str, int]:
    """`rounds` rounds of the consumer's requests (chat and embeddings, both clients); every
    one must succeed, every embeddings request return one vector per input. Returns the
    engine that answered each OpenAI request, counted."""
    host = "llama32-rag"  # the consumer's Service, as the router's table lists it
    openai_client = OpenAI(
        base_url=f"{url}/v1", api_key="unused", max_retries=0, default_headers={"Host": host}
    )
    ollama_client = ollama.Client(host=url, headers={"Host": host})
    engines: dict[str, int] = {}
    for i in range(rounds):
        raw = openai_client.embeddings.with_raw_response.create(
            model=MODEL, input=[f"doc {i}", "the same text"]
        )
        data = raw.parse().data
        assert len(data) == 2 and all(len(d.embedding) == 128 for d in data)
        engine = raw.headers["x-inferops-engine"]
        engines[f"embeddings:{engine}"] = engines.get(f"embeddings:{engine}", 0) + 1
        embedded = ollama_client.embed(model=MODEL, input=f"query {i}")
        assert len(embedded.embeddings) == 1 and len(embedded.embeddings[0]) == 128
        chat = openai_client.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Say OK."}],
            max_tokens=4,
        )
        assert chat.parse().choices[0].message.content is not None
        engine = chat.headers["x-inferops-engine"]
        engines[f"chat:{engine}"] = engines.get(f"chat:{engine}", 0) + 1
        answer = ollama_client.chat(
            model=MODEL,
            messages=[{"role": "user", "content": "Say OK."}],
            options={"num_predict": 4},
        )
        assert answer.message.content is not None
    return engines


def rag_status(spec: InferenceBackendSpec) -> ConsumerStatus:
    return ConsumerStatus(
        name="rag",
        weight=0,
        service=router_builder.service_name(OWNER, spec.consumers[0]),
        endpoint=router_builder.endpoint(OWNER, spec.consumers[0]),
    )


def table_of(
    spec: InferenceBackendSpec, result: Plan | None, ready: dict[str, bool]
) -> RoutingTable:
    consumers = result.consumers if result else []
    weights = {c.name: c.weight for c in consumers}
    embeddings = {c.name: c.embeddings.weight for c in consumers if c.embeddings is not None}
    return router_builder.routing_table(spec, OWNER, ready, weights, None, embeddings)


def vllm_requests(url: str) -> float:
    """The consumer's requests the router sent to vLLM so far."""
    page = scrape(f"{url}/metrics")
    return total(page, "inferops_router_requests_total", consumer="rag", engine="vllm") or 0


def migrate_with_pooling_runner(plane: Plane, spec: InferenceBackendSpec, agree: bool) -> None:
    """spec.vllm on the pooling runner: the consumer moves only once the vectors agree."""
    assert spec.migration is not None
    ready = {"vllm": True, "ollama": True}
    plane.serve(table_of(spec, None, ready))
    check = plane.check(spec, T0)
    print(f"\nvector check, spec.vllm on the pooling runner: {check.verdict}: {check.message}")
    first = plan(
        spec, [rag_status(spec)], [], None, Observations(vllm_ready=True, vectors=check), T0
    )
    rag = first.consumers[0]
    before = vllm_requests(plane.url)
    plane.serve(table_of(spec, first, ready))
    if not agree:
        assert check.verdict == "Fail" and check.cosine is not None and check.cosine < 0.99
        assert (rag.phase, rag.weight) == ("Pending", 0)
        assert rag.message == (
            f"held at 0%: embeddings move only with compatible vectors: {check.message}"
        )
        assert "vectors differ: lowest cosine" in rag.message
        assert first.condition.reason == "VectorsDiffer"
        assert [e.reason for e in first.events] == ["VectorsDiffer"]
        assert first.migration.vectors == check
        served = consumer_traffic(plane.url)
        assert served == {"embeddings:ollama": ROUNDS, "chat:ollama": ROUNDS}
        assert vllm_requests(plane.url) == before  # none of the consumer's own
        return
    assert check.verdict == "Pass" and check.cosine is not None and check.cosine >= 0.99
    assert (rag.phase, rag.weight) == ("Progressing", 100)
    # The step starts once the router serves it; its sample covers the consumer's traffic.
    started = plan(
        spec,
        [rag_status(spec)],
        first.consumers,
        first.migration,
        Observations(vllm_ready=True, served={"rag": 100}),
        T0 + timedelta(seconds=1),
    )
    assert started.consumers[0].step_started_at is not None

    async def targets(namespace: str, backend: str) -> list[str]:
        return [plane.url]

    source = ScrapeSource(targets)
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(source.figures("ai", "llama32", "rag", 3600)).problem == (
            FIRST_SCRAPE
        )
        served = consumer_traffic(plane.url)
        figures = loop.run_until_complete(source.figures("ai", "llama32", "rag", 3600))
        loop.run_until_complete(source.aclose())
    finally:
        loop.close()
    # Embeddings on vLLM, chat still on Ollama: the pooling runner serves no chat.
    assert served == {"embeddings:vllm": ROUNDS, "chat:ollama": ROUNDS}
    done = plan(
        spec,
        [rag_status(spec)],
        started.consumers,
        started.migration,
        Observations(vllm_ready=True, served={"rag": 100}, figures={"rag": figures}),
        T0 + timedelta(seconds=1 + INTERVAL),
    )
    rag = done.consumers[0]
    assert rag.last_analysis is not None, rag.message
    print(f"sample at 100%: {rag.last_analysis.verdict}: {rag.last_analysis.message}")
    assert (rag.phase, rag.weight) == ("Migrated", 100), rag.message
    assert done.condition.reason == "Completed"


def move_with_embeddings_deployment(plane: Plane, spec: InferenceBackendSpec, agree: bool) -> None:
    """spec.vllm.embeddings: a migrated consumer's embeddings weight moves only when the
    vectors agree. The generation vLLM is not run here (one vLLM at a time): the table says
    it has no ready pod, so chat goes to Ollama."""
    ready = {"vllm": False, "ollama": True, "vllm-embeddings": True}
    plane.serve(table_of(spec, None, ready))
    check = plane.check(spec, T0)
    print(f"vector check, embeddings deployment: {check.verdict}: {check.message}")
    migrated = rag_status(spec).model_copy(update={"phase": "Migrated", "weight": 100})
    decided = vectors.embeddings_status(spec, migrated, check)
    assert decided is not None
    plane.serve(
        router_builder.routing_table(
            spec, OWNER, ready, {"rag": 100}, None, {"rag": decided.weight}
        )
    )
    served = consumer_traffic(plane.url)
    if agree:
        assert check.verdict == "Pass"
        assert decided.weight == 100 and decided.message.startswith("on vLLM: vectors alike")
        assert served == {"embeddings:vllm": ROUNDS, "chat:ollama": ROUNDS}
    else:
        assert check.verdict == "Fail"
        assert decided.weight == 0
        assert decided.message == f"held on Ollama: {check.message}"
        assert served == {"embeddings:ollama": ROUNDS, "chat:ollama": ROUNDS}


@pytest.mark.parametrize(
    ("pooling", "agree"), [("LAST", True), ("MEAN", False)], ids=["same-pooling", "other-pooling"]
)
def test_embeddings_move_to_vllm_only_with_compatible_vectors(
    ollama_engine: OllamaServer, tmp_path: Path, pooling: str, agree: bool
) -> None:
    ensure_vllm_env()
    with VLLMServer(
        ensure_tiny_model(),
        served_model_name=MODEL,
        extra_args=["--runner", "pooling", *pooler(pooling)],
        log_path=tmp_path / "vllm.log",
    ) as vllm:
        vllm.start(timeout=VLLM_START_SECONDS)
        urls = {"vllm": vllm.url, "ollama": ollama_engine.url, "embeddings": vllm.url}
        plane = Plane(tmp_path, urls)
        try:
            migrate_with_pooling_runner(plane, pooling_spec(pooling), agree)
            move_with_embeddings_deployment(plane, deployment_spec(pooling), agree)
        finally:
            plane.stop()


GENERATION_SPEC = InferenceBackendSpec.model_validate(
    {
        "model": MODEL,
        "vllm": {"model": "tiny"},
        "ollama": {"model": MODEL},
        "consumers": [{"name": "rag"}],
        "migration": {
            "steps": [{"weight": 50}, {"weight": 100}],
            # Non-streamed requests: the error rate judges; one request on each engine is
            # enough for a verdict (at 50% a window of 12 chat requests leaves vLLM none
            # with odds of 1 in 4096).
            "analysis": {**MIGRATION["analysis"], "minRequests": 1},  # type: ignore[dict-item]
        },
    }
)


def test_a_consumer_using_chat_and_embeddings_migrates_with_its_embeddings_served(
    ollama_engine: OllamaServer, tmp_path: Path
) -> None:
    spec = GENERATION_SPEC
    rounds = 6
    ready = {"vllm": True, "ollama": True}
    ensure_vllm_env()
    with VLLMServer(
        ensure_tiny_model(), served_model_name=MODEL, log_path=tmp_path / "v.log"
    ) as vllm:
        vllm.start(timeout=VLLM_START_SECONDS)
        plane = Plane(tmp_path, {"vllm": vllm.url, "ollama": ollama_engine.url})
        try:
            plane.serve(table_of(spec, None, ready))

            async def targets(namespace: str, backend: str) -> list[str]:
                return [plane.url]

            source = ScrapeSource(targets)
            loop = asyncio.new_event_loop()
            now = T0
            result = plan(spec, [rag_status(spec)], [], None, Observations(vllm_ready=True), now)
            # No pooling anywhere: no vector check, nothing held.
            assert result.migration.vectors is None
            steps_seen = []
            try:
                while result.consumers[0].phase != "Migrated":
                    rag = result.consumers[0]
                    assert rag.phase == "Progressing", rag.message
                    steps_seen.append(rag.weight)
                    plane.serve(table_of(spec, result, ready))
                    now += timedelta(seconds=1)
                    result = plan(
                        spec,
                        [rag_status(spec)],
                        result.consumers,
                        result.migration,
                        Observations(vllm_ready=True, served={"rag": rag.weight}),
                        now,
                    )
                    # The window is this step's traffic: a reading before it is the baseline.
                    source.forget("ai", "llama32")
                    first = loop.run_until_complete(source.figures("ai", "llama32", "rag", 3600))
                    assert first.problem == FIRST_SCRAPE
                    served = consumer_traffic(plane.url, rounds)
                    figures = loop.run_until_complete(source.figures("ai", "llama32", "rag", 3600))
                    print(f"\nat {rag.weight}%: {served}")
                    # Embeddings at every step: vectors, all from Ollama.
                    assert served.get("embeddings:ollama") == rounds
                    assert served.get("chat:vllm", 0) + served.get("chat:ollama", 0) == rounds
                    if rag.weight == 100:
                        assert served.get("chat:vllm") == rounds
                    now += timedelta(seconds=INTERVAL)
                    result = plan(
                        spec,
                        [rag_status(spec)],
                        result.consumers,
                        result.migration,
                        Observations(
                            vllm_ready=True, served={"rag": rag.weight}, figures={"rag": figures}
                        ),
                        now,
                    )
                    analysis = result.consumers[0].last_analysis
                    assert analysis is not None and analysis.verdict == "Pass", analysis
                loop.run_until_complete(source.aclose())
            finally:
                loop.close()
            assert steps_seen == [50, 100]
            page = scrape(f"{plane.url}/metrics")
            rerouted = total(
                page,
                "inferops_router_rerouted_total",
                consumer="rag",
                kind="embeddings",
                reason="vllm_does_not_serve_kind",
            )
            assert rerouted == 2 * 2 * rounds  # both clients' embeddings, at both steps
            errors = total(page, "inferops_router_errors_total", consumer="rag") or 0
            assert errors == 0
        finally:
            plane.stop()
