"""The operator's own Prometheus metrics: reconciles, their errors and durations."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "modeldeploy_operator_reconciles_total", "Reconciles of ModelDeployments, by result.", ["result"]
)
RECONCILE_ERRORS = Counter(
    "modeldeploy_operator_reconcile_errors_total",
    "Reconcile errors, by kind (transient, rejected, invalid).",
    ["kind"],
)
RECONCILE_SECONDS = Histogram(
    "modeldeploy_operator_reconcile_duration_seconds",
    "Wall time of one reconcile.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
APPLIED_OBJECTS = Counter(
    "modeldeploy_operator_applied_objects_total", "Objects written with server-side apply, by kind.", ["kind"]
)
IS_LEADER = Gauge("modeldeploy_operator_leader", "1 while this replica holds the leader Lease.")
