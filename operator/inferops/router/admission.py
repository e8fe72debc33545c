"""Overload is shed, not queued: a gate per engine that admits at most `limit` requests at
once, lets at most `max_waiting` more wait for a slot (each for at most `wait_seconds`), and
refuses the rest at once.

Why in the router: once Ollama has loaded its model it queues requests without limit, so a
CPU Ollama that takes every consumer's traffic after vLLM is lost would keep requests
waiting until their clients give up. A fast refusal (503 with `Retry-After`) lets a client
back off or go elsewhere, and keeps the requests the engine does serve within their time.

The admitted path costs one comparison and one increment, and a release one decrement and
one test: no lock (one event loop), no timer (a waiter's limit is the request's coarse alarm,
`alarms.Alarms`). A gate belongs to the router's state, not to a compiled table, so a new
table changes its limits without forgetting the requests under way; the table's `Target`s
point at it.
"""

from __future__ import annotations

import contextlib
import sys
from collections import deque
from typing import Protocol

from inferops.api.routing import Admission

ADMITTED, QUEUED, FULL = range(3)
"""What `Gate.enter` decided."""

UNLIMITED = sys.maxsize
"""The limit of an engine whose table entry sets none."""

QUEUE_FULL = "queue_full"
WAIT_TIMEOUT = "wait_timeout"
SHED_REASONS = (QUEUE_FULL, WAIT_TIMEOUT)
"""The reasons a request is shed (the `reason` label of `inferops_router_shed_total`)."""


class Waiter(Protocol):
    def admitted(self) -> None:
        """A slot was taken for the waiter (it must `release` it once done)."""


class Gate:
    """One engine's admission (see the module's docstring)."""

    __slots__ = ("_admitting", "active", "limit", "max_waiting", "name", "queue", "wait_seconds")

    def __init__(self, name: str) -> None:
        self.name = name
        self.limit = UNLIMITED
        self.max_waiting = 0
        self.wait_seconds = 0.0
        self.active = 0
        """Slots taken: admitted requests not yet released."""
        self.queue: deque[Waiter] = deque()
        self._admitting = False

    def configure(self, admission: Admission | None) -> None:
        """Takes the limits of a newly installed table; requests under way keep their slots
        (a lower limit admits no one until enough of them are done), and a higher one lets
        waiters in at once."""
        if admission is None:
            self.limit, self.max_waiting, self.wait_seconds = UNLIMITED, 0, 0.0
        else:
            self.limit = admission.max_concurrent
            self.max_waiting = admission.max_waiting
            self.wait_seconds = admission.max_wait_seconds
        self._admit()

    def enter(self, waiter: Waiter) -> int:
        """ADMITTED (a slot is taken), QUEUED (`waiter.admitted()` is called when one is
        free; the waiter must `leave` if it gives up first) or FULL (refuse it)."""
        if self.active < self.limit:
            self.active += 1
            return ADMITTED
        return self.wait(waiter)

    def wait(self, waiter: Waiter) -> int:
        """No slot is free: QUEUED or FULL, as `enter`. (The data path checks for a free slot
        itself, inline, and calls this only when there is none.)"""
        if len(self.queue) < self.max_waiting:
            self.queue.append(waiter)
            return QUEUED
        return FULL

    def leave(self, waiter: Waiter) -> None:
        """A waiter gives up (its wait ran out, or its client left). Linear in the queue's
        length, which is bounded, and only on the way to a refusal."""
        with contextlib.suppress(ValueError):  # admitted meanwhile: not queued any more
            self.queue.remove(waiter)

    def release(self) -> None:
        """An admitted request is done with the engine: its slot goes to the first waiter."""
        self.active -= 1
        if self.queue:
            self._admit()

    def _admit(self) -> None:
        # A waiter admitted here may fail at once and release its slot, calling back into
        # this gate: the loop below picks that slot up, instead of recursing once per waiter.
        if self._admitting:
            return
        self._admitting = True
        try:
            queue = self.queue
            while queue and self.active < self.limit:
                waiter = queue.popleft()
                self.active += 1
                waiter.admitted()
        finally:
            self._admitting = False


__all__ = [
    "ADMITTED",
    "FULL",
    "QUEUED",
    "QUEUE_FULL",
    "SHED_REASONS",
    "UNLIMITED",
    "WAIT_TIMEOUT",
    "Gate",
    "Waiter",
]
