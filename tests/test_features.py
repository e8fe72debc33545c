"""The table of Ollama options and features toward vLLM (`inferops.api.features`): the list in
docs/router.md is the table, and the options the router maps are the table's `mapped` ones."""

from __future__ import annotations

import re
from pathlib import Path

from inferops.api.features import FEATURES, OPTIONS, not_honoured
from inferops.router.translate import OPTION_NAMES

DOC = Path(__file__).resolve().parents[1] / "docs" / "router.md"


def _documented() -> dict[str, str]:
    text = DOC.read_text()
    start = text.index("<!-- features table:")
    end = text.index("<!-- end of features table -->")
    rows = re.findall(r"^\| `([^`]+)` \| (\w+) \|", text[start:end], re.M)
    return {name: rule for name, rule in rows}


def test_the_doc_lists_every_feature_with_its_rule() -> None:
    table = {(f"options.{f.name}" if f.where == "option" else f.name): f.rule for f in FEATURES}
    assert _documented() == table


def test_every_option_the_router_translates_is_mapped_in_the_table() -> None:
    translated = {ollama for ollama, _ in OPTION_NAMES}
    mapped = {name for name, f in OPTIONS.items() if f.rule == "mapped"} - {"num_predict"}
    assert translated == mapped
    for ollama, vllm in OPTION_NAMES:
        assert OPTIONS[ollama].vllm == vllm


def test_names_are_unique_and_only_losses_are_reported() -> None:
    keys = [(f.where, f.name) for f in FEATURES]
    assert len(keys) == len(set(keys))
    reported = {f.name for f in FEATURES if not_honoured(f)}
    assert "tools" in reported and "mirostat" in reported
    assert "num_thread" not in reported and "temperature" not in reported
    assert all(f.when for f in FEATURES if f.rule == "ollama")
