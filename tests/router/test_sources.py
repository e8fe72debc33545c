"""The file source: a table file removed is reported as lost (the router keeps its table),
and the same table written back is delivered again, so the router stops calling it stale."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from inferops.router.sources import FileSource
from tests.router.conftest import base_table, wait_for
from tests.router.test_configmap import Sink


async def test_a_removed_file_is_lost_and_the_same_table_written_back_is_delivered(
    tmp_path: Path,
) -> None:
    path = tmp_path / "routes.json"
    text = json.dumps(base_table("http://127.0.0.1:1", None))
    path.write_text(text)
    sink = Sink()
    task = asyncio.create_task(FileSource(path, interval=0.01).run(sink))
    try:
        await wait_for(lambda: len(sink.installed) == 1, "the table")
        path.unlink()
        await wait_for(lambda: len(sink.lost_) == 1, "the loss")
        assert str(path) in sink.lost_[0]
        await asyncio.sleep(0.05)
        assert len(sink.lost_) == 1  # said once, not at every poll
        path.write_text(text)
        await wait_for(lambda: len(sink.installed) == 2, "the same table, delivered again")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
