"""The committed CRD is exactly what the models generate, and is a structural schema; the
generated files' command line writes them and fails `--check` on a stale one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferops.api import crd, facts, generated


def test_committed_crd_matches_fresh_generation() -> None:
    assert crd.CRD_PATH.read_text() == crd.render(), (
        "crds/inferencebackends.yaml is stale: run `python -m inferops.api.crd`"
    )


def _walk(node: Any, where: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((where, node))
        for key, value in node.get("properties", {}).items():
            out += _walk(value, f"{where}.{key}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                out += _walk(node[key], f"{where}[]")
    return out


def test_schema_is_structural_and_documented() -> None:
    root = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    nodes = _walk(root["properties"]["spec"], "spec")
    for where, node in nodes:
        assert "$ref" not in node and "title" not in node, where
        assert not ("properties" in node and "additionalProperties" in node), where
        assert "type" in node or node.get("x-kubernetes-int-or-string"), where
        if not where.endswith("[]"):  # list items and map values are described by their field
            assert node.get("description"), f"{where} has no description for kubectl explain"


def test_crd_identity_and_printer_columns() -> None:
    doc = yaml.safe_load(crd.CRD_PATH.read_text())
    assert doc["metadata"]["name"] == "inferencebackends.inferops.io"
    assert doc["spec"]["names"]["shortNames"] == ["ib"]
    assert doc["spec"]["scope"] == "Namespaced"
    version = doc["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = version["additionalPrinterColumns"]
    default = [c["name"] for c in columns if not c.get("priority")]
    wide = [c["name"] for c in columns if c.get("priority")]
    assert default == ["Phase", "Migrated", "Current", "vLLM", "Ollama", "Age"]
    assert wide == ["Model", "Reason", "Migration"]


def test_defaults_reach_the_schema() -> None:
    vllm = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "spec"
    ]["properties"]["vllm"]["properties"]
    assert vllm["gpuMemoryUtilization"]["default"] == 0.9
    assert vllm["gpuMemoryUtilization"]["exclusiveMinimum"] is True
    assert vllm["tensorParallelSize"]["minimum"] == 1
    rules = [r["message"] for r in vllm["extraArgs"]["items"]["x-kubernetes-validations"]]
    assert any("--tensor-parallel-size" in m and "tensorParallelSize" in m for m in rules)


def _all_nodes(node: Any) -> list[dict[str, Any]]:
    """Every schema node below `node`, whatever the key it hangs from."""
    out = []
    if isinstance(node, dict):
        out.append(node)
        for value in node.values():
            out += _all_nodes(value)
    elif isinstance(node, list):
        for value in node:
            out += _all_nodes(value)
    return out


def test_nothing_in_the_spec_is_passed_through_unchecked() -> None:
    """Every field is typed (affinity included): nothing the API server would store without
    looking at it, and no JSON Schema keyword a structural schema does not have (which the
    API server drops, with the rule it carried)."""
    spec = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for node in _all_nodes(spec):
        assert not node.get("x-kubernetes-preserve-unknown-fields"), node
        assert not {"const", "propertyNames", "patternProperties"} & set(node), node
        if node.get("type") == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, node  # bounds the cost of its CEL key rule


def test_the_resource_rules_name_their_field() -> None:
    root = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    paths = {rule["fieldPath"] for rule in root["x-kubernetes-validations"]}
    assert paths == {".metadata.name", ".spec.consumers"}
    assert root["properties"]["metadata"]["properties"]["name"] == {"type": "string"}


def _fields(node: dict[str, Any], where: str) -> list[tuple[str, dict[str, Any]]]:
    """(path, schema) of every field below `node`, list items' and map values' fields too."""
    out = []
    for name, field in node.get("properties", {}).items():
        out.append((f"{where}.{name}", field))
        out += _fields(field, f"{where}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            out += _fields(node[key], f"{where}[]")
    return out


_LABEL = re.compile(r"(?:^|(?<=\. ))(" + "|".join(facts.FACT_LABELS) + r"): ")


def _stated(where: str, description: str) -> dict[str, str]:
    """The `Label: text.` sentences of a description, by label; each label at most once."""
    found = list(_LABEL.finditer(description))
    stated: dict[str, str] = {}
    ends = [match.start() for match in found[1:]] + [len(description)]
    for match, end in zip(found, ends[: len(found)], strict=True):
        assert match[1] not in stated, f"{where} states {match[1]} twice: {description}"
        text = description[match.end() : end].rstrip()
        assert text.endswith("."), f"{where}: {match[1]} is not a sentence: {description}"
        stated[match[1]] = text[:-1]
    return stated


def _count(text: str, unit: str) -> tuple[int, int | None]:
    """(low, high) from `1 to 20`, `at most 64`, `at least 2`, `exactly 1` (+ unit)."""
    text = text.removesuffix(f" {unit}") if unit else text
    if text.startswith("exactly "):
        return int(text[8:]), int(text[8:])
    if text.startswith("at most "):
        return 0, int(text[8:])
    if text.startswith("at least "):
        return int(text[9:]), None
    low, high = text.split(" to ")
    return int(low), int(high)


def _bound(text: str) -> tuple[Any, bool]:
    value, exclusive = text.removesuffix(" (exclusive)"), text.endswith(" (exclusive)")
    return yaml.safe_load(value), exclusive


def test_every_spec_field_states_its_default_and_bounds() -> None:
    """kubectl explain shows descriptions but not defaults, bounds or patterns: each spec field
    with one states it in its description, read back here to the schema's own value, and
    states nothing the schema does not have."""
    spec = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    fields = _fields(spec, "spec")
    for where, field in fields:
        stated = _stated(where, field["description"])
        expected = set()
        if "default" in field:
            expected.add("Default")
            default, text = field["default"], stated.get("Default")
            assert text is not None, f"{where} has a default but does not state it"
            if text == "its fields' defaults":
                implied = {
                    k: p["default"] for k, p in field["properties"].items() if "default" in p
                }
                assert default == implied, where
            else:
                assert yaml.safe_load(text) == default, f"{where}: {text!r} is not {default!r}"
        low, high = field.get("minimum"), field.get("maximum")
        if low is not None and high is not None:
            expected.add("Range")
            low_text, high_text = stated["Range"].split(" to ")
            assert _bound(low_text) == (low, bool(field.get("exclusiveMinimum"))), where
            assert _bound(high_text) == (high, bool(field.get("exclusiveMaximum"))), where
        elif low is not None:
            expected.add("Minimum")
            assert _bound(stated["Minimum"]) == (low, bool(field.get("exclusiveMinimum"))), where
        elif high is not None:
            expected.add("Maximum")
            assert _bound(stated["Maximum"]) == (high, bool(field.get("exclusiveMaximum"))), where
        for label, low_key, high_key, unit in (
            ("Length", "minLength", "maxLength", "characters"),
            ("Items", "minItems", "maxItems", ""),
            ("Entries", "minProperties", "maxProperties", ""),
        ):
            bounds = (field.get(low_key, 0), field.get(high_key))
            if bounds != (0, None):
                expected.add(label)
                assert _count(stated[label], unit) == bounds, f"{where}: {stated[label]}"
        if "pattern" in field:
            expected.add("Pattern")
            assert stated["Pattern"] == f"`{field['pattern']}`", where
        for key, label in (("items", "Each item"), ("additionalProperties", "Each value")):
            member = field.get(key)
            if not isinstance(member, dict) or "properties" in member:
                continue
            bounds = (member.get("minLength", 0), member.get("maxLength"))
            if bounds == (0, None) and "pattern" not in member:
                continue
            expected.add(label)
            said = re.fullmatch(
                r"(?:length (.+?) characters)?(?:, )?(?:pattern `(.+)`)?", stated[label]
            )
            assert said, f"{where}: {stated[label]}"
            assert (_count(said[1], "") if said[1] else (0, None)) == bounds, where
            assert said[2] == member.get("pattern"), where
        assert set(stated) == expected, f"{where} states {set(stated) - expected} it lacks"
    # The walk reached the fields this is for.
    checked = dict(fields)
    assert (
        "Default: 0.9. Range: 0 (exclusive) to 1."
        in (checked["spec.vllm.gpuMemoryUtilization"]["description"])
    )
    assert len([f for f in checked.values() if "default" in f]) >= 40


def test_no_description_writes_a_default_or_range_by_hand() -> None:
    """One source: a bound or default written in a docstring too would drift from the model."""
    spec = crd.model_schema(crd.InferenceBackendSpec)
    for where, field in _fields(spec, "spec"):
        text = field.get("description", "")
        assert not _LABEL.search(text), f"{where}: {text}"
        for low, high in (("minimum", "maximum"), ("minLength", "maxLength")):
            if low in field and high in field:
                pair = f"{field[low]}-{field[high]}"
                assert pair not in text, f"{where} writes its range {pair} by hand: {text}"


def test_a_generated_file_is_written_and_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command line of the CRD and the dashboard (`inferops.api.generated`)."""
    out = tmp_path / "sub" / "file.yaml"
    args = ("inferops.x", None, out, lambda: "fresh\n")
    assert generated.main(["--check"], *args) == 1  # missing
    assert f"{out} is stale: run `python -m inferops.x`" in capsys.readouterr().err
    assert generated.main([], *args) == 0 and out.read_text() == "fresh\n"
    assert generated.main(["--check"], *args) == 0
    out.write_text("edited by hand\n")
    assert generated.main(["--check"], *args) == 1
