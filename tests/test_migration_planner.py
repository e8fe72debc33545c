"""Table-driven tests of the migration planner: one row per transition, each stating the
status before, what was observed, and the status after."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from inferops.api.spec import InferenceBackendSpec
from inferops.api.status import (
    ActionRecord,
    AnalysisResult,
    ConsumerStatus,
    EmbeddingsStatus,
    EngineFiguresStatus,
    FeatureFinding,
    FeatureReport,
    MigrationStatus,
    VectorCheck,
    WatchStatus,
)
from inferops.migration import vectors
from inferops.migration.figures import EngineFigures, Figures
from inferops.migration.planner import (
    Action,
    Observations,
    Plan,
    due_samples,
    plan,
    spec_hash,
    stamp,
)

T0 = datetime(2026, 1, 1, 12, 0, 0)
STEPS = [
    {"weight": 10, "pause": {"duration": "1m"}},
    {"weight": 50, "pause": {}},
    {"weight": 100},
]
ANALYSIS = {"interval": "10s", "initialDelay": "5s", "minRequests": 5, "failureLimit": 1}


def make_spec(
    consumers: list[Any] | None = None, vllm: dict[str, Any] | None = None, **migration: Any
) -> InferenceBackendSpec:
    return InferenceBackendSpec.model_validate(
        {
            "model": "m",
            "vllm": vllm or {"model": "x"},
            "ollama": {"model": "y"},
            "consumers": consumers or [{"name": "notes"}, {"name": "rag"}],
            "migration": {"steps": STEPS, "analysis": ANALYSIS, **migration},
        }
    )


SPEC = make_spec()
HASH = spec_hash(SPEC.migration)  # type: ignore[arg-type]


def replace_migration(spec: InferenceBackendSpec) -> InferenceBackendSpec:
    """`spec` (same steps and gates as SPEC, so the same hash)."""
    assert spec_hash(spec.migration) == HASH  # type: ignore[arg-type]
    return spec


def base(spec: InferenceBackendSpec = SPEC) -> list[ConsumerStatus]:
    return [
        ConsumerStatus(name=c.name, weight=0, service=f"b-{c.name}", endpoint=f"http://b-{c.name}")
        for c in spec.consumers
    ]


def consumer(name: str, **fields: Any) -> ConsumerStatus:
    return ConsumerStatus(
        name=name, service=f"b-{name}", endpoint=f"http://b-{name}", **{"weight": 0, **fields}
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def running(
    name: str, step: int, weight: int, started: float | None = 0, **more: Any
) -> ConsumerStatus:
    return consumer(
        name,
        phase="Progressing",
        step=step,
        weight=weight,
        step_started_at=None if started is None else stamp(at(started)),
        **more,
    )


def eng(
    requests: float = 100, errors: float = 0, ttft: float = 0.2, tpot: float = 0.02
) -> EngineFigures:
    return EngineFigures(requests=requests, errors=errors, ttft_p95=ttft, tpot_p95=tpot)


GOOD = Figures(vllm=eng(ttft=0.1), ollama=eng(ttft=0.4))
BAD_ERRORS = Figures(vllm=eng(errors=30), ollama=eng())
BAD_LATENCY = Figures(vllm=eng(ttft=3.0), ollama=eng(ttft=0.4))
QUIET = Figures(vllm=eng(requests=2), ollama=eng())
BROKEN = Figures.failed("prometheus answered HTTP 500")


@dataclass
class Row:
    id: str
    before: list[ConsumerStatus]
    now: float
    obs: Observations
    expect: dict[str, dict[str, Any]]
    """Per consumer, fields the new status must have."""
    migration: MigrationStatus | None = field(
        default_factory=lambda: MigrationStatus(spec_hash=HASH)
    )
    spec: InferenceBackendSpec = SPEC
    events: tuple[str, ...] = ()
    """Event reasons that must be emitted."""


SERVED_0 = {"notes": 0, "rag": 0}
BASELINE = EngineFiguresStatus(requests=100, error_rate=0.0, ttft_p95=0.4, tpot_p95=0.02)


def migrated(name: str, sampled: float | None = 0, **more: Any) -> ConsumerStatus:
    """A migrated consumer under watch, last sampled at `sampled` seconds."""
    fields: dict[str, Any] = {"baseline": BASELINE, "watch": WatchStatus(), **more}
    return consumer(
        name,
        phase="Migrated",
        step=3,
        weight=100,
        last_sample_at=None if sampled is None else stamp(at(sampled)),
        **fields,
    )


# At 100%: vLLM serves every request; Ollama only what vLLM failed first (fallbacks).
WATCH_GOOD = Figures(vllm=eng(ttft=0.1), ollama=None)
WATCH_500 = Figures(vllm=eng(errors=100), ollama=eng())
FAILING = WatchStatus(
    failing=True,
    since=stamp(T0),
    failed_samples=1,
    samples=3,
    message="errorRate 1 > 0.01 (Ollama 0)",
)
ROLLBACK = make_spec(watch={"onFailure": "Rollback"})
ROLLBACK_HASH = MigrationStatus(spec_hash=spec_hash(ROLLBACK.migration))  # type: ignore[arg-type]
UNWATCHED = make_spec(watch={"enabled": False})


TOOLS = {"tools": 5, "temperature": 3}
TOOL_PARSER = make_spec(
    vllm={"model": "x", "extraArgs": ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]}
)
FINDING = FeatureFinding(feature="tools", requests=5, message="uses tools: ...")
HELD = FeatureReport(findings=[FINDING], held=True)
ACKED = FeatureReport(findings=[FINDING], acknowledged=["tools"])


def held(name: str, report: FeatureReport = HELD) -> ConsumerStatus:
    return consumer(name, phase="Pending", features=report, message="held at 0%: ...")


# vLLM's embeddings deployment (spec.vllm.embeddings), and spec.vllm on the pooling runner.
EMB = make_spec(vllm={"model": "x", "embeddings": {"model": "e"}})
EMB_ONLY = make_spec(
    [{"name": "emb", "api": "embeddings"}, {"name": "rag"}],
    vllm={"model": "x", "embeddings": {"model": "e"}},
)
POOL = make_spec(vllm={"model": "x", "extraArgs": ["--runner", "pooling"]})


def check(spec: InferenceBackendSpec, verdict: str, cosine: float, key: str = "") -> VectorCheck:
    return VectorCheck(
        verdict=verdict,
        cosine=cosine,
        min_cosine=0.99,
        inputs=4,  # type: ignore[arg-type]
        time=stamp(T0),
        key=key or vectors.key(spec),
        message=f"lowest cosine {cosine}",
    )


def with_vectors(c: VectorCheck) -> MigrationStatus:
    return MigrationStatus(spec_hash=HASH, vectors=c)


ON_VLLM = EmbeddingsStatus(weight=100, message="on vLLM: lowest cosine 0.999")

ROWS = [
    Row("embeddings deployment, vectors alike: embeddings move with the first live weight", [], 0,
        Observations(vllm_ready=True, vectors=check(EMB, "Pass", 0.999)),
        {"notes": {"phase": "Progressing", "weight": 10,
                   "embeddings": {"weight": 100, "held": False,
                                  "message": "on vLLM: lowest cosine 0.999"}},
         "rag": {"phase": "Pending", "embeddings": {
             "weight": 0, "held": False,
             "message": "on Ollama until the consumer's live weight"}}},
        spec=EMB, migration=None, events=("VectorsAlike", "EmbeddingsMoved")),
    Row("embeddings deployment, vectors differ: chat migrates, embeddings stay on Ollama", [], 0,
        Observations(vllm_ready=True, vectors=check(EMB, "Fail", 0.41)),
        {"notes": {"phase": "Progressing", "weight": 10, "embeddings": {
            "weight": 0, "held": True, "message": "held on Ollama: lowest cosine 0.41"}}},
        spec=EMB, migration=None, events=("VectorsDiffer",)),
    Row("embeddings deployment, no check yet: embeddings wait on Ollama", [], 0,
        Observations(vllm_ready=True),
        {"notes": {"phase": "Progressing", "weight": 10, "embeddings": {
            "weight": 0, "held": True,
            "message": "held on Ollama: both engines' vectors are not compared yet"}}},
        spec=EMB, migration=None),
    Row("embeddings deployment: rolled back, its embeddings go back to Ollama too",
        [running("notes", 1, 10, failed_samples=1, last_sample_at=stamp(at(15)),
                 embeddings=ON_VLLM),
         consumer("rag", phase="Pending")], 25,
        Observations(vllm_ready=True, figures={"notes": BAD_LATENCY}),
        {"notes": {"phase": "RolledBack", "weight": 0, "embeddings": {
            "weight": 0, "held": False, "message": "on Ollama until the consumer's live weight"}}},
        spec=EMB, migration=with_vectors(check(EMB, "Pass", 0.999)),
        events=("RolledBack", "EmbeddingsMoved")),
    Row("embeddings deployment: a migrated consumer keeps its embeddings on vLLM",
        [migrated("notes", embeddings=ON_VLLM), migrated("rag", embeddings=ON_VLLM)], 5,
        Observations(vllm_ready=True),
        {"notes": {"phase": "Migrated", "embeddings": ON_VLLM.model_dump()}},
        spec=EMB, migration=with_vectors(check(EMB, "Pass", 0.999))),
    Row("a check made for another spec (a model changed) does not count",
        [migrated("notes", embeddings=ON_VLLM), migrated("rag", embeddings=ON_VLLM)], 5,
        Observations(vllm_ready=True),
        {"notes": {"phase": "Migrated", "weight": 100, "embeddings": {
            "weight": 0, "held": True,
            "message": "held on Ollama: both engines' vectors are not compared yet"}}},
        spec=EMB, migration=with_vectors(check(EMB, "Pass", 0.999, key="an-older-spec")),
        events=("EmbeddingsMoved",)),
    Row("an embeddings consumer is held at 0% while the vectors differ", [], 0,
        Observations(vllm_ready=True, vectors=check(EMB_ONLY, "Fail", 0.41)),
        {"emb": {"phase": "Pending", "weight": 0, "message":
                 "held at 0%: embeddings move only with compatible vectors: lowest cosine 0.41"},
         "rag": {"phase": "Pending", "weight": 0}},
        spec=EMB_ONLY, migration=None, events=("VectorsDiffer",)),
    Row("an embeddings consumer moves 0 -> 100 once the vectors agree",
        [consumer("emb", phase="Pending"), consumer("rag", phase="Pending")], 0,
        Observations(vllm_ready=True, vectors=check(EMB_ONLY, "Pass", 0.995)),
        {"emb": {"phase": "Progressing", "step": 3, "weight": 100,
                 "embeddings": {"weight": 100, "held": False,
                                "message": "on vLLM: lowest cosine 0.995"}}},
        spec=EMB_ONLY, events=("VectorsAlike", "StepStarted")),
    Row("pooling runner on spec.vllm: the first consumer waits for the vector check", [], 0,
        Observations(vllm_ready=True),
        {"notes": {"phase": "Pending", "weight": 0, "embeddings": None, "message":
                   "held at 0%: embeddings move only with compatible vectors: both engines' "
                   "vectors are not compared yet"},
         "rag": {"phase": "Pending", "weight": 0}},
        spec=POOL, migration=None),
    Row("pooling runner on spec.vllm: an inconclusive check still holds", [], 0,
        Observations(vllm_ready=True, vectors=VectorCheck(
            verdict="Inconclusive", min_cosine=0.99, time=stamp(T0), key=vectors.key(POOL),
            message="vLLM: HTTP 503")),
        {"notes": {"phase": "Pending", "weight": 0}},
        spec=POOL, migration=None),
    Row("pooling runner on spec.vllm, vectors alike: the first consumer starts", [], 0,
        Observations(vllm_ready=True, vectors=check(POOL, "Pass", 0.9999)),
        {"notes": {"phase": "Progressing", "weight": 10}, "rag": {"phase": "Pending"}},
        spec=POOL, migration=None, events=("StepStarted", "VectorsAlike")),
    Row("a consumer using tools without a tool-call parser is held at 0%, the next waits", [], 0,
        Observations(vllm_ready=True, features={"notes": TOOLS}),
        {"notes": {"phase": "Pending", "weight": 0}, "rag": {"phase": "Pending", "weight": 0}},
        migration=None, events=("FeaturesNotHonoured",)),
    Row("the spec gives vLLM a tool-call parser: the held consumer starts", [held("notes")], 0,
        Observations(vllm_ready=True, features={"notes": TOOLS}),
        {"notes": {"phase": "Progressing", "weight": 10, "features": None}},
        spec=replace_migration(TOOL_PARSER)),
    Row("features vLLM honours hold nothing", [], 0,
        Observations(vllm_ready=True, features={"notes": {"top_k": 4, "num_thread": 1}}),
        {"notes": {"phase": "Progressing", "weight": 10, "features": None}}, migration=None),
    Row("an acknowledged finding no longer holds", [held("notes", ACKED)], 0,
        Observations(vllm_ready=True, features={"notes": TOOLS}),
        {"notes": {"phase": "Progressing", "weight": 10}}),
    Row("kubectl ib ack: the held consumer starts in the same pass", [held("notes")], 0,
        Observations(vllm_ready=True, features={"notes": TOOLS},
                     action=Action("a1", "ack", "notes")),
        {"notes": {"phase": "Progressing", "weight": 10}}, events=("ActionDone",)),
    Row("a feature found after an ack holds again", [held("notes", ACKED)], 0,
        Observations(vllm_ready=True, features={"notes": {**TOOLS, "mirostat": 2}}),
        {"notes": {"phase": "Pending", "weight": 0}}, events=("FeaturesNotHonoured",)),
    Row("no counts this time: the last report still holds", [held("notes")], 0,
        Observations(vllm_ready=True),
        {"notes": {"phase": "Pending", "weight": 0, "features": HELD.model_dump()}}),
    Row("first run: the first consumer starts, the rest wait", [], 0,
        Observations(vllm_ready=True, served=SERVED_0),
        {"notes": {"phase": "Progressing", "step": 1, "weight": 10, "step_started_at": None},
         "rag": {"phase": "Pending", "weight": 0}},
        migration=None, events=("StepStarted",)),
    Row("no start before vLLM is ready", [], 0, Observations(vllm_ready=False),
        {"notes": {"phase": "Pending", "weight": 0}, "rag": {"phase": "Pending"}}, migration=None),
    Row("the step starts when every router serves its weight",
        [running("notes", 1, 10, started=None), consumer("rag", phase="Pending")], 3,
        Observations(vllm_ready=True, served={"notes": 10, "rag": 0}),
        {"notes": {"step_started_at": stamp(at(3)), "weight": 10}}),
    Row("no step start while a router serves another weight",
        [running("notes", 1, 10, started=None), consumer("rag", phase="Pending")], 3,
        Observations(vllm_ready=True, served={"notes": 0, "rag": 0}),
        {"notes": {"step_started_at": None}}),
    Row("analysis pass within a timed pause holds the step",
        [running("notes", 1, 10), consumer("rag", phase="Pending")], 15,
        Observations(vllm_ready=True, figures={"notes": GOOD}),
        {"notes": {"step": 1, "passed_samples": 1, "last_sample_at": stamp(at(15))}}),
    Row("timed pause over with a passing sample: next step",
        [running("notes", 1, 10, passed_samples=3, last_sample_at=stamp(at(55))),
         consumer("rag", phase="Pending")], 60,
        Observations(vllm_ready=True),
        {"notes": {"step": 2, "weight": 50, "step_started_at": None, "passed_samples": 0}},
        events=("StepStarted",)),
    Row("timed pause over without any passing sample: hold",
        [running("notes", 1, 10, inconclusive_samples=2, last_sample_at=stamp(at(55))),
         consumer("rag", phase="Pending")], 60,
        Observations(vllm_ready=True), {"notes": {"step": 1, "weight": 10}}),
    Row("a sample not due yet is ignored (a burst cannot count twice)",
        [running("notes", 1, 10, passed_samples=1, last_sample_at=stamp(at(15))),
         consumer("rag", phase="Pending")], 20,
        Observations(vllm_ready=True, figures={"notes": GOOD}),
        {"notes": {"passed_samples": 1, "last_sample_at": stamp(at(15))}}),
    Row("manual pause: analysis passed, waits for promote",
        [running("notes", 2, 50), consumer("rag", phase="Pending")], 3600,
        Observations(vllm_ready=True, figures={"notes": GOOD}),
        {"notes": {"phase": "Paused", "step": 2, "weight": 50, "passed_samples": 1}}),
    Row("promote ends a manual pause",
        [running("notes", 2, 50, passed_samples=1), consumer("rag", phase="Pending")], 100,
        Observations(vllm_ready=True, action=Action("a1", "promote", "notes")),
        {"notes": {"phase": "Progressing", "step": 3, "weight": 100}}, events=("ActionDone",)),
    Row("promote at the last step is rejected: the analysis at 100% decides, or --full",
        [running("notes", 3, 100), consumer("rag", phase="Pending")], 3,
        Observations(vllm_ready=True, action=Action("a2", "promote", "notes")),
        {"notes": {"phase": "Progressing", "step": 3, "weight": 100}},
        events=("ActionRejected",)),
    Row("promote --full migrates at once",
        [running("notes", 1, 10), consumer("rag", phase="Pending")], 1,
        Observations(vllm_ready=True, action=Action("a1", "promote-full")),
        {"notes": {"phase": "Migrated", "weight": 100}, "rag": {"phase": "Progressing"}},
        events=("ActionDone", "Migrated")),
    Row("an acknowledged action is not applied again",
        [running("notes", 1, 10), consumer("rag", phase="Pending")], 1,
        Observations(vllm_ready=True, action=Action("a1", "promote-full")),
        {"notes": {"phase": "Progressing", "weight": 10}},
        migration=MigrationStatus(spec_hash=HASH, last_action=ActionRecord(
            id="a1", action="promote-full", result="Done", time=stamp(T0)))),
    Row("the last step needs one more passing sample before migrated",
        [running("notes", 3, 100), consumer("rag", phase="Pending")], 15,
        Observations(vllm_ready=True, figures={"notes": Figures(vllm=eng(), ollama=None)}),
        {"notes": {"phase": "Migrated", "weight": 100},
         "rag": {"phase": "Progressing", "weight": 10}}, events=("Migrated", "StepStarted")),
    Row("at 100% no vLLM traffic is no verdict",
        [running("notes", 3, 100), consumer("rag", phase="Pending")], 15,
        Observations(vllm_ready=True, figures={"notes": Figures(vllm=None, ollama=None)}),
        {"notes": {"phase": "Progressing", "inconclusive_samples": 1}}),
    Row("too few requests is inconclusive, never a verdict",
        [running("notes", 1, 10), consumer("rag", phase="Pending")], 15,
        Observations(vllm_ready=True, figures={"notes": QUIET}),
        {"notes": {"inconclusive_samples": 1, "failed_samples": 0, "passed_samples": 0}}),
    Row("a failing query is inconclusive",
        [running("notes", 1, 10), consumer("rag", phase="Pending")], 15,
        Observations(vllm_ready=True, figures={"notes": BROKEN}),
        {"notes": {"inconclusive_samples": 1, "weight": 10}}),
    Row("inconclusive too long holds the weight and says so",
        [running("notes", 1, 10, inconclusive_samples=9, last_sample_at=stamp(at(55))),
         consumer("rag", phase="Pending")], 65,
        Observations(vllm_ready=True, figures={"notes": BROKEN}),
        {"notes": {"phase": "Progressing", "weight": 10, "inconclusive_samples": 10}}),
    Row("inconclusive too long rolls back when asked to",
        [running("notes", 1, 10, inconclusive_samples=9, last_sample_at=stamp(at(55))),
         consumer("rag", phase="Pending")], 65,
        Observations(vllm_ready=True, figures={"notes": BROKEN}),
        {"notes": {"phase": "RolledBack", "weight": 0}},
        spec=make_spec(analysis={**ANALYSIS, "onInconclusive": "Rollback"}),
        migration=MigrationStatus(spec_hash=spec_hash(make_spec(  # type: ignore[arg-type]
            analysis={**ANALYSIS, "onInconclusive": "Rollback"}).migration)),
        events=("RolledBack",)),
    Row("a stalled step holds even when its pause is over",
        [running("notes", 1, 10, passed_samples=1, inconclusive_samples=10,
                 last_sample_at=stamp(at(85))), consumer("rag", phase="Pending")], 95,
        Observations(vllm_ready=True), {"notes": {"step": 1, "weight": 10}}),
    Row("a step numbered 0 (a status from a build that counted from 0): that step again",
        [running("notes", 0, 10, passed_samples=1), consumer("rag", phase="Pending")], 3,
        Observations(vllm_ready=True, served=SERVED_0),
        {"notes": {"phase": "Progressing", "step": 1, "weight": 10, "passed_samples": 0}},
        events=("StepStarted",)),
    Row("a consumer inserted before the one in progress waits for the parallel limit",
        [running("rag", 1, 10)], 3,
        Observations(vllm_ready=True, served={"notes": 0, "rag": 10}),
        {"notes": {"phase": "Pending", "weight": 0}, "rag": {"phase": "Progressing"}}),
    Row("a consumer that finishes frees its place in the same pass, not the next",
        [consumer("rag", phase="Pending"), running("notes", 3, 100, started=None,
                                                    passed_samples=1)], 3,
        Observations(vllm_ready=True, served={"notes": 100, "rag": 0}),
        {"notes": {"phase": "Migrated"}, "rag": {"phase": "Progressing", "weight": 10}},
        spec=make_spec([{"name": "rag"}, {"name": "notes"}]), events=("Migrated", "StepStarted")),
    Row("one failed sample is tolerated",
        [running("notes", 1, 10), consumer("rag", phase="Pending")], 15,
        Observations(vllm_ready=True, figures={"notes": BAD_ERRORS}),
        {"notes": {"phase": "Progressing", "failed_samples": 1, "weight": 10}},
        events=("AnalysisFailed",)),
    Row("failures past the limit roll back to 0%",
        [running("notes", 1, 10, failed_samples=1, last_sample_at=stamp(at(15))),
         consumer("rag", phase="Pending")], 25,
        Observations(vllm_ready=True, figures={"notes": BAD_LATENCY}),
        {"notes": {"phase": "RolledBack", "weight": 0}, "rag": {"phase": "Pending"}},
        events=("RolledBack",)),
    Row("a manual pause does not stop automatic rollback",
        [running("notes", 2, 50, failed_samples=1, last_sample_at=stamp(at(15)), paused=True),
         consumer("rag", phase="Pending")], 25,
        Observations(vllm_ready=True, figures={"notes": BAD_ERRORS}),
        {"notes": {"phase": "RolledBack", "weight": 0}}),
    Row("pause holds a passing step",
        [running("notes", 1, 10, passed_samples=2, last_sample_at=stamp(at(55)), paused=True),
         consumer("rag", phase="Pending")], 70,
        Observations(vllm_ready=True), {"notes": {"phase": "Paused", "step": 1}}),
    Row("pause before the step has started: Paused at once, still waiting for routers",
        [running("notes", 1, 10, started=None), consumer("rag", phase="Pending")], 3,
        Observations(vllm_ready=True, served=SERVED_0, action=Action("p", "pause", "notes")),
        {"notes": {"phase": "Paused", "paused": True, "step_started_at": None}},
        events=("ActionDone",)),
    Row("spec.migration.paused before the step has started: Paused",
        [running("notes", 1, 10, started=None)], 3,
        Observations(vllm_ready=True, served={"notes": 0}),
        {"notes": {"phase": "Paused", "step_started_at": None}},
        spec=make_spec([{"name": "notes"}], paused=True)),
    Row("resume lets it move on",
        [running("notes", 1, 10, passed_samples=2, last_sample_at=stamp(at(55)), paused=True),
         consumer("rag", phase="Pending")], 70,
        Observations(vllm_ready=True, action=Action("r", "resume", "notes")),
        # Step 2 waits for a promote: Paused from the moment it is written.
        {"notes": {"phase": "Paused", "step": 2, "paused": False}}),
    Row("spec.migration.paused holds every consumer",
        [running("notes", 1, 10, passed_samples=2, last_sample_at=stamp(at(55)))], 70,
        Observations(vllm_ready=True), {"notes": {"phase": "Paused", "step": 1}},
        spec=make_spec([{"name": "notes"}], paused=True)),
    Row("abort sends the consumer back to 0% and later ones keep waiting",
        [running("notes", 2, 50), consumer("rag", phase="Pending")], 10,
        Observations(vllm_ready=True, action=Action("x", "abort")),
        {"notes": {"phase": "Aborted", "weight": 0}, "rag": {"phase": "Pending", "weight": 0}},
        events=("Aborted", "ActionDone")),
    Row("an aborted consumer stays aborted",
        [consumer("notes", phase="Aborted", step=2), consumer("rag", phase="Pending")], 500,
        Observations(vllm_ready=True, served=SERVED_0),
        {"notes": {"phase": "Aborted", "weight": 0}, "rag": {"phase": "Pending"}}),
    Row("retry starts over from the first step",
        [consumer("notes", phase="RolledBack", step=2, failed_samples=2),
         consumer("rag", phase="Pending")], 10,
        Observations(vllm_ready=True, action=Action("y", "retry", "notes")),
        {"notes": {"phase": "Progressing", "step": 1, "weight": 10, "failed_samples": 0}}),
    Row("retry while another consumer is in progress: queued, waits for maxParallel",
        [consumer("notes", phase="Migrated", weight=100, step=3),
         consumer("rag", phase="Aborted", step=2), running("ner", 1, 10)], 10,
        Observations(vllm_ready=True, action=Action("y", "retry", "rag")),
        {"rag": {"phase": "Pending", "weight": 0, "step": None},
         "ner": {"phase": "Progressing"}},
        spec=make_spec([{"name": "notes"}, {"name": "rag"}, {"name": "ner"}]),
        events=("ActionDone",)),
    Row("retry behind an aborted consumer: queued, list order holds it",
        [consumer("notes", phase="Aborted", step=2), consumer("rag", phase="Aborted", step=1)],
        10, Observations(vllm_ready=True, action=Action("y", "retry", "rag")),
        {"notes": {"phase": "Aborted"}, "rag": {"phase": "Pending", "weight": 0}},
        events=("ActionDone",)),
    Row("steps edited: an aborted consumer is queued, not started past maxParallel",
        [consumer("notes", phase="Aborted", step=3), running("rag", 2, 50)], 10,
        Observations(vllm_ready=True),
        {"notes": {"phase": "Pending", "weight": 0}, "rag": {"step": 1, "weight": 10}},
        migration=MigrationStatus(spec_hash="older"), events=("SpecChanged",)),
    Row("retry of a consumer in progress is rejected",
        [running("notes", 1, 10), consumer("rag", phase="Pending")], 1,
        Observations(vllm_ready=True, action=Action("y", "retry", "notes")),
        {"notes": {"phase": "Progressing", "step": 1}}, events=("ActionRejected",)),
    Row("steps edited mid-step: the consumer restarts at step one, never higher",
        [running("notes", 2, 50), consumer("rag", phase="Pending")], 10,
        Observations(vllm_ready=True),
        {"notes": {"phase": "Progressing", "step": 1, "weight": 10}},
        migration=MigrationStatus(spec_hash="older"), events=("SpecChanged",)),
    Row("steps edited: migrated consumers stay migrated",
        [consumer("notes", phase="Migrated", weight=100, step=3), running("rag", 1, 10)], 10,
        Observations(vllm_ready=True),
        {"notes": {"phase": "Migrated", "weight": 100}, "rag": {"step": 1, "weight": 10}},
        migration=MigrationStatus(spec_hash="older")),
    Row("a consumer added mid-migration waits its turn",
        [consumer("notes", phase="Migrated", weight=100, step=3), running("rag", 1, 10)], 10,
        Observations(vllm_ready=True),
        {"notes": {"phase": "Migrated"}, "rag": {"phase": "Progressing"},
         "ner": {"phase": "Pending", "weight": 0}},
        spec=make_spec([{"name": "notes"}, {"name": "rag"}, {"name": "ner"}])),
    Row("a consumer removed mid-migration: the next one starts",
        [running("notes", 2, 50), consumer("rag", phase="Pending")], 10,
        Observations(vllm_ready=True), {"rag": {"phase": "Progressing", "weight": 10}},
        spec=make_spec([{"name": "rag"}])),
    Row("two in parallel when allowed",
        [], 0, Observations(vllm_ready=True),
        {"notes": {"phase": "Progressing"}, "rag": {"phase": "Progressing"}},
        spec=make_spec(maxParallel=2), migration=None),
    Row("embeddings move 0 -> 100 in one step",
        [], 0, Observations(vllm_ready=True),
        {"emb": {"phase": "Progressing", "step": 3, "weight": 100}},
        spec=make_spec([{"name": "emb", "api": "embeddings"}]), migration=None),
    Row("a consumer at 100% before the migration counts as migrated",
        [consumer("notes", phase="Manual", weight=100), consumer("rag", phase="Manual", weight=50)],
        0, Observations(vllm_ready=True),
        {"notes": {"phase": "Migrated", "weight": 100},
         "rag": {"phase": "Progressing", "weight": 10}}, migration=None),
    Row("vLLM lost: every consumer to Ollama, the step waits",
        [consumer("notes", phase="Migrated", weight=100, step=3), running("rag", 2, 50)], 10,
        Observations(vllm_ready=False),
        {"notes": {"phase": "Migrated", "weight": 0}, "rag": {"step": 2, "weight": 0,
                                                              "step_started_at": None}},
        events=("FailedOver",)),
    Row("vLLM back: still on Ollama during the hold-down",
        [consumer("notes", phase="Migrated", weight=0, step=3),
         running("rag", 2, 0, started=None)], 10,
        Observations(vllm_ready=True),
        {"notes": {"weight": 0}, "rag": {"weight": 0}},
        migration=MigrationStatus(spec_hash=HASH, failover=True)),
    Row("vLLM ready for the hold-down: weights restored, steps wait for routers",
        [consumer("notes", phase="Migrated", weight=0, step=3),
         running("rag", 2, 0, started=None)], 200,
        Observations(vllm_ready=True),
        {"notes": {"weight": 100}, "rag": {"weight": 50, "step": 2, "step_started_at": None}},
        migration=MigrationStatus(spec_hash=HASH, failover=True,
                                  vllm_ready_since=stamp(at(60))),
        events=("Restored",)),
    # The watch after migration (spec.migration.watch).
    Row("migrated: a watch sample passes, the consumer stays at 100%",
        [migrated("notes"), running("rag", 1, 10)], 10,
        Observations(vllm_ready=True, figures={"notes": WATCH_GOOD}),
        {"notes": {"phase": "Migrated", "weight": 100, "last_sample_at": stamp(at(10)),
                   "message": "migrated; watched: every gate passed"}}),
    Row("migrated: a watch sample not due yet is ignored",
        [migrated("notes", sampled=5), running("rag", 1, 10)], 10,
        Observations(vllm_ready=True, figures={"notes": WATCH_500}),
        {"notes": {"phase": "Migrated", "last_sample_at": stamp(at(5)), "watch": {
            "failing": False, "since": None, "failed_samples": 0, "samples": 0,
            "message": ""}}}),
    Row("migrated: vLLM answers 500 (all on fallback): reported, stays at 100% (Report)",
        [migrated("notes"), migrated("rag")], 10,
        Observations(vllm_ready=True, figures={"notes": WATCH_500}),
        {"notes": {"phase": "Migrated", "weight": 100, "watch": {
            "failing": True, "since": stamp(at(10)), "failed_samples": 1, "samples": 1,
            "message": "errorRate 1 > 0.01 (Ollama 0)"}},
         "rag": {"phase": "Migrated", "weight": 100}},
        events=("WatchFailed",)),
    Row("migrated: failing again with Report: still reported once, stays at 100%",
        [migrated("notes", watch=FAILING), migrated("rag")], 10,
        Observations(vllm_ready=True, figures={"notes": WATCH_500}),
        {"notes": {"phase": "Migrated", "weight": 100, "watch": {
            "failing": True, "since": stamp(T0), "failed_samples": 2, "samples": 4,
            "message": "errorRate 1 > 0.01 (Ollama 0)"}}}),
    Row("migrated: first failure with Rollback is only reported (failureLimit 1)",
        [migrated("notes"), migrated("rag")], 10,
        Observations(vllm_ready=True, figures={"notes": WATCH_500}),
        {"notes": {"phase": "Migrated", "weight": 100}},
        spec=ROLLBACK, migration=ROLLBACK_HASH, events=("WatchFailed",)),
    Row("migrated: failures in a row past failureLimit with Rollback: back to Ollama",
        [migrated("notes", watch=FAILING), migrated("rag")], 10,
        Observations(vllm_ready=True, figures={"notes": WATCH_500}),
        {"notes": {"phase": "RolledBack", "weight": 0, "step": 3},
         "rag": {"phase": "Migrated", "weight": 100}},
        spec=ROLLBACK, migration=ROLLBACK_HASH, events=("RolledBack",)),
    Row("migrated: an inconclusive watch sample neither sets nor clears a failure",
        [migrated("notes", watch=FAILING), migrated("rag")], 10,
        Observations(vllm_ready=True, figures={"notes": BROKEN}),
        {"notes": {"phase": "Migrated", "weight": 100, "watch": {
            **FAILING.model_dump(), "samples": 4}}}),
    Row("migrated: a passing sample after failures recovers",
        [migrated("notes", watch=FAILING), migrated("rag")], 10,
        Observations(vllm_ready=True, figures={"notes": WATCH_GOOD}),
        {"notes": {"phase": "Migrated", "watch": {
            "failing": False, "since": None, "failed_samples": 0, "samples": 4,
            "message": "every gate passed"}}},
        events=("WatchRecovered",)),
    Row("migrated: a rolled back consumer is retried from its first step",
        [migrated("notes", watch=FAILING).model_copy(update={"phase": "RolledBack", "weight": 0}),
         consumer("rag", phase="Pending")], 10,
        Observations(vllm_ready=True, served=SERVED_0, action=Action("r1", "retry", "notes")),
        {"notes": {"phase": "Progressing", "step": 1, "weight": 10, "watch": None,
                   "comparison": None}},
        spec=ROLLBACK, migration=ROLLBACK_HASH, events=("ActionDone", "StepStarted")),
    Row("at 100% when the migration began: watched from the first pass",
        [consumer("notes", weight=100), consumer("rag")], 0,
        Observations(vllm_ready=True, served={"notes": 100, "rag": 0},
                     figures={"notes": WATCH_500}),
        {"notes": {"phase": "Migrated", "weight": 100, "last_sample_at": stamp(T0)}},
        migration=None, events=("WatchFailed",)),
    Row("the watch switched off: no sample, no watch status",
        [migrated("notes"), migrated("rag")], 10,
        Observations(vllm_ready=True, figures={"notes": WATCH_500}),
        {"notes": {"phase": "Migrated", "weight": 100, "watch": None,
                   "last_sample_at": stamp(T0)}},
        spec=UNWATCHED,
        migration=MigrationStatus(spec_hash=spec_hash(UNWATCHED.migration))),  # type: ignore[arg-type]
]  # fmt: skip


def run(row: Row) -> Plan:
    return plan(row.spec, base(row.spec), row.before, row.migration, row.obs, at(row.now))


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_transition(row: Row) -> None:
    result = run(row)
    by_name = {c.name: c for c in result.consumers}
    assert list(by_name) == [c.name for c in row.spec.consumers]
    for name, fields in row.expect.items():
        got = by_name[name].model_dump()
        assert {k: got[k] for k in fields} == fields, by_name[name].message
    reasons = [e.reason for e in result.events]
    for reason in row.events:
        assert reason in reasons, reasons
    assert result.weights == {c.name: c.weight for c in result.consumers}


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_planning_again_from_the_result_changes_nothing_more(row: Row) -> None:
    """A restarted operator (or a burst of reconciliations) that plans again at the same
    instant from the status just written repeats no step and no sample."""
    first = run(row)
    again = plan(
        row.spec,
        base(row.spec),
        first.consumers,
        first.migration,
        Observations(
            vllm_ready=row.obs.vllm_ready,
            served=row.obs.served,
            figures=row.obs.figures,
            action=row.obs.action,
            features=row.obs.features,
        ),
        at(row.now),
    )
    assert [c.model_dump() for c in again.consumers] == [c.model_dump() for c in first.consumers]
    assert again.migration == first.migration
    assert not [e for e in again.events if e.reason in ("StepStarted", "Migrated", "RolledBack")]


def test_migration_status_for_kubectl_get() -> None:
    result = run(_row("first run: the first consumer starts, the rest wait"))
    assert result.migration.migrated == "0/2"
    assert result.migration.current == "notes@10%"
    assert result.condition.reason == "Progressing"
    done = run(
        Row(
            "",
            [
                consumer("notes", phase="Migrated", weight=100, step=3),
                consumer("rag", phase="Migrated", weight=100, step=3),
            ],
            0,
            Observations(vllm_ready=True),
            {},
        )
    )
    assert (done.migration.migrated, done.condition.reason) == ("2/2", "Completed")
    assert not done.scale_down_ollama
    scaled = make_spec(afterMigration="ScaleDownOllama")
    done = plan(
        scaled, base(scaled), done.consumers, done.migration, Observations(vllm_ready=True), T0
    )
    assert done.scale_down_ollama


def test_due_samples_and_wake_up() -> None:
    states = [running("notes", 1, 10, started=0), consumer("rag", phase="Pending")]
    assert due_samples(SPEC, states, False, at(14)) == {}
    assert due_samples(SPEC, states, False, at(15)) == {"notes": 10.0}
    assert due_samples(SPEC, states, True, at(15)) == {}
    result = plan(
        SPEC, base(), states, MigrationStatus(spec_hash=HASH), Observations(vllm_ready=True), at(3)
    )
    assert result.requeue_after == 12  # the first sample: 5 s delay + 10 s interval


def test_rollback_condition_and_event_name_the_figures() -> None:
    row = ROWS[[r.id for r in ROWS].index("failures past the limit roll back to 0%")]
    result = run(row)
    assert result.condition.status == "False"
    assert result.condition.reason == "RolledBack"
    notes = result.consumers[0]
    assert notes.last_analysis is not None and notes.last_analysis.verdict == "Fail"
    assert "ttftP95 3 > 0.6" in notes.message


def test_shed_requests_show_in_the_sample_without_judging_it() -> None:
    """Requests refused for an engine's overload are reported per engine in the consumer's
    last analysis, and leave the verdict to the error and latency gates."""
    shed = Figures(vllm=eng(ttft=0.1), ollama=replace(eng(ttft=0.4), shed=25))
    states = [running("notes", 1, 10), consumer("rag", phase="Pending")]
    result = plan(
        SPEC,
        base(),
        states,
        MigrationStatus(spec_hash=HASH),
        Observations(vllm_ready=True, figures={"notes": shed}),
        at(15),
    )
    analysis = result.consumers[0].last_analysis
    assert analysis is not None and analysis.verdict == "Pass"
    assert analysis.ollama is not None and analysis.ollama.shed == 25
    assert analysis.vllm is not None and analysis.vllm.shed == 0
    assert analysis.ollama.error_rate == 0


def _row(id_: str) -> Row:
    return ROWS[[r.id for r in ROWS].index(id_)]


@pytest.mark.parametrize(
    ("row_id", "result", "message"),
    [
        ("promote at the last step is rejected: the analysis at 100% decides, or --full",
         "Rejected", "notes is at its last step (3/3, 100%): its analysis at 100% marks it "
         "Migrated; promote --full marks it Migrated now, without that analysis"),
        ("promote --full migrates at once", "Done",
         "notes promoted to 100% and marked Migrated, without the analysis at 100%"),
        ("promote ends a manual pause", "Done", "notes promoted to 100% (step 3/3)"),
        ("retry starts over from the first step", "Done", "notes starts over from its first step"),
        ("retry while another consumer is in progress: queued, waits for maxParallel", "Done",
         "rag queued: it starts over from its first step when its turn comes "
         "(maxParallel is 1; in progress: ner)"),
        ("retry behind an aborted consumer: queued, list order holds it", "Done",
         "rag queued: it starts over from its first step when its turn comes "
         "(notes before it in the list is Aborted)"),
        ("pause before the step has started: Paused at once, still waiting for routers", "Done",
         "notes paused at 10%"),
    ],
)  # fmt: skip
def test_the_acknowledgement_says_what_happened(row_id: str, result: str, message: str) -> None:
    """The record `kubectl ib` prints, and the Event beside it."""
    done = run(_row(row_id))
    record = done.migration.last_action
    assert record is not None
    assert (record.result, record.message) == (result, message)
    [event] = [e for e in done.events if e.reason.startswith("Action")]
    assert (event.reason, event.message) == (f"Action{result}", f"{record.action}: {message}")


def notes_analysis(figures: Figures) -> AnalysisResult | None:
    """The analysis of notes, at 10% of step 1, from `figures` (rag still Pending)."""
    row = Row(
        "",
        [running("notes", 1, 10), consumer("rag", phase="Pending")],
        15,
        Observations(vllm_ready=True, figures={"notes": figures}),
        {},
    )
    return run(row).consumers[0].last_analysis


def test_status_counts_steps_from_one_like_the_events() -> None:
    """`status.consumers[].step` is the number Events, messages and `kubectl ib` show."""
    started = run(_row("first run: the first consumer starts, the rest wait"))
    notes = started.consumers[0]
    [event] = [e for e in started.events if e.reason == "StepStarted"]
    assert (notes.step, event.message) == (1, "notes: step 1 at 10%")
    promoted = run(_row("promote ends a manual pause"))
    notes = promoted.consumers[0]
    [event] = [e for e in promoted.events if e.reason == "StepStarted"]
    assert (notes.step, event.message) == (3, "notes: step 3 at 100%")
    sampled = run(_row("analysis pass within a timed pause holds the step")).consumers[0]
    assert sampled.last_analysis is not None
    assert (sampled.step, sampled.last_analysis.step) == (1, 1)
    assert sampled.message.startswith("step 1/3 at 10%")


def test_figures_in_status_are_rounded_and_verdicts_use_the_exact_ones() -> None:
    """Prometheus' increase() extrapolates: `48.932384341637004` requests is an estimate, and
    `kubectl describe` printed every digit. Status keeps four significant digits of every
    figure, as the verdicts' messages do; the verdict is taken on the exact figures."""
    raw = Figures(
        vllm=EngineFigures(
            requests=48.932384341637004, errors=0.0, ttft_p95=0.123456789, tpot_p95=0.0212345
        ),
        ollama=EngineFigures(
            requests=51.06666666666667, errors=1.0, ttft_p95=0.38, tpot_p95=0.0456789
        ),
    )
    analysis = notes_analysis(raw)
    assert analysis is not None and analysis.vllm is not None and analysis.ollama is not None
    assert analysis.verdict == "Pass"
    assert analysis.vllm.model_dump() == {
        "requests": 48.93,
        "error_rate": 0.0,
        "ttft_p95": 0.1235,
        "tpot_p95": 0.02123,
        "shed": 0.0,
    }
    assert analysis.ollama.model_dump() == {
        "requests": 51.07,
        "error_rate": 0.01958,
        "ttft_p95": 0.38,
        "tpot_p95": 0.04568,
        "shed": 0.0,
    }
    gates = {g.metric: g.model_dump(exclude={"metric", "verdict", "kind"}) for g in analysis.gates}
    assert gates["ttftP95"] == {"value": 0.1235, "baseline": 0.38, "threshold": 0.57}
    # Just under minRequests (5) stays too few, however close the rounding comes.
    close = Figures(vllm=eng(requests=4.96), ollama=eng())
    analysis = notes_analysis(close)
    assert analysis is not None and analysis.verdict == "Inconclusive"
    assert analysis.message == "too few requests on vLLM (4.96 < 5)"


def test_a_failing_watch_makes_the_migration_say_so_and_wakes_each_interval() -> None:
    """The case from issue 16: every consumer migrated, vLLM answers 500 while its pods stay
    Ready. Before the watch the resource said Completed; now the Migrating condition and the
    plan's Degraded reason name the consumer and the gate, and the next sample is due one
    interval later."""
    row = _row("migrated: vLLM answers 500 (all on fallback): reported, stays at 100% (Report)")
    both = {"notes": WATCH_500, "rag": WATCH_GOOD}
    result = run(replace(row, obs=Observations(vllm_ready=True, figures=both)))
    assert result.condition.triple() == (
        "False",
        "WatchFailed",
        "migrated, but fails a gate: notes: errorRate 1 > 0.01 (Ollama 0)",
    )
    assert result.watch_message == result.condition.message
    [event] = [e for e in result.events if e.reason == "WatchFailed"]
    assert (event.type, event.message) == (
        "Warning",
        "notes: migrated, but fails a gate: errorRate 1 > 0.01 (Ollama 0)",
    )
    # Both were sampled at 10: both are due again at 20 (one due and not sampled: at once).
    assert result.requeue_after == 10
    states = result.consumers
    assert due_samples(SPEC, states, False, at(19)) == {}
    assert due_samples(SPEC, states, False, at(20)) == {"notes": 10.0, "rag": 10.0}
    assert due_samples(SPEC, states, True, at(20)) == {}  # failed over: nothing to watch
    assert due_samples(UNWATCHED, states, False, at(20)) == {}
    assert run(row).requeue_after == 0.1  # rag was due and had no figures: look again now
    recovered = plan(
        SPEC,
        base(),
        states,
        result.migration,
        Observations(vllm_ready=True, figures={"notes": WATCH_GOOD, "rag": WATCH_GOOD}),
        at(20),
    )
    assert recovered.condition.reason == "Completed"
    assert recovered.watch_message is None


def test_the_comparison_pools_the_migration_windows_and_is_kept_after_it() -> None:
    """Each sample of a step adds its window to the consumer's comparison; at 100% Ollama's
    figures stop (only fallbacks reach it) and once migrated the comparison is kept as it
    was, while the watch samples go on."""
    vllm = replace(eng(ttft=0.1, tpot=0.01), ttft_count=50, tpot_count=50, output_tokens=900)
    ollama = replace(eng(ttft=0.31, tpot=0.024), ttft_count=50, tpot_count=50, output_tokens=800)
    window = Figures(vllm=vllm, ollama=ollama, window_seconds=10)
    first = run(
        Row(
            "",
            [running("notes", 1, 10), consumer("rag", phase="Pending")],
            15,
            Observations(vllm_ready=True, figures={"notes": window}),
            {},
        )
    ).consumers[0]
    assert first.comparison is not None
    assert first.comparison.summary == "TTFT p95 3.1x faster, TPOT p95 2.4x faster, errors 0% vs 0%"
    assert first.comparison.vllm is not None and first.comparison.ollama is not None
    assert (first.comparison.vllm.windows, first.comparison.ollama.windows) == (1, 1)
    assert first.comparison.vllm.output_tokens_per_second == 90

    at_full = running("notes", 3, 100, comparison=first.comparison)
    broken_ollama = Figures(vllm=vllm, ollama=eng(ttft=30), window_seconds=10)
    full = run(
        Row(
            "",
            [at_full, consumer("rag", phase="Pending")],
            15,
            Observations(vllm_ready=True, figures={"notes": broken_ollama}),
            {},
        )
    ).consumers[0]
    assert full.phase == "Migrated"
    assert full.comparison is not None and full.comparison.vllm is not None
    assert full.comparison.vllm.windows == 2
    assert full.comparison.ollama == first.comparison.ollama  # fallbacks are not pooled

    watched = plan(
        SPEC,
        base(),
        [full, consumer("rag", phase="Pending")],
        MigrationStatus(spec_hash=HASH),
        Observations(vllm_ready=True, figures={"notes": window}),
        at(25),
    ).consumers[0]
    assert watched.last_sample_at == stamp(at(25))
    assert watched.comparison == full.comparison


def test_a_held_consumer_says_why_and_how_to_go_on() -> None:
    result = plan(
        SPEC,
        base(),
        [],
        None,
        Observations(vllm_ready=True, features={"notes": {**TOOLS, "mirostat": 1}}),
        T0,
    )
    notes = result.consumers[0]
    assert notes.features is not None and notes.features.held
    assert [f.feature for f in notes.features.findings] == ["mirostat", "tools"]
    assert notes.features.findings[1].requests == 5
    assert "uses tools: vLLM has no tool-call parser" in notes.message
    assert "--enable-auto-tool-choice --tool-call-parser <name>" in notes.message
    assert "kubectl ib ack <backend> notes" in notes.message
    assert "uses options.mirostat" in notes.message
    assert result.consumers[1].phase == "Pending"
    assert result.condition.reason == "Progressing"
    acked = plan(
        SPEC,
        base(),
        result.consumers,
        result.migration,
        Observations(vllm_ready=True, action=Action("a1", "ack", "notes")),
        T0,
    )
    assert acked.consumers[0].phase == "Progressing"
    assert acked.consumers[0].features is not None
    assert acked.consumers[0].features.acknowledged == ["mirostat", "tools"]
    record = acked.migration.last_action
    assert record is not None and record.result == "Done"
    assert record.message == "notes: acknowledged mirostat, tools; it may start"


def test_ack_is_rejected_when_there_is_nothing_to_acknowledge() -> None:
    result = plan(
        SPEC,
        base(),
        [running("notes", 1, 10)],
        MigrationStatus(spec_hash=HASH),
        Observations(vllm_ready=True, action=Action("a1", "ack", "notes")),
        T0,
    )
    record = result.migration.last_action
    assert record is not None and record.result == "Rejected"
    assert "ack applies to a held consumer" in record.message


def test_embeddings_held_on_ollama_keep_the_migration_from_completed() -> None:
    """Every consumer migrated, but their embeddings stay on Ollama for their vectors: the
    migration says so instead of Completed, with the figure."""
    failed = check(EMB, "Fail", 0.41)
    result = plan(
        EMB,
        base(EMB),
        [migrated("notes"), migrated("rag")],
        with_vectors(failed),
        Observations(vllm_ready=True),
        at(5),
    )
    assert result.condition.triple() == (
        "False",
        "VectorsDiffer",
        "notes, rag: embeddings stay on Ollama: lowest cosine 0.41",
    )
    assert result.migration.vectors == failed
    passed = plan(
        EMB,
        base(EMB),
        result.consumers,
        with_vectors(check(EMB, "Pass", 0.999)),
        Observations(vllm_ready=True),
        at(6),
    )
    assert passed.condition.reason == "Completed"
    assert [c.embeddings.weight for c in passed.consumers if c.embeddings] == [100, 100]
    assert [e.reason for e in passed.events] == ["EmbeddingsMoved", "EmbeddingsMoved"]
