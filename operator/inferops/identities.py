"""The routers' identity in each namespace (`builders.router.identity`): one ServiceAccount,
Role and RoleBinding per namespace, whose Role names the routing table of every
InferenceBackend there that has a router.

A backend's reconciliation asks for its name to be in the Role (`ensure`) before it writes its
router. Backends asking at about the same time share one write: whoever holds the
namespace's lock waits `GATHER_SECONDS`, then writes every name asked for until then, and
those waiting behind it find theirs written.
What was written is known from the live Role (its owners, read once per namespace after a
start) and then from this process's own writes, so a restart writes nothing and at rest
nothing is sent.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from inferops.builders import router
from inferops.builders.common import MANAGED_BY, Obj, Owner
from inferops.execute import create_only
from inferops.kube import Kube, path

ROLE_API = "rbac.authorization.k8s.io/v1"
GATHER_SECONDS = 0.2


@dataclass
class _Namespace:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    asked: dict[str, str] = field(default_factory=dict)
    """Backends (name to uid) whose routers need the identity."""
    written: dict[str, str] | None = None
    """Those the live Role names; None until it was read."""
    checked: bool = False
    """Whether this process wrote the ServiceAccount and RoleBinding since it read the Role:
    the first write after a read writes all three, so that what is missing (never written,
    or removed by the garbage collector as the last backend went) is there again."""


class RouterIdentities:
    def __init__(self, kube: Kube, log: logging.Logger) -> None:
        self.kube = kube
        self.log = log
        self._namespaces: dict[str, _Namespace] = {}

    async def ensure(self, owner: Owner) -> str:
        """Makes sure the routers of `owner` may read its routing table: "" once they may,
        else why they cannot (an object of the identity's name that is not the operator's,
        a message for the resource's InvalidSpec status)."""
        ns = self._namespaces.setdefault(owner.namespace, _Namespace())
        ns.asked[owner.name] = owner.uid
        async with ns.lock:
            if ns.written is None:
                problem = await self._read(owner.namespace, ns)
                if problem:
                    return problem
            assert ns.written is not None
            if ns.written.get(owner.name) == owner.uid:
                return ""  # written, by this run's turn or an earlier one
            # Backends created together ask within moments of each other: those asking
            # meanwhile are written with this one (a new backend waits this long once).
            await asyncio.sleep(GATHER_SECONDS)
            wanted = {**ns.written, **ns.asked}
            problem = await self._write(owner.namespace, wanted, create=not ns.checked)
            if not problem:
                ns.written, ns.checked = wanted, True
            return problem

    async def forget(self, namespace: str, name: str) -> None:
        """`name` has no router any more (deleted, or no consumers left): its routing table
        leaves the Role. With no backend left, the garbage collector removes the identity
        (the Role lists its owners) and nothing is written."""
        ns = self._namespaces.get(namespace)
        if ns is None:
            return
        ns.asked.pop(name, None)
        async with ns.lock:
            if ns.written is None or name not in ns.written:
                return
            rest = {k: v for k, v in ns.written.items() if k != name}
            if rest:
                await self._write(namespace, rest, create=False)
            ns.written = rest
            if not ns.asked and not rest:
                del self._namespaces[namespace]

    async def _read(self, namespace: str, ns: _Namespace) -> str:
        role = await self.kube.get(path(ROLE_API, "Role", namespace, router.IDENTITY))
        if role is not None and not _ours(role):
            return _taken(role)
        ns.written = router.identity_backends(role) if role is not None else {}
        return ""

    async def _write(self, namespace: str, backends: dict[str, str], *, create: bool) -> str:
        """Applies the identity for `backends`: with `create`, each object only if its name is
        free or already the operator's; else the Role alone, as the ServiceAccount and
        RoleBinding do not change with the backends."""
        objects = router.identity(namespace, backends)
        if not create:
            role = next(o for o in objects if o["kind"] == "Role")
            self.log.info("%s: the routers' Role names %d routing tables", namespace, len(backends))
            await self.kube.apply(role)
            return ""
        for obj in objects:
            self.log.info(
                "%s: creating the routers' %s %s", namespace, obj["kind"], router.IDENTITY
            )
            if await create_only(self.kube, obj, _ours) is None:
                return _taken(obj)
        return ""


def _ours(obj: Obj) -> bool:
    labels = obj["metadata"].get("labels") or {}
    return labels.get("app.kubernetes.io/managed-by") == MANAGED_BY


def _taken(obj: Obj) -> str:
    return (
        f"{obj['kind']} {router.IDENTITY} in namespace {obj['metadata']['namespace']} is not "
        "the operator's, and the routers of this namespace need that name for their "
        "identity: delete or rename it"
    )


__all__ = ["RouterIdentities"]
