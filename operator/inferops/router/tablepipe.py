"""The routing table from the supervisor to its workers (`--workers`), over each worker's
stdin: one JSON object per line.

The supervisor runs the pod's one table source (so the API server sees one watch per pod,
not one per worker) with a `TableFeed` as its sink; the feed sends what the source reports
to every worker, and replays the current state to a worker that (re)starts. A worker reads
the lines with a `PipeSource`, a `TableSource` like the others, into its own `RouterState`,
so `/readyz` and the table's metrics are right in every worker.

Messages: `{"install": TABLE}`, `{"reject": MESSAGE}`, `{"lost": MESSAGE}` (the three calls
of a `TableSink`) and `{"restarts": N}` (workers restarted in this pod so far). The pipe
closing means the supervisor is gone: the worker stops rather than live on as an orphan.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from inferops.api.routing import RoutingTable
from inferops.router.sources import TableSink

log = logging.getLogger("inferops.router.tablepipe")

LINE_LIMIT = 16 << 20
"""The longest line a worker reads: far above a ConfigMap's 1 MiB."""


def encode(kind: str, value: Any) -> bytes:
    return json.dumps({kind: value}, separators=(",", ":")).encode() + b"\n"


def encode_table(table: RoutingTable) -> bytes:
    return encode("install", table.model_dump(mode="json", by_alias=True))


class TableFeed:
    """The supervisor's `TableSink`: sends each report to every attached worker and keeps
    what a new worker must be told (the last good table, and why it is stale if it is)."""

    def __init__(self) -> None:
        self._pipes: dict[int, asyncio.StreamWriter] = {}
        self._table: bytes | None = None
        self._stale: bytes | None = None
        self._restarts = 0

    def attach(self, index: int, pipe: asyncio.StreamWriter) -> None:
        """Worker `index` (re)started: it is told the current state, then every change."""
        self._pipes[index] = pipe
        for line in self.replay():
            self._send(index, pipe, line)

    def detach(self, index: int) -> None:
        self._pipes.pop(index, None)

    def replay(self) -> list[bytes]:
        """What a worker starting now is sent first."""
        lines = [line for line in (self._table, self._stale) if line is not None]
        if self._restarts:
            lines.append(encode("restarts", self._restarts))
        return lines

    def restarted(self) -> None:
        self._restarts += 1
        self._broadcast(encode("restarts", self._restarts))

    # -- TableSink ---------------------------------------------------------------------------

    def install(self, table: RoutingTable) -> bool:
        line = encode_table(table)
        self._stale = None
        changed = line != self._table
        self._table = line
        # Sent even when unchanged, as a single router would install it: the worker's state
        # counts it (`unchanged`) and clears a stale mark.
        self._broadcast(line)
        return changed

    def reject(self, message: str) -> None:
        log.error("routing table rejected, keeping the current one: %s", message)
        self._report("reject", message)

    def lost(self, message: str) -> None:
        log.warning("%s; keeping the current routing table", message)
        self._report("lost", message)

    def _report(self, kind: str, message: str) -> None:
        line = encode(kind, message)
        # Without a table a worker has nothing stale to serve (as `RouterState` decides).
        if self._table is not None:
            self._stale = line
        self._broadcast(line)

    def _broadcast(self, line: bytes) -> None:
        for index, pipe in list(self._pipes.items()):
            self._send(index, pipe, line)

    def _send(self, index: int, pipe: asyncio.StreamWriter, line: bytes) -> None:
        # Lines are small and rare: the pipe's buffer takes them without waiting for drain.
        try:
            pipe.write(line)
        except (OSError, RuntimeError) as err:  # the worker died; its keeper restarts it
            log.debug("worker %d's pipe is closed: %s", index, err)
            self.detach(index)


class PipeSource:
    """A worker's `TableSource`: the lines its supervisor writes to `reader` (stdin by
    default). At the end of the pipe it calls `on_eof` (the worker then stops) and returns."""

    def __init__(
        self,
        on_eof: Callable[[], None],
        on_restarts: Callable[[int], None] | None = None,
        reader: asyncio.StreamReader | None = None,
    ) -> None:
        self.on_eof = on_eof
        self.on_restarts = on_restarts
        self.reader = reader

    def describe(self) -> str:
        return "the supervisor's pipe"

    async def run(self, sink: TableSink) -> None:
        reader = self.reader or await _stdin()
        while line := await reader.readline():
            self.apply(line, sink)
        log.warning("the supervisor's pipe is closed: stopping")
        self.on_eof()

    def apply(self, line: bytes, sink: TableSink) -> None:
        """Hands one message to `sink`; a line that does not parse is logged and skipped
        (the supervisor writes them, so that is a bug, not input)."""
        try:
            message = json.loads(line)
            ((kind, value),) = message.items()
            if kind == "install":
                sink.install(RoutingTable.model_validate(value))
            elif kind == "reject":
                sink.reject(str(value))
            elif kind == "lost":
                sink.lost(str(value))
            elif kind == "restarts":
                if self.on_restarts is not None:
                    self.on_restarts(int(value))
            else:
                raise ValueError(f"unknown message {kind!r}")
        except (ValueError, ValidationError, AttributeError) as err:
            log.error("bad line from the supervisor (%s): %.200r", err, line)


async def _stdin() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


__all__ = ["LINE_LIMIT", "PipeSource", "TableFeed", "encode", "encode_table"]
