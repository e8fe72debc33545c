"""A pod's data-path metrics when the router runs as several worker processes (`--workers`).

A scrape lands on one worker (the kernel picks it, as for any connection), yet must show the
pod's totals. Every worker answers its raw figures (its `Series`, as JSON) on a private Unix
socket in the run directory; the worker serving `/metrics` asks its siblings there, merges
their figures with its own (`merge`, a pure function: counters, token counts, histogram
buckets and sums, and in-flight gauges are summed) and renders the result. The table's
series (weights, generation, revision, stale, loads) are the answering worker's own: every
worker is sent the same tables by the supervisor.

Nothing here runs per request: the figures are the same plain numbers the data path already
keeps; the work is done at scrape time (one local connection per sibling, a few KiB of JSON).

A sibling that does not answer within `timeout` (restarting, or stuck) is reported by the
last figures this worker got from it, if any, so a pod's counters do not dip (Prometheus
would read a dip as a reset and count everything again); `inferops_router_scrape_workers`
says how many workers' figures are live, cached or missing in this scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inferops.router.metrics import DataPathCollector, Histo, RouterMetrics, Series

log = logging.getLogger("inferops.router.podmetrics")

Snapshot = list[dict[str, Any]]
"""One worker's figures: one dict per `Series` (see `snapshot`)."""

HISTOGRAMS = ("latency", "ttft", "tpot")
COUNTS = ("by_code", "by_reason", "fallbacks", "shed", "shadow", "rerouted", "features")


def socket_path(run_dir: str | Path, index: int) -> Path:
    """Where worker `index` answers its figures."""
    return Path(run_dir) / f"worker-{index}.sock"


def snapshot(series: Iterable[Series]) -> Snapshot:
    """The figures of `series` as JSON-able data (dict keys become strings in JSON: codes are
    written as strings here already, so a snapshot reads the same before and after)."""
    out: Snapshot = []
    for one in series:
        item: dict[str, Any] = {
            "labels": list(one.labels),
            "in_flight": one.in_flight,
            "prompt": one.prompt,
            "completion": one.completion,
        }
        for name in HISTOGRAMS:
            histo: Histo = getattr(one, name)
            item[name] = {"counts": list(histo.counts), "sum": histo.sum}
        item["by_code"] = {str(code): n for code, n in one.by_code.items()}
        item["by_reason"] = dict(one.by_reason)
        item["fallbacks"] = dict(one.fallbacks)
        item["shed"] = dict(one.shed)
        item["shadow"] = dict(one.shadow)
        item["rerouted"] = dict(one.rerouted)
        item["features"] = dict(one.features)
        out.append(item)
    return out


def merge(snapshots: Iterable[Snapshot]) -> list[Series]:
    """The sum of several workers' figures, one `Series` per label set, in first-seen order."""
    merged: dict[tuple[str, str, str], Series] = {}
    for snap in snapshots:
        for item in snap:
            consumer, engine, route = item["labels"]
            key = (consumer, engine, route)
            into = merged.get(key)
            if into is None:
                into = merged[key] = Series(consumer, engine, route)
            into.in_flight += item["in_flight"]
            into.prompt += item["prompt"]
            into.completion += item["completion"]
            for name in HISTOGRAMS:
                histo: Histo = getattr(into, name)
                counts = item[name]["counts"]
                if len(counts) != len(histo.counts):
                    raise ValueError(
                        f"{name} of {key}: {len(counts)} buckets, expected {len(histo.counts)}"
                    )
                histo.counts = [a + b for a, b in zip(histo.counts, counts, strict=True)]
                histo.sum += item[name]["sum"]
            into_codes = into.by_code
            for code, n in item["by_code"].items():
                into_codes[int(code)] = into_codes.get(int(code), 0) + n
            for name in ("by_reason", "fallbacks", "shed", "shadow", "rerouted", "features"):
                counts_by: dict[str, int] = getattr(into, name)
                # .get: a worker of an older version (mid-upgrade) sends no "shed".
                for reason, n in item.get(name, {}).items():
                    counts_by[reason] = counts_by.get(reason, 0) + n
    return list(merged.values())


class PodMetrics:
    """Worker `index` of `workers`: answers its figures to its siblings and renders the
    pod's metrics from everyone's."""

    def __init__(
        self,
        metrics: RouterMetrics,
        run_dir: str | Path,
        index: int,
        workers: int,
        timeout: float = 1.0,
    ) -> None:
        self.metrics = metrics
        self.run_dir = Path(run_dir)
        self.index = index
        self.workers = workers
        self.timeout = timeout
        self.restarts = 0
        """Worker restarts in this pod so far, as the supervisor last said."""
        self._cache: dict[int, Snapshot] = {}
        self._server: asyncio.AbstractServer | None = None

    # -- answering siblings ----------------------------------------------------------------

    async def start(self) -> None:
        path = socket_path(self.run_dir, self.index)
        # A previous life of this worker (restarted) left its socket file behind.
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._server = await asyncio.start_unix_server(self._answer, path=str(path))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                socket_path(self.run_dir, self.index).unlink()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(json.dumps(snapshot(self.metrics.all_series())).encode())
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the asking sibling gave up
        finally:
            writer.close()

    # -- a scrape ----------------------------------------------------------------------------

    async def ask(self, index: int) -> Snapshot:
        """Sibling `index`'s figures (raises OSError, ValueError or TimeoutError)."""
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_unix_connection(
                str(socket_path(self.run_dir, index))
            )
            try:
                data = await reader.read()
            finally:
                writer.close()
        result: Snapshot = json.loads(data)
        return result

    async def gather(self) -> tuple[list[Snapshot], dict[str, int]]:
        """Every worker's figures (this one's first), and how many were live, cached or
        missing."""
        siblings = [i for i in range(self.workers) if i != self.index]
        answers = await asyncio.gather(*(self.ask(i) for i in siblings), return_exceptions=True)
        snaps = [snapshot(self.metrics.all_series())]
        status = {"live": 1, "cached": 0, "missing": 0}
        for index, answer in zip(siblings, answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, (OSError, ValueError, TimeoutError)):
                    raise answer
                cached = self._cache.get(index)
                log.warning(
                    "worker %d did not answer its metrics (%s); %s",
                    index,
                    answer.__class__.__name__ if not str(answer) else answer,
                    "using its last figures" if cached is not None else "left out",
                )
                if cached is not None:
                    snaps.append(cached)
                    status["cached"] += 1
                else:
                    status["missing"] += 1
            else:
                self._cache[index] = answer
                snaps.append(answer)
                status["live"] += 1
        return snaps, status

    async def render(self) -> _PodView:
        snaps, status = await self.gather()
        return _PodView(self, merge(snaps), status)


class _PodView(Collector):
    """A registry for `prometheus_client.generate_latest`: the merged data path, this
    worker's table series, and the workers' own series."""

    def __init__(self, pod: PodMetrics, series: list[Series], status: dict[str, int]) -> None:
        self.pod = pod
        self.series = series
        self.status = status

    def collect(self) -> Iterator[Metric]:
        yield from DataPathCollector.families(self.series)
        for metric in self.pod.metrics.table_metrics:
            yield from metric.collect()
        workers = GaugeMetricFamily(
            "inferops_router_scrape_workers",
            "Workers of this pod whose figures this scrape holds: answered now (`live`, "
            "including the one answering), their last answer (`cached`) or none (`missing`).",
            labels=["source"],
        )
        for source, n in self.status.items():
            workers.add_metric([source], n)
        yield workers
        yield CounterMetricFamily(
            "inferops_router_worker_restarts",
            "Router worker processes of this pod restarted after dying unexpectedly.",
            value=self.pod.restarts,
        )


__all__ = ["PodMetrics", "Snapshot", "merge", "snapshot", "socket_path"]
