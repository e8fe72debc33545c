"""Embeddings move only with compatible vectors (`inferops.migration.vectors`): the verdict on
both engines' vectors, when a check is due, which consumers it holds, and each consumer's
embeddings weight with the embeddings deployment. Pure; the planner's rows are in
tests/test_migration_planner.py. `vector_probe` is run against the router with engine
stand-ins."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from testsupport.standin import EngineStandin

from inferops.api.spec import InferenceBackendSpec
from inferops.api.status import (
    ConsumerStatus,
    InferenceBackendStatus,
    MigrationStatus,
    VectorCheck,
)
from inferops.builders import Owner
from inferops.migration import vectors
from inferops.migration.observe import MigrationReader
from inferops.migration.vector_probe import VectorProbe
from inferops.plugin.render import render_status
from inferops.router.server import RouterServer
from inferops.router.sources import FileSource
from inferops.router.state import RouterState

T0 = datetime(2026, 1, 1, 12, 0, 0)
AT = "2026-01-01T12:00:00Z"
STEPS = [{"weight": 50}, {"weight": 100}]


def spec(vllm: dict[str, Any] | None = None, ollama: bool = True, **migration: Any) -> Any:
    raw: dict[str, Any] = {
        "model": "m",
        "vllm": {"model": "x", **(vllm or {})},
        "consumers": [{"name": "notes"}, {"name": "emb", "api": "embeddings"}],
        "migration": {"steps": STEPS, **migration},
    }
    raw["ollama"] = {"model": "y"} if ollama else {"enabled": False}
    return InferenceBackendSpec.model_validate(raw)


DEPLOYMENT = spec({"embeddings": {"model": "e"}})
POOLING = spec({"extraArgs": ["--runner", "pooling"]})
GENERATION = spec()


@pytest.mark.parametrize(
    ("vllm", "ollama", "verdict", "cosine", "words"),
    [
        ([[1.0, 0.0], [0.0, 2.0]], [[2.0, 0.0], [0.0, 1.0]], "Pass", 1.0,
         "vectors alike: lowest cosine 1 >= 0.99 over 2 inputs"),
        ([[1.0, 0.1], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]], "Pass", 0.995,
         "lowest cosine 0.995 >= 0.99"),
        ([[1.0, 0.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]], "Fail", 0.7071,
         "vectors differ: lowest cosine 0.7071 < 0.99 over 2 inputs (another model, or "
         "another pooling or normalisation)"),
        ([[1.0, 0.0, 0.0]], [[1.0, 0.0]], "Fail", None,
         "vectors of other dimensions (vLLM vs Ollama: 3 vs 2): another model"),
        ([[1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]], "Fail", None, "vLLM returned 1 vectors for 2"),
        ("HTTP 404: no embeddings route", [[1.0]], "Inconclusive", None,
         "vLLM: HTTP 404: no embeddings route"),
        ([[1.0]], "ConnectError", "Inconclusive", None, "Ollama: ConnectError"),
        ([[0.0, 0.0]], [[1.0, 0.0]], "Fail", 0.0, "lowest cosine 0 < 0.99"),
    ],
)  # fmt: skip
def test_the_verdict_on_both_engines_vectors(
    vllm: Any, ollama: Any, verdict: str, cosine: float | None, words: str
) -> None:
    check = vectors.judge(vllm, ollama, 0.99, "k", AT)
    assert (check.verdict, check.cosine) == (verdict, cosine)
    assert words in check.message
    assert (check.min_cosine, check.time, check.key) == (0.99, AT, "k")


def made(s: InferenceBackendSpec, verdict: str, minutes_ago: float = 0, key: str = "") -> Any:
    return VectorCheck(
        verdict=verdict,  # type: ignore[arg-type]
        min_cosine=0.99,
        time=(T0 - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        key=key or vectors.key(s),
    )


@pytest.mark.parametrize(
    ("row", "s", "last", "due"),
    [
        ("never checked, embeddings deployment", DEPLOYMENT, None, True),
        ("never checked, pooling runner on spec.vllm", POOLING, None, True),
        ("vLLM serves no embeddings: nothing to check", GENERATION, None, False),
        ("no Ollama: no vectors a stored index could hold", spec({"embeddings": {"model": "e"}},
                                                                ollama=False), None, False),
        ("passed: never again for the same spec", DEPLOYMENT, made(DEPLOYMENT, "Pass", 600), False),
        ("passed for another spec: again", DEPLOYMENT, made(DEPLOYMENT, "Pass", 0, "old"), True),
        ("failed 1 minute ago: not yet", DEPLOYMENT, made(DEPLOYMENT, "Fail", 1), False),
        ("failed 5 minutes ago: again", DEPLOYMENT, made(DEPLOYMENT, "Fail", 5), True),
        ("inconclusive 6 minutes ago: again", DEPLOYMENT, made(DEPLOYMENT, "Inconclusive", 6),
         True),
    ],
)  # fmt: skip
def test_when_a_check_is_due(row: str, s: Any, last: Any, due: bool) -> None:
    assert vectors.due(s, last, T0) is due


def test_the_key_changes_with_what_the_vectors_depend_on() -> None:
    base = vectors.key(DEPLOYMENT)
    assert vectors.key(spec({"embeddings": {"model": "e"}})) == base
    assert vectors.key(spec({"embeddings": {"model": "other"}})) != base
    pooled = spec({"embeddings": {"model": "e", "extraArgs": ["--pooler-config", "{}"]}})
    assert vectors.key(pooled) != base
    assert vectors.key(spec({"embeddings": {"model": "e"}}, embeddings={"inputs": ["a"]})) != base
    # The generation vLLM's own settings do not matter to the deployment's vectors.
    assert vectors.key(spec({"embeddings": {"model": "e"}, "maxModelLen": 64})) == base


@pytest.mark.parametrize(
    ("s", "api", "check", "held"),
    [
        (DEPLOYMENT, "chat", None, None),
        (DEPLOYMENT, "embeddings", None, "not compared yet"),
        (DEPLOYMENT, "embeddings", "Fail", "held at 0%"),
        (DEPLOYMENT, "embeddings", "Pass", None),
        (POOLING, "chat", None, "embeddings move only with compatible vectors"),
        (POOLING, "chat", "Inconclusive", "could not be compared"),
        (POOLING, "chat", "Pass", None),
        (GENERATION, "embeddings", None, None),
    ],
)
def test_which_consumers_wait_for_their_vectors(
    s: Any, api: str, check: str | None, held: str | None
) -> None:
    last = made(s, check) if check else None
    found = vectors.holds(s, api, last)
    assert (found is None) == (held is None)
    if held is not None:
        assert found is not None and held in found


def consumer(phase: str, weight: int) -> ConsumerStatus:
    return ConsumerStatus(name="notes", weight=weight, service="s", endpoint="e", phase=phase)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("phase", "weight", "check", "expected"),
    [
        ("Pending", 0, "Pass", 0),
        ("Progressing", 0, "Pass", 0),  # a shadow step: no live weight yet
        ("Progressing", 10, "Pass", 100),
        ("Progressing", 10, "Fail", 0),
        ("Progressing", 10, None, 0),
        ("Migrated", 100, "Pass", 100),
        # Failed over: that is the generation vLLM's; the router applies the embeddings
        # deployment's own readiness.
        ("Migrated", 0, "Pass", 100),
        ("RolledBack", 0, "Pass", 0),
    ],
)
def test_the_embeddings_weight_follows_the_consumer_once_vectors_agree(
    phase: str, weight: int, check: str | None, expected: int
) -> None:
    last = made(DEPLOYMENT, check) if check else None
    decided = vectors.embeddings_status(DEPLOYMENT, consumer(phase, weight), last)
    assert decided is not None and decided.weight == expected
    assert vectors.embeddings_status(POOLING, consumer(phase, weight), last) is None


def test_without_ollama_embeddings_move_without_a_check() -> None:
    alone = spec({"embeddings": {"model": "e"}}, ollama=False)
    decided = vectors.embeddings_status(alone, consumer("Progressing", 50), None)
    assert decided is not None and decided.weight == 100
    assert decided.message == "on vLLM: no Ollama to compare with"


# -- the vectors asked through the router, pinned to each engine ------------------------------


@pytest.fixture
async def engines() -> AsyncIterator[tuple[EngineStandin, EngineStandin]]:
    vllm, ollama = EngineStandin("vllm"), EngineStandin("ollama")
    await vllm.start()
    await ollama.start()
    yield vllm, ollama
    await vllm.stop()
    await ollama.stop()


@pytest.fixture
async def router_url(
    tmp_path: Path, engines: tuple[EngineStandin, EngineStandin]
) -> AsyncIterator[str]:
    """A router in front of the stand-ins (vLLM on the pooling runner), its table loaded."""
    vllm, ollama = engines
    table = {
        "model": "m",
        "engines": {
            "vllm": {"url": vllm.url, "kinds": ["embeddings"]},
            "ollama": {"url": ollama.url},
        },
        "consumers": [{"name": "notes", "hosts": ["b-notes"], "weight": 0}],
    }
    path = tmp_path / "routes.json"
    path.write_text(json.dumps(table))
    server = RouterServer(RouterState(), FileSource(path, interval=0.01), grace_seconds=1.0)
    await server.start()
    try:
        while server.state.routes is None:
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()


async def test_the_probe_asks_each_engine_through_the_router(
    router_url: str, engines: tuple[EngineStandin, EngineStandin]
) -> None:
    vllm, ollama = engines
    s = spec({"extraArgs": ["--runner", "pooling"]}, embeddings={"inputs": ["a", "bbb"]})
    probe = VectorProbe(router_url)
    try:
        got_vllm, got_ollama = await probe.measure(s, Owner(name="b", namespace="ns", uid="u"))
        # The stand-ins mark their vectors (vLLM 1.0, Ollama 2.0), in input order.
        assert got_vllm == [[1.0, 1.0, 0.5], [1.0, 3.0, 0.5]]
        assert got_ollama == [[2.0, 1.0, 0.5], [2.0, 3.0, 0.5]]
        assert [r.path for r in vllm.seen] == ["/v1/embeddings"]
        assert vllm.seen[0].body["input"] == ["a", "bbb"]
        vllm.behaviour.fail_status = 500
        failed, _ = await probe.measure(s, Owner(name="b", namespace="ns", uid="u"))
        assert isinstance(failed, str) and failed.startswith("HTTP 500")
        assert len(ollama.seen) == 2  # pinned: no fallback to Ollama for vLLM's request
    finally:
        await probe.aclose()


def test_kubectl_ib_status_shows_the_check_and_each_consumers_embeddings() -> None:
    check = vectors.judge([[1.0, 0.0]], [[0.5, 0.5]], 0.99, "k", AT)
    obj = {
        "metadata": {"name": "b", "namespace": "ns"},
        "spec": {"migration": {"steps": STEPS}},
        "status": {
            "migration": {"migrated": "1/2", "vectors": check.dump()},
            "consumers": [
                {
                    "name": "notes",
                    "phase": "Migrated",
                    "weight": 100,
                    "embeddings": {"weight": 0, "message": f"held on Ollama: {check.message}"},
                },
            ],
        },
    }
    text = render_status(obj, (T0 + timedelta(seconds=30)).replace(tzinfo=UTC))
    assert (
        "Vectors:     Fail 30s ago: vectors differ: lowest cosine 0.7071 < 0.99 over 1 inputs"
        in text
    )
    assert "  embeddings: 0% on vLLM: held on Ollama: vectors differ: lowest cosine 0.7071" in text


class NoFigures:
    """A metrics source with nothing to say: this test is about the vector check."""

    async def figures(self, *args: Any) -> Any:
        raise AssertionError("no sample is due")

    async def features(self, *args: Any) -> None:
        return None

    async def routes(self, *args: Any) -> None:
        return None

    def forget(self, *args: Any) -> None: ...

    async def aclose(self) -> None: ...


class NoReplicas:
    async def served(self, *args: Any) -> list[Any]:
        return []

    def forget(self, *args: Any) -> None: ...

    async def aclose(self) -> None: ...


async def test_the_reader_compares_the_vectors_when_a_check_is_due_and_only_then(
    router_url: str, engines: tuple[EngineStandin, EngineStandin]
) -> None:
    vllm, ollama = engines
    # The stand-ins' vectors are alike but not equal (cosine 0.9993): a strict threshold.
    s = spec({"extraArgs": ["--runner", "pooling"]}, embeddings={"minCosine": 0.9999})
    owner = Owner(name="b", namespace="ns", uid="u")
    reader = MigrationReader(
        NoFigures(),  # type: ignore[arg-type]
        NoReplicas(),  # type: ignore[arg-type]
        logging.getLogger("test"),
        VectorProbe(router_url),
    )
    try:
        none_yet = InferenceBackendStatus()
        seen = await reader.observe(s, owner, {"metadata": {}}, none_yet, {}, True, T0)
        check = seen.vectors
        assert check is not None and check.verdict == "Fail" and check.key == vectors.key(s)
        assert (check.time, check.inputs, check.cosine, check.min_cosine) == (AT, 4, 0.9993, 0.9999)
        assert len(vllm.seen) == 1 and len(ollama.seen) == 1
        # Written to status, it is not due again before `recheck` (5m)...
        after = InferenceBackendStatus(migration=MigrationStatus(vectors=check))
        later = T0 + timedelta(minutes=4)
        assert (
            await reader.observe(s, owner, {"metadata": {}}, after, {}, True, later)
        ).vectors is None
        assert len(vllm.seen) == 1
        # ...and is after it.
        again = T0 + timedelta(minutes=5)
        assert (await reader.observe(s, owner, {"metadata": {}}, after, {}, True, again)).vectors
        assert len(vllm.seen) == 2
    finally:
        await reader.aclose()
