"""The migration planner: `(spec, status, observations, now) -> plan`. Pure: no I/O, no
clock, no randomness, so every transition is a table-driven unit test.

Status is the state machine. Each consumer's phase, step, step start, sample counters and
last sample time are read from the previous status and written back in the plan, never
rebuilt from observations alone, so an operator restarted at any moment resumes exactly where
it stood: a step is never repeated or skipped, and a burst of reconciliations cannot sample a
step twice within one interval.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from inferops.api.migration import IN_PROGRESS, STOPPED, Migration, seconds
from inferops.api.spec import InferenceBackendSpec
from inferops.api.status import (
    ActionRecord,
    ConsumerPhase,
    ConsumerStatus,
    FeatureReport,
    MigrationStatus,
    VectorCheck,
    WatchStatus,
)
from inferops.migration import analysis, comparison, holds, shadow, vectors
from inferops.migration.figures import Figures

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# How soon to look again while waiting for routers to serve a new weight.
SERVED_POLL_SECONDS = 1.0


FRESH_STEP: dict[str, object] = {
    "step_started_at": None,
    "last_sample_at": None,
    "passed_samples": 0,
    "failed_samples": 0,
    "inconclusive_samples": 0,
    "shadow": None,
}
"""What a step's start (or a return to the queue) resets of a consumer's status."""


def stamp(now: datetime) -> str:
    return now.strftime(TIME_FORMAT)


def parse_time(value: str) -> datetime:
    return datetime.strptime(value, TIME_FORMAT).replace(tzinfo=None)


@dataclass(frozen=True)
class Action:
    """A one-shot request from the action annotation."""

    id: str
    action: str
    consumer: str = ""


@dataclass(frozen=True)
class Observations:
    """What the executor read before planning."""

    vllm_ready: bool
    """vLLM has at least one ready pod."""
    served: Mapping[str, int] | None = None
    """The weight per consumer that every ready router serves; None when unknown (routers
    disagree, or cannot be asked)."""
    figures: Mapping[str, Figures] = field(default_factory=dict)
    """Samples taken for the consumers that `due_samples` named."""
    action: Action | None = None
    """A request in the action annotation, if its id is not acknowledged yet."""
    features: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Per Pending consumer, the requests seen using each feature (`inferops.api.features`
    names); a consumer missing here is not known (its last report stands)."""
    vectors: VectorCheck | None = None
    """Both engines' vectors compared in this pass (`migration.vectors.due` said so)."""
    routes: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Per Pending consumer, and per consumer sampled now, the requests seen on each router
    route (`inferops.api.routing.ROUTE_KINDS`); a consumer missing here is not known."""


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to emit on the resource."""

    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class MigratingCondition:
    status: Literal["True", "False"]
    reason: str
    message: str

    def triple(self) -> tuple[Literal["True", "False"], str, str]:
        return self.status, self.reason, self.message


@dataclass(frozen=True)
class Plan:
    consumers: list[ConsumerStatus]
    """Every consumer's new status, live weight included, in spec order."""
    migration: MigrationStatus
    condition: MigratingCondition
    events: list[Event]
    requeue_after: float | None
    """Seconds until something is due (a sample, the end of a pause or hold-down)."""
    scale_down_ollama: bool
    failover_message: str | None
    """Set while every consumer is failed over to Ollama: the reason the resource is
    Degraded."""
    watch_message: str | None = None
    """Set while a migrated consumer fails its watch: the reason the resource is Degraded."""

    @property
    def weights(self) -> dict[str, int]:
        return {c.name: c.weight for c in self.consumers}


def spec_hash(migration: Migration) -> str:
    """Steps and gates: what, when edited, restarts the consumer in progress."""
    doc = {"steps": [s.dump() for s in migration.steps], "analysis": migration.analysis.dump()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def first_step(migration: Migration, api: str) -> int:
    """The index of a consumer's first step. Embeddings move 0 -> 100 in one step: vectors
    of two models are not comparable (a shadow step before it compares them)."""
    if api == "embeddings" and migration.steps[0].shadow is None:
        return len(migration.steps) - 1
    return 0


def next_step(migration: Migration, api: str, at: int) -> int:
    """The index of the step after the step of index `at`: embeddings go from their shadow
    step straight to 100%."""
    return len(migration.steps) - 1 if api == "embeddings" else at + 1


def index(state: ConsumerStatus) -> int:
    """The index in `spec.migration.steps` of a consumer's step. Status holds the step's
    number, counted from 1 like Events, messages and `kubectl ib` count it."""
    assert state.step is not None
    return state.step - 1


def _step_weight(migration: Migration, state: ConsumerStatus) -> int:
    if state.phase == "Migrated":
        return 100
    if state.phase in IN_PROGRESS and state.step is not None:
        return migration.steps[index(state)].live_weight
    return 0


def _sample_due_at(migration: Migration, state: ConsumerStatus) -> datetime | None:
    """When the current step's next sample is due (or a migrated consumer's next watch
    sample); None when it cannot be sampled yet."""
    interval = timedelta(seconds=seconds(migration.analysis.interval))
    if state.phase == "Migrated" and migration.watch.enabled:
        if state.last_sample_at is None:
            return datetime.min  # adopted at 100%: watched from now on
        return parse_time(state.last_sample_at) + interval
    if state.phase not in IN_PROGRESS or state.step_started_at is None:
        return None
    if state.last_sample_at is not None:
        return parse_time(state.last_sample_at) + interval
    delay = timedelta(seconds=seconds(migration.analysis.initial_delay))
    return parse_time(state.step_started_at) + delay + interval


def due_samples(
    spec: InferenceBackendSpec, consumers: list[ConsumerStatus], failover: bool, now: datetime
) -> dict[str, float]:
    """Consumers whose step is due for a sample, with the window (seconds) to read."""
    migration = spec.migration
    if migration is None or failover:
        return {}
    window = seconds(migration.analysis.interval)
    return {
        c.name: window
        for c in consumers
        if (due := _sample_due_at(migration, c)) is not None and due <= now
    }


class _Planner:
    """One planning pass; holds the pass' inputs and collects events."""

    def __init__(
        self,
        spec: InferenceBackendSpec,
        migration: Migration,
        previous: MigrationStatus | None,
        obs: Observations,
        now: datetime,
    ) -> None:
        self.spec = spec
        self.m = migration
        self.prev = previous or MigrationStatus()
        self.obs = obs
        self.now = now
        self.at = stamp(now)
        self.events: list[Event] = []
        self.wakeups: list[datetime] = []
        self.api = {c.name: c.api for c in spec.consumers}
        self.vectors = obs.vectors or self.prev.vectors
        self.served = analysis.vllm_kinds(spec)

    def event(self, kind: str, reason: str, message: str) -> None:
        self.events.append(Event(kind, reason, message))

    # Transitions of one consumer. Each returns the new state.

    def start(self, c: ConsumerStatus, at: int | None = None) -> ConsumerStatus:
        """Starts the step of index `at` (default: the consumer's first)."""
        at = first_step(self.m, self.api[c.name]) if at is None else at
        weight = self.m.steps[at].live_weight
        what = "a shadow step (0%, answers compared)" if self.m.steps[at].shadow else f"{weight}%"
        self.event("Normal", "StepStarted", f"{c.name}: step {at + 1} at {what}")
        started = c.model_copy(
            update={
                **FRESH_STEP,
                "phase": "Progressing",
                "step": at + 1,
                "weight": weight,
                "message": f"waiting for every router to serve {weight}%",
            }
        )
        return started.model_copy(update={"phase": self.phase(started)})

    def stop(self, c: ConsumerStatus, phase: str, reason: str, message: str) -> ConsumerStatus:
        self.event("Warning", reason, f"{c.name}: {message}")
        return c.model_copy(
            update={
                "phase": phase,
                "weight": 0,
                "step_started_at": None,
                "paused": False,
                "message": message,
            }
        )

    def migrated(self, c: ConsumerStatus, message: str) -> ConsumerStatus:
        self.event("Normal", "Migrated", f"{c.name}: {message}")
        return c.model_copy(
            update={
                "phase": "Migrated",
                "step": len(self.m.steps),
                "weight": 100,
                "step_started_at": None,
                "paused": False,
                "message": message,
                "watch": WatchStatus() if self.m.watch.enabled else None,
            }
        )

    def queue(self, c: ConsumerStatus, message: str) -> ConsumerStatus:
        """Back to Pending at 0%, to start over from the first step when list order and
        `maxParallel` allow (`progress` starts it, possibly in this very pass)."""
        return c.model_copy(
            update={
                **FRESH_STEP,
                "phase": "Pending",
                "step": None,
                "weight": 0,
                "paused": False,
                "message": message,
                # A new migration: its comparison starts over too.
                "comparison": None,
                "watch": None,
            }
        )

    def held(self, c: ConsumerStatus) -> bool:
        return c.paused or self.m.paused

    def phase(self, c: ConsumerStatus) -> ConsumerPhase:
        """An in-progress consumer's phase: Paused while held (by `kubectl ib pause` or
        `spec.migration.paused`) or on a step that waits for a promote, from the moment the
        step is written, before every router serves it too."""
        step = self.m.steps[index(c)]
        waits_for_promote = step.pause is not None and step.pause.duration is None
        return "Paused" if self.held(c) or waits_for_promote else "Progressing"

    # The pass.

    def adopt(self, base: ConsumerStatus, prev: ConsumerStatus | None) -> ConsumerStatus:
        """A consumer's previous state, or its first one under this migration: one already
        at 100% counts as migrated, any other starts from 0% when its turn comes."""
        if prev is None or prev.phase == "Manual":
            if prev is not None and prev.weight == 100:
                return base.model_copy(
                    update={
                        "phase": "Migrated",
                        "weight": 100,
                        "step": len(self.m.steps),
                        "message": "at 100% when the migration began",
                    }
                )
            return base.model_copy(update={"phase": "Pending", "weight": 0, "message": ""})
        return prev.model_copy(update={"service": base.service, "endpoint": base.endpoint})

    def restart_on_edit(self, c: ConsumerStatus) -> ConsumerStatus:
        """A consumer in progress restarts at its first step (it holds its place among the
        `maxParallel`); a stopped one is queued, so it starts only when its turn comes."""
        if c.phase in IN_PROGRESS:
            self.event("Normal", "SpecChanged", f"{c.name}: steps or gates changed, restarting")
            return self.start(c.model_copy(update={"paused": False}))
        if c.phase in STOPPED:
            self.event(
                "Normal",
                "SpecChanged",
                f"{c.name}: steps or gates changed, starts over when its turn comes",
            )
            return self.queue(c, "steps or gates changed: starts over from its first step")
        return c

    def act(self, states: list[ConsumerStatus], action: Action) -> ActionRecord:
        """Applies a one-shot action to `states` in place; the record says what happened."""
        by_name = {c.name: i for i, c in enumerate(states)}

        def record(
            result: Literal["Done", "Rejected"], message: str, consumer: str = ""
        ) -> ActionRecord:
            return ActionRecord(
                id=action.id,
                action=action.action,
                consumer=consumer,
                result=result,
                message=message,
                time=self.at,
            )

        name = action.consumer or next(
            (c.name for c in states if c.phase in (IN_PROGRESS + STOPPED)), ""
        )
        if name not in by_name:
            return record(
                "Rejected",
                f"no consumer {name!r} to act on" if name else "no consumer is in progress",
            )
        i = by_name[name]
        c = states[i]
        if action.action in ("promote", "promote-full", "pause", "resume"):
            if c.phase not in IN_PROGRESS:
                return record("Rejected", f"{name} is {c.phase}, not in progress", name)
            if self.prev.failover and action.action.startswith("promote"):
                return record("Rejected", "vLLM is failed over: nothing to promote", name)
        if action.action == "promote":
            total = len(self.m.steps)
            if index(c) + 1 >= total:
                # Skipping the analysis at 100% is what --full says out loud; a second promote
                # typed to make sure the first one worked must not do it silently.
                return record(
                    "Rejected",
                    f"{name} is at its last step ({total}/{total}, {c.weight}%): its analysis "
                    "at 100% marks it Migrated; promote --full marks it Migrated now, "
                    "without that analysis",
                    name,
                )
            states[i] = self.start(c.model_copy(update={"paused": False}), index(c) + 1)
            weight = states[i].weight
            return record(
                "Done", f"{name} promoted to {weight}% (step {states[i].step}/{total})", name
            )
        if action.action == "promote-full":
            states[i] = self.migrated(c, "promoted to 100% by hand, without the analysis at 100%")
            return record(
                "Done",
                f"{name} promoted to 100% and marked Migrated, without the analysis at 100%",
                name,
            )
        if action.action == "pause":
            paused = c.model_copy(update={"paused": True})
            states[i] = paused.model_copy(update={"phase": self.phase(paused)})
            return record("Done", f"{name} paused at {c.weight}%", name)
        if action.action == "resume":
            resumed = c.model_copy(update={"paused": False})
            states[i] = resumed.model_copy(update={"phase": self.phase(resumed)})
            return record("Done", f"{name} resumed", name)
        if action.action == "abort":
            if c.phase == "Pending" or c.phase in STOPPED:
                return record("Rejected", f"{name} is {c.phase}: at 0% already", name)
            states[i] = self.stop(c, "Aborted", "Aborted", "aborted by hand: back to 0%")
            return record("Done", f"{name} aborted, back to 0%", name)
        if action.action == "ack":
            report = c.features
            if c.phase != "Pending" or report is None or not report.findings:
                why = f"is {c.phase}" if c.phase != "Pending" else "uses nothing to acknowledge"
                return record("Rejected", f"{name} {why}: ack applies to a held consumer", name)
            names = sorted({*report.acknowledged, *(f.feature for f in report.findings)})
            acked = report.model_copy(update={"acknowledged": names, "held": False})
            states[i] = c.model_copy(update={"features": acked})
            listed = ", ".join(f.feature for f in report.findings)
            return record("Done", f"{name}: acknowledged {listed}; it may start", name)
        if action.action == "retry":
            if c.phase not in STOPPED:
                return record(
                    "Rejected",
                    f"{name} is {c.phase}: only a rolled back or aborted consumer can be retried",
                    name,
                )
            # Queued, not started here: `progress` starts it when list order and maxParallel
            # allow, like any Pending consumer (and `run` words the record accordingly).
            states[i] = self.queue(c, "retried: starts over from its first step")
            return record("Done", f"{name} starts over from its first step", name)
        return record("Rejected", f"unknown action {action.action!r}", name)

    def failover(self, states: list[ConsumerStatus]) -> tuple[bool, str | None]:
        """Whether consumers stay on Ollama; updates the hold-down clock."""
        prev = self.prev
        if not self.obs.vllm_ready:
            # A consumer at a shadow step is in progress at weight 0: it fails over too,
            # or its step would pass on to a live weight while vLLM has no ready pod.
            if prev.failover or any(c.weight > 0 or c.phase in IN_PROGRESS for c in states):
                if not prev.failover:
                    self.event(
                        "Warning",
                        "FailedOver",
                        "vLLM has no ready pod: every consumer is on Ollama",
                    )
                return True, None
            return False, None
        if not prev.failover:
            return False, None
        since = parse_time(prev.vllm_ready_since) if prev.vllm_ready_since else self.now
        end = since + timedelta(seconds=seconds(self.m.failover_hold_down))
        if self.now >= end:
            self.event(
                "Normal",
                "Restored",
                f"vLLM ready for {self.m.failover_hold_down}: weights restored",
            )
            return False, None
        self.wakeups.append(end)
        return True, stamp(since)

    def sample(self, c: ConsumerStatus, figures: Figures) -> ConsumerStatus:
        step = c.step
        assert step is not None
        subject = analysis.Subject(
            step=step,
            at_full=self.m.steps[index(c)].weight == 100,
            embeddings=self.api[c.name] == "embeddings",
            baseline=c.baseline,
            served=self.served,
        )
        update: dict[str, object] = {"last_sample_at": self.at, "routes": self.routes(c, keep=True)}
        if (mirrored := self.m.steps[index(c)].shadow) is not None:
            totals = shadow.accumulate(c.shadow, figures)
            result = shadow.judge(mirrored, totals, step, self.at)
            if figures.problem:
                result = result.model_copy(
                    update={
                        "verdict": "Inconclusive",
                        "message": f"no figures: {figures.problem}",
                        "gates": [],
                    }
                )
            update["shadow"] = totals
        else:
            result = analysis.judge(self.m.analysis, figures, subject, self.at)
            update["comparison"] = comparison.add(
                c.comparison,
                figures,
                with_ollama=not subject.at_full,
                seconds=seconds(self.m.analysis.interval),
                min_requests=self.m.analysis.min_requests,
                latency=not subject.embeddings,
            )
        update["last_analysis"] = result
        if result.verdict != "Inconclusive" and result.ollama and not subject.at_full:
            update["baseline"] = result.ollama
        if result.verdict == "Pass":
            update |= {"passed_samples": c.passed_samples + 1, "inconclusive_samples": 0}
        elif result.verdict == "Fail":
            update |= {"failed_samples": c.failed_samples + 1, "inconclusive_samples": 0}
            self.event("Warning", "AnalysisFailed", f"{c.name}: {result.message}")
        else:
            update["inconclusive_samples"] = c.inconclusive_samples + 1
        c = c.model_copy(update=update)
        limits = self.m.analysis
        if c.failed_samples > limits.failure_limit:
            return self.stop(
                c,
                "RolledBack",
                "RolledBack",
                f"rolled back to 0% at step {step}: {result.message}",
            )
        if c.inconclusive_samples >= limits.inconclusive_limit:
            if limits.on_inconclusive == "Rollback":
                return self.stop(
                    c,
                    "RolledBack",
                    "RolledBack",
                    f"rolled back: {c.inconclusive_samples} inconclusive samples "
                    f"({result.message})",
                )
            return c.model_copy(
                update={
                    "message": f"holding at {c.weight}%: "
                    f"{c.inconclusive_samples} inconclusive samples in a row "
                    f"({result.message})"
                }
            )
        return c

    def watch(self, c: ConsumerStatus) -> ConsumerStatus:
        """Runs one migrated consumer's watch: a sample when due, on the same gates as its
        analysis at 100% (against the baseline kept from its migration)."""
        if not self.m.watch.enabled:
            return c.model_copy(update={"watch": None})
        c = c if c.watch is not None else c.model_copy(update={"watch": WatchStatus()})
        due = _sample_due_at(self.m, c)
        figures = self.obs.figures.get(c.name)
        if figures is not None and due is not None and due <= self.now:
            c = self.watch_sample(c, figures)
        if c.phase == "Migrated" and (due := _sample_due_at(self.m, c)) is not None:
            self.wakeups.append(max(due, self.now))
        return c

    def watch_sample(self, c: ConsumerStatus, figures: Figures) -> ConsumerStatus:
        watch = c.watch or WatchStatus()
        subject = analysis.Subject(
            step=len(self.m.steps),
            at_full=True,
            embeddings=self.api[c.name] == "embeddings",
            baseline=c.baseline,
            served=self.served,
        )
        result = analysis.judge(self.m.analysis, figures, subject, self.at)
        update: dict[str, object] = {"last_sample_at": self.at, "last_analysis": result}
        samples = watch.samples + 1
        if result.verdict == "Inconclusive":
            # Neither sets nor clears a failure: no data is no verdict.
            watch = watch.model_copy(update={"samples": samples})
            return c.model_copy(update=update | {"watch": watch})
        if result.verdict == "Pass":
            if watch.failing:
                self.event("Normal", "WatchRecovered", f"{c.name}: every gate passes again")
            watch = WatchStatus(samples=samples, message=result.message)
            message = "migrated; watched: every gate passed"
            return c.model_copy(update=update | {"watch": watch, "message": message})
        if not watch.failing:
            self.event(
                "Warning", "WatchFailed", f"{c.name}: migrated, but fails a gate: {result.message}"
            )
        watch = WatchStatus(
            failing=True,
            since=watch.since if watch.failing else self.at,
            failed_samples=watch.failed_samples + 1,
            samples=samples,
            message=result.message,
        )
        c = c.model_copy(
            update=update
            | {"watch": watch, "message": f"migrated, but fails a gate: {result.message}"}
        )
        limit = self.m.analysis.failure_limit
        if self.m.watch.on_failure == "Rollback" and watch.failed_samples > limit:
            return self.stop(
                c,
                "RolledBack",
                "RolledBack",
                f"rolled back to 0% by the watch after migration "
                f"({watch.failed_samples} failed samples in a row): {result.message}",
            )
        return c

    def advance(self, c: ConsumerStatus) -> ConsumerStatus:
        """Runs one consumer in progress: step start, sample, then the next step if due."""
        if c.step_started_at is None:
            served = self.obs.served
            if served is None or served.get(c.name) != c.weight:
                self.wakeups.append(self.now + timedelta(seconds=SERVED_POLL_SECONDS))
                message = f"waiting for every router to serve {c.weight}%"
                if self.held(c):
                    message += ": paused (automatic rollback still acts)"
                return c.model_copy(update={"phase": self.phase(c), "message": message})
            c = c.model_copy(update={"step_started_at": self.at})
        figures = self.obs.figures.get(c.name)
        due = _sample_due_at(self.m, c)
        if figures is not None and due is not None and due <= self.now:
            c = self.sample(c, figures)
            if c.phase not in IN_PROGRESS:
                return c
        at, started = index(c), c.step_started_at
        assert started is not None
        step = self.m.steps[at]
        held = self.held(c)
        c = c.model_copy(update={"phase": self.phase(c)})
        stalled = c.inconclusive_samples >= self.m.analysis.inconclusive_limit
        if not stalled:
            c = c.model_copy(update={"message": self.describe(c)})
        if (due := _sample_due_at(self.m, c)) is not None:
            self.wakeups.append(due)
        if held or stalled or c.passed_samples < 1:
            return c
        if step.pause is not None:
            if step.pause.duration is None:
                return c  # a human gate: only a promote moves on
            end = parse_time(started) + timedelta(seconds=seconds(step.pause.duration))
            if self.now < end:
                self.wakeups.append(end)
                return c
        if at + 1 >= len(self.m.steps):
            return self.migrated(c, "analysis passed at 100%")
        return self.start(c, next_step(self.m, self.api[c.name], at))

    def describe(self, c: ConsumerStatus) -> str:
        where = f"step {c.step}/{len(self.m.steps)} at {c.weight}%"
        if self.m.steps[index(c)].shadow is not None:
            where += " (shadow)"
        if c.paused or self.m.paused:
            return f"{where}: paused (automatic rollback still acts)"
        step = self.m.steps[index(c)]
        if step.pause and step.pause.duration is None and c.passed_samples:
            return f"{where}: analysis passed, waiting for promote"
        return f"{where}: {c.passed_samples} passed, {c.failed_samples} failed samples"

    def run(self, base: list[ConsumerStatus], previous: Mapping[str, ConsumerStatus]) -> Plan:
        digest = spec_hash(self.m)
        states = [self.adopt(b, previous.get(b.name)) for b in base]
        if self.prev.spec_hash and self.prev.spec_hash != digest:
            states = [self.restart_on_edit(c) for c in states]
        # A step number this migration does not have: a status written by a build that
        # counted steps from 0, at its first step. Start that step again rather than guess.
        states = [
            self.start(c)
            if c.phase in IN_PROGRESS and not 1 <= (c.step or 0) <= len(self.m.steps)
            else c.model_copy(update={"step": len(self.m.steps)})
            if c.phase == "Migrated"
            else c
            for c in states
        ]
        last_action = self.prev.last_action
        action = self.obs.action
        handled: ActionRecord | None = None
        if action is not None and (last_action is None or last_action.id != action.id):
            handled = last_action = self.act(states, action)

        failed_over, ready_since = self.failover(states)
        if not failed_over:
            if self.prev.failover:  # restored: every step waits for routers again
                states = [
                    c.model_copy(
                        update={"weight": _step_weight(self.m, c), "step_started_at": None}
                    )
                    for c in states
                ]
            states = self.progress(states)
        else:
            states = [
                c.model_copy(
                    update={
                        "weight": 0,
                        "step_started_at": None,
                        "last_sample_at": None,
                        "phase": self.phase(c) if c.phase in IN_PROGRESS else c.phase,
                    }
                )
                for c in states
            ]

        self.checked()
        states = self.embeddings(states)
        if handled is not None:
            last_action = handled = self.worded(handled, states, failed_over)
            kind = "Normal" if handled.result == "Done" else "Warning"
            self.event(kind, f"Action{handled.result}", f"{handled.action}: {handled.message}")

        migrated = sum(c.phase == "Migrated" for c in states)
        # "-" rather than empty: kubectl would print an empty cell and shift the columns.
        current = ",".join(f"{c.name}@{c.weight}%" for c in states if c.phase in IN_PROGRESS)
        current = current or "-"
        status = MigrationStatus(
            spec_hash=digest,
            migrated=f"{migrated}/{len(states)}",
            current=current,
            last_action=last_action,
            failover=failed_over,
            vllm_ready_since=ready_since,
            vectors=vectors.current(self.spec, self.vectors),
        )
        done = bool(states) and migrated == len(states)
        wake = min(self.wakeups, default=None)
        return Plan(
            consumers=states,
            migration=status,
            condition=self.condition(states, failed_over),
            events=self.events,
            requeue_after=None if wake is None else max((wake - self.now).total_seconds(), 0.1),
            scale_down_ollama=done
            and not failed_over
            and self.m.after_migration == "ScaleDownOllama",
            failover_message="vLLM has no ready pod: every consumer is on Ollama"
            if failed_over and not self.obs.vllm_ready
            else "vLLM is ready again: consumers stay on Ollama for the hold-down time"
            if failed_over
            else None,
            watch_message=None if failed_over else watch_failing(states),
        )

    def worded(
        self, record: ActionRecord, states: list[ConsumerStatus], failed_over: bool
    ) -> ActionRecord:
        """A retry's record once the pass is over: started, or queued and why."""
        if record.action != "retry" or record.result != "Done":
            return record
        i = next(i for i, c in enumerate(states) if c.name == record.consumer)
        if states[i].phase != "Pending":
            return record
        message = (
            f"{record.consumer} queued: it starts over from its first step when its turn "
            f"comes ({self.why_waiting(states, i, failed_over)})"
        )
        return record.model_copy(update={"message": message})

    def why_waiting(self, states: list[ConsumerStatus], i: int, failed_over: bool) -> str:
        """Why the Pending consumer `states[i]` did not start in this pass."""
        if failed_over:
            return "vLLM is failed over: every consumer is on Ollama"
        if not self.obs.vllm_ready:
            return "vLLM has no ready pod"
        held = states[i].features
        if (held is not None and held.held) or self.vector_hold(states[i]):
            return states[i].message
        if self.m.paused:
            return "spec.migration.paused is set"
        if before := [c for c in states[:i] if c.phase in ("Pending", *STOPPED)]:
            return f"{before[0].name} before it in the list is {before[0].phase}"
        moving = [c.name for c in states if c.phase in IN_PROGRESS]
        return f"maxParallel is {self.m.max_parallel}; in progress: {', '.join(moving)}"

    def routes(self, c: ConsumerStatus, keep: bool) -> list[str]:
        """The routes `c` was seen using: those counted now, with (`keep`: during its
        migration, whose probes send only routes already listed) the ones listed before."""
        seen = self.obs.routes.get(c.name)
        if seen is None:
            return c.routes
        now = {route for route, count in seen.items() if count > 0}
        return sorted(now | set(c.routes) if keep else now)

    def report(self, c: ConsumerStatus) -> ConsumerStatus:
        """A Pending consumer's features vLLM would not honour (`migration.holds`), and
        whether they hold it at 0%. Without new counts the last report stands."""
        c = c.model_copy(update={"routes": self.routes(c, keep=False)})
        used = self.obs.features.get(c.name)
        before = c.features or FeatureReport()
        if used is None:
            return c
        found = holds.findings(self.spec, used)
        waiting = holds.unacknowledged(found, before.acknowledged)
        report = FeatureReport(findings=found, acknowledged=before.acknowledged, held=bool(waiting))
        if not found and not before.acknowledged:
            return c.model_copy(update={"features": None})
        update: dict[str, object] = {"features": report}
        if waiting:
            what = "; ".join(f.message for f in waiting)
            message = (
                f"held at 0%: {what}. Change the spec where a fix is named, or accept with "
                f"`kubectl ib ack <backend> {c.name}`"
            )
            if not before.held or before.findings != found:
                self.event("Warning", "FeaturesNotHonoured", f"{c.name}: {message}")
            update["message"] = message
        elif before.held:
            update["message"] = ""
        return c.model_copy(update=update)

    def vector_hold(self, c: ConsumerStatus) -> str | None:
        """Why a Pending consumer waits for its vectors (`migration.vectors.holds`); the
        message goes to its status unless features hold it already (they say more)."""
        if c.phase != "Pending":
            return None
        return vectors.holds(self.spec, self.api[c.name], self.vectors)

    def checked(self) -> None:
        """An Event for a vector check of this pass whose verdict is news."""
        new = self.obs.vectors
        if new is None:
            return
        before = vectors.current(self.spec, self.prev.vectors)
        if before is not None and before.verdict == new.verdict:
            return
        if new.verdict == "Fail":
            self.event("Warning", "VectorsDiffer", f"embeddings stay on Ollama: {new.message}")
        elif new.verdict == "Pass":
            self.event("Normal", "VectorsAlike", f"embeddings may move to vLLM: {new.message}")

    def embeddings(self, states: list[ConsumerStatus]) -> list[ConsumerStatus]:
        """Each consumer's embeddings weight (with spec.vllm.embeddings), decided apart from
        its chat: it follows the consumer's live weight once the vectors agree."""
        out = []
        for c in states:
            decided = vectors.embeddings_status(self.spec, c, self.vectors)
            before = c.embeddings.weight if c.embeddings is not None else 0
            after = decided.weight if decided is not None else 0
            if after != before:
                where = "vLLM" if after else "Ollama"
                self.event(
                    "Normal",
                    "EmbeddingsMoved",
                    f"{c.name}: embeddings to {where} ({decided.message if decided else ''})",
                )
            c = c.model_copy(update={"embeddings": decided})
            hold = self.vector_hold(c)
            if hold is not None and not (c.features is not None and c.features.held):
                c = c.model_copy(update={"message": hold})
            out.append(c)
        return out

    def progress(self, states: list[ConsumerStatus]) -> list[ConsumerStatus]:
        # Every consumer in progress moves first, so one that finishes or rolls back in this
        # pass frees its place for a Pending one in this same pass, not the next (the pass
        # is then a fixed point: planning again from its result starts nothing).
        moved = [
            self.advance(c)
            if c.phase in IN_PROGRESS
            else self.watch(c)
            if c.phase == "Migrated"
            else c
            for c in states
        ]
        out: list[ConsumerStatus] = []
        blocked = False  # an earlier consumer is not migrated and not moving
        for i, c in enumerate(moved):
            if c.phase == "Pending":
                c = self.report(c)
            vector_hold = self.vector_hold(c)
            if (
                c.phase == "Pending"
                and vector_hold is None
                and not (c.features is not None and c.features.held)
                and not blocked
                and self.obs.vllm_ready
                and not self.m.paused
                # In progress: those before it and those after it (a consumer inserted
                # before one in progress waits for a free place).
                and sum(o.phase in IN_PROGRESS for o in out + moved[i + 1 :]) < self.m.max_parallel
            ):
                c = self.advance(self.start(c))
            out.append(c)
            blocked = blocked or c.phase in ("Pending", *STOPPED)
        return out

    def vectors_differ(self, states: list[ConsumerStatus]) -> str | None:
        """The consumers whose embeddings stay on Ollama for their vectors, in words."""
        held = [c.name for c in states if _held_embeddings(c) or self.vector_hold(c)]
        if not held:
            return None
        why = vectors.why_not(self.spec, self.vectors)
        return f"{', '.join(held)}: embeddings stay on Ollama: {why}"

    def condition(self, states: list[ConsumerStatus], failed_over: bool) -> MigratingCondition:
        def first(*phases: str) -> ConsumerStatus | None:
            return next((c for c in states if c.phase in phases), None)

        if failed_over:
            return MigratingCondition("False", "FailedOver", "every consumer is on Ollama")
        if not states:
            return MigratingCondition("False", "NoConsumers", "spec.consumers is empty")
        if stopped := first(*STOPPED):
            return MigratingCondition("False", stopped.phase, f"{stopped.name}: {stopped.message}")
        limit = self.m.analysis.inconclusive_limit
        if stalled := next(
            (c for c in states if c.inconclusive_samples >= limit and c.phase in IN_PROGRESS), None
        ):
            return MigratingCondition(
                "False", "AnalysisInconclusive", f"{stalled.name}: {stalled.message}"
            )
        if paused := first("Paused"):
            return MigratingCondition("True", "Paused", f"{paused.name}: {paused.message}")
        if moving := first("Progressing"):
            return MigratingCondition("True", "Progressing", f"{moving.name}: {moving.message}")
        if failing := watch_failing(states):
            return MigratingCondition("False", "WatchFailed", failing)
        if differ := self.vectors_differ(states):
            return MigratingCondition("False", "VectorsDiffer", differ)
        if states and all(c.phase == "Migrated" for c in states):
            return MigratingCondition("False", "Completed", "every consumer is on vLLM")
        if not self.obs.vllm_ready:
            return MigratingCondition("False", "WaitingForVLLM", "vLLM has no ready pod yet")
        if self.m.paused:
            return MigratingCondition("True", "Paused", "spec.migration.paused is set")
        return MigratingCondition("True", "Progressing", "starting")


def _held_embeddings(c: ConsumerStatus) -> bool:
    return c.embeddings is not None and c.embeddings.held


def watch_failing(consumers: list[ConsumerStatus]) -> str | None:
    """What the migrated consumers failing their watch fail, in words; None if none does."""
    failing = [
        f"{c.name}: {c.watch.message}"
        for c in consumers
        if c.phase == "Migrated" and c.watch is not None and c.watch.failing
    ]
    return "migrated, but fails a gate: " + "; ".join(failing) if failing else None


def plan(
    spec: InferenceBackendSpec,
    base: list[ConsumerStatus],
    previous_consumers: list[ConsumerStatus],
    previous: MigrationStatus | None,
    obs: Observations,
    now: datetime,
) -> Plan:
    """The migration's next state. `base` holds each consumer of the spec with its name,
    Service and endpoint; the previous status supplies everything else."""
    assert spec.migration is not None
    planner = _Planner(spec, spec.migration, previous, obs, now)
    return planner.run(base, {c.name: c for c in previous_consumers})


__all__ = [
    "Action",
    "Event",
    "Observations",
    "Plan",
    "due_samples",
    "plan",
    "spec_hash",
    "watch_failing",
]
