"""The cluster's floor: the same objects the operator writes for N backends, written by the
benchmark itself with no operator running, and the time until every pod they make is Ready.

What remains is the cluster's own work for those objects (ReplicaSets, pods, scheduling,
EndpointSlices, status updates, their Events): no operator can make N backends Ready faster
than this on the same machine, so it tells how much of the operator run's time is the
operator's.
"""

from __future__ import annotations

import asyncio
import logging
import time

from bench.operator import workload
from inferops import replicas
from inferops.api.spec import InferenceBackendSpec
from inferops.builders import Owner, desired_children, router
from inferops.builders.common import Obj
from inferops.kube import Kube, KubeError

log = logging.getLogger("bench.operator.floor")
DEPLOYMENTS_PER_BACKEND = 3  # vLLM, Ollama, router


def children(backend: Obj) -> list[Obj]:
    """What the operator writes for `backend` once its engines are Ready (the routing table
    included), from the same builders."""
    meta = backend["metadata"]
    owner = Owner(meta["name"], meta["namespace"], meta["uid"])
    spec = InferenceBackendSpec.model_validate(backend["spec"])
    built = desired_children(spec, owner, {"vllm": True, "ollama": True})
    return [replicas.as_created(None, obj) for obj in built]


async def write_all(kube: Kube, n: int) -> None:
    """Creates the backends (the owners; no operator acts on them), each namespace's router
    identity, then every backend's children, 20 backends at a time as `create_all`."""
    limit = asyncio.Semaphore(20)
    created: list[Obj] = []

    async def backend(index: int) -> None:
        async with limit:
            created.append(await kube.create(workload.backend(index)))

    await asyncio.gather(*(backend(i) for i in range(n)))
    for ns in {o["metadata"]["namespace"] for o in created}:
        mine = {
            o["metadata"]["name"]: o["metadata"]["uid"]
            for o in created
            if o["metadata"]["namespace"] == ns
        }
        for obj in router.identity(ns, mine):
            await kube.apply(obj)

    async def objects(body: Obj) -> None:
        async with limit:
            for obj in children(body):
                await kube.apply(obj)

    await asyncio.gather(*(objects(body) for body in created))


async def ready_deployments(kube: Kube) -> int:
    items, _ = await kube.list_versioned("/apis/apps/v1/deployments")
    return sum(
        (o.get("status") or {}).get("readyReplicas", 0) == o["spec"].get("replicas", 1)
        for o in items
    )


async def wait_pods_ready(kube: Kube, n: int, started: float, timeout: float) -> float:
    wanted, last = n * DEPLOYMENTS_PER_BACKEND, -1
    while True:
        try:
            ready = await ready_deployments(kube)
        except KubeError as error:
            log.warning("counting ready Deployments: %s", error)
            ready = last
        elapsed = time.time() - started
        if ready != last:
            log.info("%5.1fs  %d/%d Deployments ready", elapsed, ready, wanted)
            last = ready
        if ready >= wanted:
            return elapsed
        if elapsed > timeout:
            raise TimeoutError(f"{ready}/{wanted} Deployments ready after {timeout:.0f}s")
        await asyncio.sleep(1.0)
