"""Non-streaming throughput with wrk (C, one thread): a Lua script makes its requests POSTs of
a chat body; the output's requests/s, latency percentiles and error counts are parsed.

wrk, not the Python client, because one Python client process cannot saturate a proxy that
runs on a core of its own: the client would be what is measured.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.router.config import HOST

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def lua_script(body: bytes) -> str:
    """The wrk script: every request is a POST of `body` for the benchmark's consumer."""
    literal = body.decode().replace("\\", "\\\\").replace("'", "\\'")
    return (
        'wrk.method = "POST"\n'
        f"wrk.body = '{literal}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Host"] = "{HOST}"\n'
    )


@dataclass
class WrkResult:
    """One wrk run (or the sum of several run side by side)."""

    requests: int
    seconds: float
    requests_per_s: float
    latency_ms: dict[str, float]
    """Percentile ("50", "99", ...) -> milliseconds."""
    non_2xx: int
    socket_errors: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not match:
        raise ValueError(f"unexpected wrk duration {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse(output: str) -> WrkResult:
    """Reads wrk's report (run with `--latency`)."""
    done = re.search(r"(\d+) requests in ([\d.]+\w+),", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not done or not rate:
        raise ValueError(f"unexpected wrk output:\n{output}")
    latency = {
        m.group(1): _ms(m.group(2))
        for m in re.finditer(r"^\s+(50|75|90|99)%\s+([\d.]+\w+)\s*$", output, re.MULTILINE)
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        requests=int(done.group(1)),
        seconds=_ms(done.group(2)) / 1000.0,
        requests_per_s=float(rate.group(1)),
        latency_ms=latency,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in sockets.groups()) if sockets else 0,
    )


def combine(results: list[WrkResult]) -> WrkResult:
    """Runs made side by side (one per backend on the direct path) as one: rates add up,
    latency percentiles are averaged (the runs see the same kind of server)."""
    if len(results) == 1:
        return results[0]
    keys = set.intersection(*(set(r.latency_ms) for r in results))
    return WrkResult(
        requests=sum(r.requests for r in results),
        seconds=max(r.seconds for r in results),
        requests_per_s=sum(r.requests_per_s for r in results),
        latency_ms={k: sum(r.latency_ms[k] for r in results) / len(results) for k in keys},
        non_2xx=sum(r.non_2xx for r in results),
        socket_errors=sum(r.socket_errors for r in results),
    )


def run(
    wrk: str,
    urls: list[str],
    connections: int,
    duration_s: float,
    script: Path,
    cpus: set[int],
) -> WrkResult:
    """wrk with `connections` connections spread over `urls` (one wrk per URL, in parallel)."""
    share = max(connections // len(urls), 1)
    procs = [
        subprocess.Popen(
            [
                wrk,
                "-t1",
                f"-c{share}",
                f"-d{max(round(duration_s), 1)}s",
                "--timeout=10s",
                "--latency",
                f"--script={script}",
                url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus),
        )
        for url in urls
    ]
    outputs = [proc.communicate(timeout=duration_s + 60)[0] for proc in procs]
    return combine([parse(output) for output in outputs])


__all__ = ["WrkResult", "combine", "lua_script", "parse", "run"]
