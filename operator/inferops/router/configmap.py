"""A routing table read from a ConfigMap through the Kubernetes API, watched for changes.

List, then watch from the list's resourceVersion; when the server ends the watch, watch again
from the last version seen; on `410 Gone` (that version is too old), list again: the loop of
`inferops.watch`, shared with the operator's watch cache. A change
therefore reaches the router as one watch event, within milliseconds of the operator's write,
without a restart and without waiting for the kubelet to refresh a mounted volume (which takes
up to a minute). Credentials come from the same client as the operator's (`inferops.kube`):
the pod's service account, else KUBECONFIG. The router needs `get`, `list` and `watch` on that
one ConfigMap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from inferops.api.routing import ROUTES_KEY
from inferops.kube import Kube, path
from inferops.router.sources import TableSink, parse
from inferops.watch import follow

log = logging.getLogger("inferops.router.configmap")


class ConfigMapSource:
    def __init__(
        self,
        namespace: str,
        name: str,
        key: str = ROUTES_KEY,
        kube: Kube | None = None,
        watch_seconds: int = 290,
        max_backoff: float = 10.0,
    ) -> None:
        """`kube`: the API client (tests pass one); by default one is made from the cluster
        credentials."""
        self.namespace = namespace
        self.name = name
        self.key = key
        self.kube = kube
        self.watch_seconds = watch_seconds
        self.max_backoff = max_backoff
        self._text: str | None = None
        self._path = path("v1", "ConfigMap", namespace)
        self._selector = f"metadata.name={name}"

    def describe(self) -> str:
        return f"configmap {self.namespace}/{self.name} key {self.key}"

    async def run(self, sink: TableSink) -> None:
        kube = self.kube or Kube.connect(field_manager="inferops-router")
        try:
            await follow(
                kube,
                self._path,
                _Follower(self, sink),
                log,
                self.describe(),
                field_selector=self._selector,
                watch_seconds=self.watch_seconds,
                max_backoff=self.max_backoff,
            )
        finally:
            if self.kube is None:
                await kube.__aexit__()

    def _listed(self, items: list[dict[str, Any]], sink: TableSink) -> None:
        if items:
            self._apply(items[0], sink)
        elif self._text is not None:
            # Deleted while no watch was open (e.g. the API server restarted meanwhile).
            self._lost(sink)
        else:
            log.warning("%s does not exist (yet); waiting for it", self.describe())

    def _lost(self, sink: TableSink) -> None:
        self._text = None  # so that the same table, written back, is installed again
        sink.lost(f"{self.describe()} was deleted")

    def _apply(self, obj: dict[str, Any], sink: TableSink) -> None:
        text = (obj.get("data") or {}).get(self.key)
        if text == self._text:
            return  # re-lists and unrelated edits deliver the same table again
        self._text = text
        if text is None:
            sink.reject(f"{self.describe()}: the key is missing")
            return
        result = parse(text, self.describe())
        if isinstance(result, str):
            sink.reject(result)
        else:
            sink.install(result)


@dataclass(frozen=True)
class _Follower:
    source: ConfigMapSource
    sink: TableSink

    def listed(self, items: list[dict[str, Any]]) -> None:
        self.source._listed(items, self.sink)

    def changed(self, event: str, obj: dict[str, Any]) -> None:
        if event == "DELETED":
            self.source._lost(self.sink)
        else:
            self.source._apply(obj, self.sink)


__all__ = ["ConfigMapSource"]
