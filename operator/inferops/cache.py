"""What the watches stream: every managed child and pod, by the InferenceBackend it belongs to.

A reconciliation reads its children here instead of listing eight kinds from the API server,
so with nothing changing the operator makes no API request at all, and a burst of child
events costs memory lookups. One list, then one watch per kind (per watched namespace),
resumed from the last version seen when the server ends it and listed again on `410 Gone`
(the loop of `inferops.watch`, which the router's ConfigMap source follows too); each
change names its backend to `on_change`, which is how drift is repaired and status kept
current without polling.

Objects are kept as compact JSON without `managedFields` (and pods without their spec, which
nothing reads): at 1,000 backends a parsed copy of every object would cost hundreds of MiB,
the compact text a tenth of it, and parsing the dozen objects of one backend is cheap.

The operator's own writes reach the cache only when their watch events arrive. Until then
`wrote` keeps the object the API server answered, so a reconciliation right after another
does not apply the same change twice: the answer is used while the cache still holds the
version it replaced, and dropped as soon as the cache holds any other.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from inferops import metrics
from inferops.builders.common import BACKEND_LABEL
from inferops.kube import Kube, Obj, path
from inferops.registry import Kind
from inferops.watch import follow

Key = tuple[str, str]
"""(namespace, InferenceBackend name)."""
ObjectKey = tuple[str, str]
"""(kind, name) within a namespace."""


def _pack(kind: str, obj: Obj) -> bytes:
    meta = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
    if kind == "Pod":
        slim: Obj = {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": meta,
            "status": obj.get("status") or {},
        }
    else:
        slim = {**obj, "metadata": meta}
    return json.dumps(slim, separators=(",", ":")).encode()


def _typed(kind: Kind, obj: Obj) -> Obj:
    """Items of a list come without apiVersion and kind; deleting one needs them."""
    obj.setdefault("apiVersion", kind.api_version)
    obj.setdefault("kind", kind.kind)
    return obj


@dataclass(frozen=True)
class _Entry:
    version: str
    packed: bytes


@dataclass(frozen=True)
class _Written:
    replaced: str | None
    """The version the write replaced (None: the object did not exist)."""
    obj: Obj | None
    """What the API server answered (None: deleted)."""


class ChildCache:
    def __init__(
        self,
        kube: Kube,
        kinds: Iterable[Kind],
        selector: str,
        namespaces: list[str] | None,
        on_change: Callable[[str, str], None],
        log: logging.Logger,
        watch_seconds: int = 290,
        max_backoff: float = 10.0,
    ) -> None:
        """`namespaces`: the namespaces to watch, None for all; `on_change(namespace, name)`
        is called for the backend of every object that changed after the first list."""
        self.kube = kube
        self.kinds = tuple(kinds)
        self.selector = selector
        self.namespaces = namespaces
        self.on_change = on_change
        self.log = log
        self.watch_seconds = watch_seconds
        self.max_backoff = max_backoff
        self._objects: dict[Key, dict[ObjectKey, _Entry]] = {}
        self._owners: dict[tuple[str, str, str], Key] = {}
        """(kind, namespace, name) -> the backend it is filed under."""
        self._written: dict[Key, dict[ObjectKey, _Written]] = {}
        self._listed: set[tuple[str, str | None]] = set()
        self._synced = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        metrics.CACHE_OBJECTS.set_function(self.size)
        metrics.CACHE_BYTES.set_function(self.bytes)

    # -- reading ----------------------------------------------------------------------------

    async def synced(self) -> None:
        """Waits until every kind has been listed once: before that, a missing child might
        only not have arrived yet."""
        await self._synced.wait()

    def objects(self, namespace: str, name: str) -> dict[ObjectKey, Obj]:
        """The backend's children and pods as last seen (or as last written by us)."""
        key = (namespace, name)
        stored = self._objects.get(key, {})
        out = {k: json.loads(e.packed) for k, e in stored.items()}
        written = self._written.get(key, {})
        for obj_key, mine in list(written.items()):
            entry = stored.get(obj_key)
            if (entry.version if entry else None) != mine.replaced:
                del written[obj_key]  # the cache has moved on: it is at least as new
            elif mine.obj is None:
                out.pop(obj_key, None)
            else:
                out[obj_key] = mine.obj
        if not written:
            self._written.pop(key, None)
        return out

    def wrote(self, namespace: str, name: str, replaced: Obj | None, obj: Obj | None) -> None:
        """Records a write of ours: `replaced` the object as read (None: created), `obj` the
        server's answer (None: deleted)."""
        subject = obj or replaced
        assert subject is not None
        version = replaced["metadata"]["resourceVersion"] if replaced else None
        if obj is not None and obj["metadata"].get("resourceVersion") == version:
            return  # nothing changed on the server
        obj_key = (subject["kind"], subject["metadata"]["name"])
        self._written.setdefault((namespace, name), {})[obj_key] = _Written(version, obj)

    def size(self) -> int:
        return sum(len(objects) for objects in self._objects.values())

    def bytes(self) -> int:
        return sum(len(e.packed) for objects in self._objects.values() for e in objects.values())

    # -- following the API server -----------------------------------------------------------

    def start(self) -> None:
        scopes: list[str | None] = list(self.namespaces) if self.namespaces else [None]
        self._tasks = [
            asyncio.create_task(self._follow(kind, scope))
            for kind in self.kinds
            for scope in scopes
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _follow(self, kind: Kind, namespace: str | None) -> None:
        url = path(kind.api_version, kind.kind, namespace)
        # Also an API server that restarts: the loop keeps the cache and tries again.
        await follow(
            self.kube,
            url,
            _Scope(self, kind, namespace),
            self.log,
            f"watching {url}",
            label_selector=self.selector,
            watch_seconds=self.watch_seconds,
            max_backoff=self.max_backoff,
        )

    def _relisted(self, kind: Kind, namespace: str | None, items: list[Obj]) -> None:
        self._replace(kind.kind, namespace, [_typed(kind, o) for o in items])
        self._mark_listed(kind.kind, namespace)

    def _changed(self, kind: Kind, event: str, obj: Obj) -> None:
        if event == "DELETED":
            self._remove(kind.kind, obj, notify=True)
        else:
            self._put(kind.kind, _typed(kind, obj), notify=True)

    def _mark_listed(self, kind: str, namespace: str | None) -> None:
        self._listed.add((kind, namespace))
        scopes: list[str | None] = list(self.namespaces) if self.namespaces else [None]
        if not self._synced.is_set() and len(self._listed) == len(self.kinds) * len(scopes):
            self.log.info("cache synced: %d objects", self.size())
            self._synced.set()

    def _replace(self, kind: str, namespace: str | None, items: list[Obj]) -> None:
        """A fresh list: what it has replaces what the scope held of this kind."""
        notify = self._synced.is_set()  # the first list is read by the startup reconciles
        seen = set()
        for obj in items:
            seen.add((obj["metadata"]["namespace"], obj["metadata"]["name"]))
            self._put(kind, obj, notify)
        for k, ns, name in list(self._owners):
            if k == kind and (namespace is None or ns == namespace) and (ns, name) not in seen:
                self._remove(kind, {"metadata": {"namespace": ns, "name": name}}, notify)

    def _put(self, kind: str, obj: Obj, notify: bool) -> None:
        meta = obj["metadata"]
        backend = (meta.get("labels") or {}).get(BACKEND_LABEL)
        ident = (kind, meta["namespace"], meta["name"])
        if not backend:
            self._remove(kind, obj, notify)  # the label was removed: no longer ours to track
            return
        owner = (meta["namespace"], backend)
        previous = self._owners.get(ident)
        if previous is not None and previous != owner:
            self._remove(kind, obj, notify)
        current = self._objects.get(owner, {}).get((kind, meta["name"]))
        if current is not None and current.version == meta["resourceVersion"]:
            return  # a re-list delivering what the watch already did
        self._objects.setdefault(owner, {})[(kind, meta["name"])] = _Entry(
            meta["resourceVersion"], _pack(kind, obj)
        )
        self._owners[ident] = owner
        if notify:
            self.on_change(*owner)

    def _remove(self, kind: str, obj: Obj, notify: bool) -> None:
        meta = obj["metadata"]
        owner = self._owners.pop((kind, meta["namespace"], meta["name"]), None)
        if owner is None:
            return
        objects = self._objects[owner]
        objects.pop((kind, meta["name"]), None)
        if not objects:
            del self._objects[owner]
        if notify:
            self.on_change(*owner)


@dataclass(frozen=True)
class _Scope:
    """One kind in one namespace (or all) of the cache, as the watch loop's follower."""

    cache: ChildCache
    kind: Kind
    namespace: str | None

    def listed(self, items: list[Obj]) -> None:
        self.cache._relisted(self.kind, self.namespace, items)

    def changed(self, event: str, obj: Obj) -> None:
        self.cache._changed(self.kind, event, obj)


__all__ = ["ChildCache"]
