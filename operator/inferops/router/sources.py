"""Where routing tables come from. A source runs for the router's lifetime and hands every
new table to a sink (the router's state); a table that does not validate is rejected and the
current one stays, so a bad write never takes routing down. A source that disappears (the
ConfigMap deleted, the file removed) is reported as lost, and the current table stays too.

`FileSource` re-reads a file when it changes (tests, and a ConfigMap mounted as a volume);
`inferops.router.configmap.ConfigMapSource` watches the ConfigMap through the API, which is
what makes weight changes reach the data path within a second.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from inferops.api.routing import RoutingTable

log = logging.getLogger("inferops.router.sources")


class TableSink(Protocol):
    def install(self, table: RoutingTable) -> bool: ...

    def reject(self, message: str) -> None:
        """The source holds a table that cannot be used."""

    def lost(self, message: str) -> None:
        """The source holds no table any more (deleted)."""


class TableSource(Protocol):
    def describe(self) -> str: ...

    async def run(self, sink: TableSink) -> None:
        """Delivers tables until cancelled."""


def parse(text: str, origin: str) -> RoutingTable | str:
    """The table in `text`, or a message saying why there is none."""
    try:
        return RoutingTable.model_validate_json(text)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in err.errors()
        )
        return f"{origin}: {problems}"


class FileSource:
    """A table in a file, polled for changes (a `stat` per interval; cheap)."""

    def __init__(self, path: str | os.PathLike[str], interval: float = 0.25) -> None:
        self.path = Path(path)
        self.interval = interval

    def describe(self) -> str:
        return f"file {self.path}"

    async def run(self, sink: TableSink) -> None:
        seen: tuple[int, int, int] | None = None
        text: str | None = None
        missing_logged = False
        while True:
            try:
                # stat follows symlinks, so a mounted ConfigMap's atomic `..data` swap shows.
                st = self.path.stat()
                signature = (st.st_mtime_ns, st.st_size, st.st_ino)
                missing_logged = False
                if signature != seen:
                    seen = signature
                    new_text = self.path.read_text()
                    if new_text != text:
                        text = new_text
                        result = parse(new_text, str(self.path))
                        if isinstance(result, str):
                            sink.reject(result)
                        else:
                            sink.install(result)
            except OSError as err:
                seen = None
                text = None  # the same table written back is news again
                if not missing_logged:
                    sink.lost(f"cannot read routing table {self.path}: {err}")
                    missing_logged = True
            await asyncio.sleep(self.interval)


__all__ = ["FileSource", "TableSink", "TableSource", "parse"]
