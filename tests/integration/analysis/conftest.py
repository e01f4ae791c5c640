"""Fixtures of the analysis integration tests (defined in analysis_harness)."""

from analysis_harness import churn

__all__ = ["churn"]
