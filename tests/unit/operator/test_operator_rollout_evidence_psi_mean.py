"""Early Fail for shadowScoreDifference (Markov's inequality and an exact binomial test at each bucket
bound above the maximum) and for inputDrift against the stable's live inputs or the profile (the
predictionShift rule on every feature, Bonferroni over features): worked examples, table tests
against hand-computed values, and seeded simulations of the error rates (issue 12, "decisions as fast
as the evidence allows")."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest

from modeldeploy_contract.psi import psi
from modeldeploy_operator.domain.readings import CheckReading, HistogramPair
from modeldeploy_operator.domain.rollout.evaluation import evaluate
from modeldeploy_operator.domain.rollout.evidence import (
    ALPHA,
    binomial_sf,
    mean_clearly_above,
    shift_clearly_above,
)
from modeldeploy_operator.domain.spec import Analysis

from modeldeploy_builders import NOW

ANALYSIS = Analysis.model_validate(
    {
        "minSamples": 200,
        "checks": [
            {"name": "difference", "type": "shadowScoreDifference", "threshold": {"max": 0.05}},
            {"name": "drift", "type": "inputDrift", "threshold": {"max": 0.25}, "reference": "stable"},
            {"name": "profile", "type": "inputDrift", "threshold": {"max": 0.25}},
        ],
    }
)
DIFFERENCE, DRIFT, PROFILE = ANALYSIS.checks

BOUNDS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
"""The router's buckets of |primary score - copy score| (modeldeploy_serving.router.metrics)."""


def buckets(differences: Sequence[float]) -> tuple[tuple[float, float], ...]:
    """The cumulative (upper bound, count) buckets the router's histogram has for `differences`."""
    return (
        *((b, float(sum(d <= b for d in differences))) for b in BOUNDS),
        (math.inf, float(len(differences))),
    )


def mean(differences: Sequence[float]) -> float:
    return sum(differences) / len(differences)


# --- shadowScoreDifference ------------------------------------------------------------------------

ALL_FAR = [0.7] * 40  # a copy whose scores are far from the primary's on every row
# 9 of 20 rows above 0.5, where a mean of 0.05 allows at most 10 %: P(K >= 9 | 20, 0.1) = 6.0e-5
NINE_OF_20 = [0.7] * 9 + [0.0005] * 11
# 8 of 20: P = 4.2e-4, below ALPHA but not below ALPHA / 5 (five bounds above 0.05): chance, told apart
EIGHT_OF_20 = [0.7] * 8 + [0.0005] * 12


@pytest.mark.parametrize(
    ("differences", "value", "threshold", "expected"),
    [
        (ALL_FAR, 0.7, 0.05, (0.5, 40, 40)),  # P(K >= 40 | 40, 0.1) = 1e-40 at the highest bound
        (NINE_OF_20, mean(NINE_OF_20), 0.05, (0.5, 9, 20)),
        (EIGHT_OF_20, mean(EIGHT_OF_20), 0.05, None),  # Bonferroni over the 5 bounds matters
        ([0.7] * 4, 0.7, 0.05, (0.5, 4, 4)),  # 4 of 4: P = 1e-4 <= 2e-4
        ([0.7] * 3, 0.7, 0.05, None),  # 3 of 3: P = 1e-3, could be chance
        ([0.15] * 3 + [0.0] * 7, 0.045, 0.05, None),  # the mean is within the maximum: never early
        ([0.7] * 40, 0.7, 1.0, None),  # no finite bound above the maximum: nothing to test
        ([0.7] * 40, 0.7, 0.0, None),  # a maximum of 0 leaves Markov nothing to bound
        ([], 0.7, 0.05, None),
    ],
)
def test_mean_clearly_above(
    differences: list[float], value: float, threshold: float, expected: tuple[float, int, int] | None
) -> None:
    assert mean_clearly_above(buckets(differences), value, threshold) == expected


def test_the_worked_example_against_the_binomial_tail() -> None:
    assert binomial_sf(9, 20, 0.05 / 0.5) == pytest.approx(5.99e-5, rel=1e-3)
    assert ALPHA / 5 < binomial_sf(8, 20, 0.1) < ALPHA


def test_a_copy_within_the_maximum_rarely_fails_early_even_at_markovs_worst_case() -> None:
    """Markov's bound is tight for a two-point distribution: |difference| just above a bucket bound t
    with probability max / t, else 0 (mean exactly the maximum). The early rule fails such a copy at
    most about ALPHA per measurement (seeded); the plain rule at these row counts, far more often."""
    rng = random.Random(12)
    for bound in (0.1, 0.3, 0.5):
        high = bound * 1.000001
        for rows in (20, 60, 200):
            trials, early, plain = 1000, 0, 0
            for _ in range(trials):
                k = sum(rng.random() < 0.05 / high for _ in range(rows))
                value = k * high / rows
                found = (*((b, float(rows - k if b < high else rows)) for b in BOUNDS), (math.inf, rows))
                early += mean_clearly_above(found, value, 0.05) is not None
                plain += value > 0.05
            assert early <= max(3, 3 * ALPHA * trials), (bound, rows, early)
            assert early <= plain


def test_a_copy_far_from_the_primary_fails_early_at_thirty_rows() -> None:
    rng = random.Random(7)
    caught = 0
    for _ in range(200):
        differences = [rng.uniform(0.3, 0.9) for _ in range(30)]
        caught += mean_clearly_above(buckets(differences), mean(differences), 0.05) is not None
    assert caught >= 195


# --- inputDrift against the stable or the profile: every feature's pair of histograms ---------------

SAME = ((30, 40, 30, 0), (30, 40, 30, 0))  # bins 0..2 and missing
SHIFTED = ((60, 30, 10, 0), (5, 25, 70, 0))  # 100 rows a side, PSI 2.54, chi-square p = 1e-20
FEW_SHIFTED = ((3, 2, 1, 0), (0, 2, 4, 0))  # 6 rows a side: PSI 4.95, mostly from an empty bin


@pytest.mark.parametrize(
    ("pairs", "clear"),
    [
        ([SHIFTED], 0),
        ([SAME] * 13 + [SHIFTED], 13),  # one feature of 14, each at ALPHA / 14
        ([FEW_SHIFTED], None),  # 6 rows: chi-square p = 0.09: could be chance
        ([SAME], None),
        ([], None),
    ],
)
def test_shift_clearly_above_any_feature(pairs: list[HistogramPair], clear: int | None) -> None:
    value = max((psi(*p) for p in pairs), default=0.0)
    found = shift_clearly_above(value, pairs, 0.25)
    assert found == (pairs[clear] if clear is not None else None)


def test_bonferroni_over_features_keeps_the_error_rate_of_an_unchanged_canary() -> None:
    """14 features whose canary rows come from the stable's distribution: an early Fail of the whole
    check at most about ALPHA per measurement (seeded), where the plain rule fails most of them."""
    shares = [0.05, 0.1, 0.2, 0.3, 0.2, 0.1, 0.05, 0.0]
    rng = random.Random(14)

    def sample(n: int) -> tuple[float, ...]:
        counts = [0.0] * len(shares)
        for i in rng.choices(range(len(shares)), shares, k=n):
            counts[i] += 1
        return tuple(counts)

    for rows in (30, 100):
        trials, early, plain = 300, 0, 0
        for _ in range(trials):
            pairs = [(sample(rows), sample(rows)) for _ in range(14)]
            value = max(psi(*p) for p in pairs)
            early += shift_clearly_above(value, pairs, 0.25) is not None
            plain += value > 0.25
        assert early <= max(3, 3 * ALPHA * trials)
        assert early <= plain


# --- the evaluation: Fail below minSamples only with overwhelming evidence --------------------------


def reading(
    name: str,
    value: float | None,
    samples: int,
    *,
    histograms: tuple[HistogramPair, ...] | None = None,
    difference: Sequence[float] | None = None,
) -> CheckReading:
    found = buckets(difference) if difference is not None else None
    return CheckReading(name, value, samples, NOW, "d", histograms, buckets=found)


@pytest.mark.parametrize(
    ("check", "given", "result", "says"),
    [
        # shadowScoreDifference, max 0.05, 200 rows needed
        (
            DIFFERENCE,
            reading("difference", 0.7, 40, difference=ALL_FAR),
            "Fail",
            "40 of 40 rows differ by more than 0.5",
        ),
        (DIFFERENCE, reading("difference", 0.7, 3, difference=[0.7] * 3), "Inconclusive", "fewer than"),
        (DIFFERENCE, reading("difference", 0.7, 40), "Inconclusive", "fewer than"),  # no buckets (Prometheus)
        (DIFFERENCE, reading("difference", 0.01, 150, difference=[0.01] * 150), "Inconclusive", "fewer than"),
        (DIFFERENCE, reading("difference", 0.06, 250, difference=[0.06] * 250), "Fail", "above the maximum"),
        (DIFFERENCE, reading("difference", 0.01, 250, difference=[0.01] * 250), "Pass", "within"),
        # inputDrift against the stable, max 0.25
        (
            DRIFT,
            reading("drift", psi(*SHIFTED), 100, histograms=(SAME,) * 13 + (SHIFTED,)),
            "Fail",
            "over 14",
        ),
        (DRIFT, reading("drift", psi(*FEW_SHIFTED), 6, histograms=(FEW_SHIFTED,)), "Inconclusive", "fewer"),
        (DRIFT, reading("drift", 0.2, 100, histograms=(SHIFTED,)), "Inconclusive", "fewer"),  # value within
        # inputDrift against the profile: the same rule with the profile's rows as the reference
        (PROFILE, reading("profile", 9.0, 100, histograms=((SAME[0], SHIFTED[1]),)), "Fail", "beyond"),
        (PROFILE, reading("profile", 9.0, 100), "Inconclusive", "fewer"),  # no counts (Prometheus)
        (PROFILE, reading("profile", 9.0, 6, histograms=(FEW_SHIFTED,)), "Inconclusive", "fewer"),
    ],
)
def test_evaluate_below_and_at_min_samples(
    check: object, given: CheckReading, result: str, says: str
) -> None:
    measurement = evaluate(check, given, ANALYSIS, NOW)  # type: ignore[arg-type]
    assert measurement.result == result, measurement.message
    assert says in (measurement.message or "")
    if result == "Fail" and given.samples < 200:
        assert "beyond doubt" in (measurement.message or "")
