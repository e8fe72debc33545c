"""The Reconciler serialises runs per resource, drops redundant child-event triggers, and
forgets a resource once nothing waits for it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from inferops.kube import KubeError
from inferops.reconcile import Reconciler


class SlowKube:
    """Answers every GET after a pause (the resource is gone), recording overlap."""

    def __init__(self) -> None:
        self.active = 0
        self.most_active = 0
        self.gets = 0

    async def get(self, url: str) -> Any:
        self.gets += 1
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        await asyncio.sleep(0.01)
        self.active -= 1
        return None


async def test_runs_for_one_resource_never_overlap_and_bursts_coalesce() -> None:
    kube = SlowKube()
    reconciler = Reconciler(kube, logging.getLogger("test"))  # type: ignore[arg-type]
    first = asyncio.create_task(reconciler.run("ns", "a"))
    await asyncio.sleep(0)  # `first` holds the lock
    queued = asyncio.create_task(reconciler.run("ns", "a", coalesce=True))
    await asyncio.sleep(0)  # `queued` waits for its turn
    burst = [asyncio.create_task(reconciler.run("ns", "a", coalesce=True)) for _ in range(20)]
    await asyncio.gather(first, queued, *burst)
    assert kube.most_active == 1
    assert kube.gets == 2  # the first run and the one queued run; the burst was dropped
    assert reconciler._locks == {} and not reconciler._users


async def test_different_resources_run_concurrently() -> None:
    kube = SlowKube()
    reconciler = Reconciler(kube, logging.getLogger("test"))  # type: ignore[arg-type]
    await asyncio.gather(*(reconciler.run("ns", name) for name in ("a", "b", "c")))
    assert kube.most_active == 3
    assert reconciler._locks == {}


class FlakyKube(SlowKube):
    """Fails the first `failures` GETs the way an overloaded API server does."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def get(self, url: str) -> Any:
        if self.failures:
            self.failures -= 1
            raise KubeError(503, "the server is currently unable to handle the request")
        return await super().get(url)


async def test_failed_runs_are_retried_with_backoff_until_they_succeed() -> None:
    kube = FlakyKube(failures=2)
    reconciler = Reconciler(kube, logging.getLogger("test"))  # type: ignore[arg-type]
    reconciler.retry_later("ns", "a", delay=0.01)
    reconciler.retry_later("ns", "a", delay=0.01)  # one pending retry per resource
    for _ in range(200):
        if kube.gets:
            break
        await asyncio.sleep(0.01)
    assert kube.failures == 0 and kube.gets == 1  # failed, failed (0.02 s later), succeeded
    assert reconciler._retries == {}
