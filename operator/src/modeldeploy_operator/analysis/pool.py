"""Measurements off the reconcile path: a bounded pool of workers, polled by the reconciler.

A reconcile runs under its object's lock on one of kopf's few worker threads. Were it to wait on a
slow /metrics or Prometheus, every trigger of that object (a manual abort included) would wait with
it, and a few such objects would take every worker and stall all the others. So a reconcile never
waits: `poll(key, measure)` starts the measurement on this pool and answers None (pending); a later
reconcile of the same object (the reconciler asks to be called again soon) picks the result up.

Bounds:
- at most `workers` measurements run at once; at most `max_jobs` are started and not yet collected
  (beyond that `poll` answers None and starts nothing: the object simply asks again later);
- a measurement not finished `deadline_seconds` after it started is given up: `poll` answers the
  `on_timeout` readings (Inconclusive), and the worker's own fetch limits end it soon after;
- a result nobody collects (the object was deleted) is dropped after `forget_after_seconds`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Job(Generic[T]):
    future: Future[T]
    started: float


class MeasurementPool(Generic[T]):
    def __init__(
        self,
        workers: int,
        deadline_seconds: float,
        *,
        max_jobs: int | None = None,
        forget_after_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if workers < 1 or deadline_seconds <= 0:
            raise ValueError("a measurement pool needs at least one worker and a positive deadline")
        self.deadline_seconds = deadline_seconds
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="analysis")
        self._max_jobs = max_jobs if max_jobs is not None else 4 * workers
        self._forget_after = (
            forget_after_seconds if forget_after_seconds is not None else 10 * deadline_seconds
        )
        self._clock = clock
        self._jobs: dict[Hashable, _Job[T]] = {}
        self._abandoned: set[Future[T]] = set()
        """Given up (deadline passed) but still running: they count against max_jobs until done."""
        self._lock = threading.Lock()

    def poll(self, key: Hashable, measure: Callable[[], T], on_timeout: Callable[[float], T]) -> T | None:
        """The finished measurement of `key` (once), `on_timeout(deadline)` if it ran out of time, or
        None while it runs (it is started now if it was not running, capacity permitting)."""
        now = self._clock()
        with self._lock:
            self._tidy(now)
            job = self._jobs.get(key)
            if job is None:
                if len(self._jobs) + len(self._abandoned) >= self._max_jobs:
                    return None  # busy: start nothing, the caller asks again
                self._jobs[key] = _Job(self._executor.submit(measure), now)
                return None
            if job.future.done():
                del self._jobs[key]
                return job.future.result()  # measure() never raises: sources turn failures into readings
            if now - job.started >= self.deadline_seconds:
                del self._jobs[key]
                self._abandoned.add(job.future)
                return on_timeout(self.deadline_seconds)
            return None

    def wait(self, key: Hashable, timeout: float) -> bool:
        """Block until the measurement of `key` has finished (True) or `timeout` passed (False); for
        tools and tests: the reconciler never waits."""
        with self._lock:
            job = self._jobs.get(key)
        if job is None:
            return False
        wait([job.future], timeout=timeout)
        return job.future.done()

    def running(self) -> int:
        """Measurements started and not collected, given-up ones still running included."""
        with self._lock:
            self._tidy(self._clock())
            return len(self._jobs) + len(self._abandoned)

    def _tidy(self, now: float) -> None:
        self._abandoned = {f for f in self._abandoned if not f.done()}
        for key in [k for k, j in self._jobs.items() if now - j.started >= self._forget_after]:
            job = self._jobs.pop(key)
            if not job.future.done():
                self._abandoned.add(job.future)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
