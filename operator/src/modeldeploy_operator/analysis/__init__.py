"""Metric sources for rollout analysis (built-in scrape, Prometheus) behind one small interface.

The reconciler keeps one `AnalysisSources` for the operator's lifetime and calls
`read(analysis, checks, target)` once per analysis interval; the readings go to the pure planner.
"""

from .prometheus import PrometheusClient, PrometheusReader
from .promql import SeriesLabels
from .scrape_source import BuiltinScrapeSource
from .source import AnalysisSource, AnalysisSources, select_checks
from .target import AnalysisTarget

__all__ = [
    "AnalysisSource",
    "AnalysisSources",
    "AnalysisTarget",
    "BuiltinScrapeSource",
    "PrometheusClient",
    "PrometheusReader",
    "SeriesLabels",
    "select_checks",
]
