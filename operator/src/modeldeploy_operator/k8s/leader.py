"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does it, with a fence.

Only the holder runs reconciles; the others wait. Claims and renewals are optimistic writes (create, or
replace at a resourceVersion), so two replicas can never both win the same Lease record.

That alone does not stop two writers: a leader that is paused (SIGSTOP, a long GC or VM stall) past the
lease wakes up believing it leads, and its queued reconciles write while the new leader does. So:

- expiry is judged on the local monotonic clock, never on the holder's `renewTime` (another machine's
  wall clock): a standby counts `leaseDurationSeconds` from the moment *it* saw the record last change;
- the leader's right to write (`holds(term)`, the fence every write of `KubeApi` checks) ends
  `renew_deadline` after the start of its last successful renewal, and `renew_deadline` is shorter than
  the lease. A standby sees that renewal only after it was sent and takes over a full lease later, so
  the fence closes at least `duration - renew_deadline` (5 s by default) before anyone else can lead;
- the monotonic clock keeps running while the process is stopped, so a leader resumed after SIGSTOP finds
  its fence closed before its first write.

Leadership comes in numbered terms. A leader whose fence has closed (paused, or unable to reach the API
server until its deadline) steps down in the same process: its reconciles stop (main.py stops kopf)
and it campaigns again like a standby, every `retry` seconds. Winning again starts a new term, and a
renewal never reopens a closed one. A write checks the term its client was made in (KubeApi.term), so a
reconcile of an old term that is still running (a call stuck on an API server that went away) stays
refused for good, also while a later term holds. It used to exit (code 1) and come back as a standby:
after an API server outage of 30-120 s the operator then acted on a spec change 81-95 s after the API
server was back, with a container restart per outage (docs/reliability.md).

What no client-side fence can close: a write that passed the check and was then stopped before its bytes
left the process. It reaches the API server on resume. The leader is idle but for its renewals
almost always, so this needs a pause landing inside one write's few milliseconds.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from modeldeploy_operator.k8s.api import KubeApi, RejectedError, TransientApiError

log = logging.getLogger(__name__)
_LEASE = ("coordination.k8s.io/v1", "Lease")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _fmt(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


RETRY_SECONDS = 1.0
"""How often a replica that does not lead asks for the Lease. A standby takes over within this of the
lease running out on its clock, and a leader that stepped down (the API server away) leads again within
this of the API server answering: one GET a second per waiting replica."""


class LeaderElector:
    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        name: str,
        identity: str,
        duration_seconds: float,
        renew_seconds: float,
        renew_deadline_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        if not renew_seconds < renew_deadline_seconds < duration_seconds:
            raise ValueError("need renew_seconds < renew_deadline_seconds < duration_seconds")
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration_seconds
        self.renew = renew_seconds
        self.deadline = renew_deadline_seconds
        self.retry = retry_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._term = 0
        """The current term, or the last one once it is over (0: never led)."""
        self._valid_until = float("-inf")
        """Monotonic time up to which this replica may write in `_term`: its last renewal's start +
        deadline (-inf once the term is over)."""
        self._refusal: str | None = None
        """The last refusal said (a RejectedError's message), so that it is said once."""
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        """The Lease record as last seen, and the local monotonic time it was first seen so."""

    @property
    def term(self) -> int:
        """The current leadership term, or the last one if it is over (0 before the first)."""
        with self._lock:
            return self._term

    def holds(self, term: int | None = None) -> bool:
        """True while this replica may write as the leader in `term` (the fence; None: any term)."""
        with self._lock:
            return (term is None or term == self._term) and self._clock() < self._valid_until

    def _won(self, started: float) -> None:
        """A claim or renewal that began at `started` succeeded: extend the open term, or begin a new
        one if the last is over (its deadline passed while the attempt ran, or it was stepped down)."""
        with self._lock:
            if not self._clock() < self._valid_until:
                self._term += 1
            self._valid_until = started + self.deadline

    def step_down(self) -> None:
        """End the current term: no write of it passes the fence from now on."""
        with self._lock:
            self._valid_until = float("-inf")

    def _spec(self, acquire_time: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.duration)),
            "acquireTime": acquire_time,
            "renewTime": _fmt(_now()),
            "leaseTransitions": transitions,
        }

    def _expired(self, spec: dict[str, Any]) -> bool:
        """Whether the holder in `spec` has had a full lease, on our clock, without changing its record."""
        record = tuple(
            spec.get(k) for k in ("holderIdentity", "renewTime", "acquireTime", "leaseTransitions")
        )
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()
        duration = spec.get("leaseDurationSeconds") or self.duration
        return bool(self._clock() > self._observed_at + duration)

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this replica holds the Lease afterwards (and may write until
        `renew_deadline` after this attempt began)."""
        started = self._clock()
        try:
            lease = self.api.get(*_LEASE, self.namespace, self.name)
            if lease is None:
                self.api.create(
                    {
                        "apiVersion": _LEASE[0],
                        "kind": _LEASE[1],
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": self._spec(_fmt(_now()), 0),
                    }
                )
                self._won(started)
                self._refusal = None
                return True
            spec = lease.get("spec", {})
            holder = spec.get("holderIdentity")
            if holder and holder != self.identity and not self._expired(spec):
                return False
            transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
            acquired = spec.get("acquireTime") if holder == self.identity else _fmt(_now())
            lease["spec"] = self._spec(acquired or _fmt(_now()), transitions)
            self.api.replace(lease)
            self._won(started)
            self._refusal = None
            return True
        except TransientApiError as error:
            # A conflict means another replica wrote first: it won this round.
            log.debug("lease attempt failed: %s", error)
            return False
        except RejectedError as error:
            # Forbidden or invalid: no replica can win like this; say so instead of waiting in silence,
            # once per refusal (it is asked again every second).
            if str(error) != self._refusal:
                self._refusal = str(error)
                log.warning("cannot take the lease %s/%s: %s", self.namespace, self.name, error)
            return False

    def wait_for_leadership(self, stop: threading.Event) -> int | None:
        """Ask for the Lease every `retry` seconds until this replica holds it; the term it won (None
        once `stop` is set)."""
        while not stop.is_set():
            if self.try_acquire_or_renew():
                term = self.term
                if self.holds(term):  # (an attempt slower than the deadline won an already closed term)
                    log.info(
                        "acquired leadership (lease %s/%s) as %s, term %d",
                        self.namespace,
                        self.name,
                        self.identity,
                        term,
                    )
                    return term
            stop.wait(self.retry)
        return None

    def keep_renewing(self, term: int, lost: threading.Event) -> None:
        """Renew every `renew` seconds (after a failure, every second) while `term`'s fence is open;
        once it has closed, step down, set `lost` and never renew `term` again: a leader that missed
        its deadline (a pause, an API server it could not reach) may have been replaced, and its
        in-memory state with it. (main.py then stops the term's reconciles and campaigns again.)"""
        wait = self.renew
        while not lost.wait(wait):
            if not self.holds(term):
                break
            wait = self.renew if self.try_acquire_or_renew() else min(1.0, self.renew)
            if not self.holds(term):
                break
        if not lost.is_set():
            self.step_down()
            log.error(
                "lost leadership of lease %s/%s (term %d): stepping down", self.namespace, self.name, term
            )
            lost.set()

    def release(self) -> None:
        """Give the Lease up on a clean shutdown so a standby takes over at once."""
        self.step_down()
        try:
            lease = self.api.get(*_LEASE, self.namespace, self.name)
            if lease and lease.get("spec", {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = None
                lease["spec"]["renewTime"] = None
                self.api.replace(lease)
        except (TransientApiError, RejectedError):
            pass
