"""The committed CRD is exactly what the models generate, and is a structural schema."""

from __future__ import annotations

from typing import Any

import yaml

from inferops.api import crd


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
