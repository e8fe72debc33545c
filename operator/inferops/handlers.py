"""kopf handlers: thin glue from events to the reconciler.

The resource's own changes (create, spec update, operator restart, a manual action)
reconcile it, as `inferops.triggers` tells from its watch events; any change to a child
(edited, deleted, a pod scheduled or failing) reconciles its owner, which is how drift is
repaired and status stays current without polling. Children are watched by the operator's
own cache (inferops.cache), which reconciliations read from; kopf watches only
InferenceBackends, and keeps the latest of each (inferops.bodies) so a reconciliation needs
no GET of its resource. A migration adds the reconciler's timer for its next sample, pause
end or hold-down end.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import kopf
from prometheus_client import start_http_server

from inferops import metrics, registry
from inferops.api import GROUP, PLURAL, VERSION
from inferops.bodies import Bodies
from inferops.builders import router
from inferops.builders.common import COMPONENT_LABEL, DEFAULT_IMAGES, MANAGED_BY
from inferops.cache import ChildCache
from inferops.kube import Kube, KubeError
from inferops.migration.observe import MigrationReader, router_urls
from inferops.migration.probe import Prober
from inferops.migration.sources import ScrapeSource, make_source
from inferops.migration.vector_probe import VectorProbe
from inferops.reconcile import MAX_CONCURRENT, Reconciler
from inferops.traffic.router import RouterTraffic
from inferops.triggers import Generations

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
KOPF_WORKERS = 2 * MAX_CONCURRENT
"""Resources kopf handles at once: twice what reconciles at once, so a slot held by a
handler waiting for its retry does not idle the reconciler."""


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    # Only event handlers: kopf then keeps no state on the resources (no annotation patch
    # per handled change); `inferops.triggers` decides what to reconcile.
    # Only problems become Kubernetes Events; routine success would be a write per
    # reconciliation.
    settings.posting.level = logging.WARNING
    # One replica with a Recreate strategy: no peering objects to create or watch.
    settings.peering.standalone = True
    # The handlers name their resources exactly: no need to scan CRDs or namespaces, which
    # would need cluster-wide permissions the chart does not grant.
    settings.scanning.disabled = True
    # kopf starts a worker per resource with events, all at once: a thousand new resources
    # held a thousand handlers' bodies, diffs and patches in memory together (the peak, which
    # the allocator keeps), though only MAX_CONCURRENT reconcile at a time. The others' events
    # wait in their queues instead; an idle worker frees its place soon.
    settings.queueing.worker_limit = KOPF_WORKERS
    settings.queueing.idle_timeout = 0.5
    memo.kube = Kube.connect(on_write=metrics.count_write)
    log = logging.getLogger("inferops.reconcile")
    router_url = memo.get("router_url")
    # Watch only what we manage; without the selector every pod in the cluster streams in.
    memo.cache = ChildCache(
        memo.kube,
        registry.WATCHED,
        MANAGED_SELECTOR,
        memo.get("namespaces") or None,
        on_change=lambda namespace, name: memo.reconciler.poke(namespace, name),
        log=logging.getLogger("inferops.cache"),
    )
    memo.cache.start()

    async def router_pods(namespace: str, backend: str) -> list[str]:
        pods = (
            []
            if router_url
            else [
                obj
                for (kind, _), obj in memo.cache.objects(namespace, backend).items()
                if kind == "Pod"
                and obj["metadata"]["labels"].get(COMPONENT_LABEL) == router.COMPONENT
            ]
        )
        return router_urls(pods, router_url)

    revisions = ScrapeSource(router_pods, timeout=2.0)
    prometheus = memo.get("prometheus_url")
    source = make_source(prometheus, router_pods, memo.prometheus_selector)
    memo.reader = MigrationReader(source, RouterTraffic(revisions), log, VectorProbe(router_url))
    memo.prober = Prober(log, router_url)
    network_policy = memo.get("network_policy")
    memo.bodies = Bodies()
    memo.generations = Generations()
    memo.reconciler = Reconciler(
        memo.kube,
        memo.cache,
        log,
        memo.reader,
        memo.prober,
        images=memo.get("images", DEFAULT_IMAGES),
        network_policy=network_policy,
        bodies=memo.bodies,
    )
    log.info("NetworkPolicies: %s", network_policy.describe() if network_policy else "off")
    if memo.get("metrics_port"):
        start_http_server(memo.metrics_port, addr=memo.get("metrics_host", "0.0.0.0"))


@kopf.on.cleanup()
async def close(memo: Any, **_: Any) -> None:
    await memo.cache.stop()
    await memo.prober.aclose()
    await memo.reader.aclose()
    await memo.kube.__aexit__()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def backend_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    """Keeps the latest body for the reconciler (which then needs no GET of it), and
    reconciles when the event calls for it (`inferops.triggers`): a resource seen first, a
    spec change, or a manual action (`kubectl ib promote|abort|...`) handled now rather
    than at the next timer."""
    obj: dict[str, Any] = copy.deepcopy(dict(event["object"]))  # kopf keeps its own
    meta = obj["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    if event["type"] == "DELETED":
        memo.bodies.forget(namespace, name)
        memo.generations.forget(namespace, name)
        return
    memo.bodies.seen(obj)
    if not memo.generations.wanted(obj):
        return
    await memo.cache.synced()
    try:
        outcome = await memo.reconciler.run(namespace, name, coalesce=True)
    except KubeError:
        # The API server failing or overloaded: the reconciler's own backoff, from 5 s.
        memo.reconciler.retry_later(namespace, name)
        return
    if outcome is not None:
        # InvalidSpec included: trying again cannot help; the next spec change is handled.
        memo.generations.handled(obj)
