"""What a consumer uses that vLLM, as the spec starts it, would not honour: the findings that
hold a consumer at 0% before its migration starts. Pure.

The router counts the features each consumer's requests use
(`inferops_router_request_features_total`, names of `inferops.api.features`); the operator
reads the counts (`MetricsSource.features`) and, before a Pending consumer's first step,
compares them with the table's rules and with what the spec starts vLLM with:

- a `dropped` feature (vLLM has no equivalent: mirostat, typical_p, a template, ...) is
  always a finding;
- an `ollama` feature is a finding when its condition holds for this spec: `tools` without a
  tool-call parser, `suffix` (vLLM's completions refuse it). The router sends such requests to
  Ollama whatever the weight, so the consumer keeps working, but on Ollama, which a migration
  meant to leave. `num_ctx` is judged per request by the router (only a value above vLLM's max
  model len goes to Ollama, counted in `inferops_router_rerouted_total`), and `images` only
  when the table says vLLM is not multimodal, which the spec cannot say yet: neither is a
  finding here.

A finding holds the consumer until the spec fixes it (the finding goes away) or a user
acknowledges it (`kubectl ib ack`, which records the findings' names in the consumer's status;
a feature found later holds it again).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from inferops.api.features import BY_NAME, FEATURES, Feature
from inferops.api.spec import InferenceBackendSpec
from inferops.api.status import FeatureFinding
from inferops.builders.router import vllm_facts

TOOLS_FIX = "add --enable-auto-tool-choice --tool-call-parser <name> to spec.vllm.extraArgs"


def _feature(name: str) -> Feature | None:
    return BY_NAME.get(("option", name)) or BY_NAME.get(("request", name))


def _finding(feature: Feature, spec: InferenceBackendSpec) -> str | None:
    """The message of a finding for `feature` under `spec`, or None when vLLM honours it."""
    what = f"options.{feature.name}" if feature.where == "option" else feature.name
    if feature.rule == "dropped":
        return f"uses {what}: {feature.vllm}; vLLM answers without it"
    if feature.rule != "ollama":
        return None
    if feature.name == "tools":
        if vllm_facts(spec.vllm)["tool_calling"]:
            return None
        return (
            f"uses tools: vLLM has no tool-call parser ({TOOLS_FIX}); until then such "
            "requests stay on Ollama"
        )
    if feature.name == "suffix":
        return "uses suffix: vLLM's completions refuse it; such requests stay on Ollama"
    return None  # num_ctx and images: judged per request by the router


def findings(spec: InferenceBackendSpec, used: Mapping[str, float]) -> list[FeatureFinding]:
    """The features in `used` (name -> requests) that vLLM would not honour, in table
    order; names the table does not list are left out."""
    out = []
    order = {f.name: i for i, f in enumerate(FEATURES)}
    for name in sorted(
        (n for n, count in used.items() if count > 0), key=lambda n: order.get(n, -1)
    ):
        feature = _feature(name)
        if feature is None:
            continue
        message = _finding(feature, spec)
        if message is not None:
            out.append(FeatureFinding(feature=name, requests=int(used[name]), message=message))
    return out


def unacknowledged(
    found: Iterable[FeatureFinding], acknowledged: Iterable[str]
) -> list[FeatureFinding]:
    known = set(acknowledged)
    return [f for f in found if f.feature not in known]


__all__ = ["TOOLS_FIX", "findings", "unacknowledged"]
