"""The one entry point of analysis: measure checks of a target, from the right source.

Routing: `prometheus` checks go to spec.rollout.analysis.prometheus; the built-in checks go there
too when it is set (as the PromQL in `promql.py`), else to the built-in scrape of the pods.
Readings come back in the order of the checks asked for. A source measures; it never decides.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol

from modeldeploy_operator.domain.durations import parse_duration
from modeldeploy_operator.domain.readings import CheckReading
from modeldeploy_operator.domain.spec import Analysis, Check, PrometheusSource

from .builtin import no_data
from .prometheus import PrometheusClient, PrometheusReader
from .promql import SeriesLabels
from .scrape_source import BuiltinScrapeSource, utc_now
from .target import AnalysisTarget


def select_checks(analysis: Analysis, names: Sequence[str]) -> tuple[Check, ...]:
    """The checks an analysis step names (all of them when it names none), in spec order."""
    return tuple(c for c in analysis.checks if not names or c.name in names)


class AnalysisSource(Protocol):
    def read(self, checks: Sequence[Check], target: AnalysisTarget, window: timedelta) -> list[CheckReading]:
        """One reading per check, measured over (about) the last `window`."""
        ...


class AnalysisSources:
    """Long-lived (one per operator process): holds the scrape baselines and Prometheus clients."""

    def __init__(self, scrape: BuiltinScrapeSource | None = None, labels: SeriesLabels | None = None) -> None:
        self.scrape = scrape or BuiltinScrapeSource()
        self.labels = labels or SeriesLabels()
        self._prometheus: dict[tuple[str, float], PrometheusReader] = {}
        self._lock = threading.Lock()

    def read(self, analysis: Analysis, checks: Sequence[Check], target: AnalysisTarget) -> list[CheckReading]:
        """Measure `checks` (usually those of the current analysis step) over one analysis interval."""
        window = timedelta(seconds=parse_duration(analysis.interval))
        prometheus = self._prometheus_for(analysis.prometheus) if analysis.prometheus else None
        by_prometheus = [c for c in checks if prometheus is not None or c.type == "prometheus"]
        by_scrape = [c for c in checks if c.name not in {p.name for p in by_prometheus}]
        readings: dict[str, CheckReading] = {}
        if by_scrape:
            readings.update((r.check, r) for r in self.scrape.read(by_scrape, target, window))
        for check in by_prometheus:
            if prometheus is None:
                why = "prometheus checks need spec.rollout.analysis.prometheus"
                readings[check.name] = no_data(check, utc_now(), why)
            else:
                readings[check.name] = prometheus.read_one(check, target, window.total_seconds())
        return [readings[c.name] for c in checks]

    def forget(self, target: AnalysisTarget) -> None:
        """The target's rollout ended: drop its scrape baseline."""
        self.scrape.forget(target)

    def _prometheus_for(self, spec: PrometheusSource) -> PrometheusReader:
        key = (spec.address, spec.timeout_seconds)
        with self._lock:
            reader = self._prometheus.get(key)
            if reader is None:
                client = PrometheusClient(spec.address, spec.timeout_seconds)
                reader = self._prometheus[key] = PrometheusReader(client, self.labels)
            return reader
