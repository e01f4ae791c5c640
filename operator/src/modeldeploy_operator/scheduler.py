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

Two lanes of ready keys, each first come first served: `urgent` ones (what the caller says a person or
the clock is waiting for: the controller's choice, controller.py) are taken before the others, but
never more than URGENT_IN_A_ROW of them in a row while an ordinary key waits, so that no stream of
urgent keys starves the rest. A key is in one lane at most: an urgent add of a key waiting in the
ordinary lane moves it to the back of the urgent one (an ordinary add of an urgent key leaves it
there), and an urgent add during its pass requeues it in the urgent lane when the pass ends.

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


URGENT_IN_A_ROW = 8
"""Urgent keys taken in a row, at most, while an ordinary key waits: the ordinary lane still gets one
take in nine however many urgent keys come."""


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
        """The ordinary lane."""
        self._urgent: OrderedDict[Hashable, None] = OrderedDict()
        """The urgent lane: taken first (URGENT_IN_A_ROW)."""
        self._urgent_run = 0
        """Urgent keys taken in a row while an ordinary one waited."""
        self._processing: set[Hashable] = set()
        self._dirty: dict[Hashable, bool] = {}
        """Added while being processed (-> whether urgently): queued again when its pass ends."""
        self._timers: dict[Hashable, float] = {}
        self._urgent_timers: set[Hashable] = set()
        """Keys whose timer goes to the urgent lane when due."""
        self._heap: list[tuple[float, int, Hashable]] = []
        self._seq = itertools.count()
        self._last_done: dict[Hashable, float] = {}
        self._shut = False

    # -- producers -------------------------------------------------------------------------------
    def add(self, key: Hashable, *, urgent: bool = False) -> None:
        """Ready now (coalesced with a pending add of the same key); `urgent`: in the urgent lane."""
        with self._cond:
            if self._shut:
                return
            self._asked.setdefault(key, self._clock())
            self._make_ready(key, urgent)

    def _make_ready(self, key: Hashable, urgent: bool) -> None:
        """Into its lane, or marked dirty while its pass runs; a key is in one lane at most (urgent wins)."""
        if key in self._processing:
            self._dirty[key] = self._dirty.get(key, False) or urgent
        elif key in self._urgent:
            pass
        elif urgent:
            self._ready.pop(key, None)
            self._urgent[key] = None
            self._cond.notify()
        elif key not in self._ready:
            self._ready[key] = None
            self._cond.notify()

    def schedule(self, key: Hashable, at: float | None, *, urgent: bool = False) -> None:
        """The key's one timer is now `at` (clock seconds; None: no timer); `urgent`: in the urgent lane
        once due."""
        with self._cond:
            if at is None:
                self._timers.pop(key, None)
                self._urgent_timers.discard(key)
                return
            if urgent:
                self._urgent_timers.add(key)
            else:
                self._urgent_timers.discard(key)
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
            self._urgent_timers.discard(key)
            self._ready.pop(key, None)
            self._urgent.pop(key, None)
            self._dirty.pop(key, None)
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
            urgent = key in self._urgent_timers
            self._urgent_timers.discard(key)
            self._asked.setdefault(key, at)
            self._make_ready(key, urgent)
        return None

    def _take(self) -> Hashable | None:
        """The next ready key: the urgent lane first, but not more than URGENT_IN_A_ROW in a row while
        an ordinary key waits."""
        if self._urgent and (not self._ready or self._urgent_run < URGENT_IN_A_ROW):
            self._urgent_run = self._urgent_run + 1 if self._ready else 0
            return self._urgent.popitem(last=False)[0]
        if self._ready:
            self._urgent_run = 0
            return self._ready.popitem(last=False)[0]
        return None

    def get(self, timeout: float | None = None) -> Hashable | None:
        """The next ready key (now being processed: call `done` after), waiting for one; None when shut
        down or after `timeout` seconds."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not self._shut:
                now = self._clock()
                wait = self._fire_due(now)
                if (key := self._take()) is not None:
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
                self._make_ready(key, self._dirty.pop(key))

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
            return len(self._ready) + len(self._urgent)
