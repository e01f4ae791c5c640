"""Early Fail for shadowAgreement (exact binomial on disagreeing rows) and the Kolmogorov-Smirnov
checks (DKW-Massart lower confidence bound of the true distance, Bonferroni over comparisons): worked
examples, table tests against hand-computed values, and seeded simulations of the error rates."""

from __future__ import annotations

import doctest
import math
import random

import pytest

from modeldeploy_operator.domain.readings import CheckReading, KsComparison
from modeldeploy_operator.domain.rollout import evidence
from modeldeploy_operator.domain.rollout.evaluation import evaluate
from modeldeploy_operator.domain.rollout.evidence import (
    ALPHA,
    agreement_clearly_below,
    dkw_epsilon,
    ks_clearly_above,
    ks_lower_bound,
)
from modeldeploy_operator.domain.spec import Analysis

from modeldeploy_builders import NOW

ANALYSIS = Analysis.model_validate(
    {
        "minSamples": 200,
        "checks": [
            {"name": "agree", "type": "shadowAgreement", "threshold": {"min": 0.95}},
            {"name": "drift", "type": "inputDriftKS", "threshold": {"max": 0.2}},
            {"name": "scores", "type": "predictionShiftKS", "threshold": {"max": 0.2}},
            {"name": "difference", "type": "shadowScoreDifference", "threshold": {"max": 0.05}},
        ],
    }
)
AGREE, DRIFT, SCORES, DIFFERENCE = ANALYSIS.checks


def test_the_docstring_examples_hold() -> None:
    failures, tried = doctest.testmod(evidence, verbose=False)
    assert tried >= 6
    assert failures == 0


@pytest.mark.parametrize(
    ("n", "alpha", "expected"),
    [
        (150, ALPHA / 2, math.sqrt(math.log(4000) / 300)),  # 0.1663
        (200, ALPHA, math.sqrt(math.log(2000) / 400)),  # 0.1378
        (1, 0.05, math.sqrt(math.log(40) / 2)),  # wider than 1: no sample of one proves anything
        (10_000, ALPHA, math.sqrt(math.log(2000) / 20_000)),  # 0.0195
        (0, ALPHA, math.inf),
        (-3, ALPHA, math.inf),
    ],
)
def test_dkw_epsilon(n: int, alpha: float, expected: float) -> None:
    assert dkw_epsilon(n, alpha) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("comparison", "expected"),
    [
        (KsComparison(0.9, 150, 150), 0.9 - 2 * math.sqrt(math.log(4000) / 300)),  # 0.567
        (KsComparison(0.5, 20, 20), 0.5 - 2 * math.sqrt(math.log(4000) / 40)),  # negative: weak
        (KsComparison(0.5, 200), 0.5 - math.sqrt(math.log(2000) / 400)),  # against the profile: 0.362
        (
            KsComparison(0.3, 100, 10_000),
            0.3 - math.sqrt(math.log(4000) / 200) - math.sqrt(math.log(4000) / 20_000),
        ),
        (KsComparison(0.9, 0, 150), -math.inf),  # an empty side proves nothing
    ],
)
def test_ks_lower_bound(comparison: KsComparison, expected: float) -> None:
    assert ks_lower_bound(comparison) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("value", "comparisons", "clear"),
    [
        (0.9, [KsComparison(0.9, 150, 150)], 0),  # the worked example: bound 0.567 > 0.2
        (0.5, [KsComparison(0.5, 20, 20)], None),  # bound < 0
        (0.15, [KsComparison(0.15, 10**6, 10**6)], None),  # below the maximum: never early
        # one sample against the profile, 14 features: each uses ALPHA / 14 (e = 0.160 at 200 rows)
        (0.5, [KsComparison(0.5, 200)] + [KsComparison(0.05, 200)] * 13, 0),
        (0.35, [KsComparison(0.35, 200)] + [KsComparison(0.05, 200)] * 13, None),  # 0.35 - 0.16 < 0.2
        # the same 0.35 alone clears the ALPHA bound: 0.35 - 0.138 = 0.212 > 0.2; Bonferroni matters
        (0.35, [KsComparison(0.35, 200)], 0),
        (0.5, [KsComparison(math.nan, 200), KsComparison(0.5, 400)], 1),
        (0.5, [], None),
    ],
)
def test_ks_clearly_above(value: float, comparisons: list[KsComparison], clear: int | None) -> None:
    found = ks_clearly_above(value, comparisons, 0.2)
    assert found is (comparisons[clear] if clear is not None else None)


@pytest.mark.parametrize(
    ("share", "samples", "early_fail"),
    [
        (0.5, 40, True),  # 20 of 40 disagree where 5 % may: P ~ 1e-17
        (0.0, 3, True),  # 3 of 3: P = 0.05^3 = 1.25e-4
        (0.0, 2, False),  # 2 of 2: P = 2.5e-3, could be chance
        (0.8, 10, False),  # 2 of 10: P = 0.086
        (0.8, 100, True),  # 20 of 100: P = 1.3e-6
        (0.88, 100, False),  # 12 of 100: P = 4.3e-3
        (0.96, 150, False),  # above the minimum: never an early Fail
        (0.5, 0, False),
    ],
)
def test_agreement_early_failure(share: float, samples: int, early_fail: bool) -> None:
    assert agreement_clearly_below(share, samples, 0.95) is early_fail


def _reading(
    name: str, value: float | None, samples: int, ks: tuple[KsComparison, ...] | None = None
) -> CheckReading:
    return CheckReading(name, value, samples, NOW, "d", ks=ks)


@pytest.mark.parametrize(
    ("check", "reading", "result"),
    [
        # shadowAgreement, min 0.95, 200 rows needed
        (AGREE, _reading("agree", 0.5, 40), "Fail"),
        (AGREE, _reading("agree", 0.8, 10), "Inconclusive"),
        (AGREE, _reading("agree", 0.99, 150), "Inconclusive"),  # looks fine: no early Pass
        (AGREE, _reading("agree", 0.9, 250), "Fail"),  # enough rows: the plain threshold
        (AGREE, _reading("agree", 0.97, 250), "Pass"),
        (AGREE, _reading("agree", math.nan, 40), "Inconclusive"),
        # predictionShiftKS, max 0.2
        (SCORES, _reading("scores", 0.9, 150, (KsComparison(0.9, 150, 150),)), "Fail"),
        (SCORES, _reading("scores", 0.5, 20, (KsComparison(0.5, 20, 20),)), "Inconclusive"),
        (SCORES, _reading("scores", 0.9, 150), "Inconclusive"),  # no sizes, no early test
        (SCORES, _reading("scores", 0.1, 250, (KsComparison(0.1, 250, 250),)), "Pass"),
        # inputDriftKS against the profile, 14 features of one pod
        (
            DRIFT,
            _reading("drift", 0.5, 200, (KsComparison(0.5, 150), *[KsComparison(0.05, 150)] * 13)),
            "Fail",
        ),
        (
            DRIFT,
            _reading("drift", 0.3, 60, (KsComparison(0.3, 60), *[KsComparison(0.05, 60)] * 13)),
            "Inconclusive",
        ),
        # a mean score difference without its buckets (from Prometheus) waits for minSamples; with
        # them: test_operator_rollout_evidence_psi_mean.py
        (DIFFERENCE, _reading("difference", 0.9, 50), "Inconclusive"),
    ],
)
def test_evaluate_below_min_samples(check: object, reading: CheckReading, result: str) -> None:
    measurement = evaluate(check, reading, ANALYSIS, NOW)  # type: ignore[arg-type]
    assert measurement.result == result, measurement.message
    if result == "Fail" and reading.samples < 200:
        assert "beyond doubt" in (measurement.message or "")


def _binned_cdf_distance(a: list[float], b: list[float], edges: list[float]) -> float:
    """The binned two-sample KS distance at `edges` (as the servers and the operator compute it)."""
    gap = 0.0
    for edge in edges:
        fa = sum(x <= edge for x in a) / len(a)
        fb = sum(x <= edge for x in b) / len(b)
        gap = max(gap, abs(fa - fb))
    return gap


EDGES = [i / 10 for i in range(1, 10)]


@pytest.mark.parametrize("n", [20, 60, 150])
def test_a_canary_at_the_threshold_rarely_fails_early(n: int) -> None:
    """Uniform(0, 1) against Uniform(0.2, 1.2): the true KS distance is exactly the maximum 0.2, the
    worst case for a false early Fail; the DKW bound must fail at most about ALPHA of such canaries
    (seeded; the plain rule "D > max" fails about half of them)."""
    rng = random.Random(n)
    trials, early, plain = 400, 0, 0
    for _ in range(trials):
        stable = [rng.random() for _ in range(n)]
        canary = [rng.random() + 0.2 for _ in range(n)]
        distance = _binned_cdf_distance(stable, canary, EDGES)
        early += ks_clearly_above(distance, [KsComparison(distance, n, n)], 0.2) is not None
        plain += distance > 0.2
    assert early <= max(2, 3 * ALPHA * trials)
    assert plain > trials / 5


def test_a_clearly_shifted_canary_fails_early_at_150_scores() -> None:
    """Uniform(0, 1) against Uniform(0.7, 1.7) (true distance 0.7, binned 0.7 at the 0.9 edge): caught
    at 150 scores a side (the demo's bad v3 had 150 of 200), where the bound needs D > 0.533. At 60 a
    side it would need D > 0.726: the price of a distribution-free bound."""
    rng = random.Random(11)
    caught = 0
    for _ in range(100):
        stable = [rng.random() for _ in range(60)]
        canary = [rng.random() + 0.7 for _ in range(150)]
        distance = _binned_cdf_distance(stable, canary, EDGES)
        caught += ks_clearly_above(distance, [KsComparison(distance, 150, 150)], 0.2) is not None
    assert caught >= 95
