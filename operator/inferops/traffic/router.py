"""The built-in router behind the traffic interface: weights go into the routing ConfigMap
(with a revision: a hash of the table), and each router pod exports the revision it serves,
so a replica serves the wanted weights exactly when its revision is the live table's."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from inferops.api.routing import ROUTES_KEY, Mirror, RoutingTable
from inferops.api.spec import InferenceBackendSpec
from inferops.builders import router
from inferops.builders.common import Obj, Owner
from inferops.migration.sources import ScrapeSource
from inferops.traffic import ReplicaWeights


def live_table(live: Mapping[tuple[str, str], Obj], owner: Owner) -> RoutingTable | None:
    """The routing table in the live ConfigMap, as the routers read it."""
    config_map = live.get(("ConfigMap", router.name(owner)))
    text = ((config_map or {}).get("data") or {}).get(ROUTES_KEY)
    if not text:
        return None
    try:
        return RoutingTable.model_validate_json(text)
    except ValidationError:
        return None


class RouterTraffic:
    """`revisions` reads each ready router pod's served revision (its /metrics page)."""

    fallback = True

    def __init__(self, revisions: ScrapeSource) -> None:
        self.revisions = revisions

    def set_weights(
        self,
        spec: InferenceBackendSpec,
        owner: Owner,
        ready: Mapping[str, bool],
        weights: Mapping[str, int],
        mirrors: Mapping[str, Mirror] | None = None,
        embeddings: Mapping[str, int] | None = None,
    ) -> list[Obj]:
        return router.weights(spec, owner, ready, weights, mirrors, embeddings)

    async def served(
        self, owner: Owner, live: Mapping[tuple[str, str], Obj]
    ) -> list[ReplicaWeights]:
        table = live_table(live, owner)
        wanted = {c.name: c.weight for c in table.consumers} if table else None
        return [
            ReplicaWeights(url, wanted if table and revision == table.revision else None)
            for url, revision in await self.revisions.revisions_by_replica(
                owner.namespace, owner.name
            )
        ]

    def forget(self, namespace: str, backend: str) -> None:
        self.revisions.forget(namespace, backend)

    async def aclose(self) -> None:
        await self.revisions.aclose()


__all__ = ["RouterTraffic", "live_table"]
