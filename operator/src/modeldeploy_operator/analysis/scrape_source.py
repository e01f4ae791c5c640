"""The built-in source: scrape the pods now, compare with the previous scrape of the same target.

The previous scrape is the only state. It lives in this object's memory, keyed by the target
(namespace, deployment, variant, canary and stable revision), so the operator keeps one instance
for its lifetime. After an operator restart the first reading of each target has no baseline:
counter-based checks are Inconclusive once, then continue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import httpx

from modeldeploy_operator.domain.readings import CheckReading
from modeldeploy_operator.domain.spec import Check

from . import builtin
from .fetch import FetchLimits, new_client
from .scrape import SCRAPE_LIMITS, Snapshot, take_snapshot
from .target import AnalysisTarget

# A target not read for this long has finished its rollout (or been deleted): drop its baseline. Only
# a backstop: the reconciler drops a target's baseline as soon as its rollout is no longer under way
# (`retain`), and a deleted ModelDeployment's at once.
FORGET_AFTER = timedelta(hours=6)


def utc_now() -> datetime:
    return datetime.now(UTC)


class BuiltinScrapeSource:
    def __init__(
        self,
        client: httpx.Client | None = None,
        clock: Callable[[], datetime] = utc_now,
        limits: FetchLimits = SCRAPE_LIMITS,
    ) -> None:
        self._client = client or new_client()
        self._limits = limits
        self._clock = clock
        self._previous: dict[tuple[str, ...], Snapshot] = {}
        self._lock = threading.Lock()  # kopf runs sync handlers of different objects in threads

    def read(self, checks: Sequence[Check], target: AnalysisTarget, window: timedelta) -> list[CheckReading]:
        """Scrape every pod of the target once and measure all `checks` against the previous
        scrape (which this call replaces). Never raises for unreachable pods or bad metrics."""
        current = take_snapshot(
            self._client,
            self._clock(),
            target.canary_endpoints,
            target.stable_endpoints,
            target.router_endpoints,
            self._limits,
        )
        with self._lock:
            previous = self._previous.get(target.key)
            self._previous[target.key] = current
            self._forget_older_than(current.taken_at - FORGET_AFTER)
        return builtin.readings(list(checks), target, previous, current, window.total_seconds())

    def retain(self, namespace: str, deployment: str, keep: tuple[str, ...] | None) -> int:
        """Drop every baseline of the ModelDeployment but the one of target key `keep` (None: all of
        them); how many were dropped. The reconciler calls it after each pass with the rollout still
        under way: a target's key names its canary revision, so every rollout makes a new one, and
        nothing else ever dropped it before FORGET_AFTER. Each baseline is a whole scrape of the
        target's pods, parsed: 1.2-1.6 MiB for 2 canary, 2 stable and 1 router pod of the churn
        model (tracemalloc; a server's /metrics has about 400 samples, ~800 bytes each once parsed);
        kept for 6 hours, that was the operator leader's RSS rising by 1-2 MiB per rollout in the
        30-minute soak (docs/reliability.md, "Soak")."""
        with self._lock:
            stale = [key for key in self._previous if key[:2] == (namespace, deployment) and key != keep]
            for key in stale:
                del self._previous[key]
            return len(stale)

    def baselines(self) -> int:
        """Baselines kept (one per target read in the last FORGET_AFTER and not dropped)."""
        with self._lock:
            return len(self._previous)

    def _forget_older_than(self, limit: datetime) -> None:
        for key in [k for k, s in self._previous.items() if s.taken_at < limit]:
            del self._previous[key]

    def close(self) -> None:
        self._client.close()
