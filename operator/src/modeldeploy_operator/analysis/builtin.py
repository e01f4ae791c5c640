"""The built-in checks, computed from two scrapes of the pods (pure: snapshots in, readings out).

- errorRate: (server 4xx/5xx + router-answered errors) / (server requests + router-answered
  errors) of the canary between the scrapes; samples = that denominator.
- latencyP99: histogram_quantile(0.99) of the canary servers' request-duration bucket increases;
  samples = requests observed.
- inputDrift: the largest feature PSI among the canary pods' drift windows that closed within the
  lookback; samples = rows of the smallest of those windows (the weakest evidence behind the value).
  With it, for the early decision, every feature's (profile, canary) rows per bin: the profile's
  from modeldeploy_feature_reference_rows, the canary's from the windows closed between the scrapes.
- predictionShift: PSI between the canary's and the stable's prediction-score histogram increases
  over the same interval; samples = the smaller of the two counts.
- predictionShiftKS: the binned two-sample Kolmogorov-Smirnov distance between the same two
  histograms (stats.histogram_ks: a lower bound of the raw-sample distance, off by at most the
  largest bucket share, which the detail states with the asymptotic p-value).
- inputDriftKS: like inputDrift, with the servers' binned KS distance per feature
  (modeldeploy_feature_drift_ks) against the bundle's training profile.
- inputDrift / inputDriftKS with `reference: stable`: the canary's binned inputs
  (modeldeploy_feature_bin_rows_total increases) against the stable revision's over the same interval,
  per feature in the same bin layout; the largest PSI or KS; samples = the fewer rows of one side.
- shadowAgreement / shadowScoreDifference: from the router, which sees both answers of every copied
  request (a rollout mirror or spec.traffic.shadow): the share of rows whose labels agree, and the
  mean absolute score difference, of the copies sent to the canary's arm between the scrapes;
  samples = rows compared.
No data gives value None (the planner's Inconclusive), never 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime

from modeldeploy_contract.psi import psi
from modeldeploy_operator.domain.readings import CheckReading, HistogramPair, KsComparison
from modeldeploy_operator.domain.spec import Check

from . import names
from .deltas import GroupIncrease, group_increase, labels_are
from .scrape import GroupScrape, PodMetrics, Snapshot, is_number
from .stats import (
    bucket_counts,
    buckets_from_le,
    histogram_ks,
    histogram_psi,
    histogram_quantile,
    ks_p_value,
)
from .target import AnalysisTarget

LATENCY_QUANTILE = 0.99
BUILTIN_TYPES = (
    "errorRate",
    "latencyP99",
    "inputDrift",
    "predictionShift",
    "shadowAgreement",
    "shadowScoreDifference",
    "inputDriftKS",
    "predictionShiftKS",
)
ROUTER_MEASURED = ("errorRate", "shadowAgreement", "shadowScoreDifference")
"""Checks the router's counters can answer even when no canary pod answers a scrape."""


def no_data(check: Check, at: datetime, why: str, samples: int = 0) -> CheckReading:
    return CheckReading(check.name, None, samples, at, why)


def _seconds(previous: Snapshot, current: Snapshot) -> str:
    return f"{(current.taken_at - previous.taken_at).total_seconds():.0f}s"


def _failures(group: GroupScrape, what: str) -> str:
    if not group.failures:
        return ""
    reasons = "; ".join(f"{a}: {r}" for a, r in sorted(group.failures.items()))
    return f"; {what} not scraped: {reasons}"


def error_rate(check: Check, target: AnalysisTarget, previous: Snapshot, current: Snapshot) -> CheckReading:
    servers = group_increase(previous.canary, current.canary)
    routers = group_increase(previous.router, current.router)
    arm = labels_are(variant=target.variant, revision=target.canary_revision)
    router_errors = routers.total(names.ROUTER_ERRORS, arm)
    by_code = servers.by_label(names.ERRORS, "code")
    client_errors = sum(n for code, n in by_code.items() if code.startswith("4"))
    server_errors = sum(by_code.values()) - client_errors
    requests = servers.total(names.REQUESTS) + router_errors
    failed = client_errors + server_errors + router_errors
    samples = round(requests)
    where = f"in {_seconds(previous, current)}, {servers.describe()}{_failures(current.canary, 'canary')}"
    if requests <= 0:
        return no_data(check, current.taken_at, f"no canary requests {where}")
    detail = (
        f"canary: {failed:.0f} of {requests:.0f} requests failed (4xx {client_errors:.0f}, "
        f"5xx {server_errors:.0f}, router {router_errors:.0f}) {where}"
    )
    return CheckReading(check.name, failed / requests, samples, current.taken_at, detail)


def latency_p99(check: Check, previous: Snapshot, current: Snapshot) -> CheckReading:
    servers = group_increase(previous.canary, current.canary)
    by_le = servers.by_label(names.bucket(names.REQUEST_SECONDS), "le")
    observed = servers.total(names.count(names.REQUEST_SECONDS))
    where = f"in {_seconds(previous, current)}, {servers.describe()}{_failures(current.canary, 'canary')}"
    value = histogram_quantile(LATENCY_QUANTILE, buckets_from_le(by_le))
    if observed <= 0 or not is_number(value):
        return no_data(check, current.taken_at, f"no canary requests {where}")
    detail = f"canary p99 {value * 1000:.1f} ms over {observed:.0f} requests {where}"
    buckets = tuple(buckets_from_le(by_le))
    return CheckReading(check.name, value, round(observed), current.taken_at, detail, buckets=buckets)


def _drift_window(pod: PodMetrics, since: float, metric: str = names.FEATURE_PSI) -> tuple[float, int] | None:
    """(largest feature PSI or KS, rows) of the pod's last closed drift window if it closed after `since`."""
    ended = pod.value(names.WINDOW_END)
    rows = pod.value(names.WINDOW_ROWS)
    if ended is None or rows is None or not is_number(ended) or ended < since:
        return None
    values = [v for v in pod.series(metric).values() if is_number(v)]
    return (max(values), int(rows)) if values else None


OTHER_FEATURES = "_other"
"""The servers' one series for the features beyond their cap (the largest value among them): how many
features it stands for is unknown, so it never counts towards an early KS decision."""


def _ks_against_profile(pod: PodMetrics, since: float) -> list[KsComparison]:
    """Every named feature's KS distance of the pod's last window (closed after `since`) with the
    number of present values behind it (window rows less the feature's missing share)."""
    ended, rows = pod.value(names.WINDOW_END), pod.value(names.WINDOW_ROWS)
    if ended is None or rows is None or not is_number(ended) or not is_number(rows) or ended < since:
        return []
    missing = {dict(labels).get("feature"): v for labels, v in pod.series(names.FEATURE_MISSING).items()}
    out = []
    for labels, distance in pod.series(names.FEATURE_KS).items():
        feature = dict(labels).get("feature")
        share = missing.get(feature)
        if feature == OTHER_FEATURES or share is None or not is_number(distance) or not is_number(share):
            continue
        present = math.floor(rows * (1.0 - min(max(share, 0.0), 1.0)) + 1e-9)
        if present > 0:
            out.append(KsComparison(distance, present))
    return out


def reference_bins(group: GroupScrape) -> FeatureBins:
    """The profile's rows per (feature, layout) and bin, as the canary's servers export them (every
    pod of a revision serves the same bundle: the largest value, should one pod lag)."""
    out: FeatureBins = {}
    for pod in group.pods.values():
        for labels, n in pod.series(names.FEATURE_REFERENCE_ROWS).items():
            found = dict(labels)
            feature, layout, bin_name = found.get("feature"), found.get("layout"), found.get("bin")
            if feature is None or layout is None or bin_name is None or not is_number(n):
                continue
            bins = out.setdefault((feature, layout), {})
            bins[bin_name] = max(bins.get(bin_name, 0.0), n)
    return out


def profile_pairs(previous: Snapshot | None, current: Snapshot) -> tuple[HistogramPair, ...] | None:
    """inputDrift against the profile: per feature, the (profile, canary) rows per bin, the canary's
    from the drift windows closed between the scrapes, for the evaluation's early decision (None
    without a baseline scrape or a window in between, or from servers that do not export the
    profile's rows)."""
    if previous is None:
        return None
    canary = feature_bins(group_increase(previous.canary, current.canary))
    reference = reference_bins(current.canary)
    return tuple(psi_counts(reference[k], canary[k]) for k in with_profile(reference, canary)) or None


def with_profile(reference: FeatureBins, canary: FeatureBins) -> list[tuple[str, str]]:
    """The (feature, layout) the canary has rows of and the profile has too (the same bin layout),
    from the scrape or from Prometheus alike."""
    return sorted(k for k in canary.keys() & reference.keys() if sum(canary[k].values()) > 0)


def input_drift(
    check: Check,
    target: AnalysisTarget,
    current: Snapshot,
    lookback_seconds: float,
    previous: Snapshot | None = None,
) -> CheckReading:
    since = current.taken_at.timestamp() - lookback_seconds
    metric, statistic = (
        (names.FEATURE_KS, "KS distance") if check.type == "inputDriftKS" else (names.FEATURE_PSI, "PSI")
    )
    windows = [
        w for pod in current.canary.pods.values() if (w := _drift_window(pod, since, metric)) is not None
    ]
    failures = _failures(current.canary, "canary")
    if not windows:
        why = (
            f"no canary drift window closed in the last {lookback_seconds:.0f}s "
            f"({len(current.canary.pods)} pods scraped){failures}"
        )
        return no_data(check, current.taken_at, why)
    value = max(psi for psi, _ in windows)
    rows = min(r for _, r in windows)
    detail = (
        f"canary max feature {statistic} {value:.3f} over {len(windows)} drift window(s) of at least "
        f"{rows} rows closed in the last {lookback_seconds:.0f}s{failures}"
    )
    if check.type != "inputDriftKS":
        pairs = profile_pairs(previous, current)
        return CheckReading(check.name, value, rows, current.taken_at, detail, histograms=pairs)
    comparisons = tuple(c for pod in current.canary.pods.values() for c in _ks_against_profile(pod, since))
    return CheckReading(check.name, value, rows, current.taken_at, detail, ks=comparisons)


FeatureBins = dict[tuple[str, str], dict[str, float]]
"""(feature, layout) -> bin name -> rows."""


def feature_bins(increase: GroupIncrease) -> FeatureBins:
    out: FeatureBins = {}
    for (feature, layout, bin_name), n in increase.by_labels(
        names.FEATURE_BIN_ROWS, ("feature", "layout", "bin")
    ).items():
        out.setdefault((feature, layout), {})[bin_name] = n
    return out


def bins_distance(kind: str, stable: dict[str, float], canary: dict[str, float]) -> float:
    """PSI over every bin (missing included, as the servers' PSI), or the binned two-sample KS
    distance over the present values' bins (missing excluded, as the servers' KS)."""
    inner = _bin_indices(stable, canary)
    span = range(inner[-1] + 1) if inner else range(0)
    if kind == "inputDriftKS":
        p = [stable.get(str(i), 0.0) for i in span]
        q = [canary.get(str(i), 0.0) for i in span]
        bounds = [*range(len(p) - 1), math.inf] if p else []
        cumulative_p = [(b, sum(p[: i + 1])) for i, b in enumerate(bounds)]
        cumulative_q = [(b, sum(q[: i + 1])) for i, b in enumerate(bounds)]
        return histogram_ks(cumulative_p, cumulative_q)[0] if p else math.nan
    return psi(*psi_counts(stable, canary))


MAX_BIN_INDEX = 1023
"""The largest bin index taken: `modeldeploy pack`'s layouts end at 21 (underflow 0, at most 20 inner
bins, overflow), and a larger one is left out, far above: an index of 10**9 in a malformed answer
would otherwise make a histogram of a billion bins."""


def _bin_indices(*sides: dict[str, float]) -> list[int]:
    """The inner bin indices either side has, ascending (`missing` and names that are not a bin index
    left out; isdigit() alone takes "²", which int() refuses)."""
    names = {b for side in sides for b in side}
    return sorted(int(b) for b in names if b.isascii() and b.isdigit() and int(b) <= MAX_BIN_INDEX)


def psi_counts(stable: dict[str, float], canary: dict[str, float]) -> HistogramPair:
    """The (stable, canary) rows per bin the PSI of a feature is computed over: every bin index up to
    the largest either side has, and the missing bin."""
    inner = _bin_indices(stable, canary)
    keys = [str(i) for i in range(inner[-1] + 1 if inner else 0)] + ["missing"]
    return tuple(stable.get(k, 0.0) for k in keys), tuple(canary.get(k, 0.0) for k in keys)


def input_drift_against_stable(
    check: Check, target: AnalysisTarget, previous: Snapshot, current: Snapshot
) -> CheckReading:
    """inputDrift / inputDriftKS with `reference: stable`: per feature, the canary's binned inputs of
    the drift windows closed between the scrapes against the stable's over the same interval; the
    value is the largest over the features both sides have in the same bin layout."""
    at = current.taken_at
    if target.stable_revision is None:
        return no_data(check, at, "no stable revision to compare the canary's inputs with")
    canary = feature_bins(group_increase(previous.canary, current.canary))
    stable = feature_bins(group_increase(previous.stable, current.stable))
    shared = sorted(
        k for k in canary.keys() & stable.keys() if sum(canary[k].values()) and sum(stable[k].values())
    )
    failures = f"{_failures(current.canary, 'canary')}{_failures(current.stable, 'stable')}"
    where = f"in {_seconds(previous, current)}{failures}"
    if not shared:
        other = {f for f, _ in canary} & {f for f, _ in stable}
        why = "bin layouts differ (bundles profiled on other data)" if other else "no closed drift windows"
        return no_data(check, at, f"no feature to compare with the stable: {why} {where}")
    statistic = "KS distance" if check.type == "inputDriftKS" else "PSI"
    values = {k: bins_distance(check.type, stable[k], canary[k]) for k in shared}
    finite = {k: v for k, v in values.items() if is_number(v)}
    if not finite:
        return no_data(check, at, f"no comparable feature bins {where}")
    worst = max(finite, key=lambda k: finite[k])
    samples = round(min(min(sum(canary[k].values()), sum(stable[k].values())) for k in finite))
    detail = (
        f"canary inputs against the stable's: max feature {statistic} {finite[worst]:.3f} "
        f"({worst[0]}) over {len(finite)} feature(s), at least {samples} rows a side {where}"
    )
    if check.type != "inputDriftKS":
        pairs = tuple(psi_counts(stable[k], canary[k]) for k in sorted(finite))
        return CheckReading(check.name, finite[worst], samples, at, detail, histograms=pairs)
    comparisons = tuple(
        KsComparison(finite[k], present_rows(canary[k]), present_rows(stable[k])) for k in sorted(finite)
    )
    return CheckReading(check.name, finite[worst], samples, at, detail, ks=comparisons)


def present_rows(bins: dict[str, float]) -> int:
    """Rows with a present value (the KS distance leaves the missing bin out)."""
    return round(sum(n for name, n in bins.items() if name != "missing"))


def _score_buckets(increase: GroupIncrease) -> tuple[list[tuple[float, float]], float]:
    by_le = increase.by_label(names.bucket(names.PREDICTION_SCORE), "le")
    return buckets_from_le(by_le), increase.total(names.count(names.PREDICTION_SCORE))


def prediction_shift(
    check: Check, target: AnalysisTarget, previous: Snapshot, current: Snapshot
) -> CheckReading:
    if target.stable_revision is None:
        return no_data(check, current.taken_at, "no stable revision to compare the canary's scores with")
    canary, canary_n = _score_buckets(group_increase(previous.canary, current.canary))
    stable, stable_n = _score_buckets(group_increase(previous.stable, current.stable))
    samples = round(min(canary_n, stable_n))
    where = (
        f"in {_seconds(previous, current)}{_failures(current.canary, 'canary')}"
        f"{_failures(current.stable, 'stable')}"
    )
    counts = f"canary {canary_n:.0f} vs stable {stable_n:.0f} scores"
    if samples <= 0:
        return no_data(check, current.taken_at, f"no prediction scores to compare ({counts}) {where}")
    if check.type == "predictionShiftKS":
        value, bound = histogram_ks(stable, canary)
        statistic = (
            f"binned KS distance of canary scores against stable scores {value:.3f} (raw-sample "
            f"distance at most {min(value + bound, 1.0):.3f}; p={ks_p_value(value, canary_n, stable_n):.3g})"
        )
    else:
        value = histogram_psi(stable, canary)
        statistic = f"PSI of canary scores against stable scores {value:.3f}"
    if math.isnan(value):
        return no_data(check, current.taken_at, f"score histograms not comparable ({counts}) {where}")
    detail = f"{statistic} ({counts}) {where}"
    histograms = ((tuple(bucket_counts(stable)), tuple(bucket_counts(canary))),)
    ks = (
        (KsComparison(value, round(canary_n), round(stable_n)),)
        if check.type == "predictionShiftKS"
        else None
    )
    return CheckReading(check.name, value, samples, current.taken_at, detail, histograms, ks=ks)


def shadow_agreement(
    check: Check, target: AnalysisTarget, previous: Snapshot, current: Snapshot
) -> CheckReading:
    """Label agreement (shadowAgreement) or mean absolute score difference (shadowScoreDifference)
    of the rows the router compared between the canary's copies and the primary's answers."""
    routers = group_increase(previous.router, current.router)
    arm = labels_are(variant=target.variant, revision=target.canary_revision)
    by_result = routers.by_label(names.SHADOW_LABEL_AGREEMENT, "result", arm)
    agree, disagree = by_result.get("agree", 0.0), by_result.get("disagree", 0.0)
    compared = routers.total(names.count(names.SHADOW_SCORE_DIFFERENCE), arm)
    difference = routers.total(f"{names.SHADOW_SCORE_DIFFERENCE}_sum", arm)
    failures = _failures(current.router, "router")
    where = f"in {_seconds(previous, current)}, routers: {routers.describe()}{failures}"
    if check.type == "shadowScoreDifference":
        if compared <= 0:
            return no_data(check, current.taken_at, f"no scores of copies compared {where}")
        value = difference / compared
        detail = f"mean |score difference| {value:.4f} over {compared:.0f} rows of copies {where}"
        by_le = routers.by_label(names.bucket(names.SHADOW_SCORE_DIFFERENCE), "le", arm)
        buckets = tuple(buckets_from_le(by_le)) or None
        return CheckReading(check.name, value, round(compared), current.taken_at, detail, buckets=buckets)
    rows = agree + disagree
    if rows <= 0:
        return no_data(check, current.taken_at, f"no labels of copies compared {where}")
    detail = f"labels agree on {agree:.0f} of {rows:.0f} rows of copies {where}"
    return CheckReading(check.name, agree / rows, round(rows), current.taken_at, detail)


def readings(
    checks: list[Check],
    target: AnalysisTarget,
    previous: Snapshot | None,
    current: Snapshot,
    window_seconds: float,
) -> list[CheckReading]:
    """One reading per check from the previous and the current scrape of the target's pods."""
    out = []
    for check in checks:
        out.append(_reading(check, target, previous, current, window_seconds))
    return out


def _reading(
    check: Check, target: AnalysisTarget, previous: Snapshot | None, current: Snapshot, window_seconds: float
) -> CheckReading:
    at = current.taken_at
    if check.type not in BUILTIN_TYPES:
        return no_data(check, at, f"{check.type} checks are not measured by the built-in scrape")
    # Router-answered errors and copy comparisons of the canary arm count even when no canary pod
    # answers a scrape.
    router_only = check.type in ROUTER_MEASURED and current.router.pods
    if not current.canary.pods and not router_only:
        return no_data(check, at, f"no canary pod could be scraped{_failures(current.canary, 'canary')}")
    drift = check.type in ("inputDrift", "inputDriftKS")
    if drift and check.reference == "profile":  # gauges of the last closed window: no baseline
        return input_drift(check, target, current, target.drift_lookback_seconds(window_seconds), previous)
    if previous is None:
        return no_data(check, at, "first scrape of this canary: counters are measured from the next reading")
    if drift:  # reference: stable
        return input_drift_against_stable(check, target, previous, current)
    compute: dict[str, Callable[[], CheckReading]] = {
        "errorRate": lambda: error_rate(check, target, previous, current),
        "latencyP99": lambda: latency_p99(check, previous, current),
        "predictionShift": lambda: prediction_shift(check, target, previous, current),
        "predictionShiftKS": lambda: prediction_shift(check, target, previous, current),
        "shadowAgreement": lambda: shadow_agreement(check, target, previous, current),
        "shadowScoreDifference": lambda: shadow_agreement(check, target, previous, current),
    }
    return compute[check.type]()
