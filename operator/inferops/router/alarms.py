"""Coarse timers for the data path: every request waits for a first byte, every stream watches
for silence, and a libuv timer for each (created, then cancelled since the answer came in
time, thousands of times a second) costs more than the rest of the routing.

`Alarms` is a hashed timing wheel: a deadline is rounded up to the next tick (`TICK_SECONDS`),
its owner added to that tick's set, and one loop timer, running only while alarms are set,
wakes the owners of the ticks that have passed. Setting and clearing an alarm is a dict and a
set operation. An owner has at most one alarm; it is woken at most one tick late.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

TICK_SECONDS = 0.01


class Owner(Protocol):
    alarm_tick: int
    """The tick of the owner's alarm; 0 when it has none (kept by `Alarms`)."""

    def alarm(self) -> None:
        """The alarm's time has come (it is cleared by then)."""


class Alarms:
    __slots__ = ("_done", "_handle", "_slots")

    def __init__(self) -> None:
        self._slots: dict[int, set[Owner]] = {}
        self._done = 0
        """The last tick whose alarms went off."""
        self._handle: asyncio.TimerHandle | None = None

    def set(self, owner: Owner, when: float) -> None:
        """Wakes `owner` at `when` (monotonic seconds), replacing its alarm if it has one."""
        if owner.alarm_tick:
            self.clear(owner)
        if self._handle is None:  # the wheel stands still: it starts at the present tick
            self._done = max(self._done, int(time.monotonic() / TICK_SECONDS))
            self._handle = asyncio.get_running_loop().call_later(TICK_SECONDS, self._tick)
        tick = int(when / TICK_SECONDS) + 1
        if tick <= self._done:  # due already: the next tick
            tick = self._done + 1
        slot = self._slots.get(tick)
        if slot is None:
            slot = self._slots[tick] = set()
        slot.add(owner)
        owner.alarm_tick = tick

    def clear(self, owner: Owner) -> None:
        tick = owner.alarm_tick
        if not tick:
            return
        owner.alarm_tick = 0
        slot = self._slots.get(tick)
        if slot is not None:
            slot.discard(owner)
            if not slot:
                del self._slots[tick]

    def _tick(self) -> None:
        self._handle = None
        now = int(time.monotonic() / TICK_SECONDS)
        slots = self._slots
        if now - self._done > len(slots):  # long stalled: only the ticks that have alarms
            due = sorted(tick for tick in slots if tick <= now)
        else:
            due = [tick for tick in range(self._done + 1, now + 1) if tick in slots]
        self._done = now
        for tick in due:
            for owner in slots.pop(tick):
                owner.alarm_tick = 0
                owner.alarm()
        if slots and self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(TICK_SECONDS, self._tick)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._slots.clear()


__all__ = ["TICK_SECONDS", "Alarms", "Owner"]
