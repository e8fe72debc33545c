"""`python -m bench.router`: the router benchmark, start to finish.

Installs what is missing (nginx and wrk from Debian's packages; vllm-router and LiteLLM's
proxy from PyPI into their own cached virtual environments), starts two backend stand-ins,
the inferops router and its peers (nginx, vllm-router, LiteLLM; every proxy pinned to one
core), measures streaming TTFT and end-to-end latency at each concurrency for each stream
profile, non-streaming requests/s (wrk) and a burst of held streams on every path side by
side, repeat after repeat; stops everything; writes bench/results/router.json and router.png
(router-quick.* for --quick) and prints the table with the router's ratio to each peer and
its targets' PASS/MISS.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import logging
import math
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.router import machine, peers, plot, profile, report, runner, tools
from bench.router.config import PATHS, QUICK, Config, split_cpus
from bench.router.stack import REPO, Stack

log = logging.getLogger("bench.router")

RESULTS = REPO / "bench" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.router", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short repeat (smoke run)")
    parser.add_argument("--repeats", type=int, help="repeats of every phase (default 5)")
    parser.add_argument("--duration", type=float, help="seconds measured per phase (default 10)")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        help="concurrent streams (default 1 64 512)",
    )
    parser.add_argument(
        "--paths",
        nargs="+",
        choices=PATHS,
        metavar="PATH",
        help=f"the paths to measure, of {', '.join(PATHS)} (default: all but router-2w, the "
        "router as two worker processes on two cores; direct is always measured, the added "
        "latencies are relative to it)",
    )
    parser.add_argument("--hold-streams", type=int, help="streams held open at once (1000)")
    parser.add_argument(
        "--retries",
        type=int,
        help="re-runs of a phase disturbed by other processes (default 2)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the router under load")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="results directory (bench/results)"
    )
    parser.add_argument(
        "--rerender",
        type=Path,
        metavar="JSON",
        help="no run: recompute figures, plot and table from the raw phases of a results file",
    )
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep the logs and configs of the run"
    )
    return parser.parse_args(argv)


def make_config(args: argparse.Namespace) -> Config:
    settings: dict[str, Any] = dict(QUICK) if args.quick else {}
    if args.repeats is not None:
        settings["repeats"] = args.repeats
    if args.duration is not None:
        settings["duration_s"] = args.duration
    if args.concurrency:
        settings["concurrencies"] = tuple(args.concurrency)
    if args.retries is not None:
        settings["retries"] = args.retries
    if args.hold_streams is not None:
        settings["hold_streams"] = args.hold_streams
    if args.paths:
        chosen = {"direct", *args.paths}
        settings["paths"] = tuple(p for p in PATHS if p in chosen)
    proxy, load = split_cpus()
    return Config(**settings, proxy_cpus=proxy, load_cpus=load, profile=args.profile)


def _clean(value: Any) -> Any:
    """NaN is not JSON: null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def run(config: Config, out: Path, stem: str, keep_workdir: bool) -> str:
    """Runs the benchmark; writes `<stem>.json` and `<stem>.png` into `out`; returns the
    table."""
    if importlib.util.find_spec("matplotlib") is None:  # fail now, not after 15 minutes
        raise SystemExit("the plot needs matplotlib: .venv/bin/pip install matplotlib")
    paths = tools.ensure(["wrk", *(["nginx"] if "nginx" in config.paths else [])])
    # First use: installs the peers (LiteLLM: a few minutes); each is cached afterwards.
    peer_venvs = {
        name: peers.ensure(peers.PEERS[name]) for name in config.paths if name in peers.PEERS
    }
    started = datetime.datetime.now(datetime.UTC)
    info = machine.machine()
    workdir = Path(tempfile.mkdtemp(prefix="inferops-bench-router-"))
    workdir.chmod(0o755)  # nginx's worker (user nobody) must reach its temp paths
    log.info(
        "workdir %s; proxies on cpu %s, load on cpu %s",
        workdir,
        sorted(config.proxy_cpus),
        sorted(config.load_cpus),
    )
    if config.proxy_cpus == config.load_cpus:
        log.warning("only one CPU: proxies and load share it, the figures say little")
    stack = Stack(config, workdir, paths, peer_venvs)
    profiled: dict[str, Any] | None = None
    out.mkdir(parents=True, exist_ok=True)
    try:
        stack.start()
        phases = runner.run_all(stack, paths["wrk"], workdir)
        if config.profile:
            profiled = profile.profile_router(
                stack,
                paths["wrk"],
                workdir / "post.lua",
                max(config.duration_s, 10.0),
                out,
                workdir,
            )
    except BaseException:
        log.error("failed; logs in %s", workdir)
        keep_workdir = True
        raise
    finally:
        stack.stop()
        if not keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    info["load_average_at_end"] = machine.load_average()
    doc = {
        "benchmark": "router",
        "started": started.isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python -m bench.router", *sys.argv[1:]]),
        "machine": info,
        "versions": machine.versions(paths, peer_venvs),
        "config": config.to_json(),
        "profile": profiled,
        "notes": NOTES,
    }
    return publish(doc, phases, config, out, stem)


NOTES = [
    "added = proxy path minus direct path, percentile against percentile, in the same repeat",
    "router/<peer> = median of the router's figure divided by the median of the peer's",
    "proxy CPU: user+system from /proc/<pid>/stat over the phase, divided by the requests "
    "completed in it (the process and its descendants; nginx: master+worker)",
    "proxy RSS: VmRSS of the nginx worker; of the other proxies, summed over the process and "
    "its descendants",
    "non-streaming requests/s measured with wrk (one thread, 64 connections)",
    "load cores busy: every process on the load cores (client, wrk, backends, others)",
    "proxy core used by others: the proxy core's busy time minus the proxy's own CPU time "
    "(includes the idle proxies' CPU, also shown on its own)",
    "every proxy runs for the whole run on the proxy core; only one is under load at a time",
]


def publish(
    doc: dict[str, Any], phases: list[dict[str, Any]], config: Config, out: Path, stem: str
) -> str:
    """Computes the figures from the raw phases, writes `<stem>.json` and `<stem>.png` into
    `out`; returns the table."""
    rows = report.summarise(phases, config)
    results = report.verdicts(rows, config)
    doc = {
        **doc,
        "targets": report.verdicts_json(results),
        "summary": report.rows_json(rows),
        "phases": phases,
    }
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / f"{stem}.json", out / f"{stem}.png"
    json_path.write_text(json.dumps(_clean(doc), indent=1) + "\n")
    plot.draw(rows, config, png_path)
    log.info("wrote %s and %s", json_path, png_path)
    return report.render(rows, results, config)


def rerender(source: Path, out: Path) -> str:
    """Recomputes figures, plot and table from the raw phases of an earlier run's JSON
    (written back under the same name into `out`)."""
    doc = json.loads(source.read_text())
    config = Config.from_json(doc["config"])
    phases = _unclean(doc["phases"])
    for phase in phases:  # a run from before profiles streamed with one
        if phase["kind"] == "stream":
            phase.setdefault("profile", config.profiles[0].name)
    return publish(doc, phases, config, out, source.stem)


def _unclean(value: Any) -> Any:
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {k: _unclean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unclean(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.rerender:
        sys.stdout.write(rerender(args.rerender, args.out) + "\n")
        return
    config = make_config(args)
    # A smoke run never overwrites the results of a full one.
    table = run(config, args.out, "router-quick" if args.quick else "router", args.keep_workdir)
    sys.stdout.write(table + "\n")
    if config.profile:
        profile_txt = args.out / "router-profile.txt"
        if profile_txt.exists():
            sys.stdout.write("\n" + profile_txt.read_text())


if __name__ == "__main__":
    main()
