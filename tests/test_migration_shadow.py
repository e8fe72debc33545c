"""The shadow step in the migration planner, table-driven like `test_migration_planner.py`:
one row per transition (start at 0%, collecting, inconclusive, pass into the first live
weight, fail and roll back without any live weight ever given, a failed query, embeddings),
each planned a second time from its own result to show nothing repeats; the verdict's
arithmetic against the noise floor; what the router is told to mirror."""

from __future__ import annotations

import json
from typing import Any

import pytest

from inferops.api.migration import Shadow
from inferops.api.routing import ROUTES_KEY
from inferops.api.spec import InferenceBackendSpec
from inferops.api.status import (
    ConsumerStatus,
    InferenceBackendStatus,
    MigrationStatus,
    ShadowCounts,
    ShadowStatus,
)
from inferops.builders import router as router_builder
from inferops.builders.common import Owner
from inferops.migration import shadow
from inferops.migration.figures import Figures, ShadowFigures
from inferops.migration.planner import Observations, Plan, plan, spec_hash, stamp
from inferops.migration.probe import probe_targets
from inferops.reconcile import decide
from tests.test_decide import snapshot
from tests.test_migration_planner import ANALYSIS, at, base, consumer, running

STEPS = [
    {"shadow": {"percent": 50, "minSamples": 10, "minNoiseSamples": 4, "maxAgreementDrop": 0.1}},
    {"weight": 50},
    {"weight": 100},
]


def make_spec(consumers: list[Any] | None = None, **analysis: Any) -> InferenceBackendSpec:
    return InferenceBackendSpec.model_validate(
        {
            "model": "m",
            "vllm": {"model": "x"},
            "ollama": {"model": "y"},
            "consumers": consumers or [{"name": "notes"}, {"name": "rag"}],
            "migration": {"steps": STEPS, "analysis": {**ANALYSIS, **analysis}},
        }
    )


SPEC = make_spec()
HASH = spec_hash(SPEC.migration)  # type: ignore[arg-type]
EMB = make_spec([{"name": "emb", "api": "embeddings"}])


def window(vllm: dict[str, float], ollama: dict[str, float] | None = None) -> Figures:
    """A window's figures at a shadow step: no live vLLM request, only comparisons."""
    return Figures(vllm=None, ollama=None, shadow=ShadowFigures(vllm=vllm, ollama=ollama or {}))


AGREEING = window({"exact": 8, "normalized": 2, "uncomparable": 5}, {"exact": 4})
DISAGREEING = Figures(
    vllm=None,
    ollama=None,
    shadow=ShadowFigures(
        vllm={"exact": 3, "disagree": 5, "error": 2, "dropped": 1},
        ollama={"exact": 4},
        disagreeing={"json": 6, "deterministic": 1},
    ),
)
FEW = window({"exact": 3}, {"exact": 1})
NOTHING = Figures(vllm=None, ollama=None)
BROKEN = Figures.failed("prometheus answered HTTP 500")
COLLECTED = ShadowStatus(vllm=ShadowCounts(exact=6), noise=ShadowCounts(exact=3))


def shadowing(name: str, **more: Any) -> ConsumerStatus:
    return running(name, 1, 0, **more)


Row = tuple[str, InferenceBackendSpec, list[ConsumerStatus], float, Observations, dict[str, Any]]
SERVED_0 = {"notes": 0, "rag": 0}
ROWS: list[Row] = [
    ("the first step is a shadow step: weight stays 0", SPEC, [], 0,
     Observations(vllm_ready=True, served=SERVED_0),
     {"phase": "Progressing", "step": 1, "weight": 0, "shadow": None}),
    ("too few comparisons: inconclusive, collected ones kept", SPEC,
     [shadowing("notes"), consumer("rag", phase="Pending")], 15,
     Observations(vllm_ready=True, figures={"notes": FEW}),
     {"weight": 0, "step": 1, "inconclusive_samples": 1, "passed_samples": 0,
      "shadow": {"vllm": {"exact": 3.0}, "noise": {"exact": 1.0}}}),
    ("a window without comparisons: inconclusive, nothing lost", SPEC,
     [shadowing("notes", shadow=COLLECTED), consumer("rag", phase="Pending")], 15,
     Observations(vllm_ready=True, figures={"notes": NOTHING}),
     {"weight": 0, "inconclusive_samples": 1,
      "shadow": {"vllm": {"exact": 6.0}, "noise": {"exact": 3.0}}}),
    ("a failed query: inconclusive, its window not added", SPEC,
     [shadowing("notes", shadow=COLLECTED), consumer("rag", phase="Pending")], 15,
     Observations(vllm_ready=True, figures={"notes": BROKEN}),
     {"weight": 0, "inconclusive_samples": 1,
      "shadow": {"vllm": {"exact": 6.0}, "noise": {"exact": 3.0}}}),
    ("enough agreeing comparisons: the first live weight starts", SPEC,
     [shadowing("notes", shadow=COLLECTED), consumer("rag", phase="Pending")], 15,
     Observations(vllm_ready=True, figures={"notes": AGREEING}),
     {"phase": "Progressing", "step": 2, "weight": 50, "shadow": None,
      "step_started_at": None}),
    ("vLLM agrees less than Ollama with itself: a failed sample, still at 0%", SPEC,
     [shadowing("notes", shadow=COLLECTED), consumer("rag", phase="Pending")], 15,
     Observations(vllm_ready=True, figures={"notes": DISAGREEING}),
     {"phase": "Progressing", "step": 1, "weight": 0, "failed_samples": 1}),
    ("failures past the limit roll back before any live weight", SPEC,
     [shadowing("notes", shadow=COLLECTED, failed_samples=1,
                last_sample_at=stamp(at(15))), consumer("rag", phase="Pending")], 25,
     Observations(vllm_ready=True, figures={"notes": DISAGREEING}),
     {"phase": "RolledBack", "step": 1, "weight": 0, "failed_samples": 2}),
    ("embeddings: a shadow step first", EMB, [], 0,
     Observations(vllm_ready=True, served={"emb": 0}),
     {"phase": "Progressing", "step": 1, "weight": 0}),
    ("embeddings: from the shadow step straight to 100%", EMB,
     [shadowing("emb", shadow=COLLECTED)], 15,
     Observations(vllm_ready=True, figures={"emb": AGREEING}),
     {"phase": "Progressing", "step": 3, "weight": 100}),
]  # fmt: skip


def run(row: Row) -> Plan:
    _, spec, before, now, obs, _ = row
    previous = None if not before else MigrationStatus(spec_hash=spec_hash(spec.migration))  # type: ignore[arg-type]
    return plan(spec, base(spec), before, previous, obs, at(now))


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_transition(row: Row) -> None:
    result = run(row)
    first = result.consumers[0]
    got = first.model_dump(exclude_none=False)
    expect = row[5]
    for key, value in expect.items():
        if isinstance(value, dict):
            dumped = got[key]
            assert dumped is not None, first.message
            for side, counts in value.items():
                assert {k: dumped[side][k] for k in counts} == counts, first.message
        else:
            assert got[key] == value, (key, first.message)
    # Whatever happens at a shadow step, no live weight was given before it passed.
    if expect.get("step") == 1 or expect.get("phase") == "RolledBack":
        assert result.weights[first.name] == 0


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_planning_again_from_the_result_changes_nothing_more(row: Row) -> None:
    _, spec, _, now, obs, _ = row
    first = run(row)
    again = plan(spec, base(spec), first.consumers, first.migration, obs, at(now))
    assert [c.model_dump() for c in again.consumers] == [c.model_dump() for c in first.consumers]
    assert not [e for e in again.events if e.reason in ("StepStarted", "Migrated", "RolledBack")]


def test_the_rollback_names_the_gate_and_the_figures() -> None:
    row = ROWS[
        [r[0] for r in ROWS].index("failures past the limit roll back before any live weight")
    ]
    result = run(row)
    notes = result.consumers[0]
    # 3 exact + 6 before = 9 agree of 16 compared (7 disagree or errors); Ollama 7 of 7.
    assert notes.message.startswith("rolled back to 0% at step 1: shadowAgreement 0.5625 < 0.9")
    assert "Ollama agrees with itself 1" in notes.message
    assert "16 compared" in notes.message and "5 disagree, 2 errors" in notes.message
    # What disagreed, without any content: the kinds of request.
    assert notes.message.endswith("vLLM's disagreements by kind: deterministic 1, json 6)")
    assert notes.shadow is not None
    assert notes.shadow.disagreeing == {"deterministic": 1, "json": 6}
    assert notes.last_analysis is not None
    (gate,) = notes.last_analysis.gates
    assert (gate.metric, gate.verdict, gate.value, gate.baseline, gate.threshold) == (
        "shadowAgreement",
        "Fail",
        0.5625,
        1.0,
        0.9,
    )
    assert result.condition.reason == "RolledBack"
    assert [e.reason for e in result.events if e.type == "Warning"] == [
        "AnalysisFailed",
        "RolledBack",
    ]


SPEC_SHADOW = Shadow(minSamples=10, minNoiseSamples=5, maxAgreementDrop=0.05)


@pytest.mark.parametrize(
    ("vllm", "noise", "verdict"),
    [
        # Too few comparisons on either side: no verdict, whatever they say.
        (ShadowCounts(disagree=9), ShadowCounts(exact=5), "Inconclusive"),
        (ShadowCounts(exact=10), ShadowCounts(exact=4), "Inconclusive"),
        # vLLM as good as Ollama with itself.
        (ShadowCounts(exact=9, normalized=1), ShadowCounts(exact=5), "Pass"),
        # Ollama disagrees with itself half the time: vLLM's 50% is no regression.
        (ShadowCounts(exact=5, disagree=5), ShadowCounts(exact=3, disagree=3), "Pass"),
        # Within maxAgreementDrop of the noise floor (0.95 - 0.05 = 0.9): passes at the bound.
        (ShadowCounts(exact=9, error=1), ShadowCounts(exact=19, disagree=1), "Pass"),
        # Just below it.
        (ShadowCounts(exact=89, similar=0, error=11), ShadowCounts(exact=19, disagree=1), "Fail"),
        # Errors count against vLLM; not comparable and dropped ones do not count at all.
        (ShadowCounts(exact=5, error=5), ShadowCounts(exact=5), "Fail"),
    ],
)
def test_verdict_against_the_noise_floor(
    vllm: ShadowCounts, noise: ShadowCounts, verdict: str
) -> None:
    totals = ShadowStatus(vllm=vllm, noise=noise, uncomparable=100, dropped=100)
    result = shadow.judge(SPEC_SHADOW, totals, 1, "2026-01-01T00:00:00Z")
    assert result.verdict == verdict, result.message


def test_the_router_mirrors_consumers_at_a_shadow_step_only() -> None:
    states = [shadowing("notes"), running("rag", 2, 50)]
    mirrors = shadow.mirrors(SPEC.migration, states, failover=False)
    assert list(mirrors) == ["notes"]
    assert mirrors["notes"].percent == 50 and mirrors["notes"].timeout_seconds == 60
    assert shadow.mirrors(SPEC.migration, states, failover=True) == {}
    paused = [shadowing("notes").model_copy(update={"phase": "Paused"})]
    assert list(shadow.mirrors(SPEC.migration, paused, failover=False)) == ["notes"]
    stopped = [shadowing("notes").model_copy(update={"phase": "RolledBack"})]
    assert shadow.mirrors(SPEC.migration, stopped, failover=False) == {}

    owner = Owner(name="b", namespace="ai", uid="u")
    table = router_builder.routing_table(SPEC, owner, {"vllm": True, "ollama": True}, {}, mirrors)
    by_name = {c.name: c for c in table.consumers}
    assert by_name["notes"].weight == 0 and by_name["notes"].shadow == mirrors["notes"]
    assert by_name["rag"].shadow is None
    # The mirror changes the table's revision: routers that serve it are known to mirror.
    plain = router_builder.routing_table(SPEC, owner, {"vllm": True, "ollama": True}, {})
    assert plain.revision != table.revision


def test_no_probe_at_a_shadow_step() -> None:
    """Probes are never mirrored, so they would add nothing to a shadow step's verdict and
    only load vLLM."""
    status = InferenceBackendStatus(consumers=[shadowing("notes"), running("rag", 2, 50)])
    targets = probe_targets(SPEC, "ai", status, None)
    assert list(targets) == ["rag"]
    assert targets["rag"].sends == (("chat", ("vllm", "ollama")),)


def test_the_reconciliation_writes_the_mirror_into_the_routing_table() -> None:
    """`decide`, the pure middle of a reconciliation: a consumer at its shadow step gets
    weight 0 and the mirror in the routing ConfigMap; once it has moved on, no mirror."""
    s = InferenceBackendSpec.model_validate(
        {**SPEC.dump(), "consumers": [{"name": "notes", "weight": 30}]}
    )

    def table(decision: Any) -> dict[str, Any]:
        config_map = next(o for o in decision.desired if o["kind"] == "ConfigMap")
        consumers: list[dict[str, Any]] = json.loads(config_map["data"][ROUTES_KEY])["consumers"]
        return consumers[0]

    first = decide(snapshot(s), Observations(vllm_ready=True), at(0))
    notes = table(first)
    assert notes["weight"] == 0
    assert notes["shadow"] == {
        "percent": 50.0,
        "noisePercent": 50,
        "maxConcurrent": 2,
        "timeoutSeconds": 60.0,
        "minCosine": 0.99,
        "recordContent": False,
    }
    passed = first.status.model_copy(
        update={"consumers": [running("notes", 2, 50)], "migration": first.status.migration}
    )
    later = decide(snapshot(s, passed), Observations(vllm_ready=True), at(30))
    assert table(later)["weight"] == 50 and "shadow" not in table(later)
