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

# A target not read for this long has finished its rollout (or been deleted): drop its baseline.
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

    def forget(self, target: AnalysisTarget) -> None:
        """Drop the target's baseline (its rollout ended); the next read starts afresh."""
        with self._lock:
            self._previous.pop(target.key, None)

    def _forget_older_than(self, limit: datetime) -> None:
        for key in [k for k, s in self._previous.items() if s.taken_at < limit]:
            del self._previous[key]

    def close(self) -> None:
        self._client.close()
