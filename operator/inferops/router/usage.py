"""What a request uses of the table of features (`inferops.api.features`), and whether vLLM,
as the routing table says it is started, cannot honour it. Pure.

The names returned are the table's own (a bounded set), never a client's strings, so they can
be metric labels. For the OpenAI API only `tools` is looked at (one dict lookup): the body is
relayed as written, vLLM reads every other field itself, and the data path must not parse more
of it than it does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inferops.api.features import OPTIONS
from inferops.api.routing import Engine

NO_TOOL_PARSER = "vllm_has_no_tool_parser"
NOT_MULTIMODAL = "vllm_not_multimodal"
SUFFIX = "vllm_refuses_suffix"
CONTEXT = "num_ctx_above_vllm_max_model_len"
"""Why a request goes to Ollama whatever its consumer's weight (the `ollama` rules)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What the routing table says of vLLM (None: not known, so not held against it)."""

    tool_calling: bool | None = None
    multimodal: bool | None = None
    max_model_len: int | None = None

    @classmethod
    def of(cls, engine: Engine) -> Limits:
        return cls(engine.tool_calling, engine.multimodal, engine.max_model_len)


Usage = tuple[list[str], str | None]
"""(the features a request uses, the reason it must go to Ollama or None)."""

NOTHING: Usage = ([], None)


def _images(doc: dict[str, Any]) -> bool:
    if doc.get("images"):
        return True
    messages = doc.get("messages")
    if isinstance(messages, list):
        return any(isinstance(m, dict) and m.get("images") for m in messages)
    return False


def _ollama(doc: dict[str, Any], limits: Limits, generation: bool, generate: bool) -> Usage:
    used: list[str] = []
    options = doc.get("options")
    if isinstance(options, dict):
        used.extend(name for name in options if name in OPTIONS)
    if "keep_alive" in doc:
        used.append("keep_alive")
    if not generation:  # embeddings: options and keep_alive are all the table lists
        return used, None
    for field in ("think", "logprobs"):
        if field in doc:
            used.append(field)
    if generate:
        used.extend(f for f in ("template", "context", "system") if f in doc)
        used.extend(f for f in ("raw", "suffix") if doc.get(f))
    elif doc.get("tools"):
        used.append("tools")
    fmt = doc.get("format")
    if fmt == "json":
        used.append("format_json")
    elif isinstance(fmt, dict):
        used.append("format_schema")
    images = _images(doc)
    if images:
        used.append("images")
    reason = None
    if "tools" in used and limits.tool_calling is False:
        reason = NO_TOOL_PARSER
    elif images and limits.multimodal is False:
        reason = NOT_MULTIMODAL
    elif "suffix" in used:
        reason = SUFFIX
    elif limits.max_model_len is not None and isinstance(options, dict):
        num_ctx = options.get("num_ctx")
        if isinstance(num_ctx, int) and num_ctx > limits.max_model_len:
            reason = CONTEXT
    return used, reason


def ollama_chat(doc: dict[str, Any], limits: Limits) -> Usage:
    """An Ollama-API `/api/chat` request."""
    return _ollama(doc, limits, generation=True, generate=False)


def ollama_generate(doc: dict[str, Any], limits: Limits) -> Usage:
    """An Ollama-API `/api/generate` request."""
    return _ollama(doc, limits, generation=True, generate=True)


def ollama_embed(doc: dict[str, Any], limits: Limits) -> Usage:
    """An Ollama-API `/api/embed` or `/api/embeddings` request."""
    return _ollama(doc, limits, generation=False, generate=False)


def openai_request(doc: dict[str, Any], limits: Limits) -> Usage:
    """An OpenAI-API request: `tools` only (see the module's docstring)."""
    if not doc.get("tools"):
        return NOTHING
    return ["tools"], NO_TOOL_PARSER if limits.tool_calling is False else None


__all__ = [
    "CONTEXT",
    "NOTHING",
    "NOT_MULTIMODAL",
    "NO_TOOL_PARSER",
    "SUFFIX",
    "Limits",
    "Usage",
    "ollama_chat",
    "ollama_embed",
    "ollama_generate",
    "openai_request",
]
