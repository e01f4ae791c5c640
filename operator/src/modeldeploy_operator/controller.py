"""Watch-driven reconciles from cached state (issue 16): what runs which reconcile, and when.

    kopf's watch of ModelDeployments ──┐
    the caches' watches of owned kinds ┼─> WorkQueue (coalescing, fair, timers) ─> N workers ─> Reconciler
    a pass's next timer / a retry ─────┘

- Every watch event of a ModelDeployment (created, spec changed, a command annotation, our own status
  write coming back) stores the object and queues it: the latest copy is what a pass plans from, and
  our own status write is stored as soon as it returns (`Reconciler.status_written`), so a pass that
  follows at once does not plan from an older copy and conflict.
- An event of an owned object (its `modeldeploy.io/deployment` label names the ModelDeployment; a
  user's HPA, which carries no label of ours, queues every ModelDeployment of its namespace) queues
  its owner: pods becoming ready are acted on within a watch round trip.
- Each pass ends by setting its object's one timer to the plan's next due time (`Plan.next_due`: a
  pause ending, the next analysis interval, a step's duration or deadline, a scale-down), or to a
  backoff after a transient API error (never sooner than the server's Retry-After).
- A slow safety resync (`resyncSeconds`, 10 min) queues every object, repairing anything a watch
  could not tell (it costs no API request: the reads are cached, and an unchanged object is not
  written).
Passes of one object never overlap (the queue hands a key to one worker at a time), so the per-object
lock of the kopf handlers is gone; `reconcileWorkers` passes run at once in all.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from modeldeploy_operator.config import OperatorSettings
from modeldeploy_operator.k8s.api import RejectedError, TransientApiError
from modeldeploy_operator.k8s.cache import INDEX_LABEL, CachedKind, newer
from modeldeploy_operator.metrics import QUEUE_DEPTH, ROLLOUT_STATE
from modeldeploy_operator.reconciler import Outcome, Reconciler
from modeldeploy_operator.scheduler import WorkQueue

log = logging.getLogger("modeldeploy.controller")

Key = tuple[str, str]
"""(namespace, name) of a ModelDeployment."""


def _key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


class Controller:
    def __init__(
        self,
        reconciler: Reconciler,
        settings: OperatorSettings,
        queue: WorkQueue | None = None,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.reconciler = reconciler
        self.settings = settings
        self.queue = queue if queue is not None else WorkQueue()
        self._wall = wall
        self._lock = threading.Lock()
        self._bodies: dict[Key, dict[str, Any]] = {}
        self._retries: dict[Key, int] = {}
        self._threads: list[threading.Thread] = []
        reconciler.status_written = self.remember

    # -- what comes in ---------------------------------------------------------------------------
    def remember(self, body: dict[str, Any]) -> bool:
        """Keep `body` as the object's latest copy unless a later one is kept already; False if not."""
        key = _key(body)
        with self._lock:
            current = self._bodies.get(key)
            if (
                current is not None
                and current["metadata"].get("uid") == body["metadata"].get("uid")
                and not newer(
                    str(body["metadata"].get("resourceVersion") or ""),
                    str(current["metadata"].get("resourceVersion") or ""),
                )
            ):
                return False
            self._bodies[key] = body
            return True

    def on_modeldeployment(self, event_type: str | None, body: dict[str, Any]) -> None:
        """A watch event of a ModelDeployment (kopf's watch; `None`: listed at start-up)."""
        key = _key(body)
        if event_type == "DELETED":
            with self._lock:
                self._bodies.pop(key, None)
                self._retries.pop(key, None)
            self.queue.forget(key)
            # The object is gone: its rollout series go with it.
            ROLLOUT_STATE.forget(*key)
            return
        self.remember(body)
        if body["metadata"].get("deletionTimestamp"):
            self.queue.schedule(key, None)  # being deleted: the garbage collector takes what it owns
            return
        self.queue.add(key)

    def on_owned(self, kind: CachedKind, event_type: str, obj: dict[str, Any]) -> None:
        """A cached object changed: queue the ModelDeployment it belongs to."""
        namespace = (obj.get("metadata") or {}).get("namespace") or ""
        owner = ((obj.get("metadata") or {}).get("labels") or {}).get(INDEX_LABEL)
        with self._lock:
            if isinstance(owner, str):
                keys = [(namespace, owner)] if (namespace, owner) in self._bodies else []
            elif kind.kind == "HorizontalPodAutoscaler":  # a user's HPA may target one of ours
                keys = [k for k in self._bodies if k[0] == namespace]
            else:
                keys = []
        for key in keys:
            self.queue.add(key)

    def resync(self) -> None:
        with self._lock:
            keys = list(self._bodies)
        for key in keys:
            self.queue.add(key)

    # -- one pass --------------------------------------------------------------------------------
    def _backoff(self, retry: int) -> float:
        return float(
            min(self.settings.retry_backoff_seconds * 2**retry, self.settings.retry_backoff_max_seconds)
        )

    def _at(self, due: dt.datetime | None) -> float | None:
        """A wall-clock due time as the queue's (monotonic) clock reads it."""
        if due is None:
            return None
        return self.queue.now() + (due.timestamp() - self._wall())

    def process(self, key: Key) -> Outcome | None:
        with self._lock:
            body = self._bodies.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        try:
            outcome = self.reconciler.reconcile(body)
        except TransientApiError as error:
            with self._lock:
                retry = self._retries.get(key, 0)
                self._retries[key] = retry + 1
            if retry < self.settings.retry_limit:
                # Throttled (429) or unavailable with a Retry-After: never sooner than the server asked.
                delay = max(self._backoff(retry), error.retry_after or 0.0)
                self.queue.schedule(key, self.queue.now() + delay)
            else:  # given up: the next event or the resync tries again
                self.queue.schedule(key, None)
            log.warning("reconcile of %s/%s deferred: %s", *key, error)
            return None
        except RejectedError as error:
            # The API server refused what we built (403, 422): status and an Event say so. Retrying at
            # once cannot help, but a permission granted later should heal it without waiting for the
            # safety resync: try again after the longest backoff (one request a minute at most).
            with self._lock:
                self._retries.pop(key, None)
            self.queue.schedule(key, self.queue.now() + self.settings.retry_backoff_max_seconds)
            log.warning("reconcile of %s/%s refused: %s", *key, error)
            return None
        except Exception:
            with self._lock:
                retry = self._retries.get(key, 0)
                self._retries[key] = retry + 1
            self.queue.schedule(key, self.queue.now() + self._backoff(retry))
            log.exception("reconcile of %s/%s failed", *key)
            return None
        with self._lock:
            self._retries.pop(key, None)
        self.queue.schedule(key, self._at(outcome.next_due))
        return outcome

    # -- threads ---------------------------------------------------------------------------------
    def work(self) -> None:
        while (key := self.queue.get()) is not None:
            try:
                self.process(key)  # type: ignore[arg-type]
            finally:
                self.queue.done(key)
                QUEUE_DEPTH.set(len(self.queue))

    def _resync_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.settings.resync_seconds):
            self.resync()

    def start(self, stop: threading.Event) -> None:
        for n in range(self.settings.reconcile_workers):
            thread = threading.Thread(target=self.work, name=f"reconcile-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        resync = threading.Thread(target=self._resync_loop, args=(stop,), name="resync", daemon=True)
        resync.start()
        self._threads.append(resync)

    def stop(self, timeout: float = 10.0) -> None:
        self.queue.shut_down()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.name.startswith("reconcile-"):
                thread.join(max(0.0, deadline - time.monotonic()))
