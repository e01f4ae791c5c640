"""Names of the metrics analysis reads: they live in the contract package (shared with the serving side,
which exposes them); re-exported here for the analysis modules."""

from __future__ import annotations

from modeldeploy_contract.metric_names import (
    ERRORS,
    FEATURE_BIN_ROWS,
    FEATURE_KS,
    FEATURE_MISSING,
    FEATURE_PSI,
    FEATURE_REFERENCE_ROWS,
    PREDICTION_SCORE,
    REQUEST_SECONDS,
    REQUESTS,
    ROUTER_ERRORS,
    SHADOW_LABEL_AGREEMENT,
    SHADOW_SCORE_DIFFERENCE,
    WINDOW_END,
    WINDOW_ROWS,
    bucket,
    count,
)

__all__ = [
    "ERRORS",
    "FEATURE_BIN_ROWS",
    "FEATURE_KS",
    "FEATURE_MISSING",
    "FEATURE_PSI",
    "FEATURE_REFERENCE_ROWS",
    "PREDICTION_SCORE",
    "REQUESTS",
    "REQUEST_SECONDS",
    "ROUTER_ERRORS",
    "SHADOW_LABEL_AGREEMENT",
    "SHADOW_SCORE_DIFFERENCE",
    "WINDOW_END",
    "WINDOW_ROWS",
    "bucket",
    "count",
]
