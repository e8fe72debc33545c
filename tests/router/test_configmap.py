"""The ConfigMap source against a stand-in Kubernetes API that lists and watches ConfigMaps
like the real one (resourceVersions, `410 Gone`, watches that end), and end to end through
the router: a weight written to the ConfigMap changes where requests go, without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes.config import kube_config
from testsupport.kubeserver import KubeServer
from testsupport.standin import EngineStandin

from inferops.kube import Kube
from inferops.router.configmap import ConfigMapSource
from inferops.router.routes import VLLM
from inferops.router.server import RouterServer
from inferops.router.state import RouterState
from tests.router.conftest import base_table, wait_for

NAME = "llama32-routes"
NS = "ai"


def put(api: KubeServer, name: str, data: dict[str, str]) -> None:
    """The ConfigMap `name` in NS, holding `data`, written by someone."""
    meta = {"name": name, "namespace": NS}
    api.kube.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})


def delete(api: KubeServer, name: str) -> None:
    api.kube.remove(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS}}
    )


def lists(api: KubeServer) -> int:
    return len(api.kube.verbs("list"))


def watches(api: KubeServer) -> int:
    return len(api.kube.verbs("watch"))


class Sink:
    def __init__(self) -> None:
        self.installed: list[Any] = []
        self.rejected: list[str] = []
        self.lost_: list[str] = []

    def install(self, table: Any) -> bool:
        self.installed.append(table)
        return True

    def reject(self, message: str) -> None:
        self.rejected.append(message)

    def lost(self, message: str) -> None:
        self.lost_.append(message)


def routes_json(weight: int) -> dict[str, str]:
    table = base_table("http://127.0.0.1:1", None)
    table["consumers"][0]["weight"] = weight
    return {"routes.json": json.dumps(table)}


@pytest.fixture
async def running(api: KubeServer) -> AsyncIterator[Sink]:
    sink = Sink()
    kube = Kube(api.url, "test")
    task = asyncio.create_task(ConfigMapSource(NS, NAME, kube=kube, max_backoff=0.05).run(sink))
    yield sink
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await kube.__aexit__()


def weights(sink: Sink) -> list[int]:
    return [t.consumers[0].weight for t in sink.installed]


async def first_table(api: KubeServer, running: Sink) -> None:
    """The table with notes at 10%, written and installed."""
    put(api, NAME, routes_json(10))
    await wait_for(lambda: weights(running) == [10], "the first table")


async def test_list_then_watch_delivers_every_change_quickly(
    api: KubeServer, running: Sink
) -> None:
    await wait_for(lambda: watches(api) == 1, "the watch")  # the ConfigMap does not exist yet
    assert running.installed == []
    put(api, NAME, routes_json(10))
    await wait_for(lambda: weights(running) == [10], "the created table")
    put(api, NAME, routes_json(50))
    await wait_for(lambda: weights(running) == [10, 50], "the changed table", timeout=2.0)
    put(api, "another-configmap", routes_json(99))  # not ours: ignored
    put(api, NAME, {**routes_json(50), "unrelated": "x"})  # same table: not reinstalled
    await asyncio.sleep(0.1)
    assert weights(running) == [10, 50]
    assert lists(api) == 1  # every change came as a watch event: no re-listing, no polling


async def test_rewatches_when_the_watch_ends_and_relists_when_it_expires(
    api: KubeServer, running: Sink
) -> None:
    await first_table(api, running)
    # The table came from the list; ending watches before the watch is open would end none.
    await wait_for(lambda: watches(api) == 1, "the first watch")
    api.kube.end_watches()
    await wait_for(lambda: watches(api) == 2, "a new watch")
    put(api, NAME, routes_json(20))
    await wait_for(lambda: weights(running) == [10, 20], "a change after the re-watch")
    api.kube.expire()  # 410 Gone on the open watch ...
    put(api, NAME, routes_json(30))  # ... and a change the expired watch never delivered
    await wait_for(lambda: weights(running) == [10, 20, 30], "the change found by re-listing")
    assert lists(api) == 2  # the first list and the one after 410; an ended watch resumes


async def test_an_invalid_or_deleted_table_keeps_the_current_one(
    api: KubeServer, running: Sink
) -> None:
    await first_table(api, running)
    put(api, NAME, {"routes.json": '{"model": "m"}'})
    await wait_for(lambda: len(running.rejected) == 1, "the rejection")
    assert "engines" in running.rejected[0]
    put(api, NAME, {"other": "x"})
    await wait_for(lambda: len(running.rejected) == 2, "the second rejection")
    assert "key is missing" in running.rejected[1]
    delete(api, NAME)
    await wait_for(lambda: len(running.lost_) == 1, "the deletion")
    assert "was deleted" in running.lost_[0]
    put(api, NAME, routes_json(40))
    await wait_for(lambda: weights(running) == [10, 40], "the recreated table")


async def test_a_deletion_missed_while_no_watch_was_open_is_noticed(
    api: KubeServer, running: Sink
) -> None:
    await first_table(api, running)
    await wait_for(lambda: watches(api) == 1, "the first watch")
    # The ConfigMap is deleted while no watch is open and its history is compacted away
    # (an API server restart can do both): the router lists again after the 410, and no
    # DELETED event ever reaches it.
    delete(api, NAME)
    api.kube.expire()
    await wait_for(lambda: lists(api) >= 2, "a new list")
    await wait_for(lambda: len(running.lost_) == 1, "the deletion noticed by the list")
    put(api, NAME, routes_json(10))  # the same table back: installed again
    await wait_for(lambda: weights(running) == [10, 10], "the table written back")


@contextlib.asynccontextmanager
async def configmap_router(
    api: KubeServer, table: dict[str, Any]
) -> AsyncIterator[tuple[RouterState, httpx.AsyncClient]]:
    """A router fed by the ConfigMap `NAME` holding `table`, once it has installed it, and a
    client of it."""
    put(api, NAME, {"routes.json": json.dumps(table)})
    kube = Kube(api.url, "test")
    state = RouterState()
    server = RouterServer(state, ConfigMapSource(NS, NAME, kube=kube), grace_seconds=1)
    await server.start()
    try:
        await wait_for(lambda: state.routes is not None, "the first table")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            yield state, client
    finally:
        await server.stop()
        await kube.__aexit__()


async def test_the_router_serves_its_last_good_table_and_says_it_is_stale(
    api: KubeServer, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    table = base_table(vllm.url, ollama_engine.url)
    async with configmap_router(api, table) as (state, client):

        async def observed() -> tuple[int, str, float, int]:
            answer = await client.post(
                "/v1/embeddings",
                json={"model": "llama3.2", "input": "x"},
                headers={"Host": "llama32-notes"},
            )
            ready = await client.get("/readyz")
            stale = state.metrics.registry.get_sample_value("inferops_router_table_stale")
            return answer.status_code, ready.text, stale or 0.0, ready.status_code

        status, ready, stale, ready_code = await observed()
        assert (status, stale, ready_code) == (200, 0.0, 200) and "stale" not in ready
        for fault, why in (
            (lambda: delete(api, NAME), "was deleted"),
            (lambda: put(api, NAME, {"routes.json": "{not json"}), "rejected"),
        ):
            fault()
            await wait_for(lambda: state.stale is not None, f"the router to notice ({why})")
            status, ready, stale, ready_code = await observed()
            # Still served and still ready, on the last good table; readiness says why.
            assert (status, stale, ready_code) == (200, 1.0, 200), ready
            assert "stale" in ready and why in ready
            put(api, NAME, {"routes.json": json.dumps(table)})  # restored as it was
            await wait_for(lambda: state.stale is None, "the restored table")
            status, ready, stale, ready_code = await observed()
            assert (status, stale, ready_code) == (200, 0.0, 200) and "stale" not in ready
        assert state.generation == 1  # the same table throughout: nothing reinstalled


async def test_credentials_come_from_kubeconfig(
    api: KubeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = api.kubeconfig(tmp_path, "router-token")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    # The loader reads KUBECONFIG when it is imported, so point its default at the file.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    put(api, NAME, routes_json(70))
    sink = Sink()
    task = asyncio.create_task(ConfigMapSource(NS, NAME).run(sink))
    try:
        await wait_for(lambda: weights(sink) == [70], "the table through kubeconfig")
        assert {r.headers.get("Authorization") for r in api.requests} == {"Bearer router-token"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_router_follows_the_configmap_without_restart(
    api: KubeServer, vllm: EngineStandin, ollama_engine: EngineStandin
) -> None:
    table = base_table(vllm.url, ollama_engine.url)
    async with configmap_router(api, table) as (state, client):

        async def ask() -> str:
            response = await client.post(
                "/v1/embeddings",
                json={"model": "llama3.2", "input": "x"},
                headers={"Host": "llama32-notes"},
            )
            return response.headers["x-inferops-engine"]

        assert await ask() == VLLM
        table["consumers"][0]["weight"] = 0
        put(api, NAME, {"routes.json": json.dumps(table)})
        await wait_for(lambda: state.generation == 2, "the new weight", timeout=2.0)
        assert {await ask() for _ in range(5)} == {"ollama"}
