"""Builds the optional NetworkPolicy that lets an InferenceBackend's engines (vLLM and Ollama
pods) accept traffic only from that backend's router pods and from the metrics scraper.

vLLM and Ollama serve everything unauthenticated (Ollama's /api/pull and /api/delete among
it), and consumers never need them directly: the router is their only client. The policy is
operator configuration (`--network-policy`, the chart's `networkPolicy` values), not part of
the API: with it off, no policy is built, and the one built earlier is deleted like any
child the operator no longer wants.

Only ingress is restricted: the engines download models (Hugging Face, the Ollama registry).
Kubernetes always allows traffic from a pod's own node, so the kubelet's probes still reach
the engines. A NetworkPolicy is enforced only by a network plugin that implements it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Literal, Self

from pydantic import StringConstraints, TypeAdapter, ValidationError, model_validator

from inferops.api.base import Model
from inferops.builders import common, ollama, router, vllm
from inferops.builders.common import BACKEND_LABEL, COMPONENT_LABEL, Obj, Owner

COMPONENT = "engines"

# Kubernetes' label syntax, checked at start-up rather than refused by the API server at every
# apply: a name of 63 characters at most with an optional DNS-subdomain prefix; values alike,
# or empty.
_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]"
LabelKey = Annotated[
    str, StringConstraints(pattern=rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_NAME}$")
]
LabelValue = Annotated[str, StringConstraints(pattern=rf"^({_NAME})?$")]


class LabelSelectorRequirement(Model):
    """One `matchExpressions` entry of a label selector."""

    key: LabelKey
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[LabelValue] | None = None

    @model_validator(mode="after")
    def _values_match_the_operator(self) -> Self:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs values")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class LabelSelector(Model):
    """A Kubernetes label selector; an empty one selects everything."""

    match_labels: dict[LabelKey, LabelValue] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None


class Peer(Model):
    """Who may connect, as a NetworkPolicy `from` entry: pods matching `podSelector` in
    the namespaces matching `namespaceSelector` (either alone: pods of this namespace, or
    every pod of those namespaces)."""

    namespace_selector: LabelSelector | None = None
    pod_selector: LabelSelector | None = None

    @model_validator(mode="after")
    def _selects_something(self) -> Self:
        # An empty `from` entry would be refused by the API server; an omitted one would
        # allow everybody.
        if self.namespace_selector is None and self.pod_selector is None:
            raise ValueError("a peer needs a namespaceSelector, a podSelector or both")
        return self


_PEERS = TypeAdapter(list[Peer])


def parse_peers(text: str) -> tuple[Peer, ...]:
    """Peers from their JSON list (the operator's `--network-policy-metrics-from`, as the
    chart renders `networkPolicy.metricsFrom`); empty text means none."""
    if not text.strip():
        return ()
    try:
        return tuple(_PEERS.validate_json(text))
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
            for e in error.errors()
        )
        raise ValueError(f"not a JSON list of NetworkPolicy peers: {problems}") from None


@dataclass(frozen=True)
class NetworkPolicyConfig:
    """Operator configuration: build a NetworkPolicy for every InferenceBackend's engines."""

    metrics_from: tuple[Peer, ...] = ()
    """Who scrapes vLLM's /metrics (port 8000, the same port as its API). Ollama has no
    metrics, so these peers get no rule for Ollama's port. None: only the routers."""

    def describe(self) -> str:
        peers = json.dumps([p.dump() for p in self.metrics_from], sort_keys=True)
        return f"engines accept only their router pods, and metrics scrapers {peers}"


def name(owner: Owner) -> str:
    return common.child_name(owner, COMPONENT)


def _port(port: int) -> Obj:
    return {"port": port, "protocol": "TCP"}


def engine_policy(owner: Owner, config: NetworkPolicyConfig) -> Obj:
    """One policy for both engines of the resource: the routers may reach the engines' ports
    (vLLM 8000, Ollama 11434); the scrapers only vLLM's. It selects Ollama's pods even when
    the fallback is disabled (there are none then), so turning it on or off changes nothing
    here."""
    routers = {"podSelector": {"matchLabels": common.selector_labels(owner, router.COMPONENT)}}
    ingress: list[Obj] = [
        {"from": [routers], "ports": [_port(vllm.PORT), _port(ollama.PORT)]},
    ]
    if config.metrics_from:
        # Only with peers: a rule without `from` would admit every source.
        ingress.append(
            {"from": [p.dump() for p in config.metrics_from], "ports": [_port(vllm.PORT)]}
        )
    # The embeddings deployment (spec.vllm.embeddings) is an engine too: same port, same rule.
    engines = sorted((vllm.ENGINE, ollama.ENGINE, vllm.EMBEDDINGS))
    return common.with_spec_hash(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": common.metadata(owner, name(owner), COMPONENT),
            "spec": {
                "podSelector": {
                    "matchLabels": {BACKEND_LABEL: owner.name},
                    "matchExpressions": [
                        {"key": COMPONENT_LABEL, "operator": "In", "values": engines}
                    ],
                },
                "policyTypes": ["Ingress"],
                "ingress": ingress,
            },
        }
    )


def children(owner: Owner, config: NetworkPolicyConfig | None) -> list[Obj]:
    """Nothing unless the operator is configured to build policies."""
    return [] if config is None else [engine_policy(owner, config)]
