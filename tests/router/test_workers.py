"""The parts of `--workers` that need no processes: merging workers' figures, the table pipe
between supervisor and workers, the workers' command line and the restart backoff."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from inferops.api.routing import RoutingTable
from inferops.router.__main__ import parse_args
from inferops.router.metrics import RouterMetrics, Series
from inferops.router.podmetrics import PodMetrics, merge, snapshot
from inferops.router.state import RouterState
from inferops.router.tablepipe import PipeSource, TableFeed, encode
from inferops.router.workers import (
    BACKOFF_FIRST,
    BACKOFF_MAX,
    STEADY_SECONDS,
    next_backoff,
    worker_command,
)
from tests.router.conftest import base_table

# (consumer, engine, route, code, latency, tokens (prompt, completion), error reason or None)
OBSERVED = [
    ("notes", "vllm", "chat", 200, 0.004, (10, 3), None),
    ("notes", "vllm", "chat", 200, 0.3, (11, 40), None),
    ("notes", "vllm", "chat", 502, 0.02, (0, 0), "connect"),
    ("notes", "ollama", "chat", 503, 0.0, (0, 0), "shed:queue_full"),
    ("rag", "vllm", "chat", 0, 0.0, (0, 0), "shadow:deterministic:exact"),
    ("rag", "vllm", "embeddings", 200, 0.05, (7, 0), None),
    ("rag", "none", "chat", 400, 0.0, (0, 0), None),
    ("notes", "ollama", "chat", 503, 0.0, (0, 0), "shed:queue_full"),
    ("notes", "ollama", "chat", 503, 0.0, (0, 0), "shed:wait_timeout"),
    ("rag", "vllm", "chat", 0, 0.0, (0, 0), "shadow:deterministic:exact"),
    ("rag", "ollama", "chat", 0, 0.0, (0, 0), "shadow:json:disagree"),
    ("notes", "ollama", "chat", 200, 1.0, (5, 5), None),
]
REQUESTS = sum(1 for *_, reason in OBSERVED if not (reason or "").startswith("shadow:"))
"""Requests among `OBSERVED`: a mirrored request's verdict is not one."""


def record(metrics: RouterMetrics, observations: list[Any]) -> None:
    for consumer, engine, route, code, latency, (prompt, completion), reason in observations:
        if reason and reason.startswith("shed:"):  # refused for the engine's overload
            metrics.shed(consumer, engine, route, reason.removeprefix("shed:"))
            continue
        if reason and reason.startswith("shadow:"):  # a mirrored request's verdict
            key = reason.removeprefix("shadow:")
            shadow = metrics.series(consumer, engine, route).shadow
            shadow[key] = shadow.get(key, 0) + 1
            continue
        one = metrics.series(consumer, engine, route)
        one.count(code)
        if reason:
            one.error(reason, fallback=True)
        if engine != "none":
            one.latency.observe(latency)
            one.ttft.observe(latency / 2)
            one.tpot.observe(latency / 10)
            one.prompt += prompt
            one.completion += completion
    metrics.series("notes", "vllm", "chat").in_flight += 1


def by_labels(series: list[Series]) -> list[dict[str, Any]]:
    return sorted(snapshot(series), key=lambda item: item["labels"])


def test_merge_sums_every_figure_as_one_process_would_have() -> None:
    one = RouterMetrics()
    record(one, OBSERVED)
    a, b, c = RouterMetrics(), RouterMetrics(), RouterMetrics()
    record(a, OBSERVED[:2])
    record(b, OBSERVED[2:5])
    record(c, OBSERVED[5:])
    # Through JSON, as the figures travel between workers.
    snaps = [json.loads(json.dumps(snapshot(m.all_series()))) for m in (a, b, c)]
    merged = merge(snaps)
    expected = by_labels(one.all_series())
    for item in expected:  # in flight: one per worker that recorded into this series
        if item["labels"] == ["notes", "vllm", "chat"]:
            item["in_flight"] = 3
    if ["rag", "none", "chat"] not in [i["labels"] for i in expected]:
        pytest.fail("the refused request's series is missing")
    shed = {i["labels"][1]: i["shed"] for i in expected if i["shed"]}
    assert shed == {"ollama": {"queue_full": 2, "wait_timeout": 1}}  # from two workers
    shadow = {i["labels"][1]: i["shadow"] for i in expected if i["shadow"]}
    assert shadow == {"vllm": {"deterministic:exact": 2}, "ollama": {"json:disagree": 1}}
    merged_items = by_labels(merged)
    for item in (*merged_items, *expected):  # float sums: compared rounded
        for name in ("latency", "ttft", "tpot"):
            item[name]["sum"] = round(item[name]["sum"], 9)
    assert merged_items == expected
    assert merge([]) == []


def test_merge_refuses_figures_with_other_buckets() -> None:
    metrics = RouterMetrics()
    record(metrics, OBSERVED[:1])
    snap = snapshot(metrics.all_series())
    snap[0]["latency"]["counts"].append(1)
    with pytest.raises(ValueError, match="buckets"):
        merge([snap])


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def requests_total(text: str) -> float:
    return sum(
        value
        for (name, _), value in samples(text).items()
        if name == "inferops_router_requests_total"
    )


async def test_a_worker_renders_the_pods_totals_and_covers_a_silent_sibling(
    tmp_path: Path,
) -> None:
    own, sibling = RouterMetrics(), RouterMetrics()
    record(own, OBSERVED[:2])
    record(sibling, OBSERVED[2:])
    worker0 = PodMetrics(own, tmp_path, 0, 2, timeout=0.5)
    worker1 = PodMetrics(sibling, tmp_path, 1, 2, timeout=0.5)
    await worker0.start()
    await worker1.start()
    try:
        text = generate_latest(await worker0.render()).decode()
        assert requests_total(text) == REQUESTS
        got = samples(text)
        count = (
            "inferops_router_request_duration_seconds_count",
            (("consumer", "notes"), ("engine", "vllm"), ("route", "chat")),
        )
        assert got[count] == 3  # two from worker 0, one from worker 1
        assert got[("inferops_router_scrape_workers", (("source", "live"),))] == 2
        # Asked the other way round: the same totals.
        assert requests_total(generate_latest(await worker1.render()).decode()) == REQUESTS

        await worker1.stop()  # as while it restarts: its last answer stands in
        text = generate_latest(await worker0.render()).decode()
        assert requests_total(text) == REQUESTS
        assert samples(text)[("inferops_router_scrape_workers", (("source", "cached"),))] == 1
        # A worker that never heard from it leaves it out, and says so.
        fresh = PodMetrics(RouterMetrics(), tmp_path, 2, 3, timeout=0.5)
        text = generate_latest(await fresh.render()).decode()
        assert requests_total(text) == 2
        assert samples(text)[("inferops_router_scrape_workers", (("source", "missing"),))] == 1
    finally:
        await worker0.stop()
        await worker1.stop()


class Pipe:
    """Stands in for a worker's stdin (an `asyncio.StreamWriter`)."""

    def __init__(self, broken: bool = False) -> None:
        self.lines: list[bytes] = []
        self.broken = broken

    def write(self, data: bytes) -> None:
        if self.broken:
            raise BrokenPipeError("the worker is gone")
        self.lines.append(data)


def table(weight: int = 100) -> RoutingTable:
    raw = base_table("http://127.0.0.1:1", "http://127.0.0.1:2")
    raw["consumers"][0]["weight"] = weight
    return RoutingTable.model_validate(raw)


def reader_of(lines: list[bytes]) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    for line in lines:
        reader.feed_data(line)
    reader.feed_eof()
    return reader


async def test_the_pipe_carries_tables_stale_reports_and_restarts_into_a_workers_state() -> None:
    feed = TableFeed()
    early = Pipe()
    feed.attach(0, early)  # type: ignore[arg-type]
    feed.lost("the ConfigMap is gone")  # before any table: nothing stale to replay
    assert feed.replay() == []
    assert feed.install(table(100)) is True
    assert feed.install(table(100)) is False
    feed.reject("bad json")
    feed.restarted()
    # A worker attached now hears the table, why it is stale, and the restarts.
    late = Pipe()
    feed.attach(1, late)  # type: ignore[arg-type]
    assert [json.loads(line).popitem()[0] for line in late.lines] == [
        "install",
        "reject",
        "restarts",
    ]

    for lines in (early.lines, late.lines):
        state = RouterState()
        stop = asyncio.Event()
        restarts: list[int] = []
        await PipeSource(stop.set, restarts.append, reader_of(lines)).run(state)
        assert state.routes is not None and state.routes.by_name["notes"].weight == 100
        assert state.stale == "rejected: bad json"
        assert state.metrics.table_stale._value.get() == 1
        assert restarts == [1]
        assert stop.is_set()  # the end of the pipe stops the worker

    # A good table clears the stale mark, in the replay too.
    feed.install(table(40))
    assert [json.loads(line).popitem()[0] for line in feed.replay()] == ["install", "restarts"]
    state = RouterState()
    await PipeSource(lambda: None, reader=reader_of(early.lines)).run(state)
    assert state.stale is None
    assert state.routes is not None and state.routes.by_name["notes"].weight == 40
    assert state.generation == 2  # 100, then 40; the repeated 100 was unchanged


async def test_a_dead_workers_pipe_is_dropped_and_bad_lines_are_skipped() -> None:
    feed = TableFeed()
    feed.attach(0, Pipe(broken=True))  # type: ignore[arg-type]
    good = Pipe()
    feed.attach(1, good)  # type: ignore[arg-type]
    feed.install(table())
    assert len(good.lines) == 1
    state = RouterState()
    lines = [b"not json\n", encode("what", 1), b'{"install": {"model": 3}}\n', *good.lines]
    await PipeSource(lambda: None, reader=reader_of(lines)).run(state)
    assert state.generation == 1


def test_a_workers_command_carries_the_supervisors_serving_options(tmp_path: Path) -> None:
    args = parse_args(
        [
            "--workers",
            "3",
            "--host",
            "127.0.0.1",
            "--port",
            "9000",
            "--table-file",
            "t.json",
            "--engine-url",
            "vllm=http://a",
            "--engine-url",
            "ollama=http://b",
            "--grace-seconds",
            "7",
            "--upstream-connections",
            "10",
            "--upstream-keepalive-seconds",
            "2",
            "--trust-consumer-header",
            "--loop",
            "asyncio",
            "--access-log",
            "--log-level",
            "DEBUG",
        ]
    )
    command = worker_command(args, 2, 9001, tmp_path)
    assert command[1:3] == ["-m", "inferops.router"]
    worker = parse_args(command[3:])
    assert (worker.worker, worker.workers, worker.run_dir) == (2, 3, tmp_path)
    assert worker.table_file is None and worker.configmap is None
    assert worker.port == 9001
    same = (
        "host",
        "engine_url",
        "grace_seconds",
        "upstream_connections",
        "upstream_keepalive_seconds",
        "trust_consumer_header",
        "loop",
        "access_log",
        "log_level",
    )
    assert {k: getattr(worker, k) for k in same} == {k: getattr(args, k) for k in same}


def test_workers_must_be_at_least_one() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--workers", "0", "--table-file", "t.json"])
    assert parse_args(["--table-file", "t.json"]).workers == 1


def test_restart_backoff_doubles_to_a_cap_and_resets_after_a_steady_run() -> None:
    delays = [0.0]
    for _ in range(10):
        delays.append(next_backoff(delays[-1], ran_seconds=1))
    assert delays[1:4] == [BACKOFF_FIRST, 2 * BACKOFF_FIRST, 4 * BACKOFF_FIRST]
    assert max(delays) == BACKOFF_MAX
    assert next_backoff(BACKOFF_MAX, ran_seconds=STEADY_SECONDS) == BACKOFF_FIRST
