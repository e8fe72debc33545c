"""How consumers' traffic is split between the engines, behind one interface: set the
weights, and report what every data-plane replica serves.

The migration planner moves a consumer's weight only once every replica serves the weight
it set, so "served" must never be guessed: a replica that cannot tell answers unknown
(`ReplicaWeights.weights is None`), which holds the step, exactly like a replica still
serving an older table. The built-in router (`traffic.router`) knows per replica (each one
exports the revision of the routing table it serves). A later Gateway API backend
(HTTPRoute weights) would set weights through HTTPRoutes and, having no per-proxy
acknowledgement, answer unknown unless it can probe each gateway replica; it also cannot
retry on the other engine before the first byte (`fallback` False): see
docs/architecture.md#traffic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from inferops.api.routing import Mirror
from inferops.api.spec import InferenceBackendSpec
from inferops.builders.common import Obj, Owner


@dataclass(frozen=True)
class ReplicaWeights:
    """What one data-plane replica serves: consumer -> vLLM weight, or None: unknown."""

    replica: str
    weights: Mapping[str, int] | None


class Traffic(Protocol):
    fallback: bool
    """Whether a request that fails on vLLM before its first byte is retried on Ollama."""

    def set_weights(
        self,
        spec: InferenceBackendSpec,
        owner: Owner,
        ready: Mapping[str, bool],
        weights: Mapping[str, int],
        mirrors: Mapping[str, Mirror] | None = None,
        embeddings: Mapping[str, int] | None = None,
    ) -> list[Obj]:
        """The objects that make the data plane split by `weights`, mirror the requests
        of the consumers in `mirrors` (a shadow step) when the backend can, and send
        embeddings to the embeddings deployment by `embeddings` (pure: the executor applies
        them with the other children)."""
        ...

    async def served(
        self, owner: Owner, live: Mapping[tuple[str, str], Obj]
    ) -> list[ReplicaWeights]:
        """What each data-plane replica serves now; empty when no replica is known."""
        ...

    def forget(self, namespace: str, backend: str) -> None: ...

    async def aclose(self) -> None: ...


def served_everywhere(replicas: Sequence[ReplicaWeights]) -> dict[str, int] | None:
    """The weights every replica serves, or None (not known to be served): no replica, one
    of them unknown, or replicas that disagree (a table still spreading)."""
    if not replicas or any(r.weights is None for r in replicas):
        return None
    first = dict(replicas[0].weights or {})
    if any(dict(r.weights or {}) != first for r in replicas[1:]):
        return None
    return first


__all__ = ["ReplicaWeights", "Traffic", "served_everywhere"]
