"""An in-memory Kubernetes API behind `inferops.kube.KubeApi`, for unit tests of code that
reads and writes through the client: the same answers the API server gives for what the
operator does, without a server.

What it keeps honest:
- every write gets the next resourceVersion; a creation a uid and generation 1; a change of
  anything but metadata and status the next generation;
- create answers 409 when the object exists; delete 409 when the uid precondition fails and
  nothing (as the client does for 404) when it is gone; patch_metadata 409 when the object
  changed since the version read, KubeError 404 when it is gone; an apply carrying a
  resourceVersion is conditional on it (409 when the object exists at another version, a
  creation when it does not), and the version is never stored as a field;
- server-side apply merges the applied fields into the stored object (maps merged,
  ownerReferences merged by uid as the API server's list-map is, other lists replaced as
  atomic), takes them from other managers (force), records them in `managedFields` under
  the manager, and removes a field its manager stopped applying that no other manager
  owns; a dry run answers what would be stored, 200 (existed) or 201, storing nothing;
- status is a subresource: patch_status changes only status (no generation), the other
  writes never change status;
- list and watch by collection (namespaced or across namespaces), label (`k=v`, `k!=v`, `k`)
  and field (`metadata.name`, `metadata.namespace`) selectors, with resourceVersions; a watch
  from a version older than the last `compact()` raises WatchExpired (410 Gone).

Faults are injected, not scripted answers: `refuse` makes applies and dry runs of one object
fail with a status, `fail_next` fails the next calls of a verb, `latency` delays every call.
`calls` records what was asked, in order (with what was sent: `sent(verb)`), `events` the
Events posted and `most_in_flight` the most concurrent calls.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from inferops.kube import KubeApi, KubeError, Obj, WatchExpired, WriteHook, object_path, path

_NOT_SPEC = ("apiVersion", "kind", "metadata", "status")


@dataclass(frozen=True)
class Call:
    verb: str
    """get, list, watch, create, apply, dry-run, merge_patch, patch_status, patch_metadata,
    delete or event."""
    target: str
    """`Kind name` of an object, the URL of a get, list or watch."""
    manager: str = ""
    """The field manager of an apply or a dry run."""
    body: Obj | None = field(default=None, compare=False, hash=False)
    """What was sent: the object of a create, apply or dry run, the patch of a patch (the
    status of patch_status), the Event of post_event."""


@dataclass
class _Fault:
    times: int
    status: int
    message: str


@dataclass
class MemKube:
    field_manager: str = "inferops-operator"
    on_write: WriteHook | None = None
    latency: float = 0.0
    """Seconds every call waits before it is answered (a slow API server)."""
    calls: list[Call] = field(default_factory=list)
    events: list[Obj] = field(default_factory=list)
    most_in_flight: int = 0
    version: int = 100
    _objects: dict[str, Obj] = field(default_factory=dict)
    _history: list[tuple[int, str, Obj]] = field(default_factory=list)
    _oldest: int = 0
    _uids: int = 0
    _refusals: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    _faults: dict[str, _Fault] = field(default_factory=dict)
    _in_flight: int = 0
    _changed: asyncio.Condition | None = None
    _endings: int = 0
    _expiries: int = 0

    # -- setting the scene ------------------------------------------------------------------

    def put(self, obj: Obj) -> Obj:
        """Stores `obj` as someone else wrote it (a new version; the stored object's uid, or
        a new one, when it has none)."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        before = (self._objects.get(object_path(obj)) or {}).get("metadata", {})
        if not meta.get("uid"):  # a change keeps the object's uid, a creation gets one
            meta["uid"] = before.get("uid") or self._uid()
        meta.setdefault("generation", 1)
        self._store(obj)
        return copy.deepcopy(obj)

    def remove(self, obj: Obj) -> None:
        """Deletes `obj` as someone else would (a DELETED event, a version of its own)."""
        current = self._objects.pop(object_path(obj))
        self._record("DELETED", current)

    def stored(self, obj_or_url: Obj | str) -> Obj | None:
        """The object as stored now (a copy), by object or URL."""
        url = obj_or_url if isinstance(obj_or_url, str) else object_path(obj_or_url)
        found = self._objects.get(url)
        return copy.deepcopy(found) if found is not None else None

    def refuse(self, kind: str, name: str, status: int, message: str) -> None:
        """Applies and dry runs of this object fail with `status` (the API server's verdict
        on the object itself, e.g. 422 Invalid)."""
        self._refusals[(kind, name)] = (status, message)

    def fail_next(self, verb: str, times: int, status: int, message: str) -> None:
        """The next `times` calls of `verb` fail with `status` (e.g. 503: overloaded)."""
        self._faults[verb] = _Fault(times, status, message)

    def compact(self) -> None:
        """Etcd compaction at the current version: a watch from any older version gets
        410 Gone (a watch already open goes on)."""
        self._oldest = self.version

    def end_watches(self) -> None:
        """Every open watch ends, as at its `timeoutSeconds`: clients watch again from the
        last version they saw."""
        self._endings += 1
        self._wake()

    def expire(self) -> None:
        """Compaction past what the open watches delivered: each answers 410 Gone before
        any later event, and a watch from an older version too (clients list again)."""
        self.compact()
        self._expiries += 1
        self._wake()

    def verbs(self, *verbs: str) -> list[str]:
        """The targets of the calls of these verbs, in order."""
        return [c.target for c in self.calls if c.verb in verbs]

    def sent(self, *verbs: str) -> list[Obj]:
        """What the calls of these verbs sent, in order (copies)."""
        return [copy.deepcopy(c.body) for c in self.calls if c.verb in verbs and c.body]

    def objects(self) -> list[Obj]:
        """Every stored object (copies), by URL."""
        return [copy.deepcopy(o) for _, o in sorted(self._objects.items())]

    # -- KubeApi ----------------------------------------------------------------------------

    async def get(self, url: str) -> Obj | None:
        await self._call("get", url)
        return self.stored(url)

    async def list_versioned(
        self, url: str, label_selector: str | None = None, field_selector: str | None = None
    ) -> tuple[list[Obj], str]:
        await self._call("list", url)
        items = [
            copy.deepcopy(o)
            for key, o in sorted(self._objects.items())
            if _in(url, key, o) and _selected(o, label_selector, field_selector)
        ]
        return items, str(self.version)

    async def watch(
        self,
        url: str,
        version: str,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 290,
    ) -> AsyncIterator[tuple[str, Obj]]:
        endings, expiries = self._endings, self._expiries
        await self._call("watch", url)
        since = int(version)
        if since < self._oldest:
            raise WatchExpired(url)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        condition = self._condition()
        while True:
            if self._expiries != expiries:
                raise WatchExpired(url)
            if self._endings != endings:
                return
            for rv, kind, obj in self._history:
                key = object_path(obj)
                if rv > since and _in(url, key, obj):
                    since = rv
                    if _selected(obj, label_selector, field_selector):
                        yield kind, copy.deepcopy(obj)
            left = deadline - loop.time()
            if left <= 0:
                return  # the server ends the watch at timeoutSeconds
            async with condition:
                try:
                    await asyncio.wait_for(condition.wait(), left)
                except TimeoutError:
                    return

    async def create(self, obj: Obj) -> Obj:
        await self._call("create", _name(obj), obj, body=obj)
        if object_path(obj) in self._objects:
            raise KubeError(409, f'{obj["kind"]} "{obj["metadata"]["name"]}" already exists')
        return self.put(_without_status(obj))

    async def merge_patch(self, obj: Obj, patch: Obj) -> Obj:
        await self._call("merge_patch", _name(obj), obj, body=patch)
        current = self._objects.get(object_path(obj))
        if current is None:
            return _not_found(obj)
        self._precondition(obj, (patch.get("metadata") or {}).get("resourceVersion"))
        return self._update(current, merge_patch(current, _without_status(patch)))

    async def apply(self, obj: Obj, *, field_manager: str | None = None) -> Obj:
        manager = field_manager or self.field_manager
        await self._call("apply", _name(obj), obj, manager, body=obj)
        self._refused(obj)
        self._precondition(obj, obj["metadata"].get("resourceVersion"))
        answer, existed = self._applied(obj, manager)
        if not existed:
            return self.put(answer)
        return self._update(self._objects[object_path(obj)], answer)

    async def try_apply(self, obj: Obj) -> tuple[Obj, bool]:
        await self._call("dry-run", _name(obj), manager=self.field_manager, body=obj)
        self._refused(obj)
        self._precondition(obj, obj["metadata"].get("resourceVersion"))
        return self._applied(obj, self.field_manager)

    async def delete(self, obj: Obj) -> None:
        await self._call("delete", _name(obj), obj)
        current = self._objects.get(object_path(obj))
        if current is None:
            return
        if current["metadata"]["uid"] != obj["metadata"]["uid"]:
            raise KubeError(409, "Precondition failed: UID in precondition does not match")
        del self._objects[object_path(obj)]
        self._record("DELETED", current)

    async def post_event(
        self, obj: Obj, type: str, reason: str, message: str, now: str, component: str
    ) -> None:
        event = {
            "type": type,
            "reason": reason,
            "message": message[:1024],
            "time": now,
            "component": component,
            "involvedObject": _name(obj),
        }
        await self._call("event", _name(obj), {**obj, "kind": "Event"}, body=event)
        self.events.append(event)

    async def patch_status(self, obj: Obj, status: Obj) -> Obj:
        await self._call("patch_status", _name(obj), obj, body=status)
        current = self._objects.get(object_path(obj))
        if current is None:
            return _not_found(obj)
        merged = merge_patch(current.get("status") or {}, status)
        return self._update(current, {**current, "status": merged}, status_too=True)

    async def patch_metadata(self, obj: Obj, patch: Obj) -> Obj:
        await self._call("patch_metadata", _name(obj), obj, body=patch)
        current = self._objects.get(object_path(obj))
        if current is None:
            raise KubeError(404, f"{_name(obj)} not found")
        if current["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise KubeError(
                409,
                "the object has been modified; please apply your changes "
                "to the latest version and try again",
            )
        return self._update(current, merge_patch(current, {"metadata": patch}))

    # -- inside -----------------------------------------------------------------------------

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _call(
        self,
        verb: str,
        target: str,
        written: Obj | None = None,
        manager: str = "",
        body: Obj | None = None,
    ) -> None:
        self.calls.append(Call(verb, target, manager, copy.deepcopy(body)))
        if written is not None and self.on_write is not None:
            hook_verb = {"event": "create", "merge_patch": "patch"}.get(verb, verb)
            self.on_write(hook_verb, written)
        self._in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self._in_flight)
        try:
            # Every call suspends, as a request does: a loop of calls cannot starve the others.
            await asyncio.sleep(self.latency)
            fault = self._faults.get(verb)
            if fault is not None and fault.times > 0:
                fault.times -= 1
                raise KubeError(fault.status, fault.message)
        finally:
            self._in_flight -= 1

    def _refused(self, obj: Obj) -> None:
        refusal = self._refusals.get((obj["kind"], obj["metadata"]["name"]))
        if refusal is not None:
            raise KubeError(*refusal)

    def _precondition(self, obj: Obj, wanted: str | None) -> None:
        """A resourceVersion sent with a write is a precondition on the stored object's."""
        current = self._objects.get(object_path(obj))
        if wanted and current is not None and current["metadata"]["resourceVersion"] != wanted:
            raise KubeError(
                409,
                f'Operation cannot be fulfilled on {_plural(obj)} "{obj["metadata"]["name"]}": '
                "the object has been modified; please apply your changes to the latest "
                "version and try again",
            )

    def _applied(self, obj: Obj, manager: str) -> tuple[Obj, bool]:
        """What an apply of `obj` by `manager` would store, and whether the object exists."""
        obj = _without_status(obj)
        obj["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
        mine = _fields(obj)
        current = self._objects.get(object_path(obj))
        # Applying the value a field has already makes its managers co-owners; a new value
        # takes it from them (force).
        taken = {p for p in mine if current is None or _at(current, p) != _at(obj, p)}
        entries = [] if current is None else current["metadata"].get("managedFields") or []
        others: list[Obj] = []
        dropped: set[tuple[str, ...]] = set()
        for entry in entries:
            owned = _paths(entry.get("fieldsV1") or {})
            if entry.get("manager") == manager and entry.get("operation") == "Apply":
                dropped = owned - mine
            elif owned - taken:
                others.append({**entry, "fieldsV1": _tree(owned - taken)})
        kept_by_others = set().union(*(_paths(e["fieldsV1"]) for e in others))
        out = copy.deepcopy(obj) if current is None else _apply_merge(current, obj)
        for leaf in dropped - kept_by_others:
            _remove(out, leaf)  # no longer applied by anyone: gone from the object
        entry = {
            "manager": manager,
            "operation": "Apply",
            "apiVersion": obj["apiVersion"],
            "fieldsType": "FieldsV1",
            "fieldsV1": _tree(mine),
        }
        out["metadata"]["managedFields"] = [*others, entry]
        return out, current is not None

    def _update(self, current: Obj, new: Obj, status_too: bool = False) -> Obj:
        new = copy.deepcopy(new)
        if not status_too:  # status changes only through its subresource
            if "status" in current:
                new["status"] = copy.deepcopy(current["status"])
            else:
                new.pop("status", None)
        meta = new["metadata"]
        for immutable in ("uid", "name", "namespace", "creationTimestamp"):
            if immutable in current["metadata"]:
                meta[immutable] = current["metadata"][immutable]
        if {k: v for k, v in new.items() if k not in _NOT_SPEC} != {
            k: v for k, v in current.items() if k not in _NOT_SPEC
        }:
            meta["generation"] = current["metadata"].get("generation", 1) + 1
        if new == current:
            return copy.deepcopy(current)  # no change: no new version
        self._store(new)
        return copy.deepcopy(new)

    def _store(self, obj: Obj) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        url = object_path(obj)
        event = "MODIFIED" if url in self._objects else "ADDED"
        self._objects[url] = obj
        self._record(event, obj)

    def _record(self, event: str, obj: Obj) -> None:
        obj = copy.deepcopy(obj)
        if event == "DELETED":  # the deletion is a version of its own
            self.version += 1
            obj["metadata"]["resourceVersion"] = str(self.version)
        self._history.append((self.version, event, obj))
        self._wake()

    def _wake(self) -> None:
        condition = self._changed
        if condition is not None:

            async def wake() -> None:
                async with condition:
                    condition.notify_all()

            # A synchronous `put` from a test wakes the watches on the loop's next turn.
            asyncio.get_running_loop().create_task(wake())

    def _uid(self) -> str:
        self._uids += 1
        return f"00000000-0000-0000-0000-{self._uids:012d}"


def _name(obj: Obj) -> str:
    return f"{obj['kind']} {obj['metadata']['name']}"


def _plural(obj: Obj) -> str:
    return object_path(obj).rsplit("/", 2)[-2]


def _not_found(obj: Obj) -> Obj:
    """The client returns the 404 Status body of a patch (it raises for other errors)."""
    message = f'{obj["kind"]} "{obj["metadata"]["name"]}" not found'
    return {"kind": "Status", "status": "Failure", "code": 404, "message": message}


def _without_status(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k != "status"}


def _in(collection: str, key: str, obj: Obj) -> bool:
    """Whether the object at URL `key` is in the collection at URL `collection` (its
    namespace's, or the one across all namespaces)."""
    across = path(obj["apiVersion"], obj["kind"], None)
    return collection in (key.rsplit("/", 1)[0], across)


def _selected(obj: Obj, labels: str | None, fields: str | None) -> bool:
    meta = obj["metadata"]
    have = meta.get("labels") or {}
    for term in filter(None, (labels or "").split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if have.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if have.get(key) != value.lstrip("="):
                return False
        elif term not in have:
            return False
    for term in filter(None, (fields or "").split(",")):
        key, value = term.split("=", 1)
        if meta.get(key.removeprefix("metadata.")) != value:
            return False
    return True


_IDENTITY = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")}


def _fields(obj: Obj) -> set[tuple[str, ...]]:
    """The leaf paths an apply of `obj` sets (lists are atomic leaves)."""

    def walk(value: Any, prefix: tuple[str, ...]) -> set[tuple[str, ...]]:
        if isinstance(value, dict) and value:
            return set().union(*(walk(v, (*prefix, k)) for k, v in value.items()))
        return {prefix}

    return walk(obj, ()) - _IDENTITY


def _tree(paths: set[tuple[str, ...]]) -> Obj:
    """Leaf paths as FieldsV1 (`{"f:spec": {"f:replicas": {}}}`)."""
    tree: Obj = {}
    for leaf in sorted(paths):
        node = tree
        for key in leaf:
            node = node.setdefault(f"f:{key}", {})
    return tree


def _paths(tree: Obj, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    for key, sub in tree.items():
        here = (*prefix, key.removeprefix("f:"))
        out |= _paths(sub, here) if sub else {here}
    return out


def _at(obj: Obj, leaf: tuple[str, ...]) -> Any:
    node: Any = obj
    for key in leaf:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _remove(obj: Obj, leaf: tuple[str, ...]) -> None:
    node: Any = obj
    for key in leaf[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(leaf[-1], None)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merged, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _apply_merge(current: Obj, applied: Obj) -> Obj:
    """The applied fields over the stored object: maps merged, ownerReferences merged by uid
    (a list-map in the API), other lists replaced by the applied ones."""
    merged = merge_patch(current, {k: v for k, v in applied.items() if k != "metadata"})
    meta = {**current["metadata"], **applied["metadata"]}
    for key in ("labels", "annotations"):
        if key in current["metadata"] or key in applied["metadata"]:
            meta[key] = {**current["metadata"].get(key, {}), **applied["metadata"].get(key, {})}
    refs = {r["uid"]: r for r in current["metadata"].get("ownerReferences", [])}
    refs.update({r["uid"]: r for r in applied["metadata"].get("ownerReferences", [])})
    if refs:
        meta["ownerReferences"] = list(refs.values())
    for kept in ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields"):
        if kept in current["metadata"]:
            meta[kept] = current["metadata"][kept]
    merged["metadata"] = meta
    return copy.deepcopy(merged)


__all__ = ["Call", "MemKube", "merge_patch"]

if TYPE_CHECKING:  # mypy (`make lint`) checks that it speaks the client's protocol
    _SPEAKS: KubeApi = MemKube()
