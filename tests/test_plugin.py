"""The kubectl plugin: rendering and request checks on canned resources (pure), and the
request/acknowledgement flow through the real CLI against the in-memory API server over HTTP
(testsupport/kubeserver.py: merge patches with the resourceVersion precondition, Status
answers), holding one InferenceBackend, with a watcher playing the operator by acknowledging
each request in status."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from testsupport.kubeserver import KubeServer
from testsupport.memkube import MemKube

from inferops.api.migration import ACTION_ANNOTATION
from inferops.api.status import InferenceBackendStatus
from inferops.kube import path
from inferops.plugin import actions, render
from inferops.plugin.__main__ import build_parser, run
from tests.conftest import make_spec

NOW = datetime(2025, 5, 1, 12, 0, 0, tzinfo=UTC)
STEPS = [{"weight": 10}, {"weight": 50, "pause": {}}, {"weight": 100}]
NAMES = ["notes", "rag", "ner"]


def ago(seconds: int) -> str:
    return datetime.fromtimestamp(NOW.timestamp() - seconds, UTC).isoformat().replace("+00:00", "Z")


def consumer(name: str, phase: str, weight: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "weight": weight,
        "service": f"llama32-{name}",
        "endpoint": f"http://llama32-{name}.ai.svc",
        "phase": phase,
        **extra,
    }


RAG_ANALYSIS = {
    "verdict": "Pass",
    "time": ago(45),
    "step": 2,
    "message": "every gate passed",
    "vllm": {"requests": 120.4, "errorRate": 0.008, "ttftP95": 0.412, "tpotP95": 0.0312},
    "ollama": {"requests": 118, "errorRate": 0.0, "ttftP95": 0.38, "tpotP95": 0.045},
    "gates": [
        {"metric": "errorRate", "verdict": "Pass", "value": 0.008, "threshold": 0.02},
        {"metric": "ttftP95", "verdict": "Pass", "value": 0.412, "threshold": 0.57},
        {"metric": "tpotP95", "verdict": "Pass", "value": 0.0312, "threshold": 0.0675},
    ],
}


def resource(
    consumers: list[dict[str, Any]] | None = None,
    *,
    migration: dict[str, Any] | None = None,
    with_migration: bool = True,
    progress: dict[str, Any] | None = None,
    annotation: dict[str, Any] | str | None = None,
) -> dict[str, Any]:
    """An InferenceBackend as the API server returns it; spec and status go through the API
    models, so a key the operator would never write fails here rather than passing silently."""
    overrides: dict[str, Any] = {"consumers": [{"name": n} for n in NAMES]}
    if with_migration:
        overrides["migration"] = migration or {"steps": STEPS}
    if consumers is None:
        consumers = [
            consumer("notes", "Migrated", 100, step=3, passedSamples=1),
            consumer(
                "rag",
                "Progressing",
                50,
                step=2,
                stepStartedAt=ago(252),
                passedSamples=2,
                inconclusiveSamples=1,
                lastAnalysis=RAG_ANALYSIS,
                message="holding step 2 until promoted",
            ),
            consumer("ner", "Pending"),
        ]
    status: dict[str, Any] = {
        "observedGeneration": 3,
        "phase": "Progressing",
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "Migrating",
                "lastTransitionTime": ago(600),
            }
        ],
        "consumers": consumers,
    }
    if with_migration:
        status["migration"] = {"migrated": "1/3", "current": "rag@50%", **(progress or {})}
    metadata: dict[str, Any] = {
        "name": "llama32",
        "namespace": "ai",
        "generation": 3,
        "resourceVersion": "100",
        "uid": "u-1",
    }
    if annotation is not None:
        text = annotation if isinstance(annotation, str) else json.dumps(annotation)
        metadata["annotations"] = {ACTION_ANNOTATION: text}
    return {
        "apiVersion": "inferops.io/v1alpha1",
        "kind": "InferenceBackend",
        "metadata": metadata,
        "spec": make_spec(**overrides).dump(),
        "status": InferenceBackendStatus.model_validate(status).dump(),
    }


# -- rendering ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-3, "0s"),
        (0, "0s"),
        (59.9, "59s"),
        (60, "1m0s"),
        (252, "4m12s"),
        (3900, "1h5m"),
        (86400 * 2 + 3 * 3600 + 7, "2d3h"),
    ],
)
def test_humanize(seconds: float, text: str) -> None:
    assert render.humanize(seconds) == text


def test_consumer_table_aligns_columns_and_counts_steps_from_one() -> None:
    assert render.consumer_table(resource(), NOW) == [
        "CONSUMER   PHASE         WEIGHT   STEP   IN-STEP   SAMPLES   LAST",
        "notes      Migrated      100%     3/3    -         1/0/0     -",
        "rag        Progressing   50%      2/3    4m12s     2/0/1     Pass",
        "ner        Pending       0%       -      -         0/0/0     -",
        "SAMPLES: passed/failed/inconclusive samples of the step (inconclusive: in a row)",
        "IN-STEP: time since every router serves the step's weight",
    ]


def test_header_names_phase_ready_progress_failover_and_last_action() -> None:
    obj = resource(
        progress={
            "failover": True,
            "vllmReadySince": ago(45),
            "lastAction": {
                "id": "a1",
                "action": "promote",
                "consumer": "rag",
                "result": "Done",
                "message": "rag promoted to step 2 (50%)",
                "time": ago(130),
            },
        }
    )
    assert render.header(obj, NOW) == [
        "InferenceBackend ai/llama32",
        "Phase:       Progressing",
        "Ready:       False (Migrating)",
        "Migrated:    1/3, in progress: rag@50%",
        "Failover:    vLLM lost every ready pod: every consumer is on Ollama; "
        "vLLM ready again for 45s (hold-down 2m)",
        "Last action: promote rag: Done 2m10s ago: rag promoted to step 2 (50%)",
    ]


def test_header_without_migration_says_weights_come_from_the_spec() -> None:
    obj = resource([consumer("notes", "Manual", 30)], with_migration=False)
    obj["metadata"]["generation"] = 4
    lines = render.header(obj, NOW)
    assert "Phase:       Progressing (for generation 3; the spec is at 4)" in lines
    assert "Migration:   none: weights are set in spec.consumers[].weight" in lines
    assert not any(line.startswith(("Migrated", "Failover", "Last action")) for line in lines)


def test_analysis_block_puts_vllm_beside_ollama_with_the_gates() -> None:
    rag = resource()["status"]["consumers"][1]
    assert render.analysis_block(rag, STEPS, NOW) == [
        "rag: step 2/3 (50%), sampled 45s ago: Pass",
        "                vLLM  Ollama  limit  gate",
        "  requests       120     118",
        "  error rate %   0.8     0.0    2.0  Pass",
        "  TTFT p95 ms    412     380    570  Pass",
        "  TPOT p95 ms     31      45     68  Pass",
        "  analysis: every gate passed",
        "  message: holding step 2 until promoted",
    ]


def test_analysis_block_names_the_request_kind_that_failed() -> None:
    """A consumer using chat and embeddings, judged kind by kind: the table keeps the
    consumer's figures as a whole, one line gives each kind's verdict, and the message and
    the rollback say which kind failed."""
    message = "embeddings: errorRate 1 > 0.01 (Ollama 0)"
    kinds = [
        {"metric": "errorRate", "verdict": "Pass", "value": 0.0, "threshold": 0.01, "kind": k}
        for k in ("chat",)
    ] + [
        {
            "metric": "errorRate",
            "verdict": "Fail",
            "value": 1,
            "threshold": 0.01,
            "kind": "embeddings",
        }
    ]
    analysis = {
        **RAG_ANALYSIS,
        "verdict": "Fail",
        "message": message,
        "gates": [*RAG_ANALYSIS["gates"], *kinds],  # type: ignore[list-item]
    }
    rolled_back = f"rolled back to 0% at step 2: {message}"
    c = consumer("rag", "RolledBack", 0, step=2, lastAnalysis=analysis, message=rolled_back)
    lines = render.analysis_block(resource([c])["status"]["consumers"][0], STEPS, NOW)
    assert lines[0] == "rag: step 2/3 (50%), sampled 45s ago: Fail"
    assert lines[3] == "  error rate %   0.8     0.0    2.0  Pass"  # as a whole
    assert lines[6:] == [
        "  by kind: chat Pass, embeddings Fail",
        f"  analysis: {message}",
        f"  message: {rolled_back}",
    ]


def test_analysis_block_at_full_weight_compares_with_the_baseline() -> None:
    analysis = {**RAG_ANALYSIS, "step": 3, "ollama": None, "gates": []}
    baseline = {"requests": 50, "errorRate": 0.01, "ttftP95": 0.4, "tpotP95": 0.0049}
    c = consumer("rag", "Progressing", 100, step=3, lastAnalysis=analysis, baseline=baseline)
    obj = resource([c])
    lines = render.analysis_block(obj["status"]["consumers"][0], STEPS, NOW)
    assert lines[0] == "rag: step 3/3 (100%), sampled 45s ago: Pass"
    assert lines[1].split() == ["vLLM", "Ollama*", "limit", "gate"]
    assert lines[5].split() == ["TPOT", "p95", "ms", "31", "4.9", "-", "-"]
    assert "  * Ollama: the baseline from the last conclusive sample" in lines


def test_analysis_block_of_a_migrated_consumer_shows_its_watch_and_comparison() -> None:
    """The line users migrate for, kept after the migration, and the watch that follows it
    (issue 16, items 6 and 7)."""
    analysis = {
        **RAG_ANALYSIS,
        "step": 3,
        "verdict": "Fail",
        "ollama": None,
        "gates": [],
        "message": "errorRate 1 > 0.05",
    }
    comparison = {
        "summary": "TTFT p95 3.1x faster, TPOT p95 2.4x faster, errors 0.1% vs 0.3%",
        "vllm": {"windows": 7, "outputTokensPerSecond": 412.5, "requestsPerSecond": 3.2},
        "ollama": {"windows": 5, "outputTokensPerSecond": 98.04, "requestsPerSecond": 2.75},
    }
    watch = {
        "failing": True,
        "since": ago(125),
        "failedSamples": 2,
        "samples": 9,
        "message": "errorRate 1 > 0.05",
    }
    c = consumer(
        "rag", "Migrated", 100, step=3, lastAnalysis=analysis, watch=watch, comparison=comparison
    )
    lines = render.analysis_block(c, STEPS, NOW)
    assert lines[0] == "rag: watched after migration, sampled 45s ago: Fail"
    assert lines[-3:] == [
        "  watch: FAILING for 2m5s (2 failed samples in a row): errorRate 1 > 0.05",
        "  vLLM vs Ollama over the migration: TTFT p95 3.1x faster, TPOT p95 2.4x faster, "
        "errors 0.1% vs 0.3%",
        "  served: vLLM 412 tokens/s, 3.2 requests/s over 7 windows; "
        "Ollama 98 tokens/s, 2.75 requests/s over 5 windows",
    ]
    # Just migrated: the last sample is still the step's at 100%.
    fresh = render.analysis_block({**c, "watch": {"failing": False, "samples": 0}}, STEPS, NOW)
    assert fresh[0] == "rag: step 3/3 (100%), sampled 45s ago: Fail"
    assert "  watch: no sample yet" in fresh
    passing = {**c, "watch": {"failing": False, "samples": 9}}
    assert "  watch: passing (9 samples since migrated)" in render.analysis_block(
        passing, STEPS, NOW
    )


def test_analysis_block_at_a_shadow_step_shows_the_agreement() -> None:
    steps = [{"shadow": {"minSamples": 10}}, *STEPS]
    analysis = {
        "verdict": "Fail",
        "time": ago(45),
        "step": 1,
        "message": "shadowAgreement 0.5 < 0.95 (...)",
        "gates": [
            {
                "metric": "shadowAgreement",
                "verdict": "Fail",
                "value": 0.5,
                "baseline": 1.0,
                "threshold": 0.95,
            }
        ],
    }
    shadow = {
        "vllm": {"exact": 4, "normalized": 1, "disagree": 4, "error": 1},
        "noise": {"exact": 6},
    }
    c = consumer("rag", "Progressing", 0, step=1, lastAnalysis=analysis, shadow=shadow)
    assert render.analysis_block(c, steps, NOW) == [
        "rag: step 1/4 (shadow), sampled 45s ago: Fail",
        "               vLLM  Ollama (noise)  limit  gate",
        "  compared       10               6",
        "  agreeing        5               6",
        "  agreement %  50.0           100.0   95.0  Fail",
        "  analysis: shadowAgreement 0.5 < 0.95 (...)",
    ]


def test_analysis_block_is_empty_for_a_consumer_with_nothing_to_say() -> None:
    assert render.analysis_block(consumer("ner", "Pending"), STEPS, NOW) == []
    assert render.analysis_block(consumer("ner", "Pending", message="waiting"), STEPS, NOW) == [
        "ner: no analysis yet",
        "  message: waiting",
    ]


def test_render_status_has_header_table_and_one_block_per_consumer_with_news() -> None:
    text = render.render_status(resource(), NOW)
    sections = text.split("\n\n")
    assert len(sections) == 3
    assert sections[0].startswith("InferenceBackend ai/llama32\n")
    assert sections[1].startswith("CONSUMER")
    assert sections[2].startswith("rag: step 2/3")


def test_render_status_survives_fields_it_does_not_know_and_missing_status() -> None:
    obj = resource()
    obj["status"]["consumers"][1]["futureField"] = {"x": 1}
    obj["status"]["consumers"][1]["stepStartedAt"] = "not a time"
    assert "rag        Progressing   50%      2/3    -" in render.render_status(obj, NOW)
    del obj["status"]
    assert "No consumer status yet." in render.render_status(obj, NOW)


# -- choosing the consumer and refusing what cannot apply --------------------------------


def test_default_consumer_is_the_one_in_progress() -> None:
    assert actions.plan(resource(), "promote", None) == "rag"
    paused = resource([consumer("notes", "Migrated", 100), consumer("rag", "Paused", 10)])
    assert actions.plan(paused, "resume", None) == "rag"


def test_retry_defaults_to_the_first_stopped_consumer() -> None:
    obj = resource(
        [
            consumer("notes", "Migrated", 100),
            consumer("rag", "RolledBack"),
            consumer("ner", "Aborted"),
        ]
    )
    assert actions.plan(obj, "retry", None) == "rag"
    assert actions.plan(obj, "retry", "ner") == "ner"


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("promote", "no consumer of ai/llama32 is in progress; name one of: notes, rag, ner"),
        ("retry", "no consumer of ai/llama32 is rolled back or aborted; name one of: notes, "),
    ],
)
def test_no_default_consumer_lists_the_names(action: str, message: str) -> None:
    obj = resource([consumer("notes", "Migrated", 100), consumer("rag", "Pending")])
    with pytest.raises(actions.Refused, match="^" + message):
        actions.plan(obj, action, None)


def test_unknown_consumer_lists_the_valid_names() -> None:
    with pytest.raises(actions.Refused) as refused:
        actions.plan(resource(), "abort", "chat")
    assert str(refused.value) == "ai/llama32 has no consumer 'chat'; name one of: notes, rag, ner"


def test_a_resource_without_migration_is_refused() -> None:
    with pytest.raises(actions.Refused) as refused:
        actions.plan(resource(with_migration=False), "promote", "notes")
    assert str(refused.value) == (
        "ai/llama32 has no spec.migration: weights are set in spec.consumers[].weight"
    )


def test_an_unacknowledged_request_blocks_a_new_one() -> None:
    pending = {"id": "old", "action": "promote", "consumer": "rag"}
    with pytest.raises(actions.Refused, match=r"^an earlier request \(promote rag\) is not ackn"):
        actions.plan(resource(annotation=pending), "abort", "rag")
    acked = {"lastAction": {"id": "old", "action": "promote", "result": "Done", "time": ago(5)}}
    assert actions.plan(resource(annotation=pending, progress=acked), "abort", None) == "rag"
    # An annotation the operator cannot acknowledge does not block forever.
    assert actions.pending_request(resource(annotation="{not json")) is None
    assert actions.pending_request(resource(annotation={"action": "promote"})) is None


@pytest.mark.parametrize(
    ("action", "phase", "paused", "refusal"),
    [
        ("promote", "Progressing", False, None),
        ("promote", "Paused", True, None),
        ("promote-full", "Progressing", False, None),
        ("promote", "Migrated", False, "rag is Migrated: promote applies to a consumer in"),
        ("promote", "Pending", False, "rag is Pending: promote applies"),
        ("promote-full", "RolledBack", False, "rag is RolledBack: promote applies"),
        ("pause", "Progressing", False, None),
        ("pause", "Pending", False, "rag is Pending: pause applies"),
        ("abort", "Pending", False, "rag is Pending: it is at 0% already"),
        ("pause", "Paused", True, "rag is already paused"),
        ("pause", "Migrated", False, "rag is Migrated: pause applies"),
        ("resume", "Paused", True, None),
        ("resume", "Progressing", False, "rag is not paused (phase Progressing)"),
        ("resume", "Aborted", False, "rag is not paused (phase Aborted)"),
        ("abort", "Progressing", False, None),
        ("abort", "Migrated", False, None),
        ("abort", "Aborted", False, "rag is Aborted: it is at 0% already"),
        ("abort", "RolledBack", False, "rag is RolledBack: it is at 0% already"),
        ("retry", "RolledBack", False, None),
        ("retry", "Aborted", False, None),
        ("retry", "Progressing", False, "rag is Progressing: retry applies to a RolledBack"),
        ("retry", "Migrated", False, "rag is Migrated: retry applies"),
    ],
)
def test_phase_checks(action: str, phase: str, paused: bool, refusal: str | None) -> None:
    obj = resource([consumer("rag", phase, 10, paused=paused)])
    if refusal is None:
        assert actions.plan(obj, action, "rag") == "rag"
    else:
        with pytest.raises(actions.Refused, match="^" + re.escape(refusal)):
            actions.plan(obj, action, "rag")


def test_promote_at_the_last_step_is_refused_pointing_at_full() -> None:
    """A second promote (to make sure the first worked) must not skip the analysis at 100%
    without saying so: it is refused, and --full named as the way to do that on purpose."""
    obj = resource([consumer("rag", "Progressing", 100, step=3)])
    with pytest.raises(actions.Refused) as refused:
        actions.plan(obj, "promote", "rag")
    assert str(refused.value) == (
        "rag is at its last step (3/3, 100%): its analysis at 100% marks it Migrated; "
        "`kubectl ib promote llama32 rag --full -n ai` marks it Migrated now, without that "
        "analysis"
    )
    assert actions.plan(obj, "promote-full", "rag") == "rag"
    assert (
        actions.plan(resource([consumer("rag", "Progressing", 50, step=2)]), "promote", "rag")
        == "rag"
    )


def test_resume_cannot_lift_a_pause_set_in_the_spec() -> None:
    obj = resource([consumer("rag", "Paused", 10)], migration={"steps": STEPS, "paused": True})
    with pytest.raises(actions.Refused, match=re.escape("held by spec.migration.paused")):
        actions.plan(obj, "resume", "rag")


def test_a_consumer_without_status_yet_is_left_to_the_operator() -> None:
    assert actions.plan(resource([]), "promote", "ner") == "ner"


def test_timeout_flag_takes_seconds_or_durations() -> None:
    parser = build_parser()
    assert parser.parse_args(["promote", "x"]).timeout == 30
    assert parser.parse_args(["promote", "x", "--timeout", "2m"]).timeout == 120
    assert parser.parse_args(["abort", "x", "--timeout", "0.5"]).timeout == 0.5
    args = parser.parse_args(["-n", "ai", "promote", "x", "rag", "--full", "--no-wait"])
    assert (args.namespace, args.consumer, args.full, args.wait) == ("ai", "rag", True, False)
    assert parser.parse_args(["status", "x", "-n", "ai"]).namespace == "ai"


# -- the request/acknowledgement flow against the in-memory API server ----------------------

COLLECTION = path("inferops.io/v1alpha1", "InferenceBackend", "ai")
URL = COLLECTION + "/llama32"


class Operator:
    """Plays the operator: follows the resources through a watch and answers each request
    `delay` seconds after it appears, with `result` and `message` in status (no answer with
    `result` None)."""

    def __init__(self, kube: MemKube) -> None:
        self.kube = kube
        self.result: str | None = "Done"
        self.message = "rag promoted to step 3 (100%)"
        self.delay = 0.05

    async def run(self) -> None:
        _, version = await self.kube.list_versioned(COLLECTION)
        while True:
            async for _, obj in self.kube.watch(COLLECTION, version):
                version = obj["metadata"]["resourceVersion"]
                text = (obj["metadata"].get("annotations") or {}).get(ACTION_ANNOTATION)
                last = (obj.get("status") or {}).get("migration", {}).get("lastAction") or {}
                if self.result and text and json.loads(text)["id"] != last.get("id"):
                    await asyncio.sleep(self.delay)
                    record = {**json.loads(text), "result": self.result}
                    record |= {"message": self.message, "time": ago(0)}
                    await self.kube.patch_status(obj, {"migration": {"lastAction": record}})


@dataclass
class Api:
    server: KubeServer
    operator: Operator
    version: str
    """The resource's version when the test starts."""

    @property
    def kube(self) -> MemKube:
        return self.server.kube

    def stored(self) -> dict[str, Any]:
        obj = self.kube.stored(URL)
        assert obj is not None
        return obj

    def patches(self) -> list[dict[str, Any]]:
        """The plugin's merge patches, in order (the operator writes only status)."""
        return self.kube.sent("merge_patch")

    def last_request(self) -> dict[str, Any]:
        return dict(json.loads(self.stored()["metadata"]["annotations"][ACTION_ANNOTATION]))

    def writes_first(self, times: int) -> None:
        """Someone else writes the resource just before each of the plugin's next `times`
        patches."""
        left = [times]

        def write(verb: str, obj: dict[str, Any]) -> None:
            if verb == "patch" and left[0]:
                left[0] -= 1
                self.kube.put(self.stored())

        self.kube.on_write = write


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    server = KubeServer()
    stored = server.kube.put(resource())
    operator = Operator(server.kube)
    task = asyncio.create_task(operator.run())
    await server.start()
    yield Api(server, operator, stored["metadata"]["resourceVersion"])
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await server.stop()


@pytest.fixture
def kubeconfig(api: Api, tmp_path: Path) -> str:
    return str(api.server.kubeconfig(tmp_path, "s3cret", namespace="ai"))


async def ib(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await run(list(argv), out=out, err=err, poll=0.02)
    return code, out.getvalue().strip(), err.getvalue().strip()


async def test_promote_writes_the_request_and_reports_the_operators_answer(
    api: Api, kubeconfig: str
) -> None:
    code, out, err = await ib("--kubeconfig", kubeconfig, "promote", "llama32")
    assert (code, out, err) == (0, "rag promoted to step 3 (100%)", "")
    [patch] = api.patches()
    assert patch["metadata"]["resourceVersion"] == api.version
    request = json.loads(patch["metadata"]["annotations"][ACTION_ANNOTATION])
    assert request["action"] == "promote" and request["consumer"] == "rag"
    assert len(request["id"]) == 32 and int(request["id"], 16) >= 0
    patch_request = api.server.requests[1]
    assert patch_request.method == "PATCH"
    assert patch_request.query["fieldManager"] == "kubectl-ib"
    assert patch_request.headers["Authorization"] == "Bearer s3cret"


async def test_promote_full_and_flags_after_the_command(api: Api, kubeconfig: str) -> None:
    code, _, _ = await ib("promote", "llama32", "rag", "--full", "--kubeconfig", kubeconfig)
    assert code == 0
    assert api.last_request()["action"] == "promote-full"


async def test_a_rejected_request_exits_1_with_the_operators_message(
    api: Api, kubeconfig: str
) -> None:
    api.operator.result = "Rejected"
    api.operator.message = "rag is not waiting for a promote"
    code, out, err = await ib("--kubeconfig", kubeconfig, "promote", "llama32")
    assert (code, out) == (1, "")
    assert err == "error: promote rag rejected: rag is not waiting for a promote"


async def test_no_acknowledgement_exits_2(api: Api, kubeconfig: str) -> None:
    api.operator.result = None
    code, _, err = await ib("--kubeconfig", kubeconfig, "pause", "llama32", "--timeout", "0.2")
    assert code == 2
    assert err == (
        "error: the operator has not acknowledged the request within 0.2s; is it running?"
    )
    assert api.last_request()["action"] == "pause"
    # The request stays pending, so the next one is refused until it is acknowledged.
    code, _, err = await ib("--kubeconfig", kubeconfig, "abort", "llama32", "rag")
    assert code == 1
    assert err.startswith("error: an earlier request (pause rag) is not acknowledged yet")
    assert len(api.patches()) == 1


async def test_no_wait_returns_after_writing(api: Api, kubeconfig: str) -> None:
    api.operator.result = None
    code, out, _ = await ib("--kubeconfig", kubeconfig, "abort", "llama32", "--no-wait")
    assert code == 0
    assert out == f"requested abort of rag on ai/llama32 ({api.last_request()['id']})"


async def test_a_conflicting_write_is_retried_on_the_new_version(api: Api, kubeconfig: str) -> None:
    api.writes_first(2)
    code, _, _ = await ib("--kubeconfig", kubeconfig, "promote", "llama32")
    assert code == 0
    patches = [r.status for r in api.server.requests if r.method == "PATCH"]
    assert patches == [409, 409, 200]
    sent = [int(p["metadata"]["resourceVersion"]) for p in api.patches()]
    assert [v - int(api.version) for v in sent] == [0, 1, 2]  # each on the version just written


async def test_an_unknown_resource_exits_1(api: Api, kubeconfig: str) -> None:
    code, _, err = await ib("--kubeconfig", kubeconfig, "promote", "nope")
    assert (code, err) == (1, "error: inferencebackend ai/nope not found")
    code, _, err = await ib("--kubeconfig", kubeconfig, "-n", "other", "status", "llama32")
    assert (code, err) == (1, "error: inferencebackend other/llama32 not found")
    assert api.patches() == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["retry", "llama32"], "no consumer of ai/llama32 is rolled back or aborted"),
        (["promote", "llama32", "chat"], "ai/llama32 has no consumer 'chat'; name one of"),
        (["promote", "llama32", "notes"], "notes is Migrated: promote applies"),
    ],
)
async def test_refusals_write_nothing(
    api: Api, kubeconfig: str, argv: list[str], message: str
) -> None:
    code, _, err = await ib("--kubeconfig", kubeconfig, *argv)
    assert code == 1
    assert err.startswith("error: " + message)
    assert api.patches() == []


async def test_a_resource_without_migration_is_refused_before_writing(
    api: Api, kubeconfig: str
) -> None:
    api.kube.put(resource([consumer("notes", "Manual", 30)], with_migration=False))
    code, _, err = await ib("--kubeconfig", kubeconfig, "promote", "llama32", "notes")
    assert code == 1
    assert err == (
        "error: ai/llama32 has no spec.migration: weights are set in spec.consumers[].weight"
    )
    assert api.patches() == []


async def test_status_uses_kubeconfig_from_the_environment(
    api: Api, kubeconfig: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    code, out, _ = await ib("status", "llama32")
    assert code == 0
    assert out.startswith("InferenceBackend ai/llama32\nPhase:       Progressing")
    assert "rag        Progressing   50%      2/3" in out
    code, out, _ = await ib("status", "llama32", "-o", "json")
    assert code == 0
    assert json.loads(out) == api.stored()["status"]


async def test_an_unreachable_api_server_is_reported(kubeconfig: str, api: Api) -> None:
    await api.server.stop()
    code, _, err = await ib("--kubeconfig", kubeconfig, "status", "llama32")
    assert code == 1
    assert err.startswith("error: API server unreachable")


async def test_a_missing_kubeconfig_is_reported(tmp_path: Path) -> None:
    code, _, err = await ib("--kubeconfig", str(tmp_path / "none"), "status", "x")
    assert code == 1
    assert err.startswith("error: no usable kubeconfig")


async def test_a_reader_that_stops_early_ends_the_command_quietly(
    api: Api, kubeconfig: str
) -> None:
    """`kubectl ib status NAME | head -1` through a real pipe: the reader takes one line and
    closes its end while the plugin still has far more to write than a pipe holds. The plugin
    ends like kubectl or cat killed by SIGPIPE would, as a shell reports it (141), with
    nothing on stderr."""
    long = "x" * 2000  # every consumer's block carries a long message: output >> 64 KiB
    obj = api.stored()
    obj["status"]["consumers"] = [
        consumer(f"c{i}", "Pending", message=f"{i} {long}") for i in range(64)
    ]
    api.kube.put(obj)
    read_end, write_end = os.pipe()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "inferops.plugin",
        "--kubeconfig",
        kubeconfig,
        "status",
        "llama32",
        stdout=write_end,
        stderr=asyncio.subprocess.PIPE,
    )
    os.close(write_end)

    def head_1() -> bytes:
        """head -1: read up to the first newline, then close the read end, so the plugin's
        next write fails with EPIPE."""
        line = b""
        while not line.endswith(b"\n"):
            chunk = os.read(read_end, 1)
            if not chunk:
                break
            line += chunk
        os.close(read_end)
        return line

    # In a thread: the in-memory API server answers the plugin from this event loop meanwhile.
    assert await asyncio.to_thread(head_1) == b"InferenceBackend ai/llama32\n"
    assert process.stderr is not None
    err = await process.stderr.read()
    code = await process.wait()
    assert err == b""
    assert code == 128 + signal.SIGPIPE


# -- features vLLM would not honour, and `ack` ---------------------------------------------

HELD = {
    "findings": [
        {
            "feature": "tools",
            "requests": 5,
            "message": "uses tools: vLLM has no tool-call parser (add --enable-auto-tool-choice "
            "--tool-call-parser <name> to spec.vllm.extraArgs)",
        },
        {"feature": "mirostat", "requests": 2, "message": "uses options.mirostat: ..."},
    ],
    "acknowledged": ["mirostat"],
    "held": True,
}


def test_status_lists_what_vllm_would_not_honour() -> None:
    held = consumer("ner", "Pending", features=HELD, message="held at 0%: uses tools: ...")
    assert render.analysis_block(held, STEPS, NOW) == [
        "ner: no analysis yet",
        "  message: held at 0%: uses tools: ...",
        "  vLLM would not honour (held at 0% until the spec fixes it or `kubectl ib ack`):",
        "    uses tools: vLLM has no tool-call parser (add --enable-auto-tool-choice "
        "--tool-call-parser <name> to spec.vllm.extraArgs) [5 requests]",
        "    uses options.mirostat: ... [2 requests, acknowledged]",
    ]
    text = render.render_status(resource([consumer("notes", "Migrated", 100), held]), NOW)
    assert "uses tools: vLLM has no tool-call parser" in text


def test_ack_defaults_to_the_first_held_consumer_and_applies_to_pending_only() -> None:
    obj = resource(
        [
            consumer("notes", "Migrated", 100),
            consumer("rag", "Pending", features=HELD),
            consumer("ner", "Pending"),
        ]
    )
    assert actions.plan(obj, "ack", None) == "rag"
    with pytest.raises(actions.Refused, match="notes is Migrated: ack applies to a Pending"):
        actions.plan(obj, "ack", "notes")
    nothing = resource([consumer("notes", "Migrated", 100), consumer("rag", "Pending")])
    with pytest.raises(actions.Refused, match="is held for features vLLM would not honour"):
        actions.plan(nothing, "ack", None)
