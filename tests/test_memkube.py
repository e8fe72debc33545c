"""The in-memory API server of the unit tests (testsupport/memkube.py) answers as the real
one does for what the operator relies on: versions, conflicts, the status subresource,
server-side apply's field ownership, and list/watch with `410 Gone`, followed by the one
list/watch loop (inferops.watch) as the cache and the router follow the real one."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import pytest
from testsupport.memkube import MemKube

from inferops.kube import Kube, KubeApi, KubeError, WatchExpired, path
from inferops.watch import follow

CONFIGMAPS = path("v1", "ConfigMap", "ai")


def config_map(name: str, data: dict[str, str], **labels: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": "ai", "labels": labels}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def deployment(**spec: Any) -> dict[str, Any]:
    meta = {"name": "d", "namespace": "ai"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


def test_it_speaks_the_client_protocol_as_the_client_does() -> None:
    """Every call of the protocol, with the parameters of the HTTP client's."""
    members = [m for m in vars(KubeApi) if not m.startswith("_")]
    assert "apply" in members and "watch" in members
    for member in members:
        if member == "field_manager":
            assert MemKube().field_manager == "inferops-operator"
            continue
        mine, theirs = getattr(MemKube, member), getattr(Kube, member)
        assert inspect.signature(mine).parameters.keys() == (
            inspect.signature(theirs).parameters.keys()
        ), member
        assert inspect.iscoroutinefunction(mine) == inspect.iscoroutinefunction(theirs)
        assert inspect.isasyncgenfunction(mine) == inspect.isasyncgenfunction(theirs)


async def test_versions_uids_and_conflicts() -> None:
    kube = MemKube()
    created = await kube.create(config_map("a", {"k": "1"}))
    assert created["metadata"]["uid"] and created["metadata"]["generation"] == 1
    with pytest.raises(KubeError) as conflict:
        await kube.create(config_map("a", {"k": "2"}))
    assert conflict.value.status == 409
    patched = await kube.merge_patch(created, {"data": {"k": "2", "x": None}})
    assert int(patched["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert patched["metadata"]["generation"] == 2 and patched["data"] == {"k": "2"}
    with pytest.raises(KubeError) as stale:  # written since `created` was read
        await kube.patch_metadata(created, {"annotations": {"a": "b"}})
    assert stale.value.status == 409
    await kube.patch_metadata(patched, {"annotations": {"a": "b"}})
    with pytest.raises(KubeError) as other_uid:
        await kube.delete({**patched, "metadata": {**patched["metadata"], "uid": "x"}})
    assert other_uid.value.status == 409
    await kube.delete(patched)
    assert await kube.get(CONFIGMAPS + "/a") is None
    await kube.delete(patched)  # gone already: nothing, as the client answers a 404
    with pytest.raises(KubeError) as gone:
        await kube.patch_metadata(patched, {"annotations": {"a": "c"}})
    assert gone.value.status == 404


async def test_an_apply_with_a_version_is_conditional_on_it() -> None:
    """As the API server does: a resourceVersion in an applied object is a precondition
    (409 on another stored version), a creation when nothing is stored, never a field."""
    kube = MemKube()
    with_version = {**deployment(replicas=1), "metadata": {"name": "d", "namespace": "ai"}}
    with_version["metadata"]["resourceVersion"] = "1"
    created = await kube.apply(with_version)
    assert created["metadata"]["resourceVersion"] != "1"
    for entry in created["metadata"]["managedFields"]:
        assert "f:resourceVersion" not in entry["fieldsV1"].get("f:metadata", {})
    for attempt in (kube.apply(with_version), kube.try_apply(with_version)):
        with pytest.raises(KubeError) as conflict:
            await attempt
        assert conflict.value.status == 409 and "has been modified" in conflict.value.message
    version = created["metadata"]["resourceVersion"]
    current = {**deployment(replicas=2), "metadata": {**with_version["metadata"]}}
    current["metadata"]["resourceVersion"] = version
    assert (await kube.apply(current))["spec"]["replicas"] == 2
    assert [c["spec"] for c in kube.sent("apply")] == [
        {"replicas": 1},
        {"replicas": 1},
        {"replicas": 2},
    ]


async def test_status_is_a_subresource() -> None:
    kube = MemKube()
    obj = await kube.apply({**deployment(replicas=1), "status": {"readyReplicas": 9}})
    assert "status" not in obj  # an apply never writes status
    obj = await kube.patch_status(obj, {"readyReplicas": 1})
    assert obj["status"] == {"readyReplicas": 1} and obj["metadata"]["generation"] == 1
    obj = await kube.apply(deployment(replicas=2))
    assert obj["status"] == {"readyReplicas": 1} and obj["metadata"]["generation"] == 2
    again = await kube.apply(deployment(replicas=2))
    assert again["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


async def test_apply_merges_takes_and_drops_fields_by_manager() -> None:
    kube = MemKube(field_manager="operator")
    await kube.apply(deployment(replicas=3, paused=False))
    answer, existed = await kube.try_apply(deployment(paused=True))
    assert existed and answer["spec"] == {"paused": True}  # replicas: no longer applied
    assert (await kube.get(path("apps/v1", "Deployment", "ai", "d")))["spec"]["paused"] is False  # type: ignore[index]
    # Another manager applying the same count co-owns it: the operator may drop it.
    await kube.apply(deployment(replicas=3), field_manager="hpa")
    obj = await kube.apply(deployment(paused=True))
    assert obj["spec"] == {"replicas": 3, "paused": True}
    owners = {e["manager"]: e["fieldsV1"]["f:spec"] for e in obj["metadata"]["managedFields"]}
    assert owners == {"hpa": {"f:replicas": {}}, "operator": {"f:paused": {}}}


async def test_owner_references_merge_by_uid_in_a_dry_run() -> None:
    kube = MemKube()
    theirs = {"apiVersion": "v1", "kind": "X", "name": "x", "uid": "u-1"}
    ours = {"apiVersion": "v1", "kind": "Y", "name": "y", "uid": "u-2"}
    obj = deployment(replicas=1)
    kube.put({**obj, "metadata": {**obj["metadata"], "ownerReferences": [theirs]}})
    answer, existed = await kube.try_apply(
        {**obj, "metadata": {**obj["metadata"], "ownerReferences": [ours]}}
    )
    assert existed and answer["metadata"]["ownerReferences"] == [theirs, ours]
    stored = kube.stored(obj)
    assert stored is not None and stored["metadata"]["ownerReferences"] == [theirs]
    _, existed = await kube.try_apply(config_map("new", {}))
    assert not existed and kube.stored(config_map("new", {})) is None


async def test_list_and_watch_by_selector_and_410_after_compaction() -> None:
    kube = MemKube()
    kube.put(config_map("a", {"k": "1"}, app="x"))
    kube.put(config_map("b", {"k": "1"}, app="y"))
    items, version = await kube.list_versioned(CONFIGMAPS, label_selector="app=x")
    assert [i["metadata"]["name"] for i in items] == ["a"]
    across, _ = await kube.list_versioned(
        path("v1", "ConfigMap", None), field_selector="metadata.name=b"
    )
    assert [i["metadata"]["name"] for i in across] == ["b"]
    kube.put(config_map("a", {"k": "2"}, app="x"))
    kube.put(config_map("b", {"k": "2"}, app="y"))
    events = [
        (e, o["data"]) async for e, o in kube.watch(CONFIGMAPS, version, "app=x", timeout_seconds=0)
    ]
    assert events == [("MODIFIED", {"k": "2"})]
    kube.compact()
    with pytest.raises(WatchExpired):
        async for _ in kube.watch(CONFIGMAPS, version, timeout_seconds=0):
            pass


class Recorder:
    def __init__(self) -> None:
        self.lists: list[list[str]] = []
        self.changes: list[tuple[str, str]] = []

    def listed(self, items: list[dict[str, Any]]) -> None:
        self.lists.append([i["metadata"]["name"] for i in items])

    def changed(self, event: str, obj: dict[str, Any]) -> None:
        self.changes.append((event, obj["metadata"]["name"]))


async def test_the_watch_loop_follows_it_and_relists_after_410() -> None:
    kube = MemKube()
    kube.put(config_map("a", {}, app="x"))
    seen = Recorder()
    task = asyncio.create_task(
        follow(
            kube,
            CONFIGMAPS,
            seen,
            logging.getLogger("test"),
            "configmaps",
            label_selector="app=x",
            watch_seconds=1,
            max_backoff=0.05,
        )
    )

    async def until(probe: Any) -> None:
        for _ in range(500):
            if probe():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"timed out: lists {seen.lists}, changes {seen.changes}")

    try:
        await until(lambda: kube.verbs("watch"))
        kube.put(config_map("b", {}, app="x"))
        await until(lambda: seen.changes == [("ADDED", "b")])
        # Only objects it does not select change after that, and their versions are then
        # compacted away. The open watch ends at its timeout; the next one fails (retried,
        # keeping what the follower has); the one after starts from a compacted version:
        # 410, and a new list.
        kube.put(config_map("c", {}, app="y"))
        kube.fail_next("watch", 1, 500, "etcd unavailable")
        kube.compact()
        await until(lambda: len(seen.lists) == 2)
        assert seen.lists == [["a"], ["a", "b"]]
        assert seen.changes == [("ADDED", "b")]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
