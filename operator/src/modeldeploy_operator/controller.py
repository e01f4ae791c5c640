"""Watch-driven reconciles from cached state (issue 16): what runs which reconcile, and when.

    kopf's watch of ModelDeployments ──┐
    the caches' watches of owned kinds ┼─> WorkQueue (coalescing, fair, timers) ─> N workers ─> Reconciler
    a pass's next timer / a retry ─────┘

- Every watch event of a ModelDeployment (created, spec changed, a command annotation) stores the object
  and queues it: the latest copy is what a pass plans from, and our own status write is stored as soon
  as it returns (`Reconciler.status_written`), so a pass that follows at once does not plan from an
  older copy and conflict.
- The echo of our own write is stored but queues nothing: a ModelDeployment event whose
  resourceVersion our status write returned, and an owned object's event whose resourceVersion our
  apply returned (k8s/cache.py `OwnWrites`; the caches do not tell those). A pass that wrote objects
  queues one follow-up itself instead: it planned from what existed before its writes (a Deployment
  it just created is what turns Pending into Progressing), the follow-up plans from what it wrote. A
  pass that wrote only status needs none (the planner, given the status it wrote and the same
  observation, plans the same: tests/unit/operator/test_operator_controller.py). Any event with
  another resourceVersion is someone else's change and always queues: our status write is
  conditional on the resourceVersion it planned from, so nothing can have slipped in before it.
  Passes and requests before and after: docs/benchmarks.md, "Own writes and a namespace being deleted".
- An event of an owned object (its `modeldeploy.io/deployment` label names the ModelDeployment; a
  user's HPA, which carries no label of ours, queues every ModelDeployment of its namespace) queues
  its owner: pods becoming ready are acted on within a watch round trip.
- A namespace being deleted refuses every create (403, NamespaceTerminating): from the first such
  refusal its ModelDeployments are left alone until the deletion removes them (no retry, no event
  queues them, one log line for the namespace), instead of re-creating each object the deletion
  removes and reacting to each of their pods going.
- Each pass ends by setting its object's one timer to the plan's next due time (`Plan.next_due`: a
  pause ending, the next analysis interval, a step's duration or deadline, a scale-down), or to a
  backoff after a transient API error (never sooner than the server's Retry-After; at most a few
  seconds while no API server answers: k8s/api.py UNREACHABLE_RETRY_MAX_SECONDS).
- Only the ModelDeployments of this operator's instance are kept (`config.managed_by`: the
  `modeldeploy.io/controller-instance` label equals `instanceId`, or both are absent); every other
  one is forgotten as if deleted, so two operators on one cluster never act on one object, and an
  object relabelled from one to the other changes hands at its next event.
- A slow safety resync (`resyncSeconds`, 10 min) queues every object once a period, repairing
  anything a watch could not tell (it costs no API request: the reads are cached, and an unchanged
  object is not written). The objects are queued one at a time, spread evenly over the period, not
  all at once: `_resync_loop`.
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

from modeldeploy_operator.config import OperatorSettings, managed_by
from modeldeploy_operator.k8s.api import (
    NamespaceTerminatingError,
    RejectedError,
    TransientApiError,
    backoff,
    retry_cap,
)
from modeldeploy_operator.k8s.cache import INDEX_LABEL, OWN_WRITE_ECHOES, CachedKind, OwnWrites, newer
from modeldeploy_operator.k8s.projection import project_modeldeployment
from modeldeploy_operator.metrics import QUEUE_DEPTH, QUEUE_WAIT_SECONDS, ROLLOUT_STATE
from modeldeploy_operator.reconciler import Outcome, Reconciler
from modeldeploy_operator.scheduler import WorkQueue

log = logging.getLogger("modeldeploy.controller")

Key = tuple[str, str]
"""(namespace, name) of a ModelDeployment."""


def _key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


def _rv(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _uid(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


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
        self.queue = queue if queue is not None else WorkQueue(on_wait=QUEUE_WAIT_SECONDS.observe)
        self._wall = wall
        self._lock = threading.Lock()
        self._bodies: dict[Key, dict[str, Any]] = {}
        self._retries: dict[Key, int] = {}
        self._own = OwnWrites()
        """resourceVersions our status writes returned, until their watch event comes back."""
        self._terminating: dict[Key, str] = {}
        """ModelDeployments (key -> uid) whose namespace is being deleted: left to the deletion."""
        self._threads: list[threading.Thread] = []
        self.echoes = 0
        """Watch events of ModelDeployments recognised as our own status write (not queued)."""
        reconciler.status_written = self.written

    # -- what comes in ---------------------------------------------------------------------------
    def written(self, body: dict[str, Any]) -> None:
        """The object as our status write returned it: the latest copy, and its watch event an echo."""
        with self._lock:
            if self._keep(body):
                self._own.record(_key(body), _rv(body))

    def remember(self, body: dict[str, Any]) -> bool:
        """Keep `body` as the object's latest copy unless a later one is kept already; False if not."""
        with self._lock:
            return self._keep(body)

    def _keep(self, body: dict[str, Any]) -> bool:
        key = _key(body)
        current = self._bodies.get(key)
        if current is not None and _uid(current) == _uid(body) and not newer(_rv(body), _rv(current)):
            return False
        self._bodies[key] = project_modeldeployment(body)  # (what a pass reads: k8s/projection.py)
        return True

    def on_modeldeployment(self, event_type: str | None, body: dict[str, Any]) -> None:
        """A watch event of a ModelDeployment (kopf's watch; `None`: listed at start-up)."""
        key = _key(body)
        if event_type == "DELETED" or not managed_by(self.settings, body):
            # Gone, or another operator instance's (relabelled to it, or never ours): forgotten alike.
            with self._lock:
                self._bodies.pop(key, None)
                self._retries.pop(key, None)
                self._terminating.pop(key, None)
            self._own.forget(key)
            self.queue.forget(key)
            # The object is gone: its rollout series go with it, and what analysis kept for it.
            ROLLOUT_STATE.forget(*key)
            self.reconciler.forget(*key, _uid(body))
            return
        with self._lock:
            self._keep(body)
            echo = self._own.is_echo(key, _rv(body))
            self.echoes += echo
            left_alone = self._terminating.get(key) == _uid(body)
        if echo:  # our own status write coming back: the pass that wrote it planned what follows
            OWN_WRITE_ECHOES.labels("ModelDeployment").inc()
            return
        if body["metadata"].get("deletionTimestamp"):
            self.queue.schedule(key, None)  # being deleted: the garbage collector takes what it owns
            return
        if not left_alone:
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
            # The namespace deletion removing what they own is not a change to act on.
            keys = [k for k in keys if k not in self._terminating]
        for key in keys:
            self.queue.add(key)

    def resync(self) -> None:
        """Queue every known ModelDeployment now (all at once: tests, and what `_resync_loop` spreads)."""
        for key in self._resync_keys():
            self.queue.add(key)

    def _resync_keys(self) -> list[Key]:
        with self._lock:
            return [k for k in self._bodies if self._resyncable(k)]

    def _resyncable(self, key: Key) -> bool:
        """Known and not in a namespace being deleted (the caller holds `_lock`)."""
        return key in self._bodies and key not in self._terminating

    # -- one pass --------------------------------------------------------------------------------
    def _backoff(self, retry: int, cap: float | None = None) -> float:
        """retry_backoff_seconds, doubled on each retry up to `cap` (retry_backoff_max_seconds)."""
        limit = self.settings.retry_backoff_max_seconds if cap is None else cap
        return backoff(retry + 1, limit, first=self.settings.retry_backoff_seconds)

    def _at(self, due: dt.datetime | None) -> float | None:
        """A wall-clock due time as the queue's (monotonic) clock reads it."""
        if due is None:
            return None
        return self.queue.now() + (due.timestamp() - self._wall())

    def process(self, key: Key) -> Outcome | None:
        with self._lock:
            body = self._bodies.get(key)
            left_alone = body is not None and self._terminating.get(key) == _uid(body)
        if body is None or body["metadata"].get("deletionTimestamp") or left_alone:
            return None
        try:
            outcome = self.reconciler.reconcile(body)
        except NamespaceTerminatingError as error:
            # Not retried, not queued by the deletion's events, said once: the namespace never becomes
            # active again, and its deletion removes its ModelDeployments too. Every one known in it
            # now is left alone (their pods going would queue each of them for nothing); one that
            # appears later has another uid: a namespace of the same name made again.
            with self._lock:
                self._retries.pop(key, None)
                first = key not in self._terminating  # (other workers' passes may have been refused too)
                doomed = {k: _uid(b) for k, b in self._bodies.items() if k[0] == key[0]}
                self._terminating.update(doomed)
            for other in doomed:
                self.queue.schedule(other, None)
            if first:
                log.info(
                    "namespace %s is being deleted: its %d ModelDeployments are left to the deletion (%s)",
                    key[0],
                    len(doomed),
                    error,
                )
            return None
        except TransientApiError as error:
            with self._lock:
                retry = self._retries.get(key, 0)
                self._retries[key] = retry + 1
            if retry < self.settings.retry_limit:
                # Throttled (429) or unavailable with a Retry-After: never sooner than the server asked.
                # No API server answering: every few seconds, so that it is acted on soon after it is back.
                cap = retry_cap(error, self.settings.retry_backoff_max_seconds)
                delay = max(self._backoff(retry, cap), error.retry_after or 0.0)
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
        if outcome.objects_written:
            # Its plan was made from what existed before these writes: one more pass, from the cache
            # that now holds them (the writes' own watch events queue nothing).
            self.queue.add(key)
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
        """The safety resync: each period, every ModelDeployment known at its start, one at a time,
        `resync_seconds / n` apart; one that went meanwhile is skipped.

        Why spread: queued all at once, the resync put 1,000 passes ahead of every change. At N = 1,000
        on the 2-core bench machine they took about 20 s to drain, and the model changes that came
        meanwhile waited behind them: 1.0-3.7 s from the patch to the new Deployment, against
        0.03-0.07 s before and after (bench/operator/scale.py --sample-gap 2, docs/benchmarks.md,
        2026-12-06). Spread, a change waits behind at most the few resync passes queued at the time."""
        while not stop.is_set():
            keys = self._resync_keys()
            if not keys:
                if stop.wait(self.settings.resync_seconds):
                    return
                continue
            gap = self.settings.resync_seconds / len(keys)
            for key in keys:
                if stop.wait(gap):
                    return
                with self._lock:
                    known = self._resyncable(key)
                if known:
                    self.queue.add(key)

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
