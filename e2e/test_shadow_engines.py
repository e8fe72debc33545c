"""A shadow step on real engines: real Ollama serves the consumer, the router mirrors its
requests to real vLLM and compares, and the migration's own code judges the step.

Ollama serves the tiny model's GGUF (weights seed 0); vLLM serves either the same weights,
or a model of the same shape and tokenizer with other weights (seed 1). The routing table is
the operator's (`builders.router.routing_table` with the planner's mirror for a consumer at
its shadow step), the router its own process. The consumer, at weight 0, asks greedy
questions through the official `openai` and `ollama` clients; every answer comes from
Ollama. The router's `/metrics` are read with the analysis' own `ScrapeSource`, and the
planner (`migration.planner.plan`) takes the step's sample:

- same weights: vLLM agrees with Ollama as often as Ollama with itself, the step passes and
  the consumer moves on to its first live weight;
- other weights: vLLM disagrees, the step fails and the consumer is rolled back, with no
  live weight ever given (no request of the consumer ever reached vLLM).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
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
from e2e.test_engines_agree import MAX_TOKENS, PROMPTS
from inferops.api.spec import InferenceBackendSpec
from inferops.api.status import ConsumerStatus, MigrationStatus
from inferops.builders import router as router_builder
from inferops.builders.common import Owner
from inferops.migration import shadow
from inferops.migration.figures import Figures
from inferops.migration.planner import Observations, Plan, plan, spec_hash, stamp
from inferops.migration.sources import FIRST_SCRAPE, ScrapeSource

pytestmark = needs("vllm", "ollama")

MODEL = "llama3.2"
OWNER = Owner(name="llama32", namespace="ai", uid="uid-1")
# Every prompt twice (once per client): every one mirrored, every one also asked of Ollama
# a second time; the step needs them all.
SAMPLES = 2 * len(PROMPTS)
SPEC = InferenceBackendSpec.model_validate(
    {
        "model": MODEL,
        "vllm": {"model": "tiny"},
        "ollama": {"model": MODEL},
        "consumers": [{"name": "rag"}],
        "migration": {
            "steps": [
                {
                    "shadow": {
                        "percent": 100,
                        "noisePercent": 100,
                        "minSamples": SAMPLES,
                        "minNoiseSamples": SAMPLES,
                        "maxAgreementDrop": 0.1,
                        "maxConcurrent": 1,
                    }
                },
                {"weight": 50},
                {"weight": 100},
            ],
            "analysis": {"interval": "10s", "initialDelay": "0s", "failureLimit": 0},
        },
    }
)
T0 = datetime(2026, 1, 1, 12, 0, 0)
SHADOW_METRIC = "inferops_router_shadow_total"
# vLLM's CPU build starts in about 20 s alone; on a 2-core machine shared with other vLLMs
# pinned to the same core it took over 300 s.
VLLM_START_SECONDS = 900


@pytest.fixture(scope="module")
def ollama_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OllamaServer]:
    log = tmp_path_factory.mktemp("ollama") / "ollama.log"
    # One request at a time: Ollama's greedy answers are then its sequential ones, which
    # are the ones known to agree with vLLM's (e2e/test_engines_agree.py).
    with OllamaServer(model_names=[MODEL], num_parallel=1, log_path=log) as server:
        server.start()
        yield server


def at_shadow_step() -> ConsumerStatus:
    return ConsumerStatus(
        name="rag",
        weight=0,
        service=router_builder.service_name(OWNER, SPEC.consumers[0]),
        endpoint=router_builder.endpoint(OWNER, SPEC.consumers[0]),
        phase="Progressing",
        step=1,
        step_started_at=stamp(T0),
    )


def routing_table(directory: Path) -> Path:
    """The operator's table for the consumer at its shadow step."""
    assert SPEC.migration is not None
    mirrors = shadow.mirrors(SPEC.migration, [at_shadow_step()], failover=False)
    table = router_builder.routing_table(
        SPEC, OWNER, {"vllm": True, "ollama": True}, {"rag": 0}, mirrors
    )
    assert table.consumers[0].shadow is not None and table.consumers[0].weight == 0
    path = directory / "routes.json"
    path.write_text(json.dumps(table.dump()))
    return path


def shadow_step(ollama_engine: OllamaServer, vllm_model: Path, directory: Path) -> Plan:
    """Serves the consumer through a router at its shadow step with vLLM on `vllm_model`;
    returns the planner's verdict on the step's sample."""
    host = router_builder.service_name(OWNER, SPEC.consumers[0])
    with VLLMServer(vllm_model, served_model_name=MODEL, log_path=directory / "vllm.log") as vllm:
        vllm.start(timeout=VLLM_START_SECONDS)
        router = RouterProcess(
            ["--table-file", str(routing_table(directory))],
            directory / "router.log",
            engine_urls={"vllm": vllm.url, "ollama": ollama_engine.url},
        )
        router.start()
        try:

            async def targets(namespace: str, backend: str) -> list[str]:
                return [router.url]

            source = ScrapeSource(targets)

            async def read() -> Figures:
                return await source.figures(OWNER.namespace, OWNER.name, "rag", 3600)

            loop = asyncio.new_event_loop()
            try:
                assert loop.run_until_complete(read()).problem == FIRST_SCRAPE
                ask(router.url, host)
                figures = loop.run_until_complete(read())
                loop.run_until_complete(source.aclose())
            finally:
                loop.close()
            page = scrape(f"{router.url}/metrics")
            # The consumer's own requests: every one on Ollama, none on vLLM.
            assert total(page, "inferops_router_requests_total", consumer="rag", engine="vllm") in (
                None,
                0,
            )
            assert (
                total(page, "inferops_router_requests_total", consumer="rag", engine="ollama")
                == SAMPLES
            )
        finally:
            router.stop()
    print(f"\nshadow figures: {figures.shadow}")
    assert figures.problem is None and figures.shadow is not None
    assert SPEC.migration is not None
    sample_at = T0 + timedelta(seconds=20)
    return plan(
        SPEC,
        [at_shadow_step().model_copy(update={"phase": "Pending", "step": None})],
        [at_shadow_step()],
        MigrationStatus(spec_hash=spec_hash(SPEC.migration)),
        Observations(vllm_ready=True, served={"rag": 0}, figures={"rag": figures}),
        sample_at,
    )


def compared(url: str, count: int) -> None:
    """Waits until the router has compared `count` mirrored requests (vLLM against Ollama,
    and Ollama against itself)."""

    def done() -> bool:
        page = scrape(f"{url}/metrics")
        vllm_side = total(page, SHADOW_METRIC, consumer="rag", engine="vllm") or 0
        noise = total(page, SHADOW_METRIC, consumer="rag", engine="ollama") or 0
        return vllm_side >= count and noise >= count

    wait_for(f"{count} mirrored requests compared", done, 120)


def ask(url: str, host: str) -> None:
    """Every prompt once through each official client, greedy; each answered by Ollama.
    The next request waits for the last one's comparison: with `maxConcurrent: 1` it would
    be dropped otherwise (counted, and not compared)."""
    openai_client = OpenAI(
        base_url=f"{url}/v1", api_key="unused", max_retries=0, default_headers={"Host": host}
    )
    ollama_client = ollama.Client(host=url, headers={"Host": host})
    done = 0
    for prompt in PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        raw = openai_client.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=MAX_TOKENS,
            temperature=0,
        )
        assert raw.headers["x-inferops-engine"] == "ollama"
        assert raw.parse().choices[0].message.content
        compared(url, done := done + 1)
        answer = ollama_client.chat(
            model=MODEL,
            messages=messages,
            options={"num_predict": MAX_TOKENS, "temperature": 0},
        )
        assert answer.message.content
        compared(url, done := done + 1)


def test_a_shadow_step_passes_when_vllm_serves_the_same_weights(
    ollama_engine: OllamaServer, tmp_path: Path
) -> None:
    ensure_vllm_env()
    result = shadow_step(ollama_engine, ensure_tiny_model(), tmp_path)
    rag = result.consumers[0]
    assert rag.last_analysis is not None
    print(f"verdict: {rag.last_analysis.message}")
    assert rag.last_analysis.verdict == "Pass", rag.last_analysis.message
    (gate,) = rag.last_analysis.gates
    assert gate.metric == "shadowAgreement" and gate.value == 1.0 and gate.baseline == 1.0
    # Passed: the first live weight starts.
    assert (rag.phase, rag.step, rag.weight) == ("Progressing", 2, 50)


def test_a_shadow_step_fails_without_live_weight_when_vllm_serves_other_weights(
    ollama_engine: OllamaServer, tmp_path: Path
) -> None:
    ensure_vllm_env()
    result = shadow_step(ollama_engine, ensure_tiny_model(seed=1), tmp_path)
    rag = result.consumers[0]
    assert rag.last_analysis is not None
    print(f"verdict: {rag.last_analysis.message}")
    assert rag.last_analysis.verdict == "Fail", rag.last_analysis.message
    assert (rag.phase, rag.weight) == ("RolledBack", 0)
    assert result.weights == {"rag": 0}
    assert rag.message.startswith("rolled back to 0% at step 1: shadowAgreement")
    assert [e.reason for e in result.events if e.type == "Warning"] == [
        "AnalysisFailed",
        "RolledBack",
    ]
