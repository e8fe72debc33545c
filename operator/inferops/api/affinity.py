"""`affinity` of an engine's pods, typed: Kubernetes' `Affinity` (node affinity, pod affinity
and anti-affinity) with the rules the API server applies to a pod's affinity, as schema and
CEL rules here, so a bad affinity is refused at `kubectl apply` naming its field, instead of
being stored and then breaking the Deployment the operator builds from it.

Two rules are stricter than Kubernetes', because what Kubernetes accepts there never does
what was meant: values of node selector requirements are label values in preferred terms too
(Kubernetes lets an invalid one through there, and it then matches no node), and `Gt`/`Lt`
take one integer (Kubernetes takes any string, which then matches no node). A key in
`matchLabelKeys` may not also be in the `labelSelector` (Kubernetes would refuse each pod).
Lists are bounded (the API server estimates the cost of CEL rules from the bounds).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from inferops.api.base import Model, cel, cel_rules
from inferops.api.grammar import LabelKey, LabelMap, LabelValue, NamespaceName, ObjectName

MAX_TERMS = 16
MAX_EXPRESSIONS = 16
MAX_VALUES = 64
MAX_KEYS = 16

Weight = Annotated[int, Field(ge=1, le=100)]
Values = Annotated[list[LabelValue], Field(max_length=MAX_VALUES)]

_VALUES_FOR_SET = cel(
    "!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)",
    "values must not be empty with operator In or NotIn",
    ".values",
)
_NO_VALUES_FOR_EXISTS = cel(
    "!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || size(self.values) == 0",
    "values must be empty with operator Exists or DoesNotExist",
    ".values",
)


def _check_values(operator: str, values: list[str] | None) -> None:
    """Kubernetes' rules on a requirement's values, mirrored from the CEL rules."""
    if operator in ("In", "NotIn") and not values:
        raise ValueError("values must not be empty with operator In or NotIn")
    if operator in ("Exists", "DoesNotExist") and values:
        raise ValueError("values must be empty with operator Exists or DoesNotExist")
    if operator in ("Gt", "Lt") and (
        values is None or len(values) != 1 or not _is_integer(values[0])
    ):
        raise ValueError("operator Gt or Lt takes exactly one value, an integer")


def _is_integer(value: str) -> bool:
    return 1 <= len(value) <= 18 and value.isascii() and value.isdigit()


class NodeSelectorRequirement(Model):
    """A rule on a node label."""

    model_config = cel_rules(
        _VALUES_FOR_SET,
        _NO_VALUES_FOR_EXISTS,
        cel(
            "!(self.operator in ['Gt', 'Lt']) || (has(self.values) && size(self.values) == 1 "
            "&& self.values[0].matches('^[0-9]{1,18}$'))",
            "operator Gt or Lt takes exactly one value, an integer",
            ".values",
        ),
    )

    key: LabelKey
    """The node label's key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    """How the label's value is matched against `values`."""
    values: Values | None = None
    """Label values: one or more for In and NotIn, none for Exists and DoesNotExist, one
    integer for Gt and Lt."""

    @model_validator(mode="after")
    def _mirror_cel(self) -> NodeSelectorRequirement:
        _check_values(self.operator, self.values)
        return self


class NodeFieldSelectorRequirement(Model):
    """A rule on a node field; `metadata.name` is the only one Kubernetes supports."""

    key: Literal["metadata.name"]
    """The node field: `metadata.name`."""
    operator: Literal["In", "NotIn"]
    """In or NotIn."""
    values: Annotated[list[ObjectName], Field(min_length=1, max_length=1)]
    """The node's name, as the list's only item."""


class NodeSelectorTerm(Model):
    """Requirements that must all hold for a node to match (an empty term matches none)."""

    match_expressions: (
        Annotated[list[NodeSelectorRequirement], Field(max_length=MAX_EXPRESSIONS)] | None
    ) = None
    """Rules on node labels."""
    match_fields: (
        Annotated[list[NodeFieldSelectorRequirement], Field(max_length=MAX_EXPRESSIONS)] | None
    ) = None
    """Rules on node fields."""


class NodeSelector(Model):
    """Terms of which at least one must match."""

    node_selector_terms: Annotated[
        list[NodeSelectorTerm], Field(min_length=1, max_length=MAX_TERMS)
    ]
    """The terms, ORed; at least one."""


class PreferredSchedulingTerm(Model):
    """A node preference with its weight."""

    weight: Weight
    """Weight of the preference."""
    preference: NodeSelectorTerm
    """The nodes preferred."""


class NodeAffinity(Model):
    """Which nodes the pods may and should run on."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    """Nodes the pods must run on."""
    preferred_during_scheduling_ignored_during_execution: (
        Annotated[list[PreferredSchedulingTerm], Field(max_length=MAX_TERMS)] | None
    ) = None
    """Nodes the pods should run on, by weight."""


class LabelSelectorRequirement(Model):
    """A rule on a pod's or namespace's label."""

    model_config = cel_rules(_VALUES_FOR_SET, _NO_VALUES_FOR_EXISTS)

    key: LabelKey
    """The label's key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the label's value is matched against `values`."""
    values: Values | None = None
    """Label values: one or more for In and NotIn, none for Exists and DoesNotExist."""

    @model_validator(mode="after")
    def _mirror_cel(self) -> LabelSelectorRequirement:
        _check_values(self.operator, self.values)
        return self


class LabelSelector(Model):
    """Labels to select pods or namespaces by; an empty selector selects all."""

    match_labels: LabelMap | None = None
    """Labels that must all be present with these values."""
    match_expressions: (
        Annotated[list[LabelSelectorRequirement], Field(max_length=MAX_EXPRESSIONS)] | None
    ) = None
    """Rules that must all hold."""


LabelKeys = Annotated[list[LabelKey], Field(max_length=MAX_KEYS)]


class PodAffinityTerm(Model):
    """Pods (by labels, in namespaces) near which the pods must or must not run, within a
    topology domain (node, zone, ...)."""

    model_config = cel_rules(
        cel(
            "has(self.labelSelector) || ((!has(self.matchLabelKeys) || "
            "size(self.matchLabelKeys) == 0) && (!has(self.mismatchLabelKeys) || "
            "size(self.mismatchLabelKeys) == 0))",
            "matchLabelKeys and mismatchLabelKeys need a labelSelector",
        ),
        cel(
            "!has(self.matchLabelKeys) || !has(self.mismatchLabelKeys) || "
            "!self.matchLabelKeys.exists(k, k in self.mismatchLabelKeys)",
            "a key may not be in both matchLabelKeys and mismatchLabelKeys",
            ".matchLabelKeys",
        ),
        cel(
            "!has(self.matchLabelKeys) || !has(self.labelSelector) || "
            "self.matchLabelKeys.all(k, "
            "!(has(self.labelSelector.matchLabels) && k in self.labelSelector.matchLabels) && "
            "!(has(self.labelSelector.matchExpressions) && "
            "self.labelSelector.matchExpressions.exists(e, e.key == k)))",
            "a key in matchLabelKeys may not also be in labelSelector",
            ".matchLabelKeys",
        ),
    )

    label_selector: LabelSelector | None = None
    """The pods; none selects no pod."""
    namespace_selector: LabelSelector | None = None
    """Namespaces of the pods, by their labels, added to `namespaces`; an empty selector
    selects all."""
    namespaces: Annotated[list[NamespaceName], Field(max_length=MAX_VALUES)] | None = None
    """Namespaces of the pods; the pod's own when neither this nor `namespaceSelector` is
    set."""
    topology_key: LabelKey
    """Node label whose value defines the domain (e.g. `kubernetes.io/hostname`)."""
    match_label_keys: LabelKeys | None = None
    """Keys of the incoming pod's labels whose values must match too."""
    mismatch_label_keys: LabelKeys | None = None
    """Keys of the incoming pod's labels whose values must differ."""

    @model_validator(mode="after")
    def _mirror_cel(self) -> PodAffinityTerm:
        match, mismatch = self.match_label_keys or [], self.mismatch_label_keys or []
        if (match or mismatch) and self.label_selector is None:
            raise ValueError("matchLabelKeys and mismatchLabelKeys need a labelSelector")
        if set(match) & set(mismatch):
            raise ValueError("a key may not be in both matchLabelKeys and mismatchLabelKeys")
        if self.label_selector is not None:
            selector = self.label_selector
            keys = set(selector.match_labels or {})
            keys |= {e.key for e in selector.match_expressions or []}
            if set(match) & keys:
                raise ValueError("a key in matchLabelKeys may not also be in labelSelector")
        return self


class WeightedPodAffinityTerm(Model):
    """A pod affinity term with its weight."""

    weight: Weight
    """Weight of the term."""
    pod_affinity_term: PodAffinityTerm
    """The term."""


class PodAffinity(Model):
    """Pods the pods must or should run near (affinity) or away from (anti-affinity)."""

    required_during_scheduling_ignored_during_execution: (
        Annotated[list[PodAffinityTerm], Field(max_length=MAX_TERMS)] | None
    ) = None
    """Terms that must all hold."""
    preferred_during_scheduling_ignored_during_execution: (
        Annotated[list[WeightedPodAffinityTerm], Field(max_length=MAX_TERMS)] | None
    ) = None
    """Terms that should hold, by weight."""


class Affinity(Model):
    """A Kubernetes pod affinity."""

    node_affinity: NodeAffinity | None = None
    """Nodes the pods must or should run on."""
    pod_affinity: PodAffinity | None = None
    """Pods the pods must or should run near."""
    pod_anti_affinity: PodAffinity | None = None
    """Pods the pods must or should run away from."""

    def dump(self) -> dict[str, Any]:
        """As the API server stores it in a pod template: empty lists and an empty
        `matchLabels` dropped (their Go fields are `omitempty`), so that a live Deployment
        compares equal to what was applied. Empty objects stay: an empty labelSelector
        selects every pod, an absent one none."""
        return dict(_without_empty(super().dump()))


def _without_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _without_empty(v)
            for k, v in value.items()
            if not (isinstance(v, list) and not v) and not (k == "matchLabels" and not v)
        }
    if isinstance(value, list):
        return [_without_empty(v) for v in value]
    return value


__all__ = ["Affinity"]
