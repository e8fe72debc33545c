"""The Reconciler serialises runs per resource, drops redundant child-event triggers, and
forgets a resource once nothing waits for it."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest
from testsupport.memkube import MemKube

from inferops.kube import Kube, KubeError
from inferops.reconcile import Reconciler


class NoChildren:
    """The watch cache; these resources are gone, so it is never read."""

    def objects(self, namespace: str, name: str) -> dict[tuple[str, str], Any]:
        raise AssertionError("a deleted resource's children are not read")

    def wrote(self, namespace: str, name: str, replaced: Any, obj: Any) -> None:
        raise AssertionError("nothing is written for a deleted resource")


def slow_kube() -> MemKube:
    """An API server that answers every call after a pause; the resources are gone."""
    return MemKube(latency=0.01)


def gets(kube: MemKube) -> int:
    return len(kube.verbs("get"))


async def test_runs_for_one_resource_never_overlap_and_bursts_coalesce() -> None:
    kube = slow_kube()
    reconciler = Reconciler(kube, NoChildren(), logging.getLogger("test"))  # type: ignore[arg-type]
    first = asyncio.create_task(reconciler.run("ns", "a"))
    await asyncio.sleep(0)  # `first` holds the lock
    queued = asyncio.create_task(reconciler.run("ns", "a", coalesce=True))
    await asyncio.sleep(0)  # `queued` waits for its turn
    burst = [asyncio.create_task(reconciler.run("ns", "a", coalesce=True)) for _ in range(20)]
    await asyncio.gather(first, queued, *burst)
    assert kube.most_in_flight == 1
    assert gets(kube) == 2  # the first run and the one queued run; the burst was dropped
    assert reconciler._locks == {} and not reconciler._users


async def test_different_resources_run_concurrently() -> None:
    kube = slow_kube()
    reconciler = Reconciler(kube, NoChildren(), logging.getLogger("test"))  # type: ignore[arg-type]
    await asyncio.gather(*(reconciler.run("ns", name) for name in ("a", "b", "c")))
    assert kube.most_in_flight == 3
    assert reconciler._locks == {}


async def test_failed_runs_are_retried_with_backoff_until_they_succeed() -> None:
    kube = slow_kube()
    kube.fail_next("get", 2, 503, "the server is currently unable to handle the request")
    reconciler = Reconciler(kube, NoChildren(), logging.getLogger("test"))  # type: ignore[arg-type]
    reconciler.retry_later("ns", "a", delay=0.01)
    reconciler.retry_later("ns", "a", delay=0.01)  # one pending retry per resource
    for _ in range(200):
        if gets(kube) == 3:
            break
        await asyncio.sleep(0.01)
    assert gets(kube) == 3  # failed, failed (0.02 s later), succeeded
    assert reconciler._retries == {}


async def test_a_refused_connection_is_a_kube_error_and_retried() -> None:
    """Connection refused (the API server restarting) must reach the retry path like any
    failed call, not escape as an httpx error that drops the reconciliation."""
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kube = Kube(f"http://127.0.0.1:{port}", "test")
    with pytest.raises(KubeError) as raised:
        await kube.get("/api/v1/namespaces/ns/pods")
    assert raised.value.status == 0 and "unreachable" in raised.value.message

    attempts = 0
    real_get = kube.get

    async def counting_get(url: str) -> Any:
        nonlocal attempts
        attempts += 1
        return await real_get(url)

    kube.get = counting_get  # type: ignore[method-assign]
    reconciler = Reconciler(kube, NoChildren(), logging.getLogger("test"))
    reconciler.retry_later("ns", "a", delay=0.01)
    for _ in range(200):
        await asyncio.sleep(0.01)
        if attempts >= 2:
            break
    assert attempts >= 2  # failed, then tried again (after 0.02 s of backoff)
    for task in reconciler._retries.values():
        task.cancel()
    await kube.__aexit__()


async def test_a_deleted_backend_is_forgotten_by_the_metrics_readers() -> None:
    """The scrape source keeps a reading per consumer; a deleted backend's must go."""
    forgotten: list[tuple[str, str]] = []

    class Reader:
        def forget(self, namespace: str, backend: str) -> None:
            forgotten.append((namespace, backend))

    reconciler = Reconciler(slow_kube(), NoChildren(), logging.getLogger("test"), reader=Reader())  # type: ignore[arg-type]
    assert await reconciler.run("ns", "gone") is None
    assert forgotten == [("ns", "gone")]


async def test_a_burst_of_child_changes_is_one_run_once_it_settles() -> None:
    kube = slow_kube()
    reconciler = Reconciler(kube, NoChildren(), logging.getLogger("test"))  # type: ignore[arg-type]
    for _ in range(50):  # a rollout: the Deployment, its ReplicaSet, its pods
        reconciler.poke("ns", "a")
    reconciler.poke("ns", "b")
    await asyncio.sleep(0)
    assert gets(kube) == 0  # nothing yet: the burst may not be over
    for _ in range(100):
        if gets(kube) == 2:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    assert gets(kube) == 2  # one run for a, one for b
