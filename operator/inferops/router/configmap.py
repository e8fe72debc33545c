"""A routing table read from a ConfigMap through the Kubernetes API, watched for changes.

List, then watch from the list's resourceVersion; on `410 Gone` (the version is too old) or
when the server ends the watch, list again. A change therefore reaches the router as one watch
event, within milliseconds of the operator's write, without a restart and without waiting for
the kubelet to refresh a mounted volume (which takes up to a minute). Credentials come from
the same loaders as the operator's (`inferops.kube`): the pod's service account, else
KUBECONFIG. The router needs `get`, `list` and `watch` on that one ConfigMap.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx

from inferops.api.routing import ROUTES_KEY
from inferops.kube import Kube, KubeError
from inferops.router.sources import TableSink, parse

log = logging.getLogger("inferops.router.configmap")


class ConfigMapSource:
    def __init__(
        self,
        namespace: str,
        name: str,
        key: str = ROUTES_KEY,
        http: httpx.AsyncClient | None = None,
        watch_seconds: int = 290,
        max_backoff: float = 10.0,
    ) -> None:
        """`http` is a client whose base URL is the API server (tests pass one); by default
        one is made from the cluster credentials."""
        self.namespace = namespace
        self.name = name
        self.key = key
        self.http = http
        self.watch_seconds = watch_seconds
        self.max_backoff = max_backoff
        self._text: str | None = None
        self._path = f"/api/v1/namespaces/{namespace}/configmaps"
        self._selector = f"metadata.name={name}"

    def describe(self) -> str:
        return f"configmap {self.namespace}/{self.name} key {self.key}"

    async def run(self, sink: TableSink) -> None:
        owned = self.http is None
        http = self.http or Kube.connect(field_manager="inferops-router").http
        backoff = 0.25
        try:
            while True:
                try:
                    version = await self._list(http, sink)
                    backoff = 0.25
                    await self._watch(http, sink, version)
                except (httpx.HTTPError, KubeError, ValueError) as err:
                    log.warning("%s: %s; retrying in %.2gs", self.describe(), err, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
        finally:
            if owned:
                await http.aclose()

    async def _list(self, http: httpx.AsyncClient, sink: TableSink) -> str:
        response = await http.get(self._path, params={"fieldSelector": self._selector})
        if response.status_code >= 400:
            raise KubeError(response.status_code, response.text)
        body = response.json()
        items = body.get("items") or []
        if items:
            self._apply(items[0], sink)
        elif self._text is not None:
            # Deleted while no watch was open (e.g. the API server restarted meanwhile).
            self._lost(sink)
        else:
            log.warning("%s does not exist (yet); waiting for it", self.describe())
        return str(body["metadata"]["resourceVersion"])

    async def _watch(self, http: httpx.AsyncClient, sink: TableSink, version: str) -> None:
        params = {
            "fieldSelector": self._selector,
            "watch": "true",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.watch_seconds),
        }
        # No read limit beyond the server's own watch timeout, plus a margin for a dead peer.
        timeout = httpx.Timeout(10.0, read=self.watch_seconds + 30.0)
        async with http.stream("GET", self._path, params=params, timeout=timeout) as response:
            if response.status_code == 410:
                return
            if response.status_code >= 400:
                await response.aread()
                raise KubeError(response.status_code, response.text)
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        log.debug("%s: watch expired (410), listing again", self.describe())
                        return
                    raise KubeError(int(obj.get("code") or 500), str(obj.get("message")))
                if kind in ("ADDED", "MODIFIED"):
                    self._apply(obj, sink)
                elif kind == "DELETED":
                    self._lost(sink)

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
