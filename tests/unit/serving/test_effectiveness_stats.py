"""The effectiveness statistics (modeldeploy_contract.effectiveness): worked examples, cross-checks with
scikit-learn, and seeded A/B simulations whose true difference is known in closed form."""

from __future__ import annotations

import math
import random
from statistics import NormalDist

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from modeldeploy_contract import effectiveness as fx
from modeldeploy_contract.joiner_settings import JoinerSettings
from modeldeploy_serving.joiner.stats import control_of, summarize
from modeldeploy_serving.joiner.store import ArmKey, LabelledRow

# The worked example of docs/effectiveness.md.
SCORES = [0.1, 0.4, 0.35, 0.8]
LABELS = [0, 0, 1, 1]


def test_worked_example() -> None:
    assert fx.auc(SCORES, LABELS) == pytest.approx(0.75)  # 3 of 4 (positive, negative) pairs ordered
    assert fx.log_loss(SCORES, LABELS) == pytest.approx(
        -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    )
    assert fx.brier(SCORES, LABELS) == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    assert fx.expected_calibration_error(SCORES, LABELS) == pytest.approx((0.1 + 0.4 + 0.65 + 0.2) / 4)
    assert fx.accuracy([int(s >= 0.5) for s in SCORES], LABELS) == pytest.approx(0.75)
    # DeLong: positives place at 0.5 and 1.0 among negatives, negatives at 1.0 and 0.5 below positives:
    # S10 = S01 = 0.125, var = 0.125/2 + 0.125/2.
    result = fx.auc_variance(SCORES, LABELS)
    assert result is not None
    assert result == pytest.approx((0.75, 0.125))


@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [
        ([0.2, 0.2, 0.2, 0.2], [0, 1, 0, 1], 0.5),  # all ties: one half
        ([0.9, 0.8, 0.1], [1, 1, 0], 1.0),
        ([0.1, 0.8, 0.9], [1, 0, 0], 0.0),
        ([0.3, 0.6], [1, 1], None),  # one class: undefined, not NaN
        ([], [], None),
    ],
)
def test_auc_table(scores: list[float], labels: list[int], expected: float | None) -> None:
    assert fx.auc(scores, labels) == (pytest.approx(expected) if expected is not None else None)


def test_empty_inputs_are_none_and_ece_bins_edges() -> None:
    assert fx.accuracy([], []) is None
    assert fx.log_loss([], []) is None
    assert fx.brier([], []) is None
    assert fx.expected_calibration_error([], []) is None
    assert fx.expected_calibration_error([1.0, 0.0], [1, 0]) == 0.0  # 1.0 falls in the last bin
    assert fx.log_loss([1.0], [0]) == pytest.approx(-math.log(fx.LOG_LOSS_EPSILON), rel=1e-4)  # clipped


def test_agrees_with_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(2000) < 0.3).astype(int)
    s = np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0, 1).round(2)  # rounded: many ties
    scores, labels = s.tolist(), y.tolist()
    assert fx.auc(scores, labels) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert fx.log_loss(scores, labels) == pytest.approx(log_loss(y, np.clip(s, 1e-15, 1 - 1e-15)), rel=1e-9)
    assert fx.brier(scores, labels) == pytest.approx(brier_score_loss(y, s), abs=1e-12)


@pytest.mark.parametrize(
    ("successes", "n", "lower", "upper"),
    [(8, 10, 0.4902, 0.9433), (0, 10, 0.0, 0.2775), (50, 100, 0.4038, 0.5962)],  # textbook Wilson values
)
def test_wilson_table(successes: int, n: int, lower: float, upper: float) -> None:
    lo, hi = fx.wilson_interval(successes, n)
    assert (lo, hi) == pytest.approx((lower, upper), abs=1e-4)


def test_newcombe_interval_of_the_classic_example() -> None:
    # Newcombe (1998), example (a): 56/70 - 48/80 = 0.175, hybrid score interval 0.0524 to 0.3339.
    lo, hi = fx.newcombe_interval(48, 80, 56, 70)
    assert (lo, hi) == pytest.approx((0.0524, 0.3339), abs=1e-4)


def _arm(name: str, scores: list[float], labels: list[int]) -> fx.Arm:
    return fx.Arm(name=name, scores=scores, predicted=[int(s >= 0.5) for s in scores], labels=labels)


def test_samples_needed_worked_examples() -> None:
    # Two proportions 0.5 vs 0.6, 95% two-sided, 80% power: 387.3 -> 388 per arm.
    control = fx.Arm(name="a", scores=[0.5] * 10, predicted=[1] * 5 + [0] * 5, labels=[1] * 10)
    assert fx.samples_needed("accuracy", control, 0.1) == 388
    # AUC 0.8 with half positives (Hanley & McNeil): c = 0.19556, n = 2 c (1.95996 + 0.84162)^2 / 0.05^2.
    negatives, positives = [0.1, 0.2, 0.3, 0.4, 0.5], [0.15, 0.45, 0.6, 0.7, 0.8]
    arm = _arm("a", negatives + positives, [0] * 5 + [1] * 5)
    assert fx.auc(arm.scores, arm.labels) == pytest.approx(0.8)
    assert fx.samples_needed("auc", arm, 0.05) == 1228
    assert fx.samples_needed("auc", _arm("a", [0.5], [1]), 0.05) is None


def _simulate(rng: random.Random, n: int, separation: float, name: str) -> fx.Arm:
    """Binormal scores: negatives N(0, 1), positives N(separation, 1), squashed into (0, 1); 30%
    positives. The true AUC is Phi(separation / sqrt 2)."""
    labels = [int(rng.random() < 0.3) for _ in range(n)]
    scores = [1 / (1 + math.exp(-(rng.gauss(0, 1) + separation * y - 1))) for y in labels]
    return _arm(name, scores, labels)


def true_auc(separation: float) -> float:
    return NormalDist().cdf(separation / math.sqrt(2))


def test_ab_with_a_real_difference_is_called_with_the_right_sign_and_a_covering_interval() -> None:
    rng = random.Random(20261202)
    control, treatment = _simulate(rng, 3000, 1.0, "a"), _simulate(rng, 3000, 1.3, "b")
    truth = true_auc(1.3) - true_auc(1.0)  # 0.0608
    verdict = fx.compare_arms(control, treatment, fx.ABSettings(min_labels_per_arm=2000, effect=0.06))
    assert verdict.verdict == "TreatmentBetter", verdict.reason
    assert verdict.lower is not None
    assert verdict.upper is not None
    assert 0 < verdict.lower < truth < verdict.upper
    assert verdict.method.startswith("DeLong")
    assert verdict.labels_still_needed == 0
    # The same arms swapped: the other sign.
    assert (
        fx.compare_arms(treatment, control, fx.ABSettings(min_labels_per_arm=2000)).verdict == "ControlBetter"
    )
    # Accuracy and log loss agree on the direction (log loss: lower is better).
    assert fx.compare_arms(control, treatment, fx.ABSettings(metric="log_loss")).verdict == "TreatmentBetter"


def test_ab_without_a_difference_stays_inconclusive() -> None:
    rng = random.Random(7)
    control, treatment = _simulate(rng, 3000, 1.0, "a"), _simulate(rng, 3000, 1.0, "b")
    verdict = fx.compare_arms(control, treatment, fx.ABSettings(min_labels_per_arm=2000))
    assert verdict.verdict == "Inconclusive"
    assert verdict.lower is not None
    assert verdict.upper is not None
    assert verdict.lower < 0 < verdict.upper
    # Non-inferiority within 0.05 AUC holds; within 0.001 it cannot be shown.
    assert (
        fx.compare_arms(control, treatment, fx.ABSettings(non_inferiority_margin=0.05)).non_inferior is True
    )
    assert (
        fx.compare_arms(control, treatment, fx.ABSettings(non_inferiority_margin=0.001)).non_inferior is False
    )


def test_too_few_labels_is_inconclusive_whatever_the_difference() -> None:
    rng = random.Random(11)
    control, treatment = _simulate(rng, 150, 0.2, "a"), _simulate(rng, 150, 2.5, "b")
    verdict = fx.compare_arms(control, treatment, fx.ABSettings(min_labels_per_arm=200))
    assert verdict.verdict == "Inconclusive"
    assert "labels in the smaller arm" in verdict.reason
    assert verdict.labels_still_needed is not None
    assert verdict.labels_still_needed >= 50


@pytest.mark.parametrize("metric", ["auc", "accuracy"])
def test_false_verdict_rate_without_a_difference_is_near_five_percent(metric: fx.Metric) -> None:
    """The documented error rate: with no true difference, a single look at a 95% interval calls a
    winner about 5% of the time (seeded: 300 experiments of 2 x 400 labels)."""
    rng = random.Random(42)
    settings = fx.ABSettings(metric=metric, min_labels_per_arm=100)
    calls = sum(
        fx.compare_arms(_simulate(rng, 400, 1.0, "a"), _simulate(rng, 400, 1.0, "b"), settings).verdict
        != "Inconclusive"
        for _ in range(300)
    )
    assert 3 <= calls <= 30, calls  # 5% of 300 is 15; binomial 99.9% range about 4..29


def test_summary_groups_arms_variants_windows_and_compares_variants() -> None:
    rng = random.Random(5)
    arms = {
        1: ArmKey("churn", "a", "r1", "v1"),
        2: ArmKey("churn", "b", "r7", "v2"),
        3: ArmKey("other", "default", "r1", "v1"),
    }
    now = 1_000_000.0
    rows = []
    for arm_id, separation in ((1, 1.0), (2, 1.6)):
        sim = _simulate(rng, 2500, separation, "x")
        for i, (s, p, y) in enumerate(zip(sim.scores, sim.predicted, sim.labels, strict=True)):
            rows.append(LabelledRow(arm_id, now - 10 * i, s, p, y, 2))
    counts = {3600.0: {1: 400, 2: 400, 3: 5}, 86400.0: {1: 5000, 2: 5000, 3: 5}}
    settings = JoinerSettings()
    summary = summarize(
        now=now,
        arms=arms,
        counts=counts,
        rows=rows,
        windows=[3600.0, 86400.0],
        retention_seconds=settings.retention_seconds,
        ab=fx.ABSettings(min_labels_per_arm=1000),
    )
    churn, other = summary.deployments
    assert (churn.deployment, churn.control_variant, other.control_variant) == ("churn", "a", None)
    hour, day = churn.windows
    assert [a.quality.labelled for a in hour.arms] == [361, 361]  # rows 10 s apart, both ends in
    assert hour.ab[0].verdict == "Inconclusive"
    assert day.arms[0].quality.coverage == pytest.approx(2500 / 5000)
    assert day.ab[0].verdict == "TreatmentBetter"
    assert (day.ab[0].control, day.ab[0].treatment) == ("a", "b")
    assert other.windows[0].arms[0].quality.labelled == 0
    assert control_of(["a", "b", "c"], None) is None
    assert control_of(["a", "b", "c"], "b") == "b"
