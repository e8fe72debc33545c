"""Where the router's time goes under the non-streaming load: py-spy samples the running router
process (without pausing it) while wrk drives it, and the collapsed stacks are summed by
function (self time) and by area (router code, aiohttp server, aiohttp client, asyncio, ...).

py-spy comes from PyPI (`pip install py-spy`); without it this step is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.router import loadgen, wrk
from bench.router.stack import Stack

log = logging.getLogger("bench.router")

# (substring of a frame's file, area); first match wins, so specific before general.
AREAS = (
    ("inferops/router/metrics", "router: metrics recording"),
    ("prometheus_client", "prometheus_client"),
    ("inferops/router/", "router: own code"),
    ("aiohttp/web_protocol", "aiohttp server: connection, parsing, handler task"),
    ("aiohttp/web_", "aiohttp server: request/response objects"),
    ("aiohttp/http_writer", "aiohttp: writing"),
    ("aiohttp/client", "aiohttp client: upstream request/response"),
    ("aiohttp/connector", "aiohttp client: connection pool"),
    ("aiohttp/streams", "aiohttp: body streams"),
    ("aiohttp/", "aiohttp: other"),
    ("multidict", "multidict/yarl"),
    ("yarl", "multidict/yarl"),
    ("asyncio/", "asyncio event loop"),
    ("selectors", "asyncio event loop"),
    ("json/", "json"),
)


def find_py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def area(frame: str) -> str:
    for needle, name in AREAS:
        if needle in frame:
            return name
    return "other"


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    """py-spy's raw format: `frame;frame;...;leaf count` per line, root first."""
    stacks: list[tuple[list[str], int]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        frames, _, count = line.rpartition(" ")
        stacks.append((frames.split(";"), int(count)))
    return stacks


_PREFIX = re.compile(r"^.*/(site-packages|lib/python3\.\d+|operator)/")


def _short(frame: str) -> str:
    """`handle (/x/site-packages/aiohttp/web.py:12)` -> `handle (aiohttp/web.py)`."""
    name, _, where = frame.partition(" (")
    if not where:
        return name
    path = _PREFIX.sub("", where.rsplit(":", 1)[0])
    return f"{name} ({path})"


def summarise(stacks: list[tuple[list[str], int]], top: int = 25) -> dict[str, Any]:
    total = sum(count for _, count in stacks) or 1
    by_self: Counter[str] = Counter()
    by_area: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks:
        leaf = _short(frames[-1])
        by_self[leaf] += count
        by_area[area(frames[-1])] += count
        for name in {_short(f) for f in frames}:
            inclusive[name] += count

    def pct(counter: Counter[str], n: int) -> list[dict[str, Any]]:
        return [
            {"name": name, "percent": 100.0 * count / total}
            for name, count in counter.most_common(n)
        ]

    router_inclusive = Counter(
        {k: v for k, v in inclusive.items() if "inferops/router" in k and "__main__" not in k}
    )
    return {
        "samples": total,
        "self_by_area": pct(by_area, len(by_area)),
        "self_by_function": pct(by_self, top),
        "inclusive_router_functions": pct(router_inclusive, top),
    }


def render(summary: dict[str, Any]) -> str:
    lines = [f"py-spy samples: {summary['samples']}", "", "Self time by area:"]
    lines += [f"  {e['percent']:5.1f}%  {e['name']}" for e in summary["self_by_area"]]
    lines += ["", "Self time by function (top):"]
    lines += [f"  {e['percent']:5.1f}%  {e['name']}" for e in summary["self_by_function"]]
    lines += ["", "Inclusive time of router functions:"]
    lines += [f"  {e['percent']:5.1f}%  {e['name']}" for e in summary["inclusive_router_functions"]]
    return "\n".join(lines)


def _record(
    py_spy: str, pid: int, seconds: int, raw: Path, cpus: set[int]
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            py_spy,
            "record",
            f"--pid={pid}",
            f"--duration={seconds}",
            "--rate=100",
            # Blocking sampling (the default) pauses the router for each sample, which costs
            # it some throughput; --nonblocking returned torn stacks for most samples here.
            "--full-filenames",
            "--format=raw",
            f"--output={raw}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )


def profile_router(
    stack: Stack, wrk_path: str, script: Path, seconds: float, out_dir: Path, raw_dir: Path
) -> dict[str, Any] | None:
    """Samples the router for `seconds` under two loads: non-streaming requests (wrk, as in
    the throughput phase) and streams (the Python client at the highest concurrency). Writes
    the raw stacks (flamegraph input) into `raw_dir` and a text summary of each into `out_dir`;
    returns the summaries."""
    py_spy = find_py_spy()
    if py_spy is None:
        log.warning("py-spy is not installed (pip install py-spy): no profile")
        return None
    router = stack.router
    assert router is not None
    config = stack.config
    cpus = set(config.load_cpus)
    duration = max(int(seconds), 2)
    url = f"http://127.0.0.1:{router.port}/v1/chat/completions"
    concurrency = max(config.concurrencies)
    summaries: dict[str, Any] = {}
    texts: list[str] = []
    for kind in ("nonstream", "stream"):
        raw = raw_dir / f"router-profile-{kind}.collapsed"
        spy = _record(py_spy, router.pid, duration, raw, cpus)
        if kind == "nonstream":
            load = wrk.run(
                wrk_path, [url], config.throughput_connections, duration + 1, script, cpus
            )
            rate = load.requests_per_s
            what = f"non-streaming, {config.throughput_connections} connections (wrk)"
        else:
            pace = config.profiles[0]
            body = loadgen.chat_body(stream=True, max_tokens=pace.tokens, standin=pace.standin())
            base = [f"http://127.0.0.1:{router.port}"]
            run = asyncio.run(loadgen.run_streams(base, concurrency, 0.0, duration + 1.0, body))
            rate = run.completed / run.wall_s
            what = (
                f"streaming {pace.name}, {concurrency} concurrent streams of {pace.tokens} events"
            )
        output, _ = spy.communicate(timeout=60)
        if spy.returncode != 0 or not raw.exists():
            log.warning("py-spy failed (%s): %s", spy.returncode, output.strip()[-500:])
            return None
        summary = summarise(parse_collapsed(raw.read_text()))
        summary["load"] = what
        summary["requests_per_s_while_sampled"] = rate
        summaries[kind] = summary
        texts.append(f"== {what}: {rate:,.0f} req/s while sampled\n{render(summary)}\n")
    (out_dir / "router-profile.txt").write_text("\n".join(texts))
    return summaries


__all__ = ["area", "find_py_spy", "parse_collapsed", "profile_router", "render", "summarise"]
