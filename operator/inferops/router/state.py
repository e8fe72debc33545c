"""The router's shared state: the installed routes, the metrics and the engines' connection
pool.

Tables arrive from a source (`inferops.router.sources`) and are installed by swapping one
reference; a request reads `routes` once and keeps that object, so a swap never touches it.
When the source loses its table or holds a bad one, the last good table keeps serving and
`stale` says why, until the source holds a good table again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from inferops.api.routing import RoutingTable, with_engine_urls
from inferops.router.admission import Gate
from inferops.router.metrics import RouterMetrics
from inferops.router.pool import Pool
from inferops.router.routes import GATES, Routes, admissions, compile_table

if TYPE_CHECKING:
    from inferops.router.podmetrics import PodMetrics

log = logging.getLogger("inferops.router")


class RouterState:
    def __init__(
        self,
        metrics: RouterMetrics | None = None,
        engine_urls: Mapping[str, str] | None = None,
        trust_consumer_header: bool = False,
    ) -> None:
        self.metrics = metrics or RouterMetrics()
        self.engine_urls = dict(engine_urls or {})
        """Engine URLs that replace the table's (a router run outside the cluster)."""
        self.trust_consumer_header = trust_consumer_header
        """Honour `X-Inferops-Consumer` (tests, benchmarks); off, a request carrying it is
        refused, since it would let any caller act as another consumer."""
        self.routes: Routes | None = None
        self.loaded_at = 0.0
        """Wall-clock time the current table was installed."""
        self.draining = False
        """Set on SIGTERM: /readyz turns 503 so endpoints drop the pod while streams finish."""
        self.generation = 0
        self.stale: str | None = None
        """Why the table served is not the one the source holds (deleted, rejected); None
        while it is."""
        self.pod: PodMetrics | None = None
        """Set in a worker of several (`--workers`): `/metrics` shows the pod's totals."""
        self.gates = {name: Gate(name) for name in GATES}
        """Each engine's admission, kept across tables so requests under way keep their
        slots when a table is installed."""
        self._pool: Pool | None = None

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            raise RuntimeError("the engines' connection pool is created when the server starts")
        return self._pool

    @pool.setter
    def pool(self, pool: Pool | None) -> None:
        self._pool = pool

    def install(self, table: RoutingTable) -> bool:
        """Makes `table` the one new requests use; False when it equals the current one."""
        metrics = self.metrics
        if self.engine_urls:
            table = with_engine_urls(table, self.engine_urls)
        if self.stale is not None:
            log.info("the routing table's source holds a good table again")
            self._set_stale(None)
        if self.routes is not None and self.routes.table == table:
            metrics.table_loads.labels("unchanged").inc()
            return False
        self.generation += 1
        routes = compile_table(table, self.generation, self.gates)
        for name, admission in admissions(table).items():
            self.gates[name].configure(admission)
        previous = self.routes
        self.routes = routes
        self.loaded_at = time.time()
        metrics.table_loads.labels("installed").inc()
        metrics.table_generation.set(self.generation)
        metrics.table_revision.set(table.revision)
        for consumer in routes.consumers:
            metrics.weight.labels(consumer.name, "configured").set(consumer.weight)
            metrics.weight.labels(consumer.name, "effective").set(consumer.vllm_share)
        if previous is not None:
            for name in previous.by_name.keys() - routes.by_name.keys():
                for kind in ("configured", "effective"):
                    metrics.weight.remove(name, kind)
        log.info(
            "routing table %d installed (revision %d): model %s, vllm %s, ollama %s, weights %s",
            self.generation,
            table.revision,
            table.model,
            "ready" if table.engines.vllm.ready else "not ready",
            "absent"
            if table.engines.ollama is None
            else ("ready" if table.engines.ollama.ready else "not ready"),
            {c.name: c.vllm_share for c in routes.consumers},
        )
        return True

    def reject(self, message: str) -> None:
        """A table could not be used; the current one stays."""
        self.metrics.table_loads.labels("invalid").inc()
        log.error("routing table rejected, keeping the current one: %s", message)
        self._set_stale(f"rejected: {message}")

    def lost(self, message: str) -> None:
        """The source holds no table any more; the current one stays."""
        log.warning("%s; keeping the current routing table", message)
        self._set_stale(message)

    def _set_stale(self, reason: str | None) -> None:
        # Without a table there is nothing stale to serve: /readyz already says so.
        self.stale = reason if self.routes is not None else None
        self.metrics.table_stale.set(0 if self.stale is None else 1)


__all__ = ["RouterState"]
