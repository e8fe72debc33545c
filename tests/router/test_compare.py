"""The shadow step's comparison rules, table-driven: which requests can agree, and what two
answers' verdict is (`inferops.router.compare`)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from inferops.router.compare import compare, kind_of, normalize

CHAT = "/v1/chat/completions"


@pytest.mark.parametrize(
    ("path", "doc", "kind"),
    [
        ("/v1/embeddings", {"input": "x"}, "embeddings"),
        (CHAT, {"response_format": {"type": "json_object"}}, "json"),
        (CHAT, {"response_format": {"type": "json_schema", "json_schema": {}}}, "json"),
        (CHAT, {"response_format": {"type": "text"}, "temperature": 0}, "deterministic"),
        (CHAT, {"format": "json"}, "json"),
        (CHAT, {"format": {"type": "object"}}, "json"),
        (CHAT, {"temperature": 0}, "deterministic"),
        (CHAT, {"temperature": 0.0}, "deterministic"),
        (CHAT, {"options": {"temperature": 0}}, "deterministic"),
        (CHAT, {"top_k": 1, "temperature": 0.9}, "deterministic"),
        # Neither engine's default temperature is 0; a seed repeats one engine's sampling,
        # not the other engine's.
        (CHAT, {}, "other"),
        (CHAT, {"temperature": 0.7, "seed": 1}, "other"),
        (CHAT, {"temperature": False}, "other"),
        ("/v1/completions", {"temperature": 0}, "deterministic"),
    ],
)
def test_kind(path: str, doc: dict[str, Any], kind: str) -> None:
    assert kind_of(path, doc) == kind


def chat(content: str) -> bytes:
    return json.dumps(
        {"choices": [{"message": {"role": "assistant", "content": content}}]}
    ).encode()


def vectors(*rows: list[float]) -> bytes:
    data = [{"index": i, "embedding": row} for i, row in enumerate(rows)]
    return json.dumps({"data": list(reversed(data))}).encode()


@pytest.mark.parametrize(
    ("kind", "reference", "candidate", "verdict"),
    [
        ("deterministic", chat("the sky"), chat("the sky"), "exact"),
        # vLLM's U+FFFD for bytes Ollama holds back, at the end and within; whitespace runs.
        ("deterministic", chat("the sky"), chat("the sky\ufffd"), "normalized"),
        ("deterministic", chat("the sky is"), chat("the\ufffd sky  is "), "normalized"),
        ("deterministic", chat("the sky"), chat("the sea"), "disagree"),
        ("deterministic", chat("the sky"), b"not json", "error"),
        ("deterministic", b"{}", chat("x"), "uncomparable"),
        (
            "deterministic",
            b'{"choices": [{"text": "a b"}]}',
            b'{"choices": [{"text": "a b"}]}',
            "exact",
        ),
        ("json", chat('{"a": 1, "b": [1]}'), chat('{"b": [1], "a": 1}'), "exact"),
        ("json", chat('{"a": 1, "b": {"c": 2}}'), chat('{"a": 5, "b": {"c": 3}}'), "similar"),
        ("json", chat('{"a": 1}'), chat('{"a": 1, "extra": 2}'), "disagree"),
        ("json", chat('{"a": 1}'), chat('{"a": 1'), "disagree"),
        ("json", chat('{"a": 1'), chat('{"a": 1}'), "uncomparable"),
        ("embeddings", vectors([1, 0]), vectors([1, 0]), "exact"),
        ("embeddings", vectors([1, 0], [0, 1]), vectors([1, 0.01], [0.01, 1]), "similar"),
        ("embeddings", vectors([1, 0], [0, 1]), vectors([1, 0], [1, 1]), "disagree"),
        ("embeddings", vectors([1, 0]), vectors([1, 0], [0, 1]), "disagree"),
        ("embeddings", vectors([1, 0]), vectors([1, 0, 0]), "disagree"),
        ("embeddings", vectors([1, 0]), b'{"data": "x"}', "error"),
    ],
)
def test_verdict(kind: str, reference: bytes, candidate: bytes, verdict: str) -> None:
    assert compare(kind, reference, candidate, min_cosine=0.99).verdict == verdict


def test_descriptions_hold_no_content_unless_asked() -> None:
    secret_a, secret_b = "IBAN DE0012345678", "IBAN DE0087654321"
    outcome = compare("deterministic", chat(secret_a), chat(secret_b), 0.99)
    assert outcome.detail.startswith("text: lengths 17/17 chars, first difference at char 9")
    assert "DE00" not in outcome.detail and "IBAN" not in outcome.detail
    shown = compare("deterministic", chat(secret_a), chat(secret_b), 0.99, content=True)
    assert "12345678" in shown.detail and "87654321" in shown.detail
    json_outcome = compare("json", chat('{"iban": "DE1"}'), chat('{"name": "DE1"}'), 0.99)
    assert json_outcome.detail == "json: fields differ: missing iban; extra name"
    values = compare("json", chat('{"iban": "DE1"}'), chat('{"iban": "DE2"}'), 0.99)
    assert values.detail == "json: same fields, values differ in iban"


def test_normalize() -> None:
    assert normalize("  a\ufffd\n\n b \ufffd\ufffd") == "a b"
