"""Property-based test of the migration planner: generated specs, starting states and
sequences of what can happen to a migration (every `kubectl ib` action, analysis samples that
pass, fail or say nothing, for consumers in progress and migrated ones under watch, time
passing, routers lagging, vLLM lost and back, steps edited, features a consumer uses that
vLLM would not honour), each planned the way the executor does, with the invariants checked
after every pass:

- never more than `maxParallel` consumers in progress (Progressing or Paused);
- list order: a consumer starts only when no consumer before it is Pending, RolledBack or
  Aborted (docs/migration.md, "Planning the order of consumers");
- each consumer's live weight is its phase's (0 while failed over, and at a shadow step);
- a consumer leaves a shadow step for a live weight only after a passing sample of it, or
  by a promote;
- a consumer held for features vLLM would not honour is Pending (at 0%);
- planning again from the pass' own result, at the same instant with the same observations,
  changes nothing and emits nothing (a burst of reconciliations, or a restarted operator).

`make test` runs a fixed set of examples; `make fuzz` runs `INFEROPS_FUZZ_EXAMPLES` new ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, event, given, note
from hypothesis import strategies as st
from testsupport.spec_strategies import examples, fuzz_settings

from inferops.api.spec import InferenceBackendSpec
from inferops.api.status import ConsumerStatus, MigrationStatus
from inferops.migration.figures import EngineFigures, Figures, ShadowFigures
from inferops.migration.planner import Action, Observations, Plan, due_samples, plan, stamp

T0 = datetime(2026, 1, 1, 12, 0, 0)
NAMES = ("notes", "rag", "ner", "chat")
IN_PROGRESS = ("Progressing", "Paused")
HOLDS_BACK = ("Pending", "RolledBack", "Aborted")
STEP_SETS = (
    [{"weight": 10, "pause": {"duration": "1m"}}, {"weight": 50, "pause": {}}, {"weight": 100}],
    [{"weight": 20}, {"weight": 100}],
    [{"weight": 100}],
    [{"shadow": {"minSamples": 5, "minNoiseSamples": 2}}, {"weight": 30}, {"weight": 100}],
)
ACTIONS = ("promote", "promote-full", "pause", "resume", "abort", "retry", "ack")
# Features a consumer's requests may use: two vLLM would not honour (as the spec starts it,
# without a tool-call parser), one it honours.
FEATURES_USED = ("tools", "mirostat", "top_k")


def _engine(requests: float = 100, errors: float = 0, ttft: float = 0.2) -> EngineFigures:
    return EngineFigures(requests=requests, errors=errors, ttft_p95=ttft, tpot_p95=0.02)


# What a sample reads, by the verdict it leads to (at every step, with or without a baseline;
# at a shadow step, once its comparisons add up to `minSamples`).
FIGURES = {
    "pass": Figures(
        vllm=_engine(ttft=0.1),
        ollama=_engine(ttft=0.4),
        shadow=ShadowFigures(vllm={"exact": 3}, ollama={"exact": 1}),
    ),
    "fail": Figures(
        vllm=_engine(errors=30),
        ollama=_engine(),
        shadow=ShadowFigures(vllm={"disagree": 3}, ollama={"exact": 1}),
    ),
    "inconclusive": Figures.failed("prometheus answered HTTP 500"),
}


@dataclass(frozen=True)
class Setup:
    consumers: list[dict[str, Any]]
    steps: int
    """Index into STEP_SETS."""
    max_parallel: int
    paused: bool
    failure_limit: int
    on_inconclusive: str
    watch: dict[str, Any]
    """spec.migration.watch: migrated consumers are sampled too, and may be rolled back."""

    def spec(self, steps: int | None = None) -> InferenceBackendSpec:
        return InferenceBackendSpec.model_validate(
            {
                "model": "m",
                "vllm": {"model": "x"},
                "ollama": {"model": "y"},
                "consumers": self.consumers,
                "migration": {
                    "steps": STEP_SETS[self.steps if steps is None else steps],
                    "analysis": {
                        "interval": "10s",
                        "initialDelay": "5s",
                        "minRequests": 5,
                        "failureLimit": self.failure_limit,
                        "inconclusiveLimit": 2,
                        "onInconclusive": self.on_inconclusive,
                    },
                    "maxParallel": self.max_parallel,
                    "paused": self.paused,
                    "failoverHoldDown": "30s",
                    "watch": self.watch,
                },
            }
        )


@st.composite
def setups(draw: st.DrawFn) -> Setup:
    count = draw(st.integers(1, len(NAMES)))
    consumers = [
        {"name": name, "api": draw(st.sampled_from(["chat", "chat", "chat", "embeddings"]))}
        for name in NAMES[:count]
    ]
    return Setup(
        consumers=consumers,
        steps=draw(st.integers(0, len(STEP_SETS) - 1)),
        max_parallel=draw(st.integers(1, 3)),
        paused=draw(st.sampled_from([False, False, False, True])),
        failure_limit=draw(st.integers(0, 1)),
        on_inconclusive=draw(st.sampled_from(["Hold", "Rollback"])),
        watch=draw(
            st.sampled_from(
                [{}, {"onFailure": "Rollback"}, {"onFailure": "Rollback"}, {"enabled": False}]
            )
        ),
    )


def _consumer(name: str, **fields: Any) -> ConsumerStatus:
    return ConsumerStatus(
        name=name, service=f"b-{name}", endpoint=f"http://b-{name}", **{"weight": 0, **fields}
    )


@st.composite
def starting_states(draw: st.DrawFn, setup: Setup) -> list[ConsumerStatus]:
    """No status yet, or any state a migration can be in that keeps the invariants."""
    if draw(st.integers(0, 3)) == 0:
        return []
    spec = setup.spec()
    assert spec.migration is not None
    steps = spec.migration.steps
    states, moving = [], 0
    for c in spec.consumers:
        phase = draw(st.sampled_from(["Pending", *IN_PROGRESS, "Migrated", *HOLDS_BACK[1:]]))
        if phase in IN_PROGRESS and moving >= setup.max_parallel:
            phase = "Pending"
        if phase in IN_PROGRESS:
            moving += 1
            index = (
                draw(
                    st.sampled_from(
                        sorted({0 if steps[0].shadow else len(steps) - 1, len(steps) - 1})
                    )
                )
                if c.api == "embeddings"
                else draw(st.integers(0, len(steps) - 1))
            )
            started = draw(st.sampled_from([None, 0, 10]))
            states.append(
                _consumer(
                    c.name,
                    phase=phase,
                    step=index + 1,  # status counts steps from 1
                    weight=steps[index].live_weight,
                    paused=phase == "Paused" and draw(st.booleans()),
                    step_started_at=None
                    if started is None
                    else stamp(T0 - timedelta(seconds=started)),
                    passed_samples=draw(st.integers(0, 2)),
                )
            )
        elif phase == "Migrated":
            states.append(_consumer(c.name, phase=phase, step=len(steps), weight=100))
        elif phase == "Pending":
            states.append(_consumer(c.name, phase=phase))
        else:
            states.append(_consumer(c.name, phase=phase, step=draw(st.integers(1, len(steps)))))
    return states


def happenings(names: list[str]) -> st.SearchStrategy[tuple[Any, ...]]:
    """One thing that happens between two reconciliations. Actions are drawn three times as
    often as the rest: the states worth checking are mostly reached through them."""
    action = st.tuples(st.just("action"), st.sampled_from(ACTIONS), st.sampled_from(["", *names]))
    return st.one_of(
        action,
        action,
        action,
        st.tuples(st.just("sample"), st.sampled_from(sorted(FIGURES))),
        st.tuples(st.just("time"), st.sampled_from([1, 5, 10, 15, 31, 61])),
        st.tuples(st.just("vllm"), st.booleans()),
        st.tuples(st.just("routers lag"), st.just(True)),
        st.tuples(st.just("steps edited"), st.integers(0, len(STEP_SETS) - 1)),
        st.tuples(
            st.just("features"),
            st.sampled_from(names),
            st.frozensets(st.sampled_from(FEATURES_USED)),
        ),
    )


def in_progress(consumers: list[ConsumerStatus]) -> list[str]:
    return [c.name for c in consumers if c.phase in IN_PROGRESS]


def check(spec: InferenceBackendSpec, before: list[ConsumerStatus], after: Plan) -> None:
    migration = spec.migration
    assert migration is not None
    names = [c.name for c in after.consumers]
    assert names == [c.name for c in spec.consumers]
    moving = in_progress(after.consumers)
    assert len(moving) <= migration.max_parallel, f"in progress: {moving}"

    was = {c.name: c.phase for c in before}
    for i, c in enumerate(after.consumers):
        if c.phase in IN_PROGRESS and was.get(c.name) not in IN_PROGRESS:
            ahead = [(o.name, o.phase) for o in after.consumers[:i] if o.phase in HOLDS_BACK]
            assert not ahead, f"{c.name} started while {ahead} before it hold it back"

    for c in after.consumers:
        if after.migration.failover:
            expected = 0
        elif c.phase == "Migrated":
            expected = 100
        elif c.phase in IN_PROGRESS:
            assert c.step is not None
            assert 1 <= c.step <= len(migration.steps), f"{c.name} at step {c.step}"
            expected = migration.steps[c.step - 1].live_weight
        else:
            expected = 0
        assert c.weight == expected, f"{c.name} ({c.phase}) at {c.weight}%, expected {expected}%"
        if c.features is not None and c.features.held:
            assert c.phase == "Pending", f"{c.name} held for features but {c.phase}"


def base(spec: InferenceBackendSpec) -> list[ConsumerStatus]:
    return [_consumer(c.name) for c in spec.consumers]


@fuzz_settings(
    HealthCheck.too_slow, HealthCheck.data_too_large, max_examples=examples(200), deadline=None
)
@given(data=st.data())
def test_the_planner_keeps_parallel_limit_list_order_and_repeats_nothing(
    data: st.DataObject,
) -> None:
    setup = data.draw(setups(), label="setup")
    spec = setup.spec()
    consumers = data.draw(starting_states(setup), label="starting state")
    names = [c["name"] for c in setup.consumers]
    story = data.draw(st.lists(happenings(names), min_size=1, max_size=30), label="happenings")
    migration: MigrationStatus | None = (
        None
        if not consumers
        else MigrationStatus(
            spec_hash=plan(
                spec, base(spec), consumers, None, Observations(vllm_ready=False), T0
            ).migration.spec_hash
        )
    )
    now, vllm_ready = T0, True
    for n, happening in enumerate(story):
        kind = happening[0]
        action, figures, served = None, {}, {c.name: c.weight for c in consumers}
        features: dict[str, dict[str, float]] = {}
        if kind == "action":
            action = Action(f"a{n}", happening[1], happening[2])
        elif kind == "sample":
            failover = migration is not None and migration.failover
            due = due_samples(spec, consumers, failover, now)
            figures = {name: FIGURES[happening[1]] for name in due}
        elif kind == "time":
            now += timedelta(seconds=happening[1])
        elif kind == "vllm":
            vllm_ready = happening[1]
        elif kind == "routers lag":
            served = None
        elif kind == "steps edited":
            spec = setup.spec(happening[1])
        elif kind == "features":
            features = {happening[1]: dict.fromkeys(sorted(happening[2]), 3.0)}
        obs = Observations(
            vllm_ready=vllm_ready,
            served=served,
            figures=figures,
            action=action,
            features=features,
        )
        result = plan(spec, base(spec), consumers, migration, obs, now)
        note(
            f"{n}: {happening} -> {[(c.name, c.phase, c.step, c.weight) for c in result.consumers]}"
        )
        check(spec, consumers, result)
        if spec.migration and spec.migration.steps[0].shadow and kind != "steps edited":
            was = {c.name: c for c in consumers}
            for c in result.consumers:
                before = was.get(c.name)
                if before and before.phase in IN_PROGRESS and before.step == 1 and c.weight:
                    assert before.passed_samples or happening[:2] in (
                        ("sample", "pass"),
                        ("action", "promote"),
                        ("action", "promote-full"),
                    ), f"{c.name} left its shadow step for {c.weight}% on {happening}"

        again = plan(spec, base(spec), result.consumers, result.migration, obs, now)
        assert [c.model_dump() for c in again.consumers] == [
            c.model_dump() for c in result.consumers
        ], "planning again from the result changed a consumer"
        assert again.migration == result.migration
        assert again.events == [], again.events

        for e in result.events:
            event(e.reason)
        consumers, migration = result.consumers, result.migration
