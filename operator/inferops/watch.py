"""Following a collection through the Kubernetes API: the one list/watch loop of the operator's
watch cache and the router's ConfigMap source.

List, then watch from the list's resourceVersion; when the server ends the watch (at
`timeoutSeconds`, or a BOOKMARK-only quiet period), watch again from the last version seen,
without listing; on `410 Gone` (that version was compacted away) list again, and the fresh
list replaces what the follower held. Any other failure (the API server restarting,
unreachable, a body that does not decode) is retried with exponential backoff, keeping what
the follower holds, so a consumer keeps serving its last state meanwhile.

Only the client (`inferops.kube`) is imported here: the router follows its ConfigMap with this
loop without importing anything of the operator's.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from inferops.kube import KubeApi, KubeError, Obj, WatchExpired

FIRST_BACKOFF = 0.25


class Follower(Protocol):
    """What the loop tells about the collection it follows."""

    def listed(self, items: list[Obj]) -> None:
        """A (re)list: `items` is everything the collection holds now."""

    def changed(self, event: str, obj: Obj) -> None:
        """A watch event: ADDED, MODIFIED or DELETED (bookmarks only move the version)."""


async def follow(
    kube: KubeApi,
    url: str,
    follower: Follower,
    log: logging.Logger,
    what: str,
    *,
    label_selector: str | None = None,
    field_selector: str | None = None,
    watch_seconds: int = 290,
    max_backoff: float = 10.0,
) -> None:
    """Follows `url` until cancelled. `what` names the collection in log lines."""
    version: str | None = None
    backoff = FIRST_BACKOFF
    while True:
        try:
            if version is None:
                items, version = await kube.list_versioned(url, label_selector, field_selector)
                follower.listed(items)
            backoff = FIRST_BACKOFF
            events = kube.watch(url, version, label_selector, field_selector, watch_seconds)
            async for event, obj in events:
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if event in ("ADDED", "MODIFIED", "DELETED"):
                    follower.changed(event, obj)
        except WatchExpired:
            log.debug("%s: watch expired (410), listing again", what)
            version = None
        except (KubeError, ValueError) as error:
            log.warning("%s: %s; retrying in %.2gs", what, error, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)


__all__ = ["Follower", "follow"]
