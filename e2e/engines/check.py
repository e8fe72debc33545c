"""End-to-end check of both test engines with the official ``openai`` client.

``python -m e2e.engines.check`` builds what is missing (the vLLM CPU env, the tiny model),
starts real vLLM and runs, through the official client: ``/v1/models``, non-streaming and
streaming ``/v1/chat/completions``, ``/v1/completions``; then reads ``/metrics`` and checks
the metric names the operator's analysis relies on (``VLLM_METRICS``). Then the same calls
(plus embeddings and the Ollama-only endpoints) against the Ollama stand-in, run as its own
process. It prints what it measured; ``--json PATH`` also writes it as JSON. Exit code 1
if any check failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
from testsupport.standin import STANDIN_VERSION, StandinProcess

from .tiny_model import ensure_tiny_model, model_info
from .vllm_cpu import build_info, ensure_vllm_env, env_python
from .vllm_server import VLLM_METRICS, VLLMServer

MODEL_NAME = "llama3.2"
"""One logical model name for both engines, as the operator gives them."""


class Checks:
    """Collects named pass/fail results and measurements, and prints them as they come."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.measured: dict[str, Any] = {}

    def run(self, name: str, fn: Callable[[], str | None]) -> None:
        """Run one check; an exception is a failure (reported, not raised)."""
        try:
            detail = fn()
        except Exception as exc:  # a check's failure must not stop the others
            self.failures.append(name)
            print(f"FAIL  {name}: {type(exc).__name__}: {exc}", flush=True)
            return
        print(f"ok    {name}{': ' + detail if detail else ''}", flush=True)

    def measure(self, key: str, value: Any, label: str) -> None:
        """Record a measurement and print it."""
        self.measured[key] = value
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        print(f"      {label}: {shown}", flush=True)


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.read().decode()


def _client(base_url: str) -> openai.OpenAI:
    # No retries: a failure must show, not be papered over.
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=60)


def check_openai_api(checks: Checks, prefix: str, base_url: str, model: str) -> None:
    """The calls the router makes, through the official client, against one engine."""
    client = _client(base_url)

    def models() -> str:
        ids = [m.id for m in client.models.list()]
        assert any(i in (model, f"{model}:latest") for i in ids), f"{model} not in {ids}"
        return f"{ids}"

    def chat() -> str:
        start = time.monotonic()
        resp = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
        )
        checks.measure(f"{prefix}_first_chat_seconds", time.monotonic() - start, "latency")
        choice = resp.choices[0]
        assert resp.object == "chat.completion" and resp.id, resp
        assert choice.message.role == "assistant", choice
        assert choice.finish_reason in ("stop", "length"), choice.finish_reason
        assert resp.usage is not None and 0 < resp.usage.completion_tokens <= 8, resp.usage
        tokens = resp.usage.completion_tokens
        return f"{choice.message.content!r} ({choice.finish_reason}, {tokens} tokens)"

    def chat_stream() -> str:
        start = time.monotonic()
        first: float | None = None
        text, finish, usage, chunks = "", None, None, 0
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Count to five."}],
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            chunks += 1
            assert chunk.object == "chat.completion.chunk", chunk
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    first = first or time.monotonic() - start
                    text += choice.delta.content
                finish = choice.finish_reason or finish
        assert finish in ("stop", "length"), finish
        assert usage is not None and usage.completion_tokens > 0, usage
        if first is not None:
            checks.measure(f"{prefix}_stream_ttft_seconds", first, "time to first token")
        return f"{chunks} chunks, {text!r} ({finish}, usage {usage.completion_tokens} tokens)"

    def completion() -> str:
        resp = client.completions.create(model=model, prompt="The router", max_tokens=5)
        choice = resp.choices[0]
        assert resp.object == "text_completion", resp
        assert choice.finish_reason in ("stop", "length"), choice
        assert resp.usage is not None and resp.usage.completion_tokens <= 5, resp.usage
        return f"{choice.text!r} ({choice.finish_reason})"

    def completion_stream() -> str:
        parts = [
            c.choices[0].text
            for c in client.completions.create(
                model=model, prompt="The router", max_tokens=5, stream=True
            )
            if c.choices
        ]
        assert parts, "no chunks"
        return f"{len(parts)} chunks"

    def unknown_model() -> str:
        try:
            client.chat.completions.create(
                model="no-such-model", messages=[{"role": "user", "content": "hi"}]
            )
        except openai.NotFoundError as exc:
            return f"404 {exc.message[:60]!r}"
        raise AssertionError("an unknown model was accepted")

    checks.run(f"{prefix}: GET /v1/models", models)
    checks.run(f"{prefix}: chat completion", chat)
    checks.run(f"{prefix}: streaming chat completion (include_usage)", chat_stream)
    checks.run(f"{prefix}: completion", completion)
    checks.run(f"{prefix}: streaming completion", completion_stream)
    checks.run(f"{prefix}: unknown model -> 404", unknown_model)


def check_vllm(checks: Checks) -> None:
    """Build/reuse the env and model, start real vLLM, run the client calls and metrics."""
    start = time.monotonic()
    env = ensure_vllm_env()
    info = build_info(env)
    checks.measure("env_ensure_seconds", time.monotonic() - start, "ensure_vllm_env() now [s]")
    checks.measure("env_cold_install_seconds", info.get("install_seconds"), "cold install [s]")
    checks.measure("env_size_gb", round(info.get("size_bytes", 0) / 1e9, 2), "env size [GB]")

    start = time.monotonic()
    model_dir = ensure_tiny_model(env_python(env))
    checks.measure("model_ensure_seconds", time.monotonic() - start, "ensure_tiny_model() now [s]")
    checks.measure(
        "model_generate_seconds", model_info(model_dir).get("generate_seconds"), "generation [s]"
    )

    with VLLMServer(model_dir, served_model_name=MODEL_NAME) as vllm:
        print(f"      starting vLLM on {vllm.url} (log: {vllm.log_path})", flush=True)
        checks.measure("vllm_start_seconds", vllm.start(), "vLLM start to /health 200 [s]")
        check_openai_api(checks, "vllm", vllm.url, MODEL_NAME)

        def metrics() -> str:
            status, text = _get(vllm.url + "/metrics")
            assert status == 200
            # prometheus_client also exposes a "<name>_created" gauge per counter and
            # histogram; those are bookkeeping, not metrics of their own.
            families = {
                parts[2]: parts[3]
                for parts in (line.split() for line in text.splitlines())
                if len(parts) == 4
                and parts[:2] == ["#", "TYPE"]
                and parts[2].startswith("vllm:")
                and not parts[2].endswith("_created")
            }
            checks.measured["vllm_metric_families"] = dict(sorted(families.items()))
            missing = [m for m in VLLM_METRICS if m not in families]
            assert not missing, f"missing {missing}; found {families}"
            ttft_count = [
                line
                for line in text.splitlines()
                if line.startswith("vllm:time_to_first_token_seconds_count")
            ]
            assert ttft_count and float(ttft_count[0].split()[-1]) >= 1, ttft_count
            checks.measured["vllm_metric_sample"] = ttft_count[0]
            return f"{len(families)} vllm:* families, all of {list(VLLM_METRICS)}"

        checks.run("vllm: GET /metrics has the analysis metrics", metrics)


def check_standin(checks: Checks) -> None:
    """Start the Ollama stand-in as a process and run the same calls plus Ollama's own."""
    with StandinProcess("ollama", MODEL_NAME, words=8) as standin:
        checks.measure("standin_start_seconds", standin.start(), "stand-in start [s]")
        check_openai_api(checks, "standin", standin.url, MODEL_NAME)
        client = _client(standin.url)

        def embeddings() -> str:
            resp = client.embeddings.create(model=MODEL_NAME, input=["a", "b"])
            assert len(resp.data) == 2 and len(resp.data[0].embedding) > 0, resp
            return f"2 vectors of {len(resp.data[0].embedding)}"

        def ollama_endpoints() -> str:
            assert _get(standin.url + "/") == (200, "Ollama is running")
            version = json.loads(_get(standin.url + "/api/version")[1])
            assert version == {"version": STANDIN_VERSION}, version
            tags = json.loads(_get(standin.url + "/api/tags")[1])
            assert tags["models"][0]["name"] == f"{MODEL_NAME}:latest", tags
            return f"/, /api/version {version['version']}, /api/tags"

        checks.run("standin: embeddings", embeddings)
        checks.run("standin: GET /, /api/version, /api/tags", ollama_endpoints)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m e2e.engines.check", description=__doc__)
    parser.add_argument("--skip-vllm", action="store_true", help="check the stand-in only")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    checks = Checks()
    if not args.skip_vllm:
        try:
            check_vllm(checks)
        except Exception as exc:  # env build or start-up failure: report and go on
            checks.failures.append("vllm")
            print(f"FAIL  vllm: {type(exc).__name__}: {exc}", flush=True)
    check_standin(checks)
    if args.json:
        args.json.write_text(
            json.dumps({"failures": checks.failures, **checks.measured}, indent=2) + "\n"
        )
    print()
    print("measured:")
    for key, value in checks.measured.items():
        if key != "vllm_metric_families":
            print(f"  {key}: {value}")
    if "vllm_metric_families" in checks.measured:
        print("  vllm metric families (name type):")
        for name, kind in checks.measured["vllm_metric_families"].items():
            print(f"    {name} {kind}")
    if checks.failures:
        print(f"\n{len(checks.failures)} check(s) failed: {checks.failures}")
        return 1
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
