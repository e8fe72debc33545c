"""What becomes of each Ollama option and request feature on its way to vLLM: one pure table.

Toward Ollama nothing becomes of them: an Ollama-API request that goes to Ollama passes
through as written (`inferops.router.ollama_api`). Toward vLLM each one has a rule:

- `mapped`: translated to vLLM's field (`vllm`) by `inferops.router.translate`;
- `runtime`: a knob of how Ollama runs the model (threads, GPU layers, memory mapping, how
  long it stays loaded), which vLLM sets at start for every request alike: left out, and
  harmless, as the answer does not depend on it;
- `dropped`: vLLM has no equivalent and the answer may differ (a sampling variant, a
  template): left out; the router counts it per consumer so that the operator can report it
  before the consumer's migration starts;
- `ollama`: vLLM cannot honour it as configured (`when` says when): such a request goes to
  Ollama, whatever the consumer's weight.

The router reads the table to translate and to count (bounded labels: the names below, never
a client's strings); docs/router.md lists it, and tests/test_features.py checks that the list
there and this table agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Rule = Literal["mapped", "runtime", "dropped", "ollama"]
Where = Literal["option", "request"]


@dataclass(frozen=True)
class Feature:
    name: str
    """As Ollama spells it: a key of `options`, or a field of the request."""
    where: Where
    rule: Rule
    vllm: str
    """The vLLM field it maps to (`mapped`), or why the rule is what it is."""
    when: str = ""
    """For `ollama`: the condition under which the request goes to Ollama, as a table
    field."""


def _option(name: str, rule: Rule, vllm: str, when: str = "") -> Feature:
    return Feature(name, "option", rule, vllm, when)


def _request(name: str, rule: Rule, vllm: str, when: str = "") -> Feature:
    return Feature(name, "request", rule, vllm, when)


_RUNTIME = "how Ollama runs the model; vLLM sets it at start for every request"
_NO_SAMPLER = "vLLM has no such sampler; the answer is still a valid sample"

FEATURES: tuple[Feature, ...] = (
    # Sampling and length options.
    _option("temperature", "mapped", "temperature"),
    _option("top_p", "mapped", "top_p"),
    _option("top_k", "mapped", "top_k"),
    _option("min_p", "mapped", "min_p"),
    _option("seed", "mapped", "seed"),
    _option("stop", "mapped", "stop"),
    _option("presence_penalty", "mapped", "presence_penalty"),
    _option("frequency_penalty", "mapped", "frequency_penalty"),
    _option("repeat_penalty", "mapped", "repetition_penalty"),
    _option("num_predict", "mapped", "max_tokens (-1 and -2, no limit, leave it out)"),
    _option("repeat_last_n", "dropped", "vLLM applies the repetition penalty to all tokens"),
    _option("typical_p", "dropped", _NO_SAMPLER),
    _option("tfs_z", "dropped", _NO_SAMPLER),
    _option("mirostat", "dropped", _NO_SAMPLER),
    _option("mirostat_eta", "dropped", _NO_SAMPLER),
    _option("mirostat_tau", "dropped", _NO_SAMPLER),
    _option("penalize_newline", "dropped", "vLLM has no newline penalty"),
    # Context: vLLM's is fixed at start (spec.vllm.maxModelLen).
    _option(
        "num_ctx",
        "ollama",
        "vLLM's context is its max model len; a larger num_ctx would be cut",
        "num_ctx > engines.vllm.maxModelLen",
    ),
    _option("num_keep", "runtime", "what Ollama keeps when it truncates; vLLM does not truncate"),
    # Runtime knobs.
    _option("num_batch", "runtime", _RUNTIME),
    _option("num_gpu", "runtime", _RUNTIME),
    _option("main_gpu", "runtime", _RUNTIME),
    _option("num_thread", "runtime", _RUNTIME),
    _option("use_mmap", "runtime", _RUNTIME),
    _option("use_mlock", "runtime", _RUNTIME),
    _option("numa", "runtime", _RUNTIME),
    _option("low_vram", "runtime", _RUNTIME),
    _option("f16_kv", "runtime", _RUNTIME),
    _option("vocab_only", "runtime", _RUNTIME),
    _option("logits_all", "runtime", _RUNTIME),
    # Request features.
    _request("keep_alive", "runtime", "vLLM keeps its model loaded for good"),
    _request(
        "tools",
        "ollama",
        "vLLM refuses tools without a tool-call parser",
        "engines.vllm.toolCalling is false (add --enable-auto-tool-choice "
        "--tool-call-parser <name> to spec.vllm.extraArgs)",
    ),
    _request("format_json", "mapped", 'response_format {"type": "json_object"}'),
    _request("format_schema", "mapped", "response_format json_schema"),
    _request(
        "images",
        "ollama",
        "a text-only vLLM model refuses images",
        "engines.vllm.multimodal is false",
    ),
    _request("think", "dropped", "vLLM's reasoning is set at start (--reasoning-parser)"),
    _request("logprobs", "dropped", "the translated answer carries no log probabilities"),
    _request("raw", "mapped", "/v1/completions (no chat template)"),
    _request("suffix", "ollama", "vLLM's completions refuse suffix", "always"),
    _request("system", "mapped", "a system message"),
    _request("template", "dropped", "an Ollama (Go) template cannot be applied by vLLM"),
    _request("context", "dropped", "Ollama's token context of an earlier answer"),
)

BY_NAME: dict[tuple[Where, str], Feature] = {(f.where, f.name): f for f in FEATURES}
OPTIONS: dict[str, Feature] = {f.name: f for f in FEATURES if f.where == "option"}


def not_honoured(feature: Feature) -> bool:
    """Whether vLLM may answer differently, or not at all, for a request using `feature`:
    what the operator reports before a consumer's migration starts."""
    return feature.rule in ("dropped", "ollama")


__all__ = [
    "BY_NAME",
    "FEATURES",
    "OPTIONS",
    "Feature",
    "Rule",
    "Where",
    "not_honoured",
]
