"""The facts `kubectl explain` does not show, written into each field's description.

kubectl explain prints a field's type, its description and its enum values, but not its
default, its bounds or its pattern, although the schema has them. The CRD generator appends
them to every spec field's description, as sentences such as `Default: 0.9. Range: 0
(exclusive) to 1.`, so the models stay the one source: no description writes them by hand.
Enum values are left out (kubectl lists them itself), and so is the status, which the
operator writes and users only read.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

# The sentences' labels, in the order they are written.
FACT_LABELS = (
    "Default",
    "Range",
    "Minimum",
    "Maximum",
    "Length",
    "Items",
    "Entries",
    "Pattern",
    "Each item",
    "Each value",
)


def _yaml_value(value: Any) -> str:
    """A default as it would be written in a manifest: YAML flow style, a string unquoted
    when YAML reads it back as the same string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        plain = re.fullmatch(r"[A-Za-z0-9][\w.:/-]*", value) and yaml.safe_load(value) == value
        return value if plain else json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def _bound(value: Any, exclusive: Any) -> str:
    return f"{_yaml_value(value)} (exclusive)" if exclusive else _yaml_value(value)


def _count(low: int, high: int | None, unit: str = "") -> str | None:
    """`1 to 20 characters`, `at most 64`, `exactly 1`, or None without bounds."""
    unit = f" {unit}" if unit else ""
    if high is None:
        return f"at least {low}{unit}" if low else None
    if low == high:
        return f"exactly {low}{unit}"
    return f"{low} to {high}{unit}" if low else f"at most {high}{unit}"


def facts(node: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) for each rule of one schema node that kubectl explain does not show."""
    out: list[tuple[str, str]] = []
    if "default" in node:
        default = node["default"]
        implied = {k: p["default"] for k, p in node.get("properties", {}).items() if "default" in p}
        if isinstance(default, dict) and "properties" in node and default == implied:
            out.append(("Default", "its fields' defaults"))
        else:
            out.append(("Default", _yaml_value(default)))
    low, high = node.get("minimum"), node.get("maximum")
    low_text = None if low is None else _bound(low, node.get("exclusiveMinimum"))
    high_text = None if high is None else _bound(high, node.get("exclusiveMaximum"))
    if low_text and high_text:
        out.append(("Range", f"{low_text} to {high_text}"))
    elif low_text:
        out.append(("Minimum", low_text))
    elif high_text:
        out.append(("Maximum", high_text))
    for label, low_key, high_key, unit in (
        ("Length", "minLength", "maxLength", "characters"),
        ("Items", "minItems", "maxItems", ""),
        ("Entries", "minProperties", "maxProperties", ""),
    ):
        text = _count(node.get(low_key, 0), node.get(high_key), unit)
        if text:
            out.append((label, text))
    if "pattern" in node:
        out.append(("Pattern", f"`{node['pattern']}`"))
    return out


def _with_facts(field: dict[str, Any]) -> dict[str, Any]:
    """One field with its facts appended to its description; the rules of a list's or a map's
    scalar members too, which kubectl explain cannot reach on their own."""
    sentences = [f"{label}: {text}." for label, text in facts(field)]
    for key, label in (("items", "Each item"), ("additionalProperties", "Each value")):
        member = field.get(key)
        if isinstance(member, dict) and "properties" not in member:
            parts = [f"{name.lower()} {text}" for name, text in facts(member)]
            if parts:
                sentences.append(f"{label}: {', '.join(parts)}.")
    if not sentences:
        return field
    field = dict(field)  # an existing description keeps its place, first
    field["description"] = " ".join([field.get("description", ""), *sentences]).strip()
    return field


def described(node: Any) -> Any:
    """A structural schema with the facts of every field below `node` in its description."""
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "properties" in node:
        node["properties"] = {
            name: _with_facts(described(sub)) for name, sub in node["properties"].items()
        }
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = described(node[key])
    return node
