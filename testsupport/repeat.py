"""Something a test does over and over in a background thread for as long as a ``with`` block
runs (a consumer's requests, samples of what the cluster says), then stops and joins."""

from __future__ import annotations

import threading
from typing import Self


class Repeating:
    """``with`` runs ``step()`` in a daemon thread, ``pause`` seconds apart, until the block
    ends; the block's end stops it and waits (up to 30 s) for the step under way."""

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def step(self) -> None:
        raise NotImplementedError

    @property
    def alive(self) -> bool:
        """Whether the thread still runs (a step that raised ends it)."""
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.step()
            self._stop.wait(self.pause)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
