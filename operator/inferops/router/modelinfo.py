"""What Ollama's model endpoints answer about the router's one model: `/api/tags`,
`/api/show` and `/api/ps`. Pure: what the engines reported (or that they did not) and the
clock come in as values, so every rule here is tested without a server.

The router serves one logical model on two engines, so a description merges both:

- Ollama's own `/api/show` is the model's description (format, family, parameter size,
  quantization, `model_info`, capabilities, template), passed on as Ollama wrote it. vLLM
  reports none of that; with no answer from Ollama those fields stay empty rather than
  guessed, and capabilities follow from what the table's consumers use.
- The context length is the one a request can use whichever engine it lands on: the
  smallest of the model's trained length (Ollama's `model_info`), vLLM's `max_model_len`
  and the context Ollama loaded the model with. A client sizing its prompts to a larger
  figure would be refused by vLLM (a 4xx, which does not fall back) or silently truncated by
  Ollama. It goes under `<architecture>.context_length`, the key clients look up.
- `/api/ps` lists the model while an engine holds it: vLLM always does (it never unloads,
  so it expires "forever", as Ollama reports a model kept with `keep_alive: -1`); Ollama
  only until its keep-alive runs out. Sizes are Ollama's: vLLM does not report its memory.
- Name and digest are the router's own in every answer (`/api/tags` too), so a client can
  match entries across endpoints.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from inferops.router import errors

Json = dict[str, Any]

# Ollama answers `expires_at` = now + the largest Go duration for a model kept loaded forever
# (`keep_alive: -1`); its CLI prints more than 20 years ahead as "Forever".
FOREVER = timedelta(microseconds=(2**63 - 1) // 1000)

# What each consumer `api` of the routing table needs of the model, in Ollama's words.
CAPABILITIES = {"chat": "completion", "embeddings": "embedding"}


@dataclass(frozen=True, slots=True)
class VllmModel:
    """vLLM's entry for the model in its `/v1/models`."""

    max_model_len: int | None
    root: str | None
    """The checkpoint vLLM loaded (Hugging Face id or path)."""


@dataclass(frozen=True, slots=True)
class Facts:
    """What the engines said about the model just now; None where one did not answer (not
    in the table, not ready, failed, or does not have the model)."""

    vllm: VllmModel | None = None
    ollama_show: Json | None = None
    """Ollama's `/api/show` answer for the model."""
    ollama_running: Json | None = None
    """Ollama's `/api/ps` entry for the model: present while Ollama has it loaded."""


def tagged(name: str) -> str:
    """Ollama's naming: a name without a tag means `name:latest` (a registry host's port in
    `host:5000/name` is not a tag)."""
    return name if ":" in name.rpartition("/")[2] else name + ":latest"


def digest(name: str) -> str:
    """The router's digest of a model name. The engines' digests differ (and vLLM has none);
    one stable per name lets clients that cache by digest, or match entries across
    endpoints, behave."""
    return hashlib.sha256(tagged(name).encode()).hexdigest()


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _at(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC)


def empty_details() -> Json:
    """Ollama's `details` with nothing known; Ollama always sends every key."""
    return {
        "parent_model": "",
        "format": "",
        "family": "",
        "families": None,
        "parameter_size": "",
        "quantization_level": "",
    }


def tag(name: str, loaded_at: float) -> Json:
    """One `/api/tags` entry. Sizes are the engines' business."""
    name = tagged(name)
    return {
        "name": name,
        "model": name,
        "modified_at": rfc3339(_at(loaded_at)),
        "size": 0,
        "digest": digest(name),
        "details": empty_details(),
    }


# -- what the engines said -----------------------------------------------------------------


def _positive_int(value: object) -> int | None:
    # JSON booleans are Python ints; a context length of `true` is not one.
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _object(value: object) -> Json | None:
    return value if isinstance(value, dict) else None


def vllm_model(doc: object, served: str) -> VllmModel | None:
    """The model's entry in vLLM's `/v1/models` answer; None when it is not listed."""
    listing = _object(doc)
    entries = listing.get("data") if listing else None
    if not isinstance(entries, list):
        return None
    for entry in entries:
        if isinstance(entry, dict) and entry.get("id") == served:
            root = entry.get("root")
            return VllmModel(
                _positive_int(entry.get("max_model_len")), root if isinstance(root, str) else None
            )
    return None


def ollama_running(doc: object, served: str) -> Json | None:
    """The model's entry in Ollama's `/api/ps` answer; None while it is not loaded."""
    listing = _object(doc)
    entries = listing.get("models") if listing else None
    if not isinstance(entries, list):
        return None
    names = {served, tagged(served)}
    for entry in entries:
        if isinstance(entry, dict) and (entry.get("model") in names or entry.get("name") in names):
            return entry
    return None


def _details(source: Json | None) -> Json:
    details = empty_details()
    given = _object(source.get("details")) if source else None
    if given:
        details.update(given)
    return details


def architecture(show: Json | None) -> str:
    """The model's architecture as Ollama names it (`llama`, `qwen2`, ...): the prefix of its
    `model_info` keys; empty when unknown."""
    if not show:
        return ""
    info = _object(show.get("model_info")) or {}
    arch = info.get("general.architecture")
    if isinstance(arch, str):
        return arch
    family = _details(show).get("family")
    return family if isinstance(family, str) else ""


def context_length(facts: Facts, with_trained: bool) -> int | None:
    """The longest context every engine serving the model accepts; None when none said.
    `with_trained` includes the model's trained length (Ollama's `model_info`): `/api/ps`
    leaves it out, as a loaded context is already within it."""
    limits: list[int | None] = []
    if facts.vllm:
        limits.append(facts.vllm.max_model_len)
    if facts.ollama_running:
        limits.append(_positive_int(facts.ollama_running.get("context_length")))
    if with_trained and facts.ollama_show:
        info = _object(facts.ollama_show.get("model_info")) or {}
        limits.append(_positive_int(info.get(f"{architecture(facts.ollama_show)}.context_length")))
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None


# -- requests and answers ------------------------------------------------------------------


def show_request(doc: Json, model_names: frozenset[str], served: str) -> bool:
    """Checks a `/api/show` request body; returns whether it asks for the verbose answer."""
    # `name` is the field's older, deprecated name, which Ollama still accepts.
    model = doc.get("model") or doc.get("name")
    if not isinstance(model, str) or not model:
        raise errors.bad_request("the request names no 'model'")
    if model not in model_names:
        raise errors.unknown_model(model, served)
    return doc.get("verbose") is True


def capabilities(show: Json | None, apis: Iterable[str]) -> list[str]:
    """Ollama's list when it gave one (it knows tools, vision, thinking); else what the
    table's consumers use the model for."""
    given = show.get("capabilities") if show else None
    if isinstance(given, list) and given and all(isinstance(c, str) for c in given):
        return list(given)
    wanted = {CAPABILITIES[api] for api in apis if api in CAPABILITIES}
    return sorted(wanted) or ["completion"]


def show_answer(facts: Facts, apis: Iterable[str], loaded_at: float) -> Json:
    """The `/api/show` answer: Ollama's description when it gave one, with the router's
    context length and modification time (the latter as in `/api/tags`)."""
    show = facts.ollama_show
    out: Json = dict(show) if show else {}
    arch = architecture(show)
    info: Json = dict(_object(out.get("model_info")) or {})
    info["general.architecture"] = arch
    context = context_length(facts, with_trained=True)
    if context is not None:
        info[f"{arch}.context_length"] = context
    details = _details(show)
    if not details.get("family"):
        # Clients look the context length up under `<details.family>.context_length` as
        # often as under `<general.architecture>.context_length`: a family left empty
        # would hide it from the former.
        details["family"] = arch
    out.update(
        details=details,
        model_info=info,
        capabilities=capabilities(show, apis),
        modified_at=rfc3339(_at(loaded_at)),
    )
    return out


def ps_answer(served: str, facts: Facts, now: float) -> Json:
    """The `/api/ps` answer: the model, while an engine holds it."""
    running = facts.ollama_running
    if facts.vllm is None and running is None:
        return {"models": []}
    sizes = running or {}
    name = tagged(served)
    entry: Json = {
        "name": name,
        "model": name,
        "size": _positive_int(sizes.get("size")) or 0,
        "digest": digest(name),
        "details": _details(running),
    }
    if facts.vllm is not None:
        entry["expires_at"] = rfc3339(_at(now) + FOREVER)
    elif running is not None and isinstance(running.get("expires_at"), str):
        entry["expires_at"] = running["expires_at"]
    entry["size_vram"] = _positive_int(sizes.get("size_vram")) or 0
    context = context_length(facts, with_trained=False)
    if context is not None:
        entry["context_length"] = context
    return {"models": [entry]}


__all__ = [
    "CAPABILITIES",
    "FOREVER",
    "Facts",
    "VllmModel",
    "architecture",
    "capabilities",
    "context_length",
    "digest",
    "empty_details",
    "ollama_running",
    "ps_answer",
    "rfc3339",
    "show_answer",
    "show_request",
    "tag",
    "tagged",
    "vllm_model",
]
