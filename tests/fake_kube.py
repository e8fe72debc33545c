"""A stand-in for the API server's list and watch endpoints, for the clients that follow it
(the router's ConfigMap source, the operator's cache): resourceVersions, label and name
selectors, namespaced and cluster-wide collections, `410 Gone`, and watches that end."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from testsupport.aioserve import Served, serve

NS = "ai"
END = object()


def _matches(obj: dict[str, Any], query: Any, namespace: str | None) -> bool:
    meta = obj["metadata"]
    if namespace is not None and meta["namespace"] != namespace:
        return False
    name = query.get("fieldSelector", "").removeprefix("metadata.name=")
    if name and meta["name"] != name:
        return False
    labels = meta.get("labels") or {}
    for term in filter(None, query.get("labelSelector", "").split(",")):
        key, value = term.split("=")
        if labels.get(key) != value:
            return False
    return True


class FakeKubeApi:
    def __init__(self) -> None:
        self.version = 100
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        """(plural, namespace, name) -> object"""
        self.history: list[tuple[str, dict[str, Any]]] = []
        self.oldest = 0  # watches from an older version get 410 Gone
        self.watchers: list[tuple[str, asyncio.Queue[object]]] = []
        self.lists = 0
        self.watches = 0
        self._served: Served | None = None

    @property
    def url(self) -> str:
        assert self._served, "start() first"
        return self._served.url

    async def start(self) -> None:
        app = web.Application()
        for prefix in ("/api/{version}", "/apis/{group}/{version}"):
            app.router.add_get(prefix + "/namespaces/{ns}/{plural}", self._collection)
            app.router.add_get(prefix + "/{plural}", self._collection)
        self._served = await serve(app)

    async def stop(self) -> None:
        self.end_watches()
        if self._served:
            await self._served.close()

    def put(self, name: str, data: dict[str, str]) -> None:
        """A ConfigMap in NS."""
        self.put_object("configmaps", {"metadata": {"name": name, "namespace": NS}, "data": data})

    def put_object(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        meta = obj["metadata"]
        key = (plural, meta["namespace"], meta["name"])
        kind = "MODIFIED" if key in self.objects else "ADDED"
        meta["resourceVersion"] = str(self.version)
        self.objects[key] = obj
        self._emit(plural, {"type": kind, "object": obj})
        return obj

    def delete(self, name: str, plural: str = "configmaps", namespace: str = NS) -> None:
        self.version += 1
        obj = self.objects.pop((plural, namespace, name))
        self._emit(plural, {"type": "DELETED", "object": obj})

    def end_watches(self) -> None:
        """The server closes every watch (as it does at `timeoutSeconds`)."""
        for _, queue in self.watchers:
            queue.put_nowait(END)

    def expire(self) -> None:
        """Compaction: every version up to now is gone; open watches get 410."""
        self.oldest = self.version + 1
        for _, queue in self.watchers:
            queue.put_nowait(self._gone())
            queue.put_nowait(END)

    def _gone(self) -> dict[str, Any]:
        return {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "code": 410,
                "reason": "Expired",
                "message": "too old resource version",
            },
        }

    def _emit(self, plural: str, event: dict[str, Any]) -> None:
        self.history.append((plural, event))
        for watched, queue in self.watchers:
            if watched == plural:
                queue.put_nowait(event)

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        plural, namespace = request.match_info["plural"], request.match_info.get("ns")
        if request.query.get("watch") != "true":
            self.lists += 1
            items = [
                o
                for (p, _, _), o in sorted(self.objects.items())
                if p == plural and _matches(o, request.query, namespace)
            ]
            return web.json_response(
                {"items": items, "metadata": {"resourceVersion": str(self.version)}}
            )
        since = int(request.query["resourceVersion"])
        queue: asyncio.Queue[object] = asyncio.Queue()
        if since < self.oldest:
            queue.put_nowait(self._gone())
            queue.put_nowait(END)
        for p, event in self.history:
            if p == plural and int(event["object"]["metadata"]["resourceVersion"]) > since:
                queue.put_nowait(event)
        # Registered before anything awaits, so a watch counted can always be ended.
        self.watchers.append((plural, queue))
        self.watches += 1
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            while (event := await queue.get()) is not END:
                obj = event["object"]  # type: ignore[index]
                if obj.get("kind") == "Status" or _matches(obj, request.query, namespace):
                    await response.write(json.dumps(event).encode() + b"\n")
        finally:
            self.watchers.remove((plural, queue))
        await response.write_eof()
        return response
