"""Generates the InferenceBackend CustomResourceDefinition from the pydantic models.

Pydantic's JSON Schema is turned into a Kubernetes *structural* schema: references inlined,
`Optional` unwrapped, titles dropped, `additionalProperties` kept only for maps, exclusive
bounds in OpenAPI v3.0 form; each spec field's default and bounds are appended to its
description (`inferops.api.facts`), where `kubectl explain` shows them. Run
`python -m inferops.api.crd` to rewrite `crds/`, or with `--check` to fail when the committed
file is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from inferops.api import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION, generated
from inferops.api.facts import described
from inferops.api.spec import InferenceBackendSpec
from inferops.api.status import InferenceBackendStatus

CRD_PATH = Path(__file__).resolve().parents[3] / "crds" / f"{PLURAL}.yaml"

# The names of the children are derived from the resource's name with suffixes such as
# "-ollama"; Services need an RFC 1035 label of at most 63 characters.
MAX_NAME_LENGTH = 50
MAX_SERVICE_NAME = 63

PRINTER_COLUMNS = [
    # The default view fits 80 columns: where the resource and its migration stand.
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {
        "name": "Migrated",
        "type": "string",
        "jsonPath": ".status.migration.migrated",
        "description": "Consumers migrated to vLLM / all consumers",
    },
    {
        "name": "Current",
        "type": "string",
        "jsonPath": ".status.migration.current",
        "description": "Consumer in progress with its live vLLM weight",
    },
    {
        "name": "vLLM",
        "type": "string",
        "jsonPath": ".status.vllm.ready",
        "description": "Ready/desired vLLM pods",
    },
    {
        "name": "Ollama",
        "type": "string",
        "jsonPath": ".status.ollama.ready",
        "description": "Ready/desired Ollama pods",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    # -o wide
    {"name": "Model", "type": "string", "jsonPath": ".spec.model", "priority": 1},
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "description": "Why the resource is or is not Ready",
        "priority": 1,
    },
    {
        "name": "Migration",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Migrating")].reason',
        "description": "Where the migration stands",
        "priority": 1,
    },
]


def _without_nulls(value: Any) -> Any:
    """Defaults of nested models list unset optionals as null, which the API server refuses."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


def structural(node: Any, defs: dict[str, Any]) -> Any:
    """Rewrite one pydantic JSON Schema node into a structural OpenAPI v3 schema node."""
    if isinstance(node, list):
        return [structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    any_of = node.get("anyOf")
    if any_of and {"type": "null"} in any_of:
        others = [branch for branch in any_of if branch != {"type": "null"}]
        del node["anyOf"]
        if len(others) == 1:
            node = {**others[0], **node}
        else:
            node["anyOf"] = others
        if node.get("default", 0) is None:
            del node["default"]
    if "$ref" in node:
        target = defs[node.pop("$ref").split("/")[-1]]
        node = {**target, **node}  # the field's own description/default win
    node.pop("title", None)
    if "const" in node:  # a one-value Literal; structural schemas have no const
        node["enum"] = [node.pop("const")]
    if isinstance(node.get("default"), dict):
        node["default"] = _without_nulls(node["default"])
    if "properties" in node or node.get("additionalProperties") in (True, False):
        # Structural schemas allow additionalProperties only as the value schema of a map.
        node.pop("additionalProperties", None)
    if "exclusiveMinimum" in node:
        node["minimum"], node["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if "exclusiveMaximum" in node:
        node["maximum"], node["exclusiveMaximum"] = node["exclusiveMaximum"], True
    if "description" in node:
        # Docstrings wrap lines; kubectl explain re-wraps, so keep one paragraph.
        node["description"] = " ".join(node["description"].split())
    # description and type first: the generated YAML is read by people too.
    ordered = sorted(node, key=lambda key: {"description": 0, "type": 1}.get(key, 2))
    out = {}
    for key in ordered:
        value = node[key]
        if key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "anyOf"):
            out[key] = structural(value, defs)
        else:
            out[key] = value
    return out


def model_schema(model: type[InferenceBackendSpec] | type[InferenceBackendStatus]) -> Any:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return structural(raw, defs)


def build_crd() -> dict[str, Any]:
    """The complete CustomResourceDefinition object."""
    root = {
        "type": "object",
        "description": (
            "An LLM served on GPU vLLM with an Ollama fallback, and the migration of its "
            "consumers from Ollama to vLLM."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            # Declared so that the name rule below can report metadata.name as its field.
            "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
            "spec": described(model_schema(InferenceBackendSpec)),
            "status": model_schema(InferenceBackendStatus),
        },
        "x-kubernetes-validations": [
            {
                "rule": (
                    f"size(self.metadata.name) <= {MAX_NAME_LENGTH} && "
                    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
                ),
                "message": (
                    f"metadata.name must be at most {MAX_NAME_LENGTH} characters of a-z, 0-9 "
                    "and '-', starting with a letter: it prefixes the names of the Services "
                    "the operator creates"
                ),
                "fieldPath": ".metadata.name",
            },
            {
                "rule": (
                    "self.spec.consumers.all(c, has(c.serviceName) || "
                    f"size(self.metadata.name) + size(c.name) <= {MAX_SERVICE_NAME - 1})"
                ),
                "message": (
                    "a consumer's Service is named <metadata.name>-<consumer name>, at most "
                    f"{MAX_SERVICE_NAME} characters: shorten the names or set the consumer's "
                    "serviceName"
                ),
                "fieldPath": ".spec.consumers",
            },
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["all", "inferops"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


class _NoAliasDumper(yaml.SafeDumper):
    """Writes repeated sub-schemas out in full: anchors make a CRD hard to read."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render() -> str:
    header = "# Generated by `python -m inferops.api.crd` from inferops/api. Do not edit.\n"
    body = yaml.dump(build_crd(), Dumper=_NoAliasDumper, sort_keys=False, width=100)
    return header + body


def main(argv: list[str] | None = None) -> int:
    return generated.main(argv, "inferops.api.crd", __doc__, CRD_PATH, render)


if __name__ == "__main__":
    sys.exit(main())
