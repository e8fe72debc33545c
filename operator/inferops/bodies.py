"""The latest InferenceBackends as kopf's watch delivers them, and as the operator's own
status patches leave them: a reconciliation starts from here instead of a GET of the
resource (one request per run, three per new backend before).

A watch event can arrive after a status patch it predates; the newer of the two is kept,
by resourceVersion (etcd's revision, compared as a number where it is one).
"""

from __future__ import annotations

from inferops.kube import Obj


def _newer(candidate: Obj, current: Obj) -> bool:
    new = candidate["metadata"].get("resourceVersion", "")
    old = current["metadata"].get("resourceVersion", "")
    if new.isdigit() and old.isdigit():
        return int(new) >= int(old)
    return True  # opaque versions: the later message wins


class Bodies:
    def __init__(self) -> None:
        self._bodies: dict[tuple[str, str], Obj] = {}

    def get(self, namespace: str, name: str) -> Obj | None:
        """The latest body seen, or None when none was (then read it from the API)."""
        return self._bodies.get((namespace, name))

    def seen(self, body: Obj) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        current = self._bodies.get(key)
        if current is None or _newer(body, current):
            self._bodies[key] = body

    def forget(self, namespace: str, name: str) -> None:
        self._bodies.pop((namespace, name), None)

    def __len__(self) -> int:
        return len(self._bodies)


__all__ = ["Bodies"]
