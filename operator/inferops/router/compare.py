"""Comparing two engines' answers to one request: which requests can agree, whether two
answers do, and a description of a mismatch without its content. Pure.

Only what can agree is compared (the research behind it: Diffy, and the engines checked
here on the same weights):

- `embeddings`: by cosine similarity, vector by vector (the lowest decides);
- `json` (`response_format` json_object/json_schema, or Ollama's `format`): by validity and
  by field: the same value everywhere is `exact`, the same field names `similar` (values of
  sampled answers may differ), invalid JSON or other fields `disagree`;
- `deterministic` (temperature 0, or top_k 1): the text, exactly or once normalised
  (whitespace runs, and U+FFFD: vLLM renders a token that holds part of a UTF-8 character
  as U+FFFD where Ollama holds the bytes back, at the end of a cut answer and, with a model
  that emits such tokens out of order, anywhere in it);
- anything else (`other`) is sampled text, never "wrong": not compared. A `seed` with a
  temperature above 0 is left there too: each engine samples with its own generator, so a
  seed repeats an engine's answer, not the other engine's.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

KINDS = ("json", "deterministic", "embeddings", "other")
VERDICTS = ("exact", "normalized", "similar", "disagree", "error", "uncomparable", "dropped")
AGREE = frozenset({"exact", "normalized", "similar"})

EMBEDDINGS_PATH = "/v1/embeddings"
_SPACE = re.compile(r"\s+")
EXCERPT_CHARS = 40
FIELDS_SHOWN = 5


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def deterministic(doc: dict[str, Any]) -> bool:
    """Greedy decoding: temperature 0 (OpenAI's field, or Ollama's option), or top_k 1."""
    options = doc.get("options")
    for source in (doc, options if isinstance(options, dict) else {}):
        if _number(source.get("temperature")) == 0.0 or _number(source.get("top_k")) == 1.0:
            return True
    return False


def kind_of(path: str, doc: dict[str, Any]) -> str:
    """The kind of a request (`KINDS`), from its upstream path and OpenAI body."""
    if path == EMBEDDINGS_PATH:
        return "embeddings"
    response_format = doc.get("response_format")
    fmt = doc.get("format")
    if (
        isinstance(response_format, dict)
        and response_format.get("type") in ("json_object", "json_schema")
    ) or (fmt == "json" or isinstance(fmt, dict)):
        return "json"
    return "deterministic" if deterministic(doc) else "other"


@dataclass(frozen=True)
class Outcome:
    """A comparison's verdict (`VERDICTS`) and, for a mismatch, a description that holds no
    answer content unless asked for."""

    verdict: str
    detail: str = ""


def text_of(doc: object) -> str | None:
    """The generated text of an OpenAI chat or completion answer (tool calls as JSON)."""
    if not isinstance(doc, dict):
        return None
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    choice = choices[0]
    message = choice.get("message")
    if isinstance(message, dict):
        content = message.get("content")
        text: str = content if isinstance(content, str) else ""
        calls = message.get("tool_calls")
        if calls:
            text += json.dumps(calls, sort_keys=True)
        return text
    plain = choice.get("text")
    return plain if isinstance(plain, str) else None


def vectors_of(doc: object) -> list[list[float]] | None:
    """The vectors of an OpenAI embeddings answer, in input order."""
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        return None
    items = sorted((d for d in doc["data"] if isinstance(d, dict)), key=lambda d: d.get("index", 0))
    out = []
    for item in items:
        vector = item.get("embedding")
        if not isinstance(vector, list) or not all(_number(x) is not None for x in vector):
            return None
        out.append([float(x) for x in vector])
    return out


def normalize(text: str) -> str:
    """Text as compared once normalised: no U+FFFD, whitespace runs as one space, no space
    at either end."""
    return _SPACE.sub(" ", text.replace("\ufffd", "")).strip()


def cosine(a: list[float], b: list[float]) -> float | None:
    """Cosine similarity; None for vectors of different length or a zero vector."""
    if len(a) != len(b) or not a:
        return None
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return None if norm == 0 else dot / norm


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def _first_difference(a: str, b: str) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def _excerpt(text: str, at: int) -> str:
    start = max(0, at - EXCERPT_CHARS // 2)
    return json.dumps(text[start : start + EXCERPT_CHARS], ensure_ascii=False)


def describe_texts(reference: str, candidate: str, content: bool) -> str:
    """Where two texts differ: lengths, the first differing character, hashes; with
    `content`, an excerpt of each around it."""
    at = _first_difference(reference, candidate)
    detail = (
        f"lengths {len(reference)}/{len(candidate)} chars, first difference at char {at}, "
        f"sha256 {digest(reference)}/{digest(candidate)}"
    )
    if content:
        detail += f"; {_excerpt(reference, at)} vs {_excerpt(candidate, at)}"
    return detail


def _paths(value: object, prefix: str = "") -> Iterator[str]:
    """The field paths of a JSON value (`a.b`, `items[]`); list items merged."""
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path
            yield from _paths(item, path)
    elif isinstance(value, list):
        for item in value:
            yield from _paths(item, f"{prefix}[]")


def _differing_values(a: object, b: object, prefix: str = "") -> Iterator[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() & b.keys(), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            yield from _differing_values(a[key], b[key], path)
    elif a != b:
        yield prefix or "(the value)"


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:FIELDS_SHOWN])
    return shown + (f" and {len(names) - FIELDS_SHOWN} more" if len(names) > FIELDS_SHOWN else "")


def compare_json(reference: str, candidate: str, content: bool) -> Outcome:
    """Two JSON answers: by validity, then by field (see the module's docstring)."""
    try:
        expected = json.loads(reference)
    except ValueError:
        return Outcome("uncomparable", "the reference answer is not valid JSON")
    try:
        found = json.loads(candidate)
    except ValueError:
        return Outcome(
            "disagree", "json: not valid JSON; " + describe_texts(reference, candidate, content)
        )
    if found == expected:
        return Outcome("exact")
    ours, theirs = set(_paths(expected)), set(_paths(found))
    if ours == theirs:
        values = _listed(list(_differing_values(expected, found)))
        return Outcome("similar", f"json: same fields, values differ in {values}")
    missing, extra = sorted(ours - theirs), sorted(theirs - ours)
    parts = []
    if missing:
        parts.append(f"missing {_listed(missing)}")
    if extra:
        parts.append(f"extra {_listed(extra)}")
    return Outcome("disagree", "json: fields differ: " + "; ".join(parts))


def compare_text(reference: str, candidate: str, content: bool) -> Outcome:
    if reference == candidate:
        return Outcome("exact")
    if normalize(reference) == normalize(candidate):
        return Outcome("normalized")
    return Outcome("disagree", "text: " + describe_texts(reference, candidate, content))


def compare_vectors(
    reference: list[list[float]], candidate: list[list[float]], min_cosine: float
) -> Outcome:
    if len(reference) != len(candidate):
        return Outcome("disagree", f"embeddings: {len(reference)}/{len(candidate)} vectors")
    if reference == candidate:
        return Outcome("exact")
    similarities = [cosine(a, b) for a, b in zip(reference, candidate, strict=True)]
    if any(s is None for s in similarities):
        sizes = f"{len(reference[0]) if reference else 0}/{len(candidate[0]) if candidate else 0}"
        return Outcome("disagree", f"embeddings: dimensions {sizes}, or a zero vector")
    lowest = min(s for s in similarities if s is not None)
    if lowest >= min_cosine:
        return Outcome("similar")
    return Outcome(
        "disagree",
        f"embeddings: cosine {lowest:.4g} < {min_cosine:g} (lowest of {len(similarities)})",
    )


def compare(
    kind: str, reference: bytes, candidate: bytes, min_cosine: float, content: bool = False
) -> Outcome:
    """Two engines' whole OpenAI answers (2xx) to one request of `kind`. An answer that
    cannot be read is an `error` on the candidate, and makes the reference uncomparable."""
    ref_doc, cand_doc = _load(reference), _load(candidate)
    if kind == "embeddings":
        ref_vectors, cand_vectors = vectors_of(ref_doc), vectors_of(cand_doc)
        if ref_vectors is None:
            return Outcome("uncomparable", "the reference answer holds no embeddings")
        if cand_vectors is None:
            return Outcome("error", "embeddings: the answer holds no embeddings")
        return compare_vectors(ref_vectors, cand_vectors, min_cosine)
    ref_text, cand_text = text_of(ref_doc), text_of(cand_doc)
    if ref_text is None:
        return Outcome("uncomparable", "the reference answer holds no text")
    if cand_text is None:
        return Outcome("error", f"{kind}: the answer holds no text")
    if kind == "json":
        return compare_json(ref_text, cand_text, content)
    return compare_text(ref_text, cand_text, content)


def _load(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None


__all__ = [
    "AGREE",
    "KINDS",
    "VERDICTS",
    "Outcome",
    "compare",
    "compare_json",
    "compare_text",
    "compare_vectors",
    "cosine",
    "deterministic",
    "kind_of",
    "normalize",
    "text_of",
    "vectors_of",
]
