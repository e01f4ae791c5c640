"""Metric sources for rollout analysis (built-in scrape, Prometheus) behind one small interface.

The reconciler keeps one `AnalysisSources` for the operator's lifetime and calls
`read(analysis, checks, target)` once per analysis interval; the readings go to the pure planner.
"""

from .allowlist import AddressPolicy
from .fetch import FetchError, FetchLimits
from .pool import MeasurementPool
from .prometheus import PrometheusClient, PrometheusReader
from .promql import SeriesLabels
from .scrape_source import BuiltinScrapeSource
from .source import AnalysisSource, AnalysisSources, analysis_sources, select_checks
from .target import AnalysisTarget

__all__ = [
    "AddressPolicy",
    "AnalysisSource",
    "AnalysisSources",
    "AnalysisTarget",
    "BuiltinScrapeSource",
    "FetchError",
    "FetchLimits",
    "MeasurementPool",
    "PrometheusClient",
    "PrometheusReader",
    "SeriesLabels",
    "analysis_sources",
    "select_checks",
]
