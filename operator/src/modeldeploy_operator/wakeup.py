"""The one wake-up each object's daemon sleeps on (issue 12, "timers fire on time").

Every reconcile of an object, whichever trigger ran it (the daemon itself, a spec change, an owned
Deployment's event, a manual command), ends by arming the object's `WakeUp` with the moment its plan
says something is next due (`Plan.next_due`: a pause ending, the next analysis interval, a step's
duration or deadline, a scale-down). The daemon sleeps until that moment (or the resync period), and
wakes early whenever a later pass re-arms it, so it always sleeps on the timer of the *latest* status,
not on the one of its own last pass.

The latest pass replaces the due time rather than taking the minimum: passes of one object run one at
a time (a per-object lock) and each computes the earliest timer of the whole status it wrote, so the
latest pass knows best (a timer that fired, or a rollout that ended, is gone from it).

Thread-safe: kopf runs the event-driven handlers in worker threads, the daemon on the event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

MIN_SLEEP_SECONDS = 0.5
"""Never reconcile in a tighter loop than this, even for a timer already due."""


def sleep_seconds(due: float | None, now: float, resync_at: float, floor: float = MIN_SLEEP_SECONDS) -> float:
    """Seconds to sleep at `now` (epoch seconds) for a timer `due` (None: no timer), never past the
    resync moment, never less than `floor`."""
    until = resync_at if due is None else min(due, resync_at)
    return max(floor, until - now)


class WakeUp:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._due: float | None = None
        self._armed = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    @property
    def due(self) -> float | None:
        with self._lock:
            return self._due

    @property
    def armed(self) -> int:
        """How many times a pass armed it (for tests and logs)."""
        with self._lock:
            return self._armed

    def arm(self, due: float | None) -> None:
        """A pass planned: the next timer is at `due` (epoch seconds; None: nothing timed). Any thread."""
        with self._lock:
            self._due = due
            self._armed += 1
            loop, event = self._loop, self._event
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    async def sleep(self, resync_seconds: float, stop: asyncio.Future[None] | None = None) -> bool:
        """Sleep until the armed due time or `resync_seconds` from now, whichever is first, re-reading
        the due time each time a pass re-arms it. False if `stop` completed first."""
        with self._lock:
            if self._event is None or self._loop is not asyncio.get_running_loop():
                self._loop, self._event = asyncio.get_running_loop(), asyncio.Event()
            event = self._event
        resync_at = self._clock() + resync_seconds
        while True:
            event.clear()
            delay = sleep_seconds(self.due, self._clock(), resync_at)
            waiter: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
            pending: set[asyncio.Future[Any]] = {waiter} if stop is None else {waiter, stop}
            done, _ = await asyncio.wait(pending, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            if waiter not in done:
                waiter.cancel()
            if stop is not None and stop in done:
                return False
            if waiter not in done:
                return True  # the timer (or the resync) is due
            # re-armed by a pass: sleep again on its due time


class WakeUps:
    """One `WakeUp` per object (by uid)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._by_uid: dict[str, WakeUp] = {}

    def of(self, uid: str) -> WakeUp:
        with self._lock:
            if uid not in self._by_uid:
                self._by_uid[uid] = WakeUp(self._clock)
            return self._by_uid[uid]

    def wake(self, uid: str) -> None:
        """Wake the object's daemon at once, if one sleeps (no entry is made for an unknown uid)."""
        with self._lock:
            wakeup = self._by_uid.get(uid)
        if wakeup is not None:
            wakeup.arm(self._clock())

    def forget(self, uid: str, wakeup: WakeUp) -> None:
        """Drop `wakeup` (its daemon ended), unless a newer daemon of the object registered another."""
        with self._lock:
            if self._by_uid.get(uid) is wakeup:
                del self._by_uid[uid]
