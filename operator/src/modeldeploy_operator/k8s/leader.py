"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does it.

Only the holder runs reconciles; the others wait. Claims and renewals are optimistic writes (create, or
replace at a resourceVersion), so two replicas can never both believe they hold the Lease.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

from modeldeploy_operator.k8s.api import KubeApi, RejectedError, TransientApiError

log = logging.getLogger(__name__)
_LEASE = ("coordination.k8s.io/v1", "Lease")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _fmt(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


class LeaderElector:
    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        name: str,
        identity: str,
        duration_seconds: float,
        renew_seconds: float,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration_seconds
        self.renew = renew_seconds

    def _spec(self, acquire_time: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.duration)),
            "acquireTime": acquire_time,
            "renewTime": _fmt(_now()),
            "leaseTransitions": transitions,
        }

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this replica holds the Lease afterwards."""
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
                return True
            spec = lease.get("spec", {})
            holder = spec.get("holderIdentity")
            renewed = _parse(spec.get("renewTime")) or dt.datetime.min.replace(tzinfo=dt.UTC)
            expired = renewed + dt.timedelta(seconds=spec.get("leaseDurationSeconds", self.duration)) < _now()
            if holder != self.identity and holder and not expired:
                return False
            transitions = int(spec.get("leaseTransitions", 0)) + (0 if holder == self.identity else 1)
            acquired = spec.get("acquireTime") if holder == self.identity else _fmt(_now())
            lease["spec"] = self._spec(acquired or _fmt(_now()), transitions)
            self.api.replace(lease)
            return True
        except TransientApiError as error:
            # A conflict means another replica wrote first: it won this round.
            log.debug("lease attempt failed: %s", error)
            return False
        except RejectedError as error:
            # Forbidden or invalid: no replica can win like this; say so instead of waiting in silence.
            log.warning("cannot take the lease %s/%s: %s", self.namespace, self.name, error)
            return False

    def wait_for_leadership(self, stop: threading.Event) -> bool:
        while not stop.is_set():
            if self.try_acquire_or_renew():
                log.info("acquired leadership (lease %s/%s) as %s", self.namespace, self.name, self.identity)
                return True
            stop.wait(self.renew)
        return False

    def keep_renewing(self, lost: threading.Event) -> None:
        """Renew until a renewal fails for longer than the lease lasts; then set `lost`."""
        last_success = _now()
        while not lost.wait(self.renew):
            if self.try_acquire_or_renew():
                last_success = _now()
            elif (_now() - last_success).total_seconds() > self.duration:
                log.error("lost leadership of lease %s/%s", self.namespace, self.name)
                lost.set()

    def release(self) -> None:
        """Give the Lease up on a clean shutdown so a standby takes over at once."""
        try:
            lease = self.api.get(*_LEASE, self.namespace, self.name)
            if lease and lease.get("spec", {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = None
                lease["spec"]["renewTime"] = None
                self.api.replace(lease)
        except (TransientApiError, RejectedError):
            pass
