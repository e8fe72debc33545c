"""The operator's watch cache against a stand-in API server: it files each managed object
under its backend, follows changes (naming the backend to reconcile), survives ended and
expired watches, and prefers the operator's own write until the watch delivers it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from testsupport.kubeserver import KubeServer

from inferops.builders.common import BACKEND_LABEL
from inferops.cache import ChildCache
from inferops.kube import Kube
from inferops.registry import KINDS, WATCHED
from tests.router.conftest import wait_for

MANAGED = {"app.kubernetes.io/managed-by": "inferops"}
SELECTOR = "app.kubernetes.io/managed-by=inferops"
API_VERSIONS = {k.kind: k.api_version for k in KINDS}


def obj(kind: str, name: str, backend: str | None, namespace: str = "ai", **extra: Any) -> Any:
    labels = {**MANAGED, BACKEND_LABEL: backend} if backend else dict(MANAGED)
    meta = {"name": name, "namespace": namespace, "labels": labels, "managedFields": [{"x": 1}]}
    return {"apiVersion": API_VERSIONS[kind], "kind": kind, "metadata": meta, **extra}


def lists(api: KubeServer) -> int:
    return len(api.kube.verbs("list"))


def watches(api: KubeServer) -> int:
    return len(api.kube.verbs("watch"))


class Cached:
    def __init__(self, api: KubeServer, namespaces: list[str] | None = None) -> None:
        self.changes: list[tuple[str, str]] = []
        self.kube = Kube(api.url, "test")
        self.cache = ChildCache(
            self.kube,
            WATCHED,
            SELECTOR,
            namespaces,
            on_change=lambda ns, n: self.changes.append((ns, n)),
            log=logging.getLogger("test"),
            max_backoff=0.05,
        )

    def names(self, namespace: str, backend: str) -> set[tuple[str, str]]:
        return set(self.cache.objects(namespace, backend))


@pytest.fixture
async def cached(api: KubeServer) -> AsyncIterator[Cached]:
    api.kube.put(obj("ConfigMap", "a-routes", "a", data={"k": "v"}))
    api.kube.put(obj("Pod", "a-vllm-1", "a", spec={"big": "x" * 100}, status={"p": 1}))
    api.kube.put(obj("Deployment", "b-vllm", "b", spec={"replicas": 1}))
    api.kube.put(obj("ConfigMap", "unlabelled", None))
    state = Cached(api)
    state.cache.start()
    await asyncio.wait_for(state.cache.synced(), 5)
    yield state
    await state.cache.stop()
    await state.kube.__aexit__()


async def test_lists_every_kind_once_and_files_objects_by_backend(
    api: KubeServer, cached: Cached
) -> None:
    assert lists(api) == len(WATCHED)
    assert cached.names("ai", "a") == {("ConfigMap", "a-routes"), ("Pod", "a-vllm-1")}
    assert cached.names("ai", "b") == {("Deployment", "b-vllm")}
    objects = cached.cache.objects("ai", "a")
    pod, config_map = objects[("Pod", "a-vllm-1")], objects[("ConfigMap", "a-routes")]
    assert pod["status"] == {"p": 1} and "spec" not in pod  # nothing reads a pod's spec
    assert "managedFields" not in config_map["metadata"]
    assert (config_map["apiVersion"], config_map["kind"]) == ("v1", "ConfigMap")
    assert cached.changes == []  # the first list is read by the startup reconciles


async def test_changes_name_their_backend_and_deletions_remove(
    api: KubeServer, cached: Cached
) -> None:
    await wait_for(lambda: watches(api) == len(WATCHED), "the watches")
    api.kube.put(obj("Service", "a-vllm", "a"))
    api.kube.remove(obj("Deployment", "b-vllm", "b"))
    await wait_for(lambda: len(cached.changes) == 2, "two changes")
    # Two kinds, two watches: no order between them, as with a real API server.
    assert sorted(cached.changes) == [("ai", "a"), ("ai", "b")]
    assert ("Service", "a-vllm") in cached.names("ai", "a")
    assert cached.names("ai", "b") == set()
    assert lists(api) == len(WATCHED)  # every change came as a watch event


async def test_an_ended_watch_resumes_and_an_expired_one_relists(
    api: KubeServer, cached: Cached
) -> None:
    await wait_for(lambda: watches(api) == len(WATCHED), "the watches")
    api.kube.end_watches()
    await wait_for(lambda: watches(api) == 2 * len(WATCHED), "resumed watches")
    assert lists(api) == len(WATCHED)
    api.kube.expire()
    # Changes the expired watches never delivered: found by the new list.
    api.kube.remove(obj("ConfigMap", "a-routes", "a"))
    api.kube.put(obj("Service", "b-vllm", "b"))
    await wait_for(lambda: ("Service", "b-vllm") in cached.names("ai", "b"), "the relisted")
    await wait_for(lambda: ("ConfigMap", "a-routes") not in cached.names("ai", "a"), "removal")
    assert set(cached.changes) == {("ai", "a"), ("ai", "b")}


async def test_its_own_write_is_read_until_the_watch_delivers_a_newer_version(
    api: KubeServer, cached: Cached
) -> None:
    before = cached.cache.objects("ai", "b")[("Deployment", "b-vllm")]
    answer = {**before, "spec": {"replicas": 3}}
    answer["metadata"] = {**before["metadata"], "resourceVersion": "999"}
    cached.cache.wrote("ai", "b", before, answer)
    assert cached.cache.objects("ai", "b")[("Deployment", "b-vllm")]["spec"] == {"replicas": 3}
    await wait_for(lambda: watches(api) == len(WATCHED), "the watches")
    api.kube.put(obj("Deployment", "b-vllm", "b", spec={"replicas": 2}))
    await wait_for(lambda: cached.changes, "the watch event")
    assert cached.cache.objects("ai", "b")[("Deployment", "b-vllm")]["spec"] == {"replicas": 2}
    # A deletion of ours hides the object until the watch reports it.
    current = cached.cache.objects("ai", "a")[("ConfigMap", "a-routes")]
    cached.cache.wrote("ai", "a", current, None)
    assert ("ConfigMap", "a-routes") not in cached.names("ai", "a")


async def test_watches_only_the_namespaces_it_is_given(api: KubeServer) -> None:
    api.kube.put(obj("ConfigMap", "a-routes", "a", namespace="team1"))
    api.kube.put(obj("ConfigMap", "a-routes", "a", namespace="team2"))
    state = Cached(api, namespaces=["team1"])
    state.cache.start()
    try:
        await asyncio.wait_for(state.cache.synced(), 5)
        assert state.names("team1", "a") == {("ConfigMap", "a-routes")}
        assert state.names("team2", "a") == set()
    finally:
        await state.cache.stop()
        await state.kube.__aexit__()
