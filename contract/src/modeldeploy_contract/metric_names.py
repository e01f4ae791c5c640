"""Names of the metrics the model server and the router expose and the operator's analysis reads.

Shared here so the two sides cannot drift apart: the operator may not import the serving package
(import-linter: the images stay independent), and tests/unit/operator/test_operator_shared_names.py
checks that the serving package's collectors expose exactly these names. docs/serving.md and
docs/router.md describe them.
"""

from __future__ import annotations

# Model server (modeldeploy_serving.metrics); labels model, version[, protocol, code | feature].
REQUESTS = "modeldeploy_requests_total"
ERRORS = "modeldeploy_request_errors_total"
"""Requests answered with HTTP 4xx or 5xx; label `code` holds the status."""
REQUEST_SECONDS = "modeldeploy_request_duration_seconds"
FEATURE_PSI = "modeldeploy_feature_drift_psi"
WINDOW_ROWS = "modeldeploy_drift_window_rows"
WINDOW_END = "modeldeploy_drift_window_end_timestamp_seconds"
PREDICTION_SCORE = "modeldeploy_prediction_score"
"""Histogram of prediction scores, added to when a drift window closes."""

# Router (modeldeploy_serving.router.metrics); labels variant, revision, reason.
ROUTER_ERRORS = "modeldeploy_router_errors_total"
"""Requests of an arm that the router answered itself (backend unreachable, timeout, bad answer,
no backend): they never reached a model server, so the server cannot count them."""
SHADOW_LABEL_AGREEMENT = "modeldeploy_router_shadow_label_agreement_total"
"""Rows of mirrored/shadowed requests whose label agrees with the primary's; label `result` is agree or
disagree; labels variant, revision name the copy's arm."""
SHADOW_SCORE_DIFFERENCE = "modeldeploy_router_shadow_score_difference"
"""Histogram of |primary score - copy score| per row of the same request."""
FEATURE_KS = "modeldeploy_feature_drift_ks"
"""Binned KS distance of a feature in the last closed drift window against the bundle's profile."""
FEATURE_MISSING = "modeldeploy_feature_missing_ratio"
"""Share of a feature's values missing in the last closed drift window (the KS distance is over the
present ones: the operator's early KS decision counts only those)."""
FEATURE_BIN_ROWS = "modeldeploy_feature_bin_rows_total"
"""Rows of closed drift windows per bin of a feature; labels feature, layout (hash of the bin edges),
bin (index, or `missing`). Compared between canary and stable by `reference: stable` drift checks."""

FEATURE_REFERENCE_ROWS = "modeldeploy_feature_reference_rows"
"""Rows of the bundle's reference profile per bin of a feature, labelled as FEATURE_BIN_ROWS (a gauge:
the profile does not change). With the canary's FEATURE_BIN_ROWS increases it lets the operator
decide an inputDrift check against the profile early on overwhelming evidence."""

TRAFFIC_HEADER = "x-modeldeploy-traffic"
"""Set by the router on the copies it sends (value `mirror`); the server labels their metrics
traffic="mirror". The router drops it from callers' requests, so live traffic cannot pose as a copy."""
MIRROR_TRAFFIC = "mirror"
LIVE_TRAFFIC = "live"


def bucket(histogram: str) -> str:
    return f"{histogram}_bucket"


def count(histogram: str) -> str:
    return f"{histogram}_count"


# Operator (modeldeploy_operator.metrics): the rollout state of each ModelDeployment, read from its
# status after every reconcile, in the style of Argo Rollouts' rollout_info and Flagger's
# canary_weight. Labels namespace, modeldeployment[, phase | variant, revision, role | check, result];
# the series of a ModelDeployment or revision go when it does.
ROLLOUT_INFO = "modeldeploy_rollout_info"
"""1, with the phase and the stable and canary revisions as labels."""
ROLLOUT_PHASE = "modeldeploy_rollout_phase"
"""1 for the current phase, 0 for the others (kube-state-metrics' kube_pod_status_phase)."""
ROLLOUT_STEP = "modeldeploy_rollout_step"
"""Index of the current rollout step (0-based); absent when no rollout runs."""
ROLLOUT_PAUSED = "modeldeploy_rollout_paused"
ROLLOUT_CANARY_WEIGHT = "modeldeploy_rollout_canary_weight_ratio"
"""Share of traffic on the canary, 0-1."""
ROLLOUT_REVISION_WEIGHT = "modeldeploy_rollout_revision_weight_ratio"
"""Share of traffic on each running revision, 0-1."""
ROLLOUT_REVISION_READY_REPLICAS = "modeldeploy_rollout_revision_ready_replicas"
ROLLOUT_CHECK_VALUE = "modeldeploy_rollout_check_value"
"""Latest measured value of each analysis check; absent while it has none."""
ROLLOUT_CHECK_RESULT = "modeldeploy_rollout_check_result"
"""1 for the latest result of each analysis check (Pass, Fail, Inconclusive), 0 for the others."""
ROLLOUT_CHECK_FAILURES = "modeldeploy_rollout_check_failures"
"""Failed measurements of each check in the current analysis."""
