"""The routers' identity per namespace (`inferops.identities`): every backend asking gets its
routing table into the Role, backends asking together share writes, a restart writes
nothing, someone else's object of the name is reported, and a deleted backend leaves."""

from __future__ import annotations

import asyncio
import logging

from testsupport.memkube import MemKube

from inferops.builders.common import Owner
from inferops.identities import RouterIdentities
from inferops.kube import path

LOG = logging.getLogger("test")
ROLE = path("rbac.authorization.k8s.io/v1", "Role", "ai", "inferops-router")


def owner(i: int, namespace: str = "ai") -> Owner:
    return Owner(f"b{i}", namespace, f"uid-{i}")


def names(kube: MemKube) -> list[str]:
    role = kube.stored(ROLE)
    assert role is not None
    return list(role["rules"][0]["resourceNames"])


async def test_backends_asking_together_share_the_writes() -> None:
    kube = MemKube(latency=0.01)
    identities = RouterIdentities(kube, LOG)  # type: ignore[arg-type]
    problems = await asyncio.gather(*(identities.ensure(owner(i)) for i in range(40)))
    assert problems == [""] * 40
    assert names(kube) == sorted(f"b{i}-router" for i in range(40))
    assert kube.verbs("get") == [ROLE]  # what is there, read once
    # One write for all: they asked within GATHER_SECONDS of the first.
    assert kube.verbs("apply") == [
        "ServiceAccount inferops-router",
        "Role inferops-router",
        "RoleBinding inferops-router",
    ]
    for kind in ("ServiceAccount", "RoleBinding"):
        version = "v1" if kind == "ServiceAccount" else "rbac.authorization.k8s.io/v1"
        stored = kube.stored(path(version, kind, "ai", "inferops-router"))
        assert stored is not None and len(stored["metadata"]["ownerReferences"]) == 40
    # Asking again costs nothing.
    kube.calls.clear()
    assert await identities.ensure(owner(7)) == ""
    assert kube.calls == []


async def test_a_restart_reads_the_role_once_and_writes_nothing() -> None:
    kube = MemKube()
    first = RouterIdentities(kube, LOG)  # type: ignore[arg-type]
    for i in range(3):
        await first.ensure(owner(i))
    kube.calls.clear()
    again = RouterIdentities(kube, LOG)  # type: ignore[arg-type]
    assert [await again.ensure(owner(i)) for i in range(3)] == ["", "", ""]
    assert [c.verb for c in kube.calls] == ["get"]


async def test_a_new_backend_after_a_restart_keeps_the_others() -> None:
    kube = MemKube()
    await RouterIdentities(kube, LOG).ensure(owner(1))  # type: ignore[arg-type]
    await RouterIdentities(kube, LOG).ensure(owner(2))  # type: ignore[arg-type]
    assert names(kube) == ["b1-router", "b2-router"]


async def test_someone_elses_object_of_the_name_is_reported_and_left_alone() -> None:
    kube = MemKube()
    theirs = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "inferops-router", "namespace": "ai", "labels": {"team": "x"}},
    }
    kube.put(theirs)
    problem = await RouterIdentities(kube, LOG).ensure(owner(1))  # type: ignore[arg-type]
    assert "ServiceAccount inferops-router in namespace ai is not the operator's" in problem
    assert "delete or rename it" in problem
    stored = kube.stored(path("v1", "ServiceAccount", "ai", "inferops-router"))
    assert stored is not None and stored["metadata"]["labels"] == {"team": "x"}
    assert "ownerReferences" not in stored["metadata"]


async def test_a_deleted_backend_leaves_the_role_and_the_last_writes_nothing() -> None:
    kube = MemKube()
    identities = RouterIdentities(kube, LOG)  # type: ignore[arg-type]
    for i in range(2):
        await identities.ensure(owner(i))
    await identities.forget("ai", "b0")
    assert names(kube) == ["b1-router"]
    kube.calls.clear()
    await identities.forget("ai", "b1")  # the garbage collector removes it with its last owner
    assert kube.calls == []
    await identities.forget("ai", "b1")  # twice, or never known: nothing
    await identities.forget("elsewhere", "b1")
    assert kube.calls == []


async def test_namespaces_have_their_own_identity() -> None:
    kube = MemKube()
    identities = RouterIdentities(kube, LOG)  # type: ignore[arg-type]
    await identities.ensure(owner(1, "ai"))
    await identities.ensure(owner(2, "ml"))
    other = kube.stored(path("rbac.authorization.k8s.io/v1", "Role", "ml", "inferops-router"))
    assert other is not None and other["rules"][0]["resourceNames"] == ["b2-router"]
    assert names(kube) == ["b1-router"]


async def test_the_first_write_after_a_read_restores_what_is_missing() -> None:
    """The garbage collector removes the ServiceAccount and RoleBinding with the last
    backend; a backend created meanwhile finds the Role still there and must not be left
    without the rest."""
    kube = MemKube()
    await RouterIdentities(kube, LOG).ensure(owner(1))  # type: ignore[arg-type]
    account = kube.stored(path("v1", "ServiceAccount", "ai", "inferops-router"))
    assert account is not None
    await kube.delete(account)
    await RouterIdentities(kube, LOG).ensure(owner(2))  # type: ignore[arg-type]
    assert kube.stored(path("v1", "ServiceAccount", "ai", "inferops-router")) is not None
    assert names(kube) == ["b1-router", "b2-router"]
