"""The reconcile queue: which ModelDeployment is reconciled next, and when (issue 16).

Replaces a kopf daemon per object that woke every 30 s. Keys (namespace, name) come in two ways:
- `add(key)`: something changed (a watch event of the object or of one it owns, a command): ready now;
- `schedule(key, at)`: the object's plan has a timer (a pause ending, the next analysis interval, a
  scale-down, a retry after a transient error): ready at `at`. Each pass replaces the timer of its
  key with the one of the status it wrote (the latest pass knows best: a timer that fired, or a rollout
  that ended, is gone from it); None cancels it.

Fairness and coalescing, as client-go's workqueue does it:
- a key is queued at most once: any number of events for an object waiting its turn make one pass;
- a key is never processed by two workers at once; one added while it is being processed is queued
  again when that pass ends, at the back;
- ready keys are served first come, first served, so a busy object (a rollout whose pods change every
  second) gets one pass per round and cannot starve the others; `workers` bounds the concurrency.

How long a key waited (client-go's workqueue_queue_duration_seconds): from the moment it was asked
for (the add, or its timer's due time; an add while it was being processed counts from that add) to
the moment a worker takes it, handed to `on_wait` (the operator's
modeldeploy_operator_queue_wait_seconds): the part of a reaction spent behind other objects' passes.

Plain threads and a clock that tests can fake (no kopf, no Kubernetes client).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

MIN_GAP_SECONDS = 0.5
"""A key's timer is never sooner than this after its last pass ended: no tight loop on a timer
that is already due."""


class WorkQueue:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        min_gap: float = MIN_GAP_SECONDS,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        self._clock = clock
        self._on_wait = on_wait
        self._asked: dict[Hashable, float] = {}
        """When each ready (or dirty) key was first asked for: its wait is measured from there."""
        self._min_gap = min_gap
        self._cond = threading.Condition()
        self._ready: OrderedDict[Hashable, None] = OrderedDict()
        self._processing: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        """Added while being processed: queued again when its pass ends."""
        self._timers: dict[Hashable, float] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._seq = itertools.count()
        self._last_done: dict[Hashable, float] = {}
        self._shut = False

    # -- producers -------------------------------------------------------------------------------
    def add(self, key: Hashable) -> None:
        """Ready now (coalesced with a pending add of the same key)."""
        with self._cond:
            if self._shut:
                return
            self._asked.setdefault(key, self._clock())
            if key in self._processing:
                self._dirty.add(key)
                return
            if key not in self._ready:
                self._ready[key] = None
                self._cond.notify()

    def schedule(self, key: Hashable, at: float | None) -> None:
        """The key's one timer is now `at` (clock seconds; None: no timer)."""
        with self._cond:
            if at is None:
                self._timers.pop(key, None)
                return
            if key in self._processing:  # set by the pass that is ending
                at = max(at, self._clock() + self._min_gap)
            elif (last := self._last_done.get(key)) is not None:
                at = max(at, last + self._min_gap)
            self._timers[key] = at
            heapq.heappush(self._heap, (at, next(self._seq), key))
            self._cond.notify()

    def forget(self, key: Hashable) -> None:
        """The object is gone: no timer, no pending pass."""
        with self._cond:
            self._timers.pop(key, None)
            self._ready.pop(key, None)
            self._dirty.discard(key)
            self._last_done.pop(key, None)
            self._asked.pop(key, None)

    def shut_down(self) -> None:
        with self._cond:
            self._shut = True
            self._cond.notify_all()

    # -- consumers -------------------------------------------------------------------------------
    def _fire_due(self, now: float) -> float | None:
        """Move due timers to the ready queue; the delay until the next one (None: no timer)."""
        while self._heap:
            at, _, key = self._heap[0]
            if self._timers.get(key) != at:
                heapq.heappop(self._heap)  # replaced or cancelled
                continue
            if at > now:
                return at - now
            heapq.heappop(self._heap)
            del self._timers[key]
            self._asked.setdefault(key, at)
            if key in self._processing:
                self._dirty.add(key)
            elif key not in self._ready:
                self._ready[key] = None
        return None

    def get(self, timeout: float | None = None) -> Hashable | None:
        """The next ready key (now being processed: call `done` after), waiting for one; None when shut
        down or after `timeout` seconds."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not self._shut:
                now = self._clock()
                wait = self._fire_due(now)
                if self._ready:
                    key, _ = self._ready.popitem(last=False)
                    self._processing.add(key)
                    asked = self._asked.pop(key, now)
                    if self._on_wait is not None:
                        self._on_wait(max(0.0, now - asked))
                    return key
                if deadline is not None:
                    left = deadline - now
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)
            return None

    def done(self, key: Hashable) -> None:
        with self._cond:
            self._processing.discard(key)
            self._last_done[key] = self._clock()
            if key in self._dirty:
                self._dirty.discard(key)
                if key not in self._ready:
                    self._ready[key] = None
                    self._cond.notify()

    def now(self) -> float:
        """The queue's clock (timers are in its seconds)."""
        return self._clock()

    # -- for tests and metrics -------------------------------------------------------------------
    def timer_of(self, key: Hashable) -> float | None:
        with self._cond:
            return self._timers.get(key)

    def __len__(self) -> int:
        """Keys waiting to be processed now."""
        with self._cond:
            return len(self._ready)
