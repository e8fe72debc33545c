"""A routing table read from a ConfigMap through the Kubernetes API, watched for changes.

List, then watch from the list's resourceVersion; when the server ends the watch, watch again
from the last version seen; on `410 Gone` (that version is too old), list again. A change
therefore reaches the router as one watch event, within milliseconds of the operator's write,
without a restart and without waiting for the kubelet to refresh a mounted volume (which takes
up to a minute). Credentials come from the same client as the operator's (`inferops.kube`):
the pod's service account, else KUBECONFIG. The router needs `get`, `list` and `watch` on that
one ConfigMap.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from inferops.api.routing import ROUTES_KEY
from inferops.kube import Kube, KubeError, WatchExpired, path
from inferops.router.sources import TableSink, parse

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
        backoff = 0.25
        version: str | None = None
        try:
            while True:
                try:
                    if version is None:
                        version = await self._list(kube, sink)
                    backoff = 0.25
                    version = await self._watch(kube, sink, version)
                except WatchExpired:
                    log.debug("%s: watch expired (410), listing again", self.describe())
                    version = None
                except (KubeError, ValueError) as err:
                    log.warning("%s: %s; retrying in %.2gs", self.describe(), err, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
        finally:
            if self.kube is None:
                await kube.__aexit__()

    async def _list(self, kube: Kube, sink: TableSink) -> str:
        items, version = await kube.list_versioned(self._path, field_selector=self._selector)
        if items:
            self._apply(items[0], sink)
        elif self._text is not None:
            # Deleted while no watch was open (e.g. the API server restarted meanwhile).
            self._lost(sink)
        else:
            log.warning("%s does not exist (yet); waiting for it", self.describe())
        return version

    async def _watch(self, kube: Kube, sink: TableSink, version: str) -> str:
        """Follows the ConfigMap until the server ends the watch; returns the version
        reached, from which the next watch continues without listing again."""
        events = kube.watch(self._path, version, field_selector=self._selector,
                            timeout_seconds=self.watch_seconds)  # fmt: skip
        async for kind, obj in events:
            version = obj.get("metadata", {}).get("resourceVersion") or version
            if kind in ("ADDED", "MODIFIED"):
                self._apply(obj, sink)
            elif kind == "DELETED":
                self._lost(sink)
        return version

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


__all__ = ["ConfigMapSource"]
