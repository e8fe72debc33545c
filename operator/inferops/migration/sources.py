"""Where the canary analysis gets its figures: the router's metrics, through one interface.

`MetricsSource` answers two questions: a consumer's per-engine figures over a window, and
which routing-table revision each router pod serves (a sample only counts once every
router serves the step's weight). Two implementations:

- `PrometheusSource` asks a Prometheus that scrapes the router pods (instant queries over
  `/api/v1/query`), the production setup;
- `ScrapeSource` reads the ready router pods' `/metrics` pages itself and takes the window
  as the difference from its previous reading, for clusters without Prometheus.

A source never raises for a failed read and never hands out NaN: it returns `Figures`
with `problem` set, which the analysis treats as Inconclusive.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families

from inferops.api.routing import KINDS, REVISION_METRIC, ROUTE_KINDS
from inferops.migration.figures import (
    ENGINES,
    EngineFigures,
    Figures,
    KindFigures,
    ShadowFigures,
    finite,
    quantile,
)

# The router's metric names (inferops.router.metrics), the contract between data plane and
# analysis; a unit test checks them against the router's registry.
REQUESTS = "inferops_router_requests_total"
ERRORS = "inferops_router_errors_total"
TTFT = "inferops_router_time_to_first_token_seconds"
TPOT = "inferops_router_time_per_output_token_seconds"
SHED = "inferops_router_shed_total"
TOKENS = "inferops_router_tokens_total"
COMPLETION = "completion"
"""The `kind` label of TOKENS that counts output tokens."""
SHADOW = "inferops_router_shadow_total"
FEATURES = "inferops_router_request_features_total"
FEATURES_LOOKBACK = "1d"
"""How far back PrometheusSource looks for the features and routes a consumer used."""
KIND_LABEL = "request_kind"
"""The label PrometheusSource's per-kind queries give each series, from its `route`."""
NO_ENGINE = "none"
QUANTILE = 0.95
MEDIAN = 0.5

# The figures of EngineFigures that are counts (a NaN or negative one is a failed read) and
# those that are quantiles (NaN is "no data").
COUNTS = ("requests", "errors", "shed", "output_tokens", "ttft_count", "tpot_count")
QUANTILES = ("ttft_p95", "tpot_p95", "ttft_p50", "tpot_p50")

DEFAULT_SELECTOR = 'namespace="{namespace}",pod=~"{backend}-router-.+"'
"""Label matchers of a backend's router pods as Kubernetes service discovery labels them;
`{namespace}` and `{backend}` are filled in."""

FIRST_SCRAPE = "first scrape: no window yet"
# A window this much longer than asked for spans an earlier step (or an operator restart):
# it only sets the baseline, and the next sample has a window of the right length.
STALE_WINDOW_FACTOR = 1.5

Targets = Callable[[str, str], Awaitable[list[str]]]
"""`(namespace, backend) -> base URLs of the backend's ready router pods`."""


class MetricsSource(Protocol):
    async def figures(
        self, namespace: str, backend: str, consumer: str, window_seconds: float
    ) -> Figures:
        """`consumer`'s per-engine figures over about the last `window_seconds`."""
        ...

    async def served_revisions(self, namespace: str, backend: str) -> list[int] | None:
        """The routing-table revision each ready router pod serves (gauge
        `inferops_router_table_revision`); None when it cannot be known, including when no
        pod answers (an empty list would make "every router serves it" vacuously true)."""
        ...

    async def features(
        self, namespace: str, backend: str, consumer: str
    ) -> dict[str, float] | None:
        """How many of `consumer`'s requests used each feature (`inferops.api.features`
        names), as far back as the source sees; None when it cannot be read."""
        ...

    async def routes(self, namespace: str, backend: str, consumer: str) -> dict[str, float] | None:
        """How many of `consumer`'s engine attempts went through each of the router's routes
        (`inferops.api.routing.ROUTE_KINDS`: a request kind in the OpenAI or Ollama form),
        as far back as the source sees; None when it cannot be read."""
        ...

    def forget(self, namespace: str, backend: str) -> None:
        """Drops what the source keeps of a backend (deleted)."""

    async def aclose(self) -> None:
        """Closes the source's connections."""


class SourceError(Exception):
    """A read failed; the message becomes `Figures.problem`."""


def _quote(value: str) -> str:
    """`value` escaped for a double-quoted PromQL string."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def window_of(window_seconds: float) -> int:
    """The range of a query: whole seconds (half up), at least one."""
    if not math.isfinite(window_seconds):
        raise ValueError(f"window must be finite, got {window_seconds!r}")
    return max(1, math.floor(window_seconds + 0.5))


class PrometheusSource:
    """Figures from a Prometheus that scrapes the router pods.

    `selector` holds the label matchers of one backend's router pods, with `{namespace}`
    and `{backend}` placeholders; the default fits Prometheus' Kubernetes pod discovery
    relabelled to `namespace` and `pod` labels (kube-prometheus' and most charts' default).
    """

    def __init__(
        self,
        url: str,
        selector: str = DEFAULT_SELECTOR,
        http: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.selector = selector
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=timeout)

    async def aclose(self) -> None:
        """Close the HTTP client if this source created it."""
        if self._own_http:
            await self._http.aclose()

    def forget(self, namespace: str, backend: str) -> None:
        """Nothing to drop: Prometheus keeps the history."""

    def matchers(self, namespace: str, backend: str) -> str:
        return self.selector.format(namespace=_quote(namespace), backend=_quote(backend))

    def queries(self, namespace: str, backend: str, consumer: str, window: int) -> dict[str, str]:
        """The instant queries of one sample, by figure."""
        sel = f'{self.matchers(namespace, backend)},consumer="{_quote(consumer)}"'
        sel += f',engine!="{NO_ENGINE}"'

        def histogram(name: str, q: float = QUANTILE) -> str:
            return (
                f"histogram_quantile({q}, sum by (le, engine) "
                f"(increase({name}_bucket{{{sel}}}[{window}s])))"
            )

        def total(name: str, more: str = "") -> str:
            return f"sum by (engine) (increase({name}{{{sel}{more}}}[{window}s]))"

        return {
            "requests": total(REQUESTS),
            "errors": total(ERRORS),
            "shed": total(SHED),
            "output_tokens": total(TOKENS, f',kind="{COMPLETION}"'),
            "ttft_count": total(f"{TTFT}_count"),
            "tpot_count": total(f"{TPOT}_count"),
            "ttft_p95": histogram(TTFT),
            "tpot_p95": histogram(TPOT),
            "ttft_p50": histogram(TTFT, MEDIAN),
            "tpot_p50": histogram(TPOT, MEDIAN),
        }

    def kind_queries(
        self, namespace: str, backend: str, consumer: str, window: int
    ) -> dict[str, str]:
        """The instant queries of one sample's figures by request kind: each series gets a
        `request_kind` label from its `route` (PromQL's label_replace), then is summed by
        engine and kind."""
        sel = f'{self.matchers(namespace, backend)},consumer="{_quote(consumer)}"'
        sel += f',engine!="{NO_ENGINE}"'

        def kinds(expr: str) -> str:
            for kind in KINDS:
                routes = "|".join(sorted(r for r, k in ROUTE_KINDS.items() if k == kind))
                expr = f'label_replace({expr}, "{KIND_LABEL}", "{kind}", "route", "{routes}")'
            return expr

        def total(name: str) -> str:
            return (
                f"sum by (engine, {KIND_LABEL}) ({kinds(f'increase({name}{{{sel}}}[{window}s])')})"
            )

        def histogram(name: str) -> str:
            inner = kinds(f"increase({name}_bucket{{{sel}}}[{window}s])")
            return f"histogram_quantile({QUANTILE}, sum by (le, engine, {KIND_LABEL}) ({inner}))"

        return {
            "requests": total(REQUESTS),
            "errors": total(ERRORS),
            "ttft_p95": histogram(TTFT),
            "tpot_p95": histogram(TPOT),
        }

    def shadow_query(self, namespace: str, backend: str, consumer: str, window: int) -> str:
        """The query of a sample's shadow comparisons, by engine, kind and verdict."""
        sel = f'{self.matchers(namespace, backend)},consumer="{_quote(consumer)}"'
        return f"sum by (engine, kind, verdict) (increase({SHADOW}{{{sel}}}[{window}s]))"

    async def figures(
        self, namespace: str, backend: str, consumer: str, window_seconds: float
    ) -> Figures:
        try:
            window = window_of(window_seconds)
        except ValueError as error:
            return Figures.failed(str(error))
        queries = self.queries(namespace, backend, consumer, window)
        by_kind = self.kind_queries(namespace, backend, consumer, window)
        answers = await asyncio.gather(
            *(self._by_engine(expr) for expr in queries.values()),
            self._by_verdict(self.shadow_query(namespace, backend, consumer, window)),
            *(self._by_engine_kind(expr) for expr in by_kind.values()),
            return_exceptions=True,
        )
        results: dict[str, dict[str, float]] = {}
        names = [*queries, "shadow", *(f"kind:{name}" for name in by_kind)]
        for name, answer in zip(names, answers, strict=True):
            if isinstance(answer, SourceError):
                return Figures.failed(str(answer), window)
            if isinstance(answer, BaseException):
                raise answer
            results[name] = answer
        try:
            engines = {
                engine: self._engine(engine, results, consumer, window) for engine in ENGINES
            }
            kinds = self._kinds(
                {name: results[f"kind:{name}"] for name in by_kind}, consumer, window
            )
            shadow = shadow_figures(
                (engine, kind, verdict, value)
                for key, value in results["shadow"].items()
                for engine, kind, verdict in [key.split(":", 2)]
            )
        except SourceError as error:
            return Figures.failed(str(error), window)
        return Figures(
            vllm=engines["vllm"],
            ollama=engines["ollama"],
            problem=None,
            window_seconds=window,
            shadow=shadow,
            kinds=kinds,
        )

    @staticmethod
    def _kinds(
        results: dict[str, dict[str, float]], consumer: str, window: int
    ) -> dict[str, KindFigures]:
        """Per-kind figures from the per-kind answers, keyed `engine:kind`."""
        out: dict[str, KindFigures] = {}
        for kind in KINDS:
            sides: dict[str, EngineFigures | None] = {}
            for engine in ENGINES:
                key = f"{engine}:{kind}"
                if not any(key in values for values in results.values()):
                    sides[engine] = None
                    continue
                counts = {name: results[name].get(key, 0.0) for name in ("requests", "errors")}
                for name, value in counts.items():
                    if not math.isfinite(value) or value < 0:
                        raise SourceError(
                            f"prometheus answered {value} for the {kind} {name} of consumer "
                            f"{consumer} on {engine} over {window}s"
                        )
                sides[engine] = EngineFigures(
                    requests=counts["requests"],
                    errors=counts["errors"],
                    ttft_p95=finite(results["ttft_p95"].get(key)),
                    tpot_p95=finite(results["tpot_p95"].get(key)),
                )
            if sides["vllm"] is not None or sides["ollama"] is not None:
                out[kind] = KindFigures(vllm=sides["vllm"], ollama=sides["ollama"])
        return out

    @staticmethod
    def _engine(
        engine: str, results: dict[str, dict[str, float]], consumer: str, window: int
    ) -> EngineFigures | None:
        if not any(engine in values for values in results.values()):
            return None
        counts = {}
        for name in COUNTS:
            value = results[name].get(engine, 0.0)
            if not math.isfinite(value) or value < 0:
                raise SourceError(
                    f"prometheus answered {value} for the {name} of consumer {consumer} "
                    f"on {engine} over {window}s"
                )
            counts[name] = value
        # NaN is histogram_quantile's "no observation in the window": no data.
        q = {name: finite(results[name].get(engine)) for name in QUANTILES}
        return EngineFigures(
            requests=counts["requests"],
            errors=counts["errors"],
            ttft_p95=q["ttft_p95"],
            tpot_p95=q["tpot_p95"],
            shed=counts["shed"],
            ttft_p50=q["ttft_p50"],
            tpot_p50=q["tpot_p50"],
            ttft_count=counts["ttft_count"],
            tpot_count=counts["tpot_count"],
            output_tokens=counts["output_tokens"],
        )

    async def features(
        self, namespace: str, backend: str, consumer: str
    ) -> dict[str, float] | None:
        """The highest count of each router pod's series over `FEATURES_LOOKBACK`, summed:
        `increase` would miss a feature used once (a series born at 1 has no increase), and
        the maximum outlives a router's restart within the lookback."""
        sel = f'{self.matchers(namespace, backend)},consumer="{_quote(consumer)}"'
        expr = f"sum by (feature) (max_over_time({FEATURES}{{{sel}}}[{FEATURES_LOOKBACK}]))"
        try:
            found = await self._vector(expr)
        except SourceError:
            return None
        return {
            labels["feature"]: value
            for labels, value in found
            if "feature" in labels and math.isfinite(value)
        }

    async def routes(self, namespace: str, backend: str, consumer: str) -> dict[str, float] | None:
        """The highest request count of each router pod's series over `FEATURES_LOOKBACK`,
        summed by route (as for features: a route used once has no increase)."""
        sel = f'{self.matchers(namespace, backend)},consumer="{_quote(consumer)}"'
        sel += f',engine!="{NO_ENGINE}"'
        expr = f"sum by (route) (max_over_time({REQUESTS}{{{sel}}}[{FEATURES_LOOKBACK}]))"
        try:
            found = await self._vector(expr)
        except SourceError:
            return None
        return {
            labels["route"]: value
            for labels, value in found
            if labels.get("route") in ROUTE_KINDS and math.isfinite(value)
        }

    async def served_revisions(self, namespace: str, backend: str) -> list[int] | None:
        try:
            values = [
                value
                for _, value in await self._vector(
                    f"{REVISION_METRIC}{{{self.matchers(namespace, backend)}}}"
                )
            ]
        except SourceError:
            return None
        return _revisions(values)

    async def _by_engine(self, expr: str) -> dict[str, float]:
        """An instant vector keyed by its `engine` label (other engines left out)."""
        return {
            labels["engine"]: value
            for labels, value in await self._vector(expr)
            if labels.get("engine") in ENGINES
        }

    async def _by_engine_kind(self, expr: str) -> dict[str, float]:
        """An instant vector keyed `engine:kind` (other engines and no kind left out)."""
        return {
            f"{labels['engine']}:{labels[KIND_LABEL]}": value
            for labels, value in await self._vector(expr)
            if labels.get("engine") in ENGINES and labels.get(KIND_LABEL) in KINDS
        }

    async def _by_verdict(self, expr: str) -> dict[str, float]:
        """An instant vector keyed `engine:kind:verdict`."""
        return {
            ":".join(labels.get(name, "") for name in ("engine", "kind", "verdict")): value
            for labels, value in await self._vector(expr)
        }

    async def _vector(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query's samples as (labels, value); SourceError on any failure."""
        where = f"prometheus {self.url}"
        try:
            response = await self._http.get(f"{self.url}/api/v1/query", params={"query": expr})
        except httpx.TimeoutException as error:
            raise SourceError(f"{where}: timed out ({type(error).__name__}): {expr}") from None
        except httpx.HTTPError as error:
            raise SourceError(f"{where}: unreachable ({type(error).__name__}: {error})") from None
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict):
            detail = body.get("error") if isinstance(body, dict) else response.text[:200]
            raise SourceError(f"{where}: HTTP {response.status_code}: {detail}: {expr}")
        if body.get("status") != "success":
            raise SourceError(f"{where}: status {body.get('status')!r}: {body.get('error')}")
        try:
            data = body["data"]
            if data["resultType"] != "vector":
                raise ValueError(f"result type {data['resultType']!r}, expected a vector")
            return [
                ({str(k): str(v) for k, v in item["metric"].items()}, float(item["value"][1]))
                for item in data["result"]
            ]
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
            raise SourceError(f"{where}: unexpected answer ({error!r}): {expr}") from None


SeriesKey = tuple[str, tuple[tuple[str, str], ...]]
"""A sample's name and its labels other than `consumer`, sorted."""

WANTED = frozenset({REQUESTS, ERRORS, SHED, TOKENS, SHADOW, f"{TTFT}_bucket", f"{TPOT}_bucket"})


@dataclass(frozen=True)
class Reading:
    """One consumer's series on each router pod at one moment."""

    at: float
    pods: dict[str, dict[SeriesKey, float]]


class ScrapeSource:
    """Figures from the router pods' own `/metrics` pages, without Prometheus.

    Each `figures()` call reads every ready router pod (`targets`) and answers with the
    increase since the previous call for the same (namespace, backend, consumer): the window
    is the time between the two readings (`Figures.window_seconds`), not `window_seconds`.
    Increases are taken per pod and series, then summed, so that one pod's restart (a
    counter that went down: its new value is the increase, as in Prometheus) or another's
    traffic cannot hide each other. A series absent from a pod's previous reading was born
    in the window and counts from 0; a pod absent from the previous reading only sets its
    baseline (its earlier history is not in the window). The first call for a consumer has
    no window and answers `problem=FIRST_SCRAPE`; a failed call keeps the previous reading,
    so the next window spans both.
    """

    def __init__(
        self,
        targets: Targets,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 5.0,
    ) -> None:
        self.targets = targets
        self.clock = clock
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=timeout)
        self._previous: dict[tuple[str, str, str], Reading] = {}
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}

    async def aclose(self) -> None:
        """Close the HTTP client if this source created it."""
        if self._own_http:
            await self._http.aclose()

    def forget(self, namespace: str, backend: str) -> None:
        """Drop the readings of a backend (deleted, or its migration finished)."""
        for key in [k for k in self._previous if k[:2] == (namespace, backend)]:
            del self._previous[key]
            self._locks.pop(key, None)

    async def figures(
        self, namespace: str, backend: str, consumer: str, window_seconds: float
    ) -> Figures:
        key = (namespace, backend, consumer)
        # Two overlapping calls for one consumer would each take half of the window.
        async with self._locks.setdefault(key, asyncio.Lock()):
            try:
                pages = await self._scrape(namespace, backend)
                reading = Reading(
                    self.clock(), {url: consumer_series(text, consumer) for url, text in pages}
                )
            except SourceError as error:
                return Figures.failed(str(error))
            previous = self._previous.get(key)
            self._previous[key] = reading
        if previous is None:
            return Figures.failed(FIRST_SCRAPE)
        span = reading.at - previous.at
        if span > window_seconds * STALE_WINDOW_FACTOR:
            return Figures.failed(
                f"the last reading is {span:.0f}s old, longer than the {window_seconds:.0f}s "
                "window: taken as the new baseline",
                span,
            )
        return window_figures(previous, reading)

    async def features(
        self, namespace: str, backend: str, consumer: str
    ) -> dict[str, float] | None:
        """The counts every ready router pod holds now (since its start), summed."""
        try:
            pages = await self._scrape(namespace, backend)
        except SourceError:
            return None
        out: dict[str, float] = {}
        for _, text in pages:
            try:
                for family in text_string_to_metric_families(text):
                    for sample in family.samples:
                        labels = sample.labels
                        if sample.name != FEATURES or labels.get("consumer") != consumer:
                            continue
                        if "feature" in labels and math.isfinite(sample.value):
                            name = labels["feature"]
                            out[name] = out.get(name, 0.0) + sample.value
            except Exception:  # the parser raises assorted types on malformed input
                return None
        return out

    async def routes(self, namespace: str, backend: str, consumer: str) -> dict[str, float] | None:
        """The engine attempts every ready router pod counted (since its start), summed by
        route."""
        try:
            pages = await self._scrape(namespace, backend)
            readings = [consumer_series(text, consumer) for _, text in pages]
        except SourceError:
            return None
        out: dict[str, float] = {}
        for series in readings:
            for (name, labels), value in series.items():
                route = dict(labels).get("route", "")
                if name == REQUESTS and route in ROUTE_KINDS:
                    out[route] = out.get(route, 0.0) + value
        return out

    async def served_revisions(self, namespace: str, backend: str) -> list[int] | None:
        try:
            pages = await self._scrape(namespace, backend)
        except SourceError:
            return None
        revisions = []
        for _, text in pages:
            found = _one_revision(text)
            if found is None:
                return None  # a router without the gauge cannot say what it serves
            revisions.append(found)
        return sorted(revisions) or None

    async def revisions_by_replica(
        self, namespace: str, backend: str
    ) -> list[tuple[str, int | None]]:
        """(url, routing-table revision) of every ready router pod; None for a pod that
        cannot say (unreachable, no gauge or more than one): unknown, not a revision."""
        try:
            urls = await self.targets(namespace, backend)
        except Exception:  # the caller's lister: no replica known
            return []
        pages = await asyncio.gather(*(self._page(url) for url in urls), return_exceptions=True)
        out: list[tuple[str, int | None]] = []
        for url, page in zip(urls, pages, strict=True):
            found = None if isinstance(page, BaseException) else _one_revision(page)
            out.append((url, found))
        return out

    async def _scrape(self, namespace: str, backend: str) -> list[tuple[str, str]]:
        """(url, page) of every ready router pod; SourceError when any read fails."""
        try:
            urls = await self.targets(namespace, backend)
        except Exception as error:  # the caller's lister: any failure is a failed sample
            raise SourceError(
                f"listing the router pods of {namespace}/{backend} failed: {error!r}"
            ) from None
        if not urls:
            raise SourceError(f"no ready router pod for {namespace}/{backend}")
        pages = await asyncio.gather(*(self._page(url) for url in urls), return_exceptions=True)
        found = []
        for url, page in zip(urls, pages, strict=True):
            if isinstance(page, BaseException):
                raise page  # the first failure (SourceError) fails the whole reading
            found.append((url, page))
        return found

    async def _page(self, base: str) -> str:
        url = f"{base.rstrip('/')}/metrics"
        try:
            response = await self._http.get(url)
        except httpx.TimeoutException as error:
            raise SourceError(f"router {url}: timed out ({type(error).__name__})") from None
        except httpx.HTTPError as error:
            raise SourceError(
                f"router {url}: unreachable ({type(error).__name__}: {error})"
            ) from None
        if response.status_code != 200:
            raise SourceError(f"router {url}: HTTP {response.status_code}")
        return response.text


def consumer_series(text: str, consumer: str) -> dict[SeriesKey, float]:
    """The samples of `consumer` that figures are made of, from one exposition page."""
    series: dict[SeriesKey, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name not in WANTED:
                    continue
                labels = sample.labels
                if labels.get("consumer") != consumer or labels.get("engine") not in ENGINES:
                    continue
                if sample.name == TOKENS and labels.get("kind") != COMPLETION:
                    continue
                value = float(sample.value)
                if not math.isfinite(value):
                    raise SourceError(f"{sample.name}{labels} is {value}")
                key = (
                    sample.name,
                    tuple(sorted((k, v) for k, v in labels.items() if k != "consumer")),
                )
                series[key] = value
    except SourceError:
        raise
    except Exception as error:  # the parser raises assorted types on malformed input
        raise SourceError(f"unreadable metrics page: {error!r}") from None
    return series


def increase(before: float | None, now: float) -> float:
    """A counter's increase between two readings; a decrease is a reset (the process
    restarted), after which the new value is all the increase there is."""
    if before is None:
        return now
    return now - before if now >= before else now


def window_figures(previous: Reading, current: Reading) -> Figures:
    """Per-engine figures of the window between two readings."""
    deltas: dict[SeriesKey, float] = {}
    engines_seen: set[str] = set()
    for url, series in current.pods.items():
        before = previous.pods.get(url)
        for key, value in series.items():
            engines_seen.add(dict(key[1])["engine"])
            if before is None:
                continue  # a pod new to this reading: baseline only
            deltas[key] = deltas.get(key, 0.0) + increase(before.get(key), value)
    engines = {
        engine: _engine_figures(engine, deltas) if engine in engines_seen else None
        for engine in ENGINES
    }
    shadow = shadow_figures(
        (label["engine"], label.get("kind", ""), label.get("verdict", ""), delta)
        for (name, labels), delta in deltas.items()
        if name == SHADOW and (label := dict(labels))
    )
    return Figures(
        vllm=engines["vllm"],
        ollama=engines["ollama"],
        problem=None,
        window_seconds=current.at - previous.at,
        shadow=shadow,
        kinds=kind_figures(deltas),
    )


def kind_figures(deltas: dict[SeriesKey, float]) -> dict[str, KindFigures]:
    """The window's figures by request kind (from each series' `route`); an engine without
    a series of that kind in the window has None."""
    by_kind: dict[str, dict[SeriesKey, float]] = {}
    for key, delta in deltas.items():
        name, labels = key
        kind = ROUTE_KINDS.get(dict(labels).get("route", ""))
        if kind is not None and name != SHADOW:  # mirrored requests are not the consumer's
            by_kind.setdefault(kind, {})[key] = delta
    out: dict[str, KindFigures] = {}
    for name, found in by_kind.items():
        engines = {dict(labels)["engine"] for _, labels in found}
        out[name] = KindFigures(
            *(_engine_figures(e, found) if e in engines else None for e in ENGINES)
        )
    return out


def shadow_figures(counts: Iterable[tuple[str, str, str, float]]) -> ShadowFigures | None:
    """(engine, kind, verdict, count) summed into `ShadowFigures`; None when nothing was
    mirrored (every count 0, or none). A count that is not finite and >= 0 is a
    `SourceError`."""
    sides: dict[str, dict[str, float]] = {engine: {} for engine in ENGINES}
    disagreeing: dict[str, float] = {}
    for engine, kind, verdict, value in counts:
        if not math.isfinite(value) or value < 0:
            raise SourceError(f"shadow count {engine}/{verdict} is {value}")
        if engine in sides and verdict:
            sides[engine][verdict] = sides[engine].get(verdict, 0.0) + value
        if engine == "vllm" and verdict in ("disagree", "error") and kind and value > 0:
            disagreeing[kind] = disagreeing.get(kind, 0.0) + value
    if not any(v > 0 for side in sides.values() for v in side.values()):
        return None
    return ShadowFigures(vllm=sides["vllm"], ollama=sides["ollama"], disagreeing=disagreeing)


def _engine_figures(engine: str, deltas: dict[SeriesKey, float]) -> EngineFigures:
    sums = {REQUESTS: 0.0, ERRORS: 0.0, SHED: 0.0, TOKENS: 0.0}
    buckets: dict[str, dict[float, float]] = {f"{TTFT}_bucket": {}, f"{TPOT}_bucket": {}}
    for (name, labels), delta in deltas.items():
        label = dict(labels)
        if label["engine"] != engine:
            continue
        if name in sums:
            sums[name] += delta
        elif name in buckets:
            le = float(label["le"])  # "+Inf" parses as inf
            buckets[name][le] = buckets[name].get(le, 0.0) + delta
    ttft, tpot = buckets[f"{TTFT}_bucket"], buckets[f"{TPOT}_bucket"]
    return EngineFigures(
        requests=sums[REQUESTS],
        errors=sums[ERRORS],
        ttft_p95=_quantile(QUANTILE, ttft.items()),
        tpot_p95=_quantile(QUANTILE, tpot.items()),
        shed=sums[SHED],
        ttft_p50=_quantile(MEDIAN, ttft.items()),
        tpot_p50=_quantile(MEDIAN, tpot.items()),
        # The +Inf bucket counts every observation.
        ttft_count=ttft.get(math.inf, 0.0),
        tpot_count=tpot.get(math.inf, 0.0),
        output_tokens=sums[TOKENS],
    )


def _quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    return finite(quantile(q, list(buckets)))


def _one_revision(page: str) -> int | None:
    """The revision gauge of one router's page, or None when it has not exactly one."""
    try:
        found = [
            sample.value
            for family in text_string_to_metric_families(page)
            for sample in family.samples
            if sample.name == REVISION_METRIC
        ]
    except Exception:  # the parser raises assorted types on malformed input
        return None
    revisions = _revisions(found) if len(found) == 1 else None
    return revisions[0] if revisions else None


def _revisions(values: list[float]) -> list[int] | None:
    """Gauge values as revisions; None when there is none or one is not a whole number."""
    if not values or not all(math.isfinite(v) and v == int(v) and v >= 0 for v in values):
        return None
    return sorted(int(v) for v in values)


def make_source(
    prometheus_url: str | None, targets: Targets, selector: str = DEFAULT_SELECTOR
) -> MetricsSource:
    """`PrometheusSource` when a Prometheus is configured, else `ScrapeSource` over `targets`."""
    if prometheus_url:
        return PrometheusSource(prometheus_url, selector=selector)
    return ScrapeSource(targets)


__all__ = [
    "DEFAULT_SELECTOR",
    "FIRST_SCRAPE",
    "MetricsSource",
    "PrometheusSource",
    "ScrapeSource",
    "SourceError",
    "Targets",
    "kind_figures",
    "make_source",
    "shadow_figures",
    "window_figures",
]
