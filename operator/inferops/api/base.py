"""Shared building blocks of the API models: the model base class and CEL rules. The field
types of Kubernetes' grammars are in `inferops.api.grammar`.

Every model uses camelCase aliases (the Kubernetes convention) and forbids unknown fields, so a
typo is an error rather than a silently ignored setting. Attribute docstrings become the
field descriptions that `kubectl explain` shows.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, JsonValue
from pydantic.alias_generators import to_camel

JsonDict = dict[str, JsonValue]


class Model(BaseModel):
    """Base of every API model."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        frozen=True,
    )

    def dump(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One `x-kubernetes-validations` entry, checked by the API server at apply time."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def cel_rules(*rules: JsonDict) -> ConfigDict:
    """A model_config fragment attaching CEL rules to a model (pydantic merges it with the
    base config)."""
    validations: list[JsonValue] = list(rules)
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": validations})
