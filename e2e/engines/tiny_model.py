"""A tiny random-weight Llama for real vLLM, generated at test time and cached.

No model can be downloaded on the project machines, so ``ensure_tiny_model()`` makes one:
a byte-level BPE tokenizer trained on a fixed built-in corpus (saved with a chat template,
so ``/v1/chat/completions`` works) and a 2-layer ``LlamaForCausalLM`` with random bfloat16
weights from a fixed seed. Its text is gibberish; the protocol, streaming, batching and
metrics of vLLM serving it are real.

The generator (``_make_tiny_model.py``) runs with the vLLM env's interpreter, where torch and
transformers are installed. The result is cached under
``${XDG_CACHE_HOME:-~/.cache}/inferops/models/tiny-llama-<hash>/``, where the hash covers
``MODEL_CONFIG`` and the generator's source, so any change makes a new directory. The
directory appears atomically (generated beside it, then renamed) under a file lock.

CLI: ``python -m e2e.engines.tiny_model`` prints the model directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ._common import cache_root, die_with_parent, once, progress, report_build
from .vllm_cpu import ensure_vllm_env, env_python

MODEL_CONFIG: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    # head dim = 128 / 2 = 64: vLLM's CPU attention needs >= 64.
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 512,
    "tokenizer_vocab_size": 512,
    "seed": 0,
}
"""The model's shape; part of the cache key."""

GENERATOR = Path(__file__).with_name("_make_tiny_model.py")
GENERATE_TIMEOUT_SECONDS = 600.0


class TinyModelError(RuntimeError):
    """Generating the tiny model failed; the message carries the generator's output."""


def config(seed: int | None = None) -> dict[str, Any]:
    """``MODEL_CONFIG``, with another weight seed when ``seed`` is given: the same shape and
    tokenizer, different weights (a model whose answers differ from the default's)."""
    return MODEL_CONFIG if seed is None else {**MODEL_CONFIG, "seed": seed}


def config_hash(seed: int | None = None) -> str:
    """Return the cache key: a hash of the config and the generator's source."""
    digest = hashlib.sha256(json.dumps(config(seed), sort_keys=True).encode())
    digest.update(GENERATOR.read_bytes())
    return digest.hexdigest()[:12]


def model_dir(seed: int | None = None) -> Path:
    """Return where the model for the current config lives (whether or not it exists)."""
    return cache_root() / "models" / f"tiny-llama-{config_hash(seed)}"


def model_info(path: Path | None = None) -> dict[str, Any]:
    """Return the generator's summary (config, parameters, seconds); {} if missing."""
    try:
        data: dict[str, Any] = json.loads(
            ((path or model_dir()) / "inferops-model.json").read_text()
        )
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data


def ensure_tiny_model(python: Path | None = None, seed: int | None = None) -> Path:
    """Generate the tiny model once and return its directory (a HF-format model dir).

    ``python`` is the interpreter to generate with; by default the vLLM env's (built
    first if missing, which can take minutes). ``seed``: another weight seed (`config`).
    """
    target = model_dir(seed)

    def generate() -> None:
        _generate(python or env_python(ensure_vllm_env()), target, config(seed))

    once((target / "inferops-model.json").is_file, target.name, generate)
    return target


def _generate(interpreter: Path, target: Path, settings: dict[str, Any]) -> None:
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    progress(f"generating tiny model into {target}")
    start = time.monotonic()
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            # The tokenizer trainer is fast; threads only matter for determinism and noise.
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",
        }
    )
    try:
        proc = subprocess.run(
            [str(interpreter), str(GENERATOR), str(tmp), json.dumps(settings)],
            capture_output=True,
            text=True,
            env=env,
            timeout=GENERATE_TIMEOUT_SECONDS,
            preexec_fn=die_with_parent,
        )
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TinyModelError(f"model generation timed out after {exc.timeout:.0f}s") from exc
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        out = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise TinyModelError(f"model generation failed (exit {proc.returncode}):\n{out}")
    if target.exists():  # a stale partial directory without the summary file
        shutil.rmtree(target)
    tmp.rename(target)
    progress(f"tiny model ready in {time.monotonic() - start:.1f}s: {target}")


def main() -> int:
    """CLI entry point: generate the model if needed and print its directory."""
    return report_build(ensure_tiny_model, TinyModelError, model_info)


if __name__ == "__main__":
    sys.exit(main())
