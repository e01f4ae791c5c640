"""Quality of a classifier from labels, and A/B verdicts between two arms: pure statistics.

One implementation for every side: `modeldeploy preflight` (golden-set quality), the label joiner
(live effectiveness per variant and revision) and, later, the operator's `effectiveness` check. Plain
Python on purpose (standard library only): the operator imports this module and its image carries
no numpy or scipy. Every function is O(n log n) at most; 100,000 labelled rows take well under a
second.

Conventions: `labels` are 0/1 for binary metrics, `scores` are P(label = 1). Metrics that are not
defined for the data (AUC with one class only, anything on no rows) are None, never NaN, so JSON and
pydantic carry them unchanged.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from statistics import NormalDist
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

LOG_LOSS_EPSILON = 1e-15
"""Probabilities are clipped to [eps, 1 - eps] before the logarithm (as scikit-learn does)."""
ECE_BINS = 10
_NORMAL = NormalDist()

Metric = Literal["auc", "accuracy", "log_loss", "brier"]
HIGHER_IS_BETTER: dict[str, bool] = {"auc": True, "accuracy": True, "log_loss": False, "brier": False}
Verdict = Literal["TreatmentBetter", "ControlBetter", "Inconclusive"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# -- single-arm metrics --------------------------------------------------------------------------


def auc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U / (n1 n0), ties counted one half); None without both
    classes."""
    placements = _placements(scores, labels)
    if placements is None:
        return None
    v10, _ = placements
    return math.fsum(v10) / len(v10)


def _placements(scores: Sequence[float], labels: Sequence[int]) -> tuple[list[float], list[float]] | None:
    """DeLong's structural components: for each positive, the share of negatives it outranks (ties
    one half); for each negative, the share of positives that outrank it."""
    positives = sorted(s for s, y in zip(scores, labels, strict=True) if y == 1)
    negatives = sorted(s for s, y in zip(scores, labels, strict=True) if y != 1)
    m, n = len(positives), len(negatives)
    if m == 0 or n == 0:
        return None
    v10 = []
    for x in positives:
        lo, hi = bisect_left(negatives, x), bisect_right(negatives, x)
        v10.append((lo + 0.5 * (hi - lo)) / n)
    v01 = []
    for y in negatives:
        lo, hi = bisect_left(positives, y), bisect_right(positives, y)
        v01.append((m - hi + 0.5 * (hi - lo)) / m)
    return v10, v01


def auc_variance(scores: Sequence[float], labels: Sequence[int]) -> tuple[float, float] | None:
    """(AUC, its DeLong variance S10/m + S01/n); None without both classes or with a single row of
    either class (no variance estimate)."""
    placements = _placements(scores, labels)
    if placements is None:
        return None
    v10, v01 = placements
    if len(v10) < 2 or len(v01) < 2:
        return None
    value = math.fsum(v10) / len(v10)
    return value, _var(v10) / len(v10) + _var(v01) / len(v01)


def accuracy(predicted: Sequence[int], labels: Sequence[int]) -> float | None:
    if not labels:
        return None
    return sum(1 for p, y in zip(predicted, labels, strict=True) if p == y) / len(labels)


def row_log_losses(scores: Sequence[float], labels: Sequence[int]) -> list[float]:
    """-log P(true label) per row of a binary classifier (scores clipped, see LOG_LOSS_EPSILON)."""
    out = []
    for s, y in zip(scores, labels, strict=True):
        p = min(max(s, LOG_LOSS_EPSILON), 1.0 - LOG_LOSS_EPSILON)
        out.append(-math.log(p if y == 1 else 1.0 - p))
    return out


def log_loss(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    if not labels:
        return None
    return math.fsum(row_log_losses(scores, labels)) / len(labels)


def true_class_log_loss(true_class_probabilities: Sequence[float]) -> float | None:
    """Multi-class log loss from each row's probability of its true class."""
    if not true_class_probabilities:
        return None
    clipped = (min(max(p, LOG_LOSS_EPSILON), 1.0) for p in true_class_probabilities)
    return -math.fsum(math.log(p) for p in clipped) / len(true_class_probabilities)


def row_brier(scores: Sequence[float], labels: Sequence[int]) -> list[float]:
    return [(s - y) ** 2 for s, y in zip(scores, labels, strict=True)]


def brier(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    if not labels:
        return None
    return math.fsum(row_brier(scores, labels)) / len(labels)


def expected_calibration_error(
    scores: Sequence[float], labels: Sequence[int], bins: int = ECE_BINS
) -> float | None:
    """ECE over `bins` equal-width bins of the score: sum over bins of (rows in bin / rows) times
    |observed positive rate - mean score| in that bin (a score of 1.0 falls in the last bin)."""
    if not labels:
        return None
    count = [0] * bins
    score_sum = [0.0] * bins
    label_sum = [0] * bins
    for s, y in zip(scores, labels, strict=True):
        b = min(max(int(s * bins), 0), bins - 1)
        count[b] += 1
        score_sum[b] += s
        label_sum[b] += 1 if y == 1 else 0
    total = len(labels)
    return math.fsum(abs(label_sum[b] - score_sum[b]) / total for b in range(bins) if count[b])


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion; (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(
    successes_a: int, n_a: int, successes_b: int, n_b: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Newcombe's hybrid score interval (his method 10) of p_b - p_a from two Wilson intervals."""
    pa, pb = successes_a / n_a, successes_b / n_b
    la, ua = wilson_interval(successes_a, n_a, confidence)
    lb, ub = wilson_interval(successes_b, n_b, confidence)
    d = pb - pa
    return d - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2), d + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2)


class ArmQuality(_Frozen):
    """Quality of one arm (a variant/revision over a window) from its labelled predictions."""

    predictions: int = Field(ge=0)
    """Predictions made in the window (labelled or not)."""
    labelled: int = Field(ge=0)
    positives: int | None
    """Labels of class 1 (binary classifiers only)."""
    coverage: float | None
    """labelled / predictions."""
    accuracy: float | None
    auc: float | None
    log_loss: float | None
    brier: float | None
    ece: float | None


def arm_quality(
    scores: Sequence[float], predicted: Sequence[int], labels: Sequence[int], predictions: int | None = None
) -> ArmQuality:
    """Every single-arm metric of binary predictions (`predicted` is the served label)."""
    total = len(labels) if predictions is None else predictions
    return ArmQuality(
        predictions=total,
        labelled=len(labels),
        positives=sum(1 for y in labels if y == 1),
        coverage=len(labels) / total if total else None,
        accuracy=accuracy(predicted, labels),
        auc=auc(scores, labels),
        log_loss=log_loss(scores, labels),
        brier=brier(scores, labels),
        ece=expected_calibration_error(scores, labels),
    )


# -- two arms ------------------------------------------------------------------------------------


class Arm(_Frozen):
    """The labelled rows of one arm, as the A/B comparison takes them."""

    name: str
    scores: list[float]
    predicted: list[int]
    labels: list[int]


class ABSettings(_Frozen):
    """How an A/B comparison decides; the defaults are a two-sided 95% interval."""

    metric: Metric = "auc"
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    min_labels_per_arm: int = Field(default=200, ge=2)
    """Below this many labels in either arm the verdict stays Inconclusive, whatever the interval."""
    effect: float = Field(default=0.01, gt=0)
    """Smallest difference worth detecting (metric units), for the samples-needed calculation."""
    power: float = Field(default=0.8, gt=0.5, lt=1.0)
    non_inferiority_margin: float | None = Field(default=None, ge=0)
    """With a margin: `non_inferior` says whether the treatment is surely not worse than control by
    more than the margin (the interval's worse end is within it)."""


class ABVerdict(_Frozen):
    metric: Metric
    control: str
    treatment: str
    control_value: float | None
    treatment_value: float | None
    difference: float | None
    """treatment - control, in the metric's units (for log loss and Brier lower is better)."""
    lower: float | None
    upper: float | None
    confidence: float
    method: str
    labelled_control: int
    labelled_treatment: int
    samples_needed_per_arm: int | None
    """Labels per arm for `power` to detect `effect` at this confidence (None when unknown yet)."""
    labels_still_needed: int | None
    """max(0, samples_needed_per_arm - the smaller arm's labels), at least what min_labels_per_arm asks."""
    verdict: Verdict
    non_inferior: bool | None
    reason: str


def compare_arms(control: Arm, treatment: Arm, settings: ABSettings | None = None) -> ABVerdict:
    """Difference treatment - control with an interval, and a verdict.

    - auc: DeLong's variance per arm; the arms are independent, so var(diff) = var_c + var_t.
    - accuracy: Newcombe's hybrid score interval from Wilson intervals.
    - log_loss, brier: difference of means of per-row losses with a normal (Welch) interval.

    TreatmentBetter/ControlBetter only when both arms have min_labels_per_arm labels and the
    interval excludes 0; otherwise Inconclusive. The interval is for one look: checking a running
    experiment again and again and stopping at the first decisive answer raises the false-positive
    rate above 1 - confidence (see docs/effectiveness.md).
    """
    s = settings or ABSettings()
    nc, nt = len(control.labels), len(treatment.labels)
    if s.metric == "auc":  # placements once per arm: the value, its variance and the power all use them
        vc, vt = (
            auc_variance(control.scores, control.labels),
            auc_variance(treatment.scores, treatment.labels),
        )
        value_c = vc[0] if vc is not None else auc(control.scores, control.labels)
        value_t = vt[0] if vt is not None else auc(treatment.scores, treatment.labels)
        interval = _auc_interval(vc, vt, s.confidence)
    else:
        value_c = _metric_value(s.metric, control)
        value_t = _metric_value(s.metric, treatment)
        interval = _difference_interval(s.metric, control, treatment, s.confidence)
    needed = samples_needed(s.metric, control, s.effect, s.confidence, s.power, control_value=value_c)
    still = None
    if needed is not None:
        still = max(0, max(needed, s.min_labels_per_arm) - min(nc, nt))
    elif min(nc, nt) < s.min_labels_per_arm:
        still = s.min_labels_per_arm - min(nc, nt)
    difference = None if value_c is None or value_t is None else value_t - value_c
    lower, upper, method = interval if interval is not None else (None, None, _METHOD[s.metric])
    higher_better = HIGHER_IS_BETTER[s.metric]
    verdict: Verdict = "Inconclusive"
    if min(nc, nt) < s.min_labels_per_arm:
        reason = f"{min(nc, nt)} labels in the smaller arm, {s.min_labels_per_arm} needed"
    elif lower is None or upper is None:
        reason = f"{s.metric} is not defined for these labels (one class only?)"
    elif lower > 0 or upper < 0:
        treatment_up = lower > 0
        verdict = "TreatmentBetter" if treatment_up == higher_better else "ControlBetter"
        reason = f"the {s.confidence:.0%} interval of {s.metric} difference excludes 0"
    else:
        reason = f"the {s.confidence:.0%} interval of {s.metric} difference contains 0"
    non_inferior = None
    if s.non_inferiority_margin is not None and lower is not None and upper is not None:
        margin = s.non_inferiority_margin
        non_inferior = (lower > -margin if higher_better else upper < margin) and min(
            nc, nt
        ) >= s.min_labels_per_arm
    return ABVerdict(
        metric=s.metric,
        control=control.name,
        treatment=treatment.name,
        control_value=value_c,
        treatment_value=value_t,
        difference=difference,
        lower=lower,
        upper=upper,
        confidence=s.confidence,
        method=method,
        labelled_control=nc,
        labelled_treatment=nt,
        samples_needed_per_arm=needed,
        labels_still_needed=still,
        verdict=verdict,
        non_inferior=non_inferior,
        reason=reason,
    )


_METHOD = {
    "auc": "DeLong (independent arms)",
    "accuracy": "Newcombe hybrid score (Wilson)",
    "log_loss": "difference of means, normal (Welch)",
    "brier": "difference of means, normal (Welch)",
}


def _metric_value(metric: Metric, arm: Arm) -> float | None:
    if metric == "auc":
        return auc(arm.scores, arm.labels)
    if metric == "accuracy":
        return accuracy(arm.predicted, arm.labels)
    if metric == "log_loss":
        return log_loss(arm.scores, arm.labels)
    return brier(arm.scores, arm.labels)


def _auc_interval(
    c: tuple[float, float] | None, t: tuple[float, float] | None, confidence: float
) -> tuple[float, float, str] | None:
    if c is None or t is None:
        return None
    z = _z(confidence)
    d, se = t[0] - c[0], math.sqrt(c[1] + t[1])
    return d - z * se, d + z * se, _METHOD["auc"]


def _difference_interval(
    metric: Metric, control: Arm, treatment: Arm, confidence: float
) -> tuple[float, float, str] | None:
    z = _z(confidence)
    if metric == "auc":
        c = auc_variance(control.scores, control.labels)
        t = auc_variance(treatment.scores, treatment.labels)
        return _auc_interval(c, t, confidence)
    if metric == "accuracy":
        nc, nt = len(control.labels), len(treatment.labels)
        if nc == 0 or nt == 0:
            return None
        hits_c = sum(1 for p, y in zip(control.predicted, control.labels, strict=True) if p == y)
        hits_t = sum(1 for p, y in zip(treatment.predicted, treatment.labels, strict=True) if p == y)
        lo, hi = newcombe_interval(hits_c, nc, hits_t, nt, confidence)
        return lo, hi, _METHOD[metric]
    per_row = row_log_losses if metric == "log_loss" else row_brier
    rc, rt = per_row(control.scores, control.labels), per_row(treatment.scores, treatment.labels)
    if len(rc) < 2 or len(rt) < 2:
        return None
    d = math.fsum(rt) / len(rt) - math.fsum(rc) / len(rc)
    se = math.sqrt(_var(rc) / len(rc) + _var(rt) / len(rt))
    return d - z * se, d + z * se, _METHOD[metric]


def samples_needed(
    metric: Metric,
    control: Arm,
    effect: float,
    confidence: float = 0.95,
    power: float = 0.8,
    control_value: float | None = None,
) -> int | None:
    """Labels per arm for a two-sided test at `confidence` to detect a difference of `effect` with
    probability `power`, from the control arm's current values:

    - auc: Hanley & McNeil's variance of an AUC at the control's AUC A and positive share pi,
      per labelled row c = (Q1 - A^2)/(1 - pi) + (Q2 - A^2)/pi with Q1 = A/(2-A), Q2 = 2A^2/(1+A);
      n = 2 c (z_a + z_b)^2 / effect^2.
    - accuracy: the two-proportion formula at p and p + effect (moved toward 0.5 when at the edge).
    - log_loss, brier: n = 2 var (z_a + z_b)^2 / effect^2 with the control's per-row variance.

    None when the control arm has too few labels to estimate what is needed (under 2, or one class).
    `control_value`, when given, is the control's AUC already computed (saves a sort).
    """
    z_sum = _z(confidence) + _NORMAL.inv_cdf(power)
    labels = control.labels
    n = len(labels)
    if n < 2:
        return None
    if metric == "auc":
        a = control_value if control_value is not None else auc(control.scores, labels)
        positives = sum(1 for y in labels if y == 1)
        if a is None:
            return None
        pi = positives / n
        q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
        c = (q1 - a * a) / (1 - pi) + (q2 - a * a) / pi
        return max(2, math.ceil(2 * max(c, 1e-12) * z_sum**2 / effect**2))
    if metric == "accuracy":
        p1 = accuracy(control.predicted, labels)
        assert p1 is not None
        p2 = p1 + effect if p1 + effect <= 1 else p1 - effect
        p2 = min(max(p2, 0.0), 1.0)
        pbar = (p1 + p2) / 2
        za = _z(confidence)
        zb = _NORMAL.inv_cdf(power)
        numerator = (
            za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
        ) ** 2
        return max(2, math.ceil(numerator / effect**2))
    per_row = row_log_losses if metric == "log_loss" else row_brier
    variance = _var(per_row(control.scores, labels))
    return max(2, math.ceil(2 * variance * z_sum**2 / effect**2))


def _z(confidence: float) -> float:
    return _NORMAL.inv_cdf(0.5 + confidence / 2)


def _var(values: Sequence[float]) -> float:
    """Sample variance (n - 1 in the denominator)."""
    n = len(values)
    mean = math.fsum(values) / n
    return math.fsum((v - mean) ** 2 for v in values) / (n - 1)


# -- the joiner's summary (GET /v1/effectiveness), as the kubectl plugin reads it -----------------


class ArmWindow(_Frozen):
    """One (variant, revision, model version) over one window."""

    variant: str
    revision: str
    model_version: str
    quality: ArmQuality


class VariantWindow(_Frozen):
    """One variant (all its revisions) over one window: what an A/B compares."""

    variant: str
    quality: ArmQuality


class DeploymentWindow(_Frozen):
    window_seconds: float
    """Predictions made in the last window_seconds that have a label by now."""
    arms: list[ArmWindow]
    variants: list[VariantWindow]
    ab: list[ABVerdict]
    """Each other variant against the control variant (empty with a single variant)."""


class DeploymentSummary(_Frozen):
    deployment: str
    control_variant: str | None
    windows: list[DeploymentWindow]


class EffectivenessSummary(_Frozen):
    generated_at: float
    """Unix time of the computation (the joiner's clock)."""
    retention_seconds: float
    deployments: list[DeploymentSummary]


def quality_of(
    scores: Sequence[float], predicted: Sequence[int], labels: Sequence[int], predictions: int, binary: bool
) -> ArmQuality:
    """arm_quality for binary classifiers; for multi-class ones only counts and accuracy (the score is
    the predicted class's probability, so AUC, log loss, Brier and ECE are not defined from it)."""
    if binary:
        return arm_quality(scores, predicted, labels, predictions)
    return ArmQuality(
        predictions=predictions,
        labelled=len(labels),
        positives=None,
        coverage=len(labels) / predictions if predictions else None,
        accuracy=accuracy(predicted, labels),
        auc=None,
        log_loss=None,
        brier=None,
        ece=None,
    )
