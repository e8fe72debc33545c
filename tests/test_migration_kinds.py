"""Probes and gates per request kind (issue 16, item 4): which kinds a sample judges one by
one and how, what the probes send, how a consumer's routes are recorded; then, against the
engine stand-ins behind a real router, a vLLM failing only embeddings failing the step by
name, and a kind vLLM does not serve left out of probes and gates."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from testsupport.standin import EngineStandin

from inferops.api.routing import GENERATION_KINDS, KINDS, ROUTE_KINDS
from inferops.api.spec import InferenceBackendSpec
from inferops.api.status import ConsumerStatus, InferenceBackendStatus, MigrationStatus
from inferops.migration import analysis
from inferops.migration.figures import EngineFigures, Figures, KindFigures
from inferops.migration.planner import Observations, plan, spec_hash, stamp
from inferops.migration.probe import (
    ProbeTarget,
    probe_once,
    probe_request,
    probe_sends,
    probe_targets,
)
from inferops.migration.sources import ScrapeSource
from inferops.router.server import RouterServer
from inferops.router.sources import FileSource
from inferops.router.state import RouterState

T0 = datetime(2026, 1, 1, 12, 0, 0)
ALL = frozenset(KINDS)
GENERATION = frozenset(GENERATION_KINDS)
ANALYSIS = {"interval": "10s", "initialDelay": "5s", "minRequests": 5, "failureLimit": 0}


def make_spec(vllm_args: list[str] | None = None) -> InferenceBackendSpec:
    return InferenceBackendSpec.model_validate(
        {
            "model": "m",
            "vllm": {"model": "x", "extraArgs": vllm_args or []},
            "ollama": {"model": "y"},
            "consumers": [{"name": "rag"}],
            "migration": {
                "steps": [{"weight": 50}, {"weight": 100}],
                "analysis": ANALYSIS,
                "probe": {"requests": 5},
            },
        }
    )


SPEC = make_spec()
GATES = SPEC.migration.analysis  # type: ignore[union-attr]


def eng(
    requests: float = 100, errors: float = 0, ttft: float | None = 0.2, tpot: float | None = 0.02
) -> EngineFigures:
    return EngineFigures(requests=requests, errors=errors, ttft_p95=ttft, tpot_p95=tpot)


def figures(**kinds: tuple[EngineFigures | None, EngineFigures | None]) -> Figures:
    """A window holding `kinds`; the consumer's figures as a whole are a healthy sum (the
    pooled gates pass, as they do when a small kind fails among many passing chats)."""
    return Figures(
        vllm=eng(requests=200),
        ollama=eng(requests=200),
        kinds={kind: KindFigures(*sides) for kind, sides in kinds.items()},
    )


def subject(at_full: bool = False, served: frozenset[str] = ALL) -> analysis.Subject:
    return analysis.Subject(
        step=1,
        at_full=at_full,
        embeddings=False,
        baseline=eng() if at_full else None,
        served=served,
    )


NO_TOKENS = {"ttft": None, "tpot": None}


@dataclass
class JudgeRow:
    id: str
    figures: Figures
    verdict: str
    message: str
    """A part of the verdict's message."""
    kinds: dict[str, str] = field(default_factory=dict)
    """Per kind judged alone, its gates' verdicts joined by commas (metric=verdict)."""
    at_full: bool = False
    served: frozenset[str] = ALL


JUDGE_ROWS = [
    JudgeRow(
        "one kind: judged as a whole only",
        figures(chat=(eng(), eng())),
        "Pass",
        "every gate passed",
    ),
    JudgeRow(
        "embeddings failing on vLLM while chat passes: Fail, named",
        figures(
            chat=(eng(), eng()),
            embeddings=(eng(requests=10, errors=10, **NO_TOKENS), eng(requests=10, **NO_TOKENS)),
        ),
        "Fail",
        "embeddings: errorRate 1 > 0.01 (Ollama 0)",
        {
            "chat": "errorRate=Pass,ttftP95=Pass,tpotP95=Pass",
            "embeddings": "errorRate=Fail",
        },
    ),
    JudgeRow(
        "every kind passing: Pass, the kinds listed",
        figures(
            chat=(eng(), eng()),
            completions=(eng(), eng()),
            embeddings=(eng(requests=10, **NO_TOKENS), eng(requests=10, **NO_TOKENS)),
        ),
        "Pass",
        "every gate passed (by kind: chat, completions, embeddings)",
        {
            "chat": "errorRate=Pass,ttftP95=Pass,tpotP95=Pass",
            "completions": "errorRate=Pass,ttftP95=Pass,tpotP95=Pass",
            "embeddings": "errorRate=Pass",
        },
    ),
    JudgeRow(
        "completions slower on vLLM: the latency gate of that kind fails",
        figures(chat=(eng(), eng()), completions=(eng(ttft=3.0), eng(ttft=0.4))),
        "Fail",
        "completions: ttftP95 3 > 0.6 (Ollama 0.4)",
        {
            "chat": "errorRate=Pass,ttftP95=Pass,tpotP95=Pass",
            "completions": "errorRate=Pass,ttftP95=Fail,tpotP95=Pass",
        },
    ),
    JudgeRow(
        "a kind never streamed has no latency of its own: its error rate alone",
        figures(chat=(eng(), eng()), completions=(eng(**NO_TOKENS), eng(**NO_TOKENS))),
        "Pass",
        "by kind: chat, completions",
        {"chat": "errorRate=Pass,ttftP95=Pass,tpotP95=Pass", "completions": "errorRate=Pass"},
    ),
    JudgeRow(
        "too few embeddings on vLLM: Inconclusive, named",
        figures(chat=(eng(), eng()), embeddings=(eng(requests=2), eng(requests=9))),
        "Inconclusive",
        "too few embeddings requests on vLLM (2 < 5)",
        {"chat": "errorRate=Pass,ttftP95=Pass,tpotP95=Pass"},
    ),
    JudgeRow(
        "too few embeddings on Ollama below 100%: Inconclusive, named",
        figures(chat=(eng(), eng()), embeddings=(eng(requests=9), None)),
        "Inconclusive",
        "too few embeddings requests on Ollama (0 < 5)",
        {"chat": "errorRate=Pass,ttftP95=Pass,tpotP95=Pass"},
    ),
    JudgeRow(
        "a failing kind outweighs a kind without enough requests",
        figures(chat=(eng(errors=50), eng()), embeddings=(eng(requests=2), eng(requests=9))),
        "Fail",
        "chat: errorRate 0.5 > 0.01",
        {"chat": "errorRate=Fail,ttftP95=Pass,tpotP95=Pass"},
    ),
    JudgeRow(
        "a kind vLLM does not serve is not judged, even failing on Ollama",
        figures(chat=(eng(), eng()), embeddings=(None, eng(requests=50, errors=50, **NO_TOKENS))),
        "Pass",
        "by kind: chat",
        {"chat": "errorRate=Pass,ttftP95=Pass,tpotP95=Pass"},
        served=GENERATION,
    ),
    JudgeRow(
        "at 100%: a kind is held to the absolute max only (no baseline of its own)",
        figures(
            chat=(eng(ttft=9.0), None),
            embeddings=(eng(requests=10, errors=1, **NO_TOKENS), None),
        ),
        "Fail",
        "embeddings: errorRate 0.1 > 0.05",
        {"chat": "errorRate=Pass", "embeddings": "errorRate=Fail"},
        at_full=True,
    ),
]


@pytest.mark.parametrize("row", JUDGE_ROWS, ids=lambda r: r.id)
def test_judge_by_kind(row: JudgeRow) -> None:
    result = analysis.judge(GATES, row.figures, subject(row.at_full, row.served), "now")
    assert result.verdict == row.verdict, result.message
    assert row.message in result.message
    by_kind: dict[str, list[str]] = {}
    for gate in result.gates:
        if gate.kind is not None:
            by_kind.setdefault(gate.kind, []).append(f"{gate.metric}={gate.verdict}")
    assert {k: ",".join(v) for k, v in by_kind.items()} == row.kinds
    # The gates of the consumer as a whole are there too, unchanged.
    assert {g.metric for g in result.gates if g.kind is None} >= {"errorRate"}


def test_served_kinds_follow_the_spec() -> None:
    assert analysis.vllm_kinds(SPEC) == GENERATION
    assert analysis.vllm_kinds(make_spec(["--runner", "pooling"])) == {"embeddings"}


def status_of(*routes: str, weight: int = 50, phase: str = "Progressing") -> ConsumerStatus:
    return ConsumerStatus(
        name="rag",
        weight=weight,
        service="b-rag",
        endpoint="http://b-rag",
        phase=phase,  # type: ignore[arg-type]
        step=1,
        routes=list(routes),
    )


BOTH, VLLM = ("vllm", "ollama"), ("vllm",)


@pytest.mark.parametrize(
    ("routes", "api", "served", "weight", "expected"),
    [
        pytest.param((), "chat", GENERATION, 50, (("chat", BOTH),), id="quiet: its api's route"),
        pytest.param((), "embeddings", GENERATION, 100, (), id="quiet embeddings, not served"),
        pytest.param((), "embeddings", ALL, 100, (("embeddings", VLLM),), id="at 100%: vLLM"),
        pytest.param(
            ("chat", "ollama_embed"),
            "chat",
            GENERATION,
            50,
            (("chat", BOTH),),
            id="embeddings not served: not probed",
        ),
        pytest.param(
            ("ollama_embed", "chat", "ollama_generate"),
            "chat",
            ALL,
            50,
            (("chat", BOTH), ("ollama_embed", BOTH), ("ollama_generate", BOTH)),
            id="every route used, in its own form",
        ),
        pytest.param(
            ("chat", "nonsense"), "chat", ALL, 50, (("chat", BOTH),), id="unknown route ignored"
        ),
    ],
)
def test_probe_sends(
    routes: tuple[str, ...],
    api: str,
    served: frozenset[str],
    weight: int,
    expected: tuple[tuple[str, tuple[str, ...]], ...],
) -> None:
    assert probe_sends(status_of(*routes, weight=weight), api, served) == expected


def test_probe_targets_leave_out_a_consumer_with_nothing_vllm_serves() -> None:
    spec = InferenceBackendSpec.model_validate(
        {**SPEC.dump(), "consumers": [{"name": "rag", "api": "embeddings"}]}
    )
    status = InferenceBackendStatus(consumers=[status_of(weight=100)])
    assert probe_targets(spec, "ai", status, None) == {}
    status = InferenceBackendStatus(consumers=[status_of("chat", "embeddings")])
    target = probe_targets(SPEC, "ai", status, "http://router")["rag"]
    assert target.sends == (("chat", BOTH),)
    assert target.url == "http://router" and target.host == "b-rag.ai.svc"
    assert target.every == 2.0  # 10 s / 5 requests


def test_probe_requests_per_route() -> None:
    seen = {route: probe_request(route, "m", "Say OK.", 8) for route in ROUTE_KINDS}
    assert {route: path for route, (path, _) in seen.items()} == {
        "chat": "/v1/chat/completions",
        "completions": "/v1/completions",
        "embeddings": "/v1/embeddings",
        "ollama_chat": "/api/chat",
        "ollama_generate": "/api/generate",
        "ollama_embed": "/api/embed",
        "ollama_embeddings": "/api/embeddings",
    }
    for route, (_, body) in seen.items():
        assert isinstance(body, dict) and body["model"] == "m"
        generation = ROUTE_KINDS[route] != "embeddings"
        assert body.get("stream", False) is generation, route  # streamed: TTFT and TPOT
    chat = seen["chat"][1]
    assert isinstance(chat, dict) and chat["stream_options"] == {"include_usage": True}
    assert chat["max_tokens"] == 8
    generate = seen["ollama_generate"][1]
    assert isinstance(generate, dict) and generate["options"] == {"num_predict": 8}


# -- the planner records the routes a consumer uses -------------------------------------------


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def planned(before: ConsumerStatus, obs: Observations, now: float) -> ConsumerStatus:
    assert SPEC.migration is not None
    out = plan(
        SPEC,
        [ConsumerStatus(name="rag", weight=0, service="b-rag", endpoint="http://b-rag")],
        [before],
        MigrationStatus(spec_hash=spec_hash(SPEC.migration)),
        obs,
        at(now),
    )
    return out.consumers[0]


def test_routes_read_before_the_start_replace_the_last_reading() -> None:
    pending = status_of("completions", phase="Pending", weight=0).model_copy(update={"step": None})
    seen = {"chat": 12.0, "ollama_embed": 3.0, "embeddings": 0.0}
    obs = Observations(vllm_ready=False, routes={"rag": seen})
    assert planned(pending, obs, 0).routes == ["chat", "ollama_embed"]
    # Unknown (the source could not be read): the last reading stands.
    assert planned(pending, Observations(vllm_ready=False), 0).routes == ["completions"]


def test_routes_seen_during_the_migration_are_added_at_each_sample() -> None:
    running = status_of("chat").model_copy(update={"step_started_at": stamp(at(0))})
    obs = Observations(
        vllm_ready=True,
        served={"rag": 50},
        figures={"rag": Figures(vllm=eng(), ollama=eng())},
        routes={"rag": {"ollama_embed": 4.0}},
    )
    after = planned(running, obs, 15)
    assert after.last_analysis is not None and after.last_analysis.time == stamp(at(15))
    assert after.step == 2  # sampled, passed, moved on: the routes stay with the consumer
    assert after.routes == ["chat", "ollama_embed"]  # chat kept: its probes still send it


# -- against a real router in front of the engine stand-ins -----------------------------------

HOST = "b-rag.ai.svc"


@dataclass
class DataPath:
    router: RouterServer
    vllm: EngineStandin
    ollama: EngineStandin
    source: ScrapeSource
    http: httpx.AsyncClient

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.router.port}"


@pytest.fixture
async def datapath(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DataPath]:
    """vLLM and Ollama stand-ins behind a router process' server in this event loop; the
    routing table gives vLLM the kinds the test's parameter names (all when absent)."""
    kinds: list[str] | None = getattr(request, "param", None)
    vllm, ollama = EngineStandin("vllm"), EngineStandin("ollama")
    await vllm.start()
    await ollama.start()
    engine: dict[str, Any] = {"url": vllm.url}
    if kinds is not None:
        engine["kinds"] = kinds
    table = {
        "model": "m",
        "engines": {"vllm": engine, "ollama": {"url": ollama.url}},
        "consumers": [{"name": "rag", "hosts": [HOST], "weight": 50}],
        "timeouts": {"connectSeconds": 1, "firstByteSeconds": 5, "totalSeconds": 10},
    }
    path = tmp_path / "routes.json"
    path.write_text(json.dumps(table))
    server = RouterServer(RouterState(), FileSource(path, interval=0.01), grace_seconds=1.0)
    await server.start()
    http = httpx.AsyncClient(timeout=10)
    router_url = f"http://127.0.0.1:{server.port}"

    async def targets(namespace: str, backend: str) -> list[str]:
        return [router_url]

    try:
        for _ in range(500):
            if server.state.routes is not None:
                break
            await asyncio.sleep(0.01)
        yield DataPath(server, vllm, ollama, ScrapeSource(targets, http=http), http)
    finally:
        await http.aclose()
        await server.stop()
        await vllm.stop()
        await ollama.stop()


async def consumer_traffic(url: str, chats: int, embeddings: int) -> None:
    """The consumer's own requests through its endpoint: OpenAI chat and Ollama embed."""
    client = openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key="x", max_retries=0, default_headers={"Host": HOST}
    )
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(chats):
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
        for _ in range(embeddings):
            answer = await http.post(
                f"{url}/api/embed", json={"model": "m", "input": "hi"}, headers={"Host": HOST}
            )
            assert answer.status_code == 200, answer.text  # fallback or Ollama: it works
    await client.close()


async def probe_round(path: DataPath, target: ProbeTarget, rounds: int) -> dict[str, list[int]]:
    """`rounds` probes of each (route, engine) of `target`; their statuses by route/engine."""
    codes: dict[str, list[int]] = {}
    for _ in range(rounds):
        for route, engines in target.sends:
            for engine in engines:
                code = await probe_once(path.http, target, engine, route)
                codes.setdefault(f"{route}/{engine}", []).append(code)
    return codes


def target_for(path: DataPath, sends: tuple[tuple[str, tuple[str, ...]], ...]) -> ProbeTarget:
    return ProbeTarget(
        url=path.url, host=HOST, model="m", sends=sends, every=1.0, prompt="Say OK.", max_tokens=4
    )


async def test_vllm_failing_only_embeddings_fails_the_step_naming_embeddings(
    datapath: DataPath,
) -> None:
    """vLLM serves every kind here (the routing table lists none: all), as a vLLM with an
    embeddings deployment beside its generation runner does, and answers every embeddings
    request with 500: chat passes, the step fails, and says it was embeddings."""
    datapath.vllm.behaviour.fail_paths = {"/v1/embeddings": 500}
    assert (await datapath.source.figures("ai", "b", "rag", 10)).problem is not None  # baseline
    await consumer_traffic(datapath.url, chats=20, embeddings=2)
    routes = await datapath.source.routes("ai", "b", "rag")
    assert routes is not None and set(routes) == {"chat", "ollama_embed"}

    sends = probe_sends(status_of(*routes), "chat", ALL)
    assert sends == (("chat", BOTH), ("ollama_embed", BOTH))
    codes = await probe_round(datapath, target_for(datapath, sends), rounds=5)
    assert codes["ollama_embed/vllm"] == [500] * 5  # no fallback for a probe
    assert codes["chat/vllm"] == codes["chat/ollama"] == codes["ollama_embed/ollama"] == [200] * 5

    window = await datapath.source.figures("ai", "b", "rag", 10)
    assert window.problem is None and set(window.kinds) == {"chat", "embeddings"}
    embeddings = window.kinds["embeddings"]
    assert embeddings.vllm is not None and embeddings.vllm.errors == embeddings.vllm.requests
    result = analysis.judge(GATES, window, subject(served=ALL), "now")
    assert result.verdict == "Fail"
    # The kind first; the consumer's figures as a whole fail too, and say so.
    assert result.message.startswith("embeddings: errorRate 1 > 0.01 (Ollama 0); all kinds: ")
    failed = [(g.kind, g.metric) for g in result.gates if g.verdict == "Fail"]
    assert ("embeddings", "errorRate") in failed
    assert all(kind != "chat" for kind, _ in failed)


@pytest.mark.parametrize("datapath", [["chat", "completions"]], indirect=True)
async def test_a_kind_vllm_does_not_serve_is_neither_probed_nor_judged(
    datapath: DataPath,
) -> None:
    """vLLM's generation runner (no embeddings route: 404 if asked) behind the router, and
    a consumer using chat and embeddings: its embeddings stay on Ollama, its probes send
    chat only, and the sample passes with the planner's own gates and served kinds."""
    datapath.vllm.behaviour.fail_paths = {"/v1/embeddings": 404}
    await datapath.source.figures("ai", "b", "rag", 10)
    await consumer_traffic(datapath.url, chats=0, embeddings=6)
    routes = await datapath.source.routes("ai", "b", "rag")
    assert routes == {"ollama_embed": 6.0}
    served = analysis.vllm_kinds(SPEC)
    sends = probe_sends(status_of("chat", *routes), "chat", served)
    assert sends == (("chat", BOTH),)
    codes = await probe_round(datapath, target_for(datapath, sends), rounds=5)
    assert codes == {"chat/vllm": [200] * 5, "chat/ollama": [200] * 5}
    assert not any(s.path.endswith("embeddings") for s in datapath.vllm.seen)

    window = await datapath.source.figures("ai", "b", "rag", 10)
    assert window.problem is None and set(window.kinds) == {"chat", "embeddings"}
    assert window.kinds["embeddings"].vllm is None
    assert SPEC.migration is not None
    before = status_of("chat", "ollama_embed").model_copy(update={"step_started_at": stamp(at(0))})
    obs = Observations(
        vllm_ready=True, served={"rag": 50}, figures={"rag": window}, routes={"rag": routes}
    )
    after = planned(before, obs, 15)
    assert after.last_analysis is not None
    assert after.last_analysis.verdict == "Pass", after.last_analysis.message
    assert after.last_analysis.message == "every gate passed (by kind: chat)"
    assert after.step == 2  # the next step
