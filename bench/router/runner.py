"""Runs the phases, each path side by side, repeat after repeat, and returns every phase's raw
summary: streaming TTFT and end-to-end latency at each concurrency for each stream profile,
non-streaming throughput with wrk, and a burst of long streams held open.

Within a repeat the order of the paths rotates, so no path always runs first (or right after
the heaviest one). Around every phase it reads the proxy's CPU time and memory, the CPU time
of the load side (this process, wrk, the backends), the backends' request counters (the
traffic split actually achieved) and each core's busy time, and runs a phase again when
other processes on the machine took a noticeable share of a core it uses.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp

from bench.router import loadgen, wrk
from bench.router.config import Config, Profile
from bench.router.procs import core_times, listen_overflows
from bench.router.stack import Stack
from bench.router.stats import percentile

log = logging.getLogger("bench.router")

MIB = 1024.0


def _own_cpu() -> float:
    """CPU time of this process and its finished children (the wrk runs)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class Meter:
    """CPU, memory and backend counters around one phase."""

    stack: Stack
    path: str
    result: dict[str, Any] = field(default_factory=dict)

    @contextmanager
    def measure(self, requests: list[int]) -> Iterator[None]:
        """`requests` is filled by the phase with the number of requests it completed."""
        stack, proxy = self.stack, self.stack.proxy(self.path)
        backends = stack.backend_services()
        # The proxies not measured now share the proxy core, idle: what they take is noise.
        idle = [s for name, s in stack.proxies.items() if name != self.path]
        before_stats = stack.backend_stats()
        load0 = _own_cpu() + sum(b.cpu_seconds() for b in backends)
        idle0 = sum(s.cpu_seconds() for s in idle)
        proxy0 = proxy.cpu_seconds() if proxy else 0.0
        cores0 = core_times()
        overflows0 = listen_overflows()
        began = time.perf_counter()
        yield
        wall = time.perf_counter() - began
        overflows1 = listen_overflows()
        cores1 = core_times()
        proxy1 = proxy.cpu_seconds() if proxy else 0.0
        idle1 = sum(s.cpu_seconds() for s in idle)
        load1 = _own_cpu() + sum(b.cpu_seconds() for b in backends)
        after_stats = stack.backend_stats()
        pairs = zip(after_stats, before_stats, strict=True)
        served = [after["requests"] - before["requests"] for after, before in pairs]
        done = sum(requests)
        load_cores = len(stack.config.load_cpus)
        self.result = {
            "wall_s": wall,
            "backend_requests": served,
            "backend_share_a": served[0] / sum(served) if sum(served) else math.nan,
            "load_cpu_util": (load1 - load0) / wall / load_cores,
            "listen_overflows": overflows1 - overflows0,
            "idle_proxies_cpu_util": (idle1 - idle0) / wall,
        }
        config = stack.config
        if config.cpus_of(self.path) - config.proxy_cpus:
            # A proxy on load cores too (the router's two workers): which core ran what is
            # not known, so the others' share is taken over all the cores used.
            cores = config.cpus_of(self.path) | config.load_cpus
            use = _core_use(cores0, cores1, cores)
            own = (proxy1 - proxy0 + load1 - load0) / wall / len(cores)
            use["others"] = max(use["busy"] - own, 0.0)
            self.result["proxy_core"] = self.result["load_cores"] = use
        else:
            proxy_core = _core_use(cores0, cores1, config.proxy_cpus)
            # Whatever else ran on the proxy's core during the phase: other people's work on
            # a shared machine (the direct path's figure is the baseline of that noise).
            share = (proxy1 - proxy0) / wall / len(config.proxy_cpus)
            proxy_core["others"] = max(proxy_core["busy"] - share, 0.0)
            self.result["proxy_core"] = proxy_core
            load_use = _core_use(cores0, cores1, config.load_cpus)
            load_use["others"] = max(load_use["busy"] - self.result["load_cpu_util"], 0.0)
            self.result["load_cores"] = load_use
        if proxy is not None:
            memory = stack.proxy_memory_kib(self.path)
            cpu = proxy1 - proxy0
            self.result["proxy"] = {
                "cpu_s": cpu,
                "cpu_util": cpu / wall,
                "cpu_s_per_1k": cpu / done * 1000 if done else math.nan,
                "rss_mib": memory.get("VmRSS", 0) / MIB,
                "hwm_mib": memory.get("VmHWM", 0) / MIB,
            }


def _core_use(
    before: dict[int, tuple[int, int, int]],
    after: dict[int, tuple[int, int, int]],
    cpus: frozenset[int],
) -> dict[str, float]:
    """Busy and steal fractions (averaged over `cpus`) between two `core_times()`."""
    busy = sum(after[c][0] - before[c][0] for c in cpus)
    steal = sum(after[c][1] - before[c][1] for c in cpus)
    total = sum(after[c][2] - before[c][2] for c in cpus) or 1
    return {"busy": busy / total, "steal": steal / total}


def _ms_summary(seconds: list[float], qs: tuple[float, ...]) -> dict[str, float]:
    ordered = sorted(seconds)
    summary = {f"p{q:g}": percentile(ordered, q) * 1000 for q in qs}
    summary["max"] = ordered[-1] * 1000 if ordered else math.nan
    return summary


def stream_phase(
    stack: Stack, path: str, profile: Profile, concurrency: int, repeat: int
) -> dict[str, Any]:
    """`concurrency` closed-loop streaming clients on `path`, streams paced by `profile`:
    TTFT, end-to-end, CPU, RSS."""
    config = stack.config
    body = loadgen.chat_body(stream=True, max_tokens=profile.tokens, standin=profile.standin())
    meter = Meter(stack, path)
    completed: list[int] = []
    with meter.measure(completed):
        run = asyncio.run(
            loadgen.run_streams(
                stack.base_urls(path), concurrency, config.warmup_s, config.duration_s, body
            )
        )
        completed.append(run.completed)
    return {
        "kind": "stream",
        "repeat": repeat,
        "path": path,
        "profile": profile.name,
        "concurrency": concurrency,
        "samples": len(run.ttft),
        "completed": run.completed,
        "errors": run.errors,
        "error_samples": run.error_samples,
        "requests_per_s": run.completed / run.wall_s,
        "ttft_ms": _ms_summary(run.ttft, (50, 90, 99)),
        "e2e_ms": _ms_summary(run.e2e, (50, 99)),
        **meter.result,
    }


def throughput_phase(
    stack: Stack, path: str, repeat: int, wrk_path: str, script: Path
) -> dict[str, Any]:
    """Non-streaming requests/s on `path` with wrk, after a short unmeasured wrk run."""
    config = stack.config
    urls = [base + loadgen.CHAT for base in stack.base_urls(path)]
    cpus = set(config.load_cpus)
    connections = config.throughput_connections
    wrk.run(wrk_path, urls, connections, max(config.warmup_s, 1.0), script, cpus)  # warm-up
    # wrk leaves its last requests unanswered when it stops: a proxy that still works on
    # them would spend the measured run's first seconds on them.
    warmup_settle_s = settle(stack, path)
    meter = Meter(stack, path)
    completed: list[int] = []
    with meter.measure(completed):
        result = wrk.run(wrk_path, urls, connections, config.duration_s, script, cpus)
        completed.append(result.requests)
    return {
        "kind": "throughput",
        "repeat": repeat,
        "path": path,
        "connections": connections,
        "tool": "wrk",
        "requests_per_s": result.requests_per_s,
        "errors": result.non_2xx + result.socket_errors,
        "wrk": result.to_json(),
        "warmup_settle_s": warmup_settle_s,
        **meter.result,
    }


def _drain(stack: Stack, deadline_s: float) -> float:
    """Seconds until the backends have no stream open any more (NaN after `deadline_s`): how
    long the proxy kept streaming from the engine after its clients had gone."""
    began = time.perf_counter()
    while time.perf_counter() - began < deadline_s:
        if sum(s["open_streams"] for s in stack.backend_stats()) == 0:
            return time.perf_counter() - began
        time.sleep(0.1)
    return math.nan


def hold_phase(stack: Stack, path: str, repeat: int) -> dict[str, Any]:
    """A burst of `hold_streams` slow streams on `path`; the proxy's RSS once all are open;
    then the clients close them, and the time until the backends' streams close too."""
    config = stack.config
    body = loadgen.chat_body(
        stream=True,
        max_tokens=config.hold_tokens,
        standin={"token_ms": config.hold_token_ms, "tokens": config.hold_tokens},
    )
    before = stack.proxy_memory_kib(path)
    overflows = listen_overflows()

    def measure() -> dict[str, Any]:
        open_streams = sum(s["open_streams"] for s in stack.backend_stats())
        memory = stack.proxy_memory_kib(path)
        return {"backend_open_streams": open_streams, "memory_kib": memory}

    run = asyncio.run(
        loadgen.hold_streams(
            stack.base_urls(path),
            config.hold_streams,
            body,
            measure,
            open_timeout_s=config.hold_open_timeout_s,
        )
    )
    drained = _drain(stack, config.hold_tokens * config.hold_token_ms / 1000 + 10)
    result: dict[str, Any] = {
        "kind": "hold",
        "repeat": repeat,
        "path": path,
        "streams": run.streams,
        "opened": run.opened,
        "backend_open_streams": run.measured["backend_open_streams"],
        "open_all_s": run.open_all_s,
        "errors": run.errors,
        "error_samples": run.error_samples,
        "ttft_ms": _ms_summary(run.ttft, (50, 99)),
        "listen_overflows": listen_overflows() - overflows,
        "upstream_close_s": drained,
    }
    memory = run.measured["memory_kib"]
    if memory:
        result["proxy"] = {
            "rss_before_mib": before.get("VmRSS", 0) / MIB,
            "rss_mib": memory.get("VmRSS", 0) / MIB,
            "hwm_mib": memory.get("VmHWM", 0) / MIB,
        }
    return result


SMOKE_TTFT_S = 0.3


class SmokeFailed(RuntimeError):
    """A path does not serve the benchmark's requests as the backends were asked to."""


def smoke(stack: Stack) -> None:
    """One stream through every path, so a broken setup fails before any measuring. Its pace
    is asked for in the body (`x_standin`, as every phase does): a first event only after
    0.3 s shows that the field reached the backend, i.e. that the proxy forwards the body as
    sent (a proxy that dropped unknown fields would measure another profile)."""
    body = loadgen.chat_body(
        stream=True, max_tokens=2, standin={"ttft_ms": SMOKE_TTFT_S * 1000, "token_ms": 1.0}
    )

    async def check() -> None:
        async with loadgen.client_session() as session:
            for path in stack.config.paths:
                for base in stack.base_urls(path):
                    try:
                        ttft, _ = await loadgen.stream_once(session, base + loadgen.CHAT, body)
                    except (aiohttp.ClientError, loadgen.StreamFailed, TimeoutError) as err:
                        raise SmokeFailed(f"{path}: a test stream failed: {err!r}") from None
                    if ttft < SMOKE_TTFT_S * 0.95:
                        raise SmokeFailed(
                            f"{path}: first event after {ttft * 1000:.0f} ms, not after "
                            f"{SMOKE_TTFT_S * 1000:.0f}: the x_standin field did not reach "
                            "the backend"
                        )

    asyncio.run(check())


SETTLE_CPU = 0.05
"""A proxy using less than this share of its core..."""
SETTLE_WINDOW_S = 1.0
"""...over this long, with no stream open at the backends, is idle. (Half a second once
caught LiteLLM in a pause: it then worked for 40 s more on the clients of the phase before.)"""
SETTLE_MAX_S = 180.0


def settle(stack: Stack, path: str) -> float:
    """Waits until the path's proxy is idle and the backends have no stream open; returns
    the seconds it took (NaN when it was still busy after `SETTLE_MAX_S`).

    A proxy that goes on working for clients that have left (requests a timed-out client or
    wrk's warm-up abandoned) would otherwise take CPU from the next phase, which may measure
    another proxy on the same core."""
    proxy = stack.proxy(path)
    began = time.perf_counter()
    while time.perf_counter() - began < SETTLE_MAX_S:
        streams = sum(s["open_streams"] for s in stack.backend_stats())
        cpu = proxy.cpu_seconds() if proxy else 0.0
        time.sleep(SETTLE_WINDOW_S)
        busy = (proxy.cpu_seconds() - cpu) / SETTLE_WINDOW_S if proxy else 0.0
        if streams == 0 and busy < SETTLE_CPU:
            return time.perf_counter() - began - SETTLE_WINDOW_S
    log.warning("%s was still busy %.0f s after the phase", path, SETTLE_MAX_S)
    return math.nan


def rotated(paths: tuple[str, ...], repeat: int) -> list[str]:
    shift = repeat % len(paths)
    return list(paths[shift:] + paths[:shift])


def run_all(stack: Stack, wrk_path: str, workdir: Path) -> list[dict[str, Any]]:
    """Every phase of every repeat; the stack must be started."""
    config = stack.config
    os.sched_setaffinity(0, set(config.load_cpus))  # the client runs beside the backends
    smoke(stack)
    for path in config.paths:  # e.g. LiteLLM's start-up work
        settle(stack, path)
    script = workdir / "post.lua"
    script.write_text(wrk.lua_script(loadgen.chat_body(stream=False, max_tokens=config.tokens)))
    phases: list[dict[str, Any]] = []
    for repeat in range(config.repeats):
        order = rotated(config.paths, repeat)
        for profile in config.profiles:
            for concurrency in config.concurrencies:
                for path in order:
                    measure = partial(stream_phase, stack, path, profile, concurrency, repeat)
                    phases.append(_least_disturbed(config, measure, partial(settle, stack, path)))
        for path in order:
            measure = partial(throughput_phase, stack, path, repeat, wrk_path, script)
            phases.append(_least_disturbed(config, measure, partial(settle, stack, path)))
        for path in order:
            phase = hold_phase(stack, path, repeat)
            phase["settle_s"] = settle(stack, path)
            phases.append(phase)
            _log(phase)
    return phases


def disturbance(phase: dict[str, Any]) -> float:
    """The larger share of a core that other people's processes took during the phase: of
    the proxy's core (proxied paths) or of the load cores."""
    load = float(phase["load_cores"]["others"])
    if phase["path"] == "direct":
        return load
    return max(load, float(phase["proxy_core"]["others"]))


def _least_disturbed(
    config: Config, measure: Callable[[], dict[str, Any]], idle: Callable[[], float]
) -> dict[str, Any]:
    """Runs a phase, then `idle` (which waits until the proxy is idle again and returns how
    long that took); while other processes took more than `config.disturbed` of a core it
    uses, waits and runs it again (at most `config.retries` times), keeping the least
    disturbed attempt. The attempts' disturbances are recorded with it."""
    attempts: list[dict[str, Any]] = []
    for attempt in range(1 + config.retries):
        if attempt:
            time.sleep(config.retry_pause_s)
        phase = measure()
        phase["settle_s"] = idle()
        _log(phase)
        attempts.append(phase)
        if disturbance(phase) <= config.disturbed:
            break
        log.info(
            "  disturbed: other processes took %.0f%% of a core it uses", disturbance(phase) * 100
        )
    best = min(attempts, key=disturbance)
    best["attempts"] = [round(disturbance(a), 3) for a in attempts]
    return best


def _log(phase: dict[str, Any]) -> None:
    proxy = phase.get("proxy", {})
    if phase["kind"] == "stream":
        log.info(
            "repeat %d  %-9s x%-4d %-11s ttft p50 %7.2f ms  p99 %7.2f ms  %6.0f req/s  "
            "cpu %.3f s/1k  others %2.0f%%  errors %d",
            phase["repeat"],
            phase.get("profile", ""),
            phase["concurrency"],
            phase["path"],
            phase["ttft_ms"]["p50"],
            phase["ttft_ms"]["p99"],
            phase["requests_per_s"],
            proxy.get("cpu_s_per_1k", math.nan),
            phase["proxy_core"]["others"] * 100,
            phase["errors"],
        )
    elif phase["kind"] == "throughput":
        log.info(
            "repeat %d  non-stream x%d %-11s %8.0f req/s  proxy cpu %.0f%%  others %.0f%%  "
            "load cores %.0f%%  errors %d",
            phase["repeat"],
            phase["connections"],
            phase["path"],
            phase["requests_per_s"],
            proxy.get("cpu_util", math.nan) * 100,
            phase["proxy_core"]["others"] * 100,
            phase["load_cores"]["busy"] * 100,
            phase["errors"],
        )
    else:
        log.info(
            "repeat %d  hold %d %-11s opened %d (backends %d) in %.2f s  rss %.1f MiB  "
            "upstream closed %.1f s after the clients  errors %d",
            phase["repeat"],
            phase["streams"],
            phase["path"],
            phase["opened"],
            phase["backend_open_streams"],
            phase["open_all_s"],
            proxy.get("rss_mib", math.nan),
            phase["upstream_close_s"],
            phase["errors"],
        )


__all__ = [
    "Meter",
    "SmokeFailed",
    "hold_phase",
    "rotated",
    "run_all",
    "settle",
    "smoke",
    "stream_phase",
    "throughput_phase",
]
