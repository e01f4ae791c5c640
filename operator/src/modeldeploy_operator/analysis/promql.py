"""PromQL equivalents of the built-in checks (pure: text in, text out).

They assume Prometheus scrapes the model-server and router pods with the usual `kubernetes-pods`
relabelling: `namespace` from the pod's namespace and every pod label mapped with `labelmap`
(`modeldeploy.io/revision` becomes `modeldeploy_io_revision`). `SeriesLabels` renames them for
other setups. The router's own `variant` and `revision` labels come from the router itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import names
from .target import AnalysisTarget

LATENCY_QUANTILE = 0.99


@dataclass(frozen=True)
class SeriesLabels:
    """Names of the target labels Prometheus attaches to the pods' series."""

    namespace: str = "namespace"
    deployment: str = "modeldeploy_io_deployment"
    revision: str = "modeldeploy_io_revision"
    instance: str = "instance"
    """Identifies one scraped pod: joins a pod's drift gauges with its window end time."""


def quote(value: str) -> str:
    """A PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _selector(pairs: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}={quote(v)}" for k, v in pairs.items()) + "}"


def server_selector(target: AnalysisTarget, revision: str, labels: SeriesLabels) -> str:
    return _selector(
        {labels.namespace: target.namespace, labels.deployment: target.deployment, labels.revision: revision}
    )


def router_arm_selector(target: AnalysisTarget, labels: SeriesLabels) -> str:
    return _selector(
        {
            labels.namespace: target.namespace,
            labels.deployment: target.deployment,
            "variant": target.variant,
            "revision": target.canary_revision,
        }
    )


def range_of(seconds: float) -> str:
    return f"[{max(1, round(seconds))}s]"


@dataclass(frozen=True)
class BuiltinQueries:
    """The value query and the sample-count query of one built-in check."""

    value: str
    samples: str
    buckets: str | None = None
    """For a check read from one histogram (latencyP99, shadowScoreDifference): its counts per `le`
    over the window, for the early Fail the scraped reading allows (domain/rollout/evidence.py)."""


def error_rate(target: AnalysisTarget, window_seconds: float, labels: SeriesLabels) -> BuiltinQueries:
    canary = server_selector(target, target.canary_revision, labels)
    w = range_of(window_seconds)
    # Router-answered errors never reached a server; `or vector(0)` keeps the sum defined when
    # there is no router (Gateway API) or it has not failed yet.
    router = f"(sum(increase({names.ROUTER_ERRORS}{router_arm_selector(target, labels)}{w})) or vector(0))"
    requests = f"(sum(increase({names.REQUESTS}{canary}{w})) + {router})"
    # A server that never failed has no error series at all (labelled counters appear on first use):
    # that is zero errors, not "no data".
    failed = f"((sum(increase({names.ERRORS}{canary}{w})) or vector(0)) + {router})"
    return BuiltinQueries(f"{failed} / {requests}", requests)


def latency_p99(target: AnalysisTarget, window_seconds: float, labels: SeriesLabels) -> BuiltinQueries:
    canary = server_selector(target, target.canary_revision, labels)
    w = range_of(window_seconds)
    buckets = f"sum by (le) (increase({names.bucket(names.REQUEST_SECONDS)}{canary}{w}))"
    return BuiltinQueries(
        f"histogram_quantile({LATENCY_QUANTILE}, {buckets})",
        f"sum(increase({names.count(names.REQUEST_SECONDS)}{canary}{w}))",
        buckets,
    )


def shadow_agreement(target: AnalysisTarget, window_seconds: float, labels: SeriesLabels) -> BuiltinQueries:
    """Share of compared rows of the canary arm's copies whose label agrees with the primary's."""
    arm = router_arm_selector(target, labels)
    w = range_of(window_seconds)
    rows = f"sum(increase({names.SHADOW_LABEL_AGREEMENT}{arm}{w}))"
    agree = arm[:-1] + ',result="agree"}'
    return BuiltinQueries(
        f"(sum(increase({names.SHADOW_LABEL_AGREEMENT}{agree}{w})) or vector(0)) / {rows}", rows
    )


def shadow_score_difference(
    target: AnalysisTarget, window_seconds: float, labels: SeriesLabels
) -> BuiltinQueries:
    """Mean absolute score difference of the canary arm's copies against the primary's answers."""
    arm = router_arm_selector(target, labels) + range_of(window_seconds)
    name = names.SHADOW_SCORE_DIFFERENCE
    rows = f"sum(increase({names.count(name)}{arm}))"
    buckets = f"sum by (le) (increase({names.bucket(name)}{arm}))"
    return BuiltinQueries(f"sum(increase({name}_sum{arm})) / {rows}", rows, buckets)


def input_drift(
    target: AnalysisTarget, lookback_seconds: float, labels: SeriesLabels, metric: str = names.FEATURE_PSI
) -> BuiltinQueries:
    canary = server_selector(target, target.canary_revision, labels)
    # Only pods whose last drift window closed within the lookback: an old window says nothing
    # about the traffic the canary serves now.
    fresh = (
        f"and on ({labels.instance}) "
        f"(time() - {names.WINDOW_END}{canary} < {max(1, round(lookback_seconds))})"
    )
    return BuiltinQueries(
        f"max({metric}{canary} {fresh})",
        f"min({names.WINDOW_ROWS}{canary} {fresh})",
    )


def score_buckets(target: AnalysisTarget, revision: str, window_seconds: float, labels: SeriesLabels) -> str:
    """Per-bucket score counts of one revision over the window; PSI is computed by the operator
    (PromQL cannot difference adjacent buckets), with the same function as the built-in scrape."""
    selector = server_selector(target, revision, labels) + range_of(window_seconds)
    return f"sum by (le) (increase({names.bucket(names.PREDICTION_SCORE)}{selector}))"


def feature_bins(target: AnalysisTarget, revision: str, window_seconds: float, labels: SeriesLabels) -> str:
    """Rows per (feature, bin layout, bin) of one revision's drift windows over the window; the
    drift statistic against the stable is computed by the operator (as for predictionShift)."""
    selector = server_selector(target, revision, labels) + range_of(window_seconds)
    return f"sum by (feature, layout, bin) (increase({names.FEATURE_BIN_ROWS}{selector}))"


def reference_bins(target: AnalysisTarget, labels: SeriesLabels) -> str:
    """The bundle profile's rows per (feature, bin layout, bin), as the canary's servers export them
    (a gauge; every pod of a revision serves the same bundle: the largest, should one pod lag). With
    the canary's feature_bins over the window, an inputDrift check against the profile can fail early."""
    selector = server_selector(target, target.canary_revision, labels)
    return f"max by (feature, layout, bin) ({names.FEATURE_REFERENCE_ROWS}{selector})"
