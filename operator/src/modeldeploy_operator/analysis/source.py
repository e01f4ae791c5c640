"""The one entry point of analysis: measure checks of a target, from the right source.

Routing: `prometheus` checks go to spec.rollout.analysis.prometheus; the built-in checks go there
too when it is set (as the PromQL in `promql.py`), else to the built-in scrape of the pods.
Readings come back in the order of the checks asked for. A source measures; it never decides.

`read` measures now, in the caller's thread (tests, tools). The reconciler uses `measure`, which runs
the same `read` on a bounded `MeasurementPool` and never waits (see pool.py). A Prometheus address
is queried only when the operator's `AddressPolicy` allows it (see allowlist.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol

from modeldeploy_operator.domain.durations import parse_duration
from modeldeploy_operator.domain.readings import CheckReading
from modeldeploy_operator.domain.spec import Analysis, Check, PrometheusSource

from .allowlist import AddressPolicy
from .builtin import no_data
from .effectiveness import SETTING_HINT as JOINER_HINT
from .effectiveness import JoinerReader
from .fetch import FetchLimits
from .pool import MeasurementPool
from .prometheus import MAX_ANSWER_BYTES, PrometheusClient, PrometheusReader
from .promql import SeriesLabels
from .scrape import SCRAPE_LIMITS
from .scrape_source import BuiltinScrapeSource, utc_now
from .target import AnalysisTarget

log = logging.getLogger("modeldeploy.analysis")
DEFAULT_DEADLINE_SECONDS = 30.0
_MAX_PROMETHEUS_CLIENTS = 64


def select_checks(analysis: Analysis, names: Sequence[str]) -> tuple[Check, ...]:
    """The checks an analysis step names (all of them when it names none), in spec order."""
    return tuple(c for c in analysis.checks if not names or c.name in names)


class AnalysisSource(Protocol):
    def read(self, checks: Sequence[Check], target: AnalysisTarget, window: timedelta) -> list[CheckReading]:
        """One reading per check, measured over (about) the last `window`."""
        ...


class AnalysisSources:
    """Long-lived (one per operator process): holds the scrape baselines and Prometheus clients."""

    def __init__(
        self,
        scrape: BuiltinScrapeSource | None = None,
        labels: SeriesLabels | None = None,
        *,
        policy: AddressPolicy | None = None,
        pool: MeasurementPool[list[CheckReading]] | None = None,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        joiner: JoinerReader | None = None,
    ) -> None:
        self.scrape = scrape if scrape is not None else BuiltinScrapeSource()
        self.joiner = joiner or JoinerReader(AddressPolicy(what="joiner", hint=JOINER_HINT))
        self.labels = labels or SeriesLabels()
        self.policy = policy or AddressPolicy()
        self.pool = pool
        self.deadline_seconds = pool.deadline_seconds if pool is not None else deadline_seconds
        self.max_answer_bytes = max_answer_bytes
        self._prometheus: dict[tuple[str, float], PrometheusReader] = {}
        self._lock = threading.Lock()

    def read(self, analysis: Analysis, checks: Sequence[Check], target: AnalysisTarget) -> list[CheckReading]:
        """Measure `checks` (usually those of the current analysis step) over one analysis interval."""
        deadline = time.monotonic() + self.deadline_seconds
        window = timedelta(seconds=parse_duration(analysis.interval))
        refusal = self.policy.refusal(analysis.prometheus.address) if analysis.prometheus else None
        prometheus = (
            self._prometheus_for(analysis.prometheus) if analysis.prometheus and not refusal else None
        )
        uses_prometheus = analysis.prometheus is not None
        by_joiner = [c for c in checks if c.type == "effectiveness"]
        rest = [c for c in checks if c.type != "effectiveness"]
        by_prometheus = [c for c in rest if uses_prometheus or c.type == "prometheus"]
        by_scrape = [c for c in rest if c.name not in {p.name for p in by_prometheus}]
        readings: dict[str, CheckReading] = {}
        if by_joiner:
            readings.update(
                (r.check, r) for r in self.joiner.read(by_joiner, analysis.joiner, target, utc_now())
            )
        if by_scrape:
            readings.update((r.check, r) for r in self.scrape.read(by_scrape, target, window))
        for check in by_prometheus:
            if prometheus is None:
                why = refusal or "prometheus checks need spec.rollout.analysis.prometheus"
                readings[check.name] = no_data(check, utc_now(), why)
            else:
                readings[check.name] = prometheus.read_one(check, target, window.total_seconds(), deadline)
        return [readings[c.name] for c in checks]

    def measure(
        self, analysis: Analysis, checks: Sequence[Check], target: AnalysisTarget
    ) -> list[CheckReading] | None:
        """The readings of `read`, measured on the pool: None while they are being measured (call
        again), Inconclusive readings if they took longer than the deadline. Without a pool, `read`."""
        if self.pool is None:
            return self.read(analysis, checks, target)
        key = self.measurement_key(analysis, checks, target)

        def measure() -> list[CheckReading]:
            try:
                return self.read(analysis, checks, target)
            except Exception:  # a bug must not leave the object waiting forever: Inconclusive, logged
                log.exception("analysis of %s/%s failed", target.namespace, target.deployment)
                return [
                    no_data(c, utc_now(), "analysis failed in the operator (see its log)") for c in checks
                ]

        def timed_out(seconds: float) -> list[CheckReading]:
            return [no_data(c, utc_now(), f"no measurement within the {seconds:g}s deadline") for c in checks]

        return self.pool.poll(key, measure, timed_out)

    @staticmethod
    def measurement_key(
        analysis: Analysis, checks: Sequence[Check], target: AnalysisTarget
    ) -> tuple[object, ...]:
        """What one pool job measures. Pod addresses are left out: a pod moving while a measurement
        runs must not start a second one (the next measurement sees the new addresses)."""
        source = analysis.prometheus.address if analysis.prometheus else ""
        joiner = analysis.joiner.address if analysis.joiner else ""
        return (target.key, tuple(c.name for c in checks), source, joiner, analysis.interval)

    def retain(self, namespace: str, deployment: str, keep: AnalysisTarget | None) -> int:
        """Keep only the scrape baseline of `keep` (the ModelDeployment's rollout under way), or none
        (no rollout, or the ModelDeployment is gone); how many were dropped."""
        return self.scrape.retain(namespace, deployment, keep.key if keep is not None else None)

    def _prometheus_for(self, spec: PrometheusSource) -> PrometheusReader:
        key = (spec.address, spec.timeout_seconds)
        with self._lock:
            reader = self._prometheus.get(key)
            if reader is None:
                if len(self._prometheus) >= _MAX_PROMETHEUS_CLIENTS:  # paths under an allowed prefix vary
                    for old in self._prometheus.values():
                        old.client.close()
                    self._prometheus.clear()
                timeout = min(spec.timeout_seconds, self.deadline_seconds)
                client = PrometheusClient(spec.address, timeout, max_bytes=self.max_answer_bytes)
                reader = self._prometheus[key] = PrometheusReader(client, self.labels)
            return reader


def analysis_sources(
    *,
    allowed_prometheus: Sequence[str],
    workers: int,
    deadline_seconds: float,
    max_response_bytes: int,
    allowed_joiner: Sequence[str] = (),
) -> AnalysisSources:
    """The operator's sources, from its settings: allow-list, pool size, deadline and byte cap."""
    scrape = BuiltinScrapeSource(
        limits=FetchLimits(min(SCRAPE_LIMITS.deadline_seconds, deadline_seconds), max_response_bytes)
    )
    return AnalysisSources(
        scrape,
        policy=AddressPolicy(tuple(allowed_prometheus)),
        pool=MeasurementPool(workers, deadline_seconds),
        max_answer_bytes=max_response_bytes,
        joiner=JoinerReader(AddressPolicy(tuple(allowed_joiner), what="joiner", hint=JOINER_HINT)),
    )
