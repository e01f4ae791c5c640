"""Decisions as fast as the evidence allows (issue 12): below minSamples a check fails at once when the
evidence is overwhelming, and stays Inconclusive while it is weak. Worked examples: value, samples,
threshold -> Pass / Fail / Inconclusive, and the statistics against hand-computed values."""

from __future__ import annotations

import math
import random

import pytest

from modeldeploy_contract.psi import psi
from modeldeploy_operator.domain.readings import CheckReading
from modeldeploy_operator.domain.rollout.evaluation import evaluate
from modeldeploy_operator.domain.rollout.evidence import (
    ALPHA,
    binomial_sf,
    chi2_sf,
    error_rate_clearly_above,
    homogeneity_p,
    shift_clearly_above,
    shrunk_psi,
)
from modeldeploy_operator.domain.spec import Analysis

from modeldeploy_builders import NOW

ANALYSIS = Analysis.model_validate(
    {
        "minSamples": 200,
        "checks": [
            {"name": "errors", "type": "errorRate", "threshold": {"max": 0.05}},
            {"name": "shift", "type": "predictionShift", "threshold": {"max": 1.0}},
            {"name": "p99", "type": "latencyP99", "threshold": {"max": 0.5}},
            {"name": "drift", "type": "inputDrift", "threshold": {"max": 0.25}},
        ],
    }
)
ERRORS, SHIFT, P99, DRIFT = ANALYSIS.checks

# Score histograms (10 bins of 0.1 and +Inf) as the demo's bad v3 produced them: stable scores low,
# canary scores spread high; 150 scores each, 200 needed.
STABLE = (10, 30, 50, 40, 15, 5, 0, 0, 0, 0, 0)
BAD_CANARY = (2, 5, 12, 15, 15, 16, 30, 22, 18, 15, 0)
# 15 vs 15 scores from nearly the same distribution: PSI above 1 only because a small sample leaves
# bins empty (each counted as a share of 1e-4).
FEW_STABLE = (1, 3, 5, 4, 2, 0, 0, 0, 0, 0, 0)
FEW_CANARY = (0, 2, 4, 5, 2, 1, 1, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("k", "n", "p", "expected"),
    [
        (0, 20, 0.05, 1.0),
        (2, 20, 0.05, 1 - 0.95**20 - 20 * 0.05 * 0.95**19),
        (3, 3, 0.05, 0.05**3),
        (2, 2, 0.05, 0.05**2),
        (21, 20, 0.05, 0.0),
    ],
)
def test_binomial_sf(k: int, n: int, p: float, expected: float) -> None:
    assert binomial_sf(k, n, p) == pytest.approx(expected, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(
    ("x", "dof", "expected"),
    [(3.841459, 1, 0.05), (27.877165, 9, 0.001), (9.0, 9, 0.437274), (0.0, 3, 1.0), (18.307038, 10, 0.05)],
)
def test_chi2_sf_against_tables(x: float, dof: int, expected: float) -> None:
    assert chi2_sf(x, dof) == pytest.approx(expected, rel=1e-4)


def test_homogeneity_of_identical_histograms_and_of_disjoint_ones() -> None:
    assert homogeneity_p((10, 20, 30), (10, 20, 30)) == pytest.approx(1.0)
    assert homogeneity_p((50, 50, 0, 0), (0, 0, 50, 50)) < 1e-40
    assert homogeneity_p((), ()) == 1.0
    assert homogeneity_p((5, 0), (0, 0)) == 1.0


def test_shrinking_tames_the_empty_bin_floor() -> None:
    assert psi(FEW_STABLE, FEW_CANARY) > 1.0
    assert shrunk_psi(FEW_STABLE, FEW_CANARY) < 0.5
    assert shrunk_psi(STABLE, BAD_CANARY) > 2.5


@pytest.mark.parametrize(
    ("rate", "samples", "early_fail"),
    [
        (0.9, 20, True),  # 18 of 20 failed: P = 7e-22 at a true rate of 5 %
        (1.0, 3, True),  # 3 of 3: P = 1.25e-4
        (1.0, 2, False),  # 2 of 2: P = 2.5e-3, could be chance
        (0.5, 10, True),  # 5 of 10: P = 6e-5
        (0.2, 50, True),  # 10 of 50: P = 1.6e-4
        (0.12, 100, False),  # 12 of 100: P = 4.3e-3
        (0.1, 20, False),  # 2 of 20: P = 0.26
        (0.04, 150, False),  # below the threshold: never an early Fail
    ],
)
def test_error_rate_early_failure(rate: float, samples: int, early_fail: bool) -> None:
    assert error_rate_clearly_above(rate, samples, 0.05) is early_fail


def _reading(check: str, value: float | None, samples: int, histograms: object = None) -> CheckReading:
    pairs = (histograms,) if histograms is not None else None
    return CheckReading(check, value, samples, NOW, "d", pairs)  # type: ignore[arg-type]


PSI_BAD = psi(STABLE, BAD_CANARY)
PSI_FEW = psi(FEW_STABLE, FEW_CANARY)


@pytest.mark.parametrize(
    ("check", "reading", "result"),
    [
        # errorRate, threshold 0.05, 200 samples needed
        (ERRORS, _reading("errors", 0.9, 20), "Fail"),  # overwhelming at 20 requests
        (ERRORS, _reading("errors", 0.9, 99), "Fail"),
        (ERRORS, _reading("errors", 0.1, 20), "Inconclusive"),  # 2 of 20: weak
        (ERRORS, _reading("errors", 0.01, 150), "Inconclusive"),  # looks fine: no early Pass
        (ERRORS, _reading("errors", 0.06, 250), "Fail"),  # enough samples: the plain threshold
        (ERRORS, _reading("errors", 0.01, 250), "Pass"),
        (ERRORS, _reading("errors", math.nan, 20), "Inconclusive"),  # argo-rollouts#180
        (ERRORS, _reading("errors", None, 20), "Inconclusive"),
        # predictionShift, threshold 1.0: the demo's bad canary (PSI 5.1 over 150 of 200 scores) fails
        (SHIFT, _reading("shift", PSI_BAD, 150, (STABLE, BAD_CANARY)), "Fail"),
        (SHIFT, _reading("shift", PSI_FEW, 15, (FEW_STABLE, FEW_CANARY)), "Inconclusive"),
        (SHIFT, _reading("shift", PSI_BAD, 150), "Inconclusive"),  # no histograms, no early test
        (SHIFT, _reading("shift", 0.5, 150, (STABLE, STABLE)), "Inconclusive"),
        # no early test for a quantile or for drift: they wait for minSamples
        (P99, _reading("p99", 5.0, 50), "Inconclusive"),
        (DRIFT, _reading("drift", 9.0, 50), "Inconclusive"),
    ],
)
def test_evaluate_below_min_samples(check: object, reading: CheckReading, result: str) -> None:
    measurement = evaluate(check, reading, ANALYSIS, NOW)  # type: ignore[arg-type]
    assert measurement.result == result, measurement.message
    if result == "Fail" and reading.samples < 200:
        assert "beyond doubt" in (measurement.message or "")


def _sample(shares: list[float], n: int, rng: random.Random) -> tuple[int, ...]:
    counts = [0] * len(shares)
    for i in rng.choices(range(len(shares)), shares, k=n):
        counts[i] += 1
    return tuple(counts)


@pytest.mark.parametrize("shares", [[0.1] * 10, [0.4, 0.3, 0.1, 0.05, 0.05, 0.03, 0.03, 0.02, 0.01, 0.01]])
@pytest.mark.parametrize("n", [20, 50, 150])
def test_an_unchanged_canary_rarely_fails_early(shares: list[float], n: int) -> None:
    """Error rate of the PSI rule for a canary scoring like the stable: at most about ALPHA per
    measurement (seeded simulation; the plain rule at this sample count fails far more often)."""
    rng = random.Random(n)
    trials, early, plain = 1000, 0, 0
    for _ in range(trials):
        stable, canary = _sample(shares, n, rng), _sample(shares, n, rng)
        value = psi(stable, canary)
        early += shift_clearly_above(value, [(stable, canary)], 0.2) is not None
        plain += value > 0.2
    assert early <= max(3, 3 * ALPHA * trials)
    assert early <= plain


def test_a_clearly_shifted_canary_fails_early_at_fifty_scores() -> None:
    stable_shares = [0.05, 0.15, 0.3, 0.3, 0.15, 0.05, 0, 0, 0, 0]
    canary_shares = [0.02, 0.05, 0.1, 0.13, 0.1, 0.1, 0.2, 0.15, 0.1, 0.05]
    rng = random.Random(7)
    caught = 0
    for _ in range(200):
        stable, canary = _sample(stable_shares, 50, rng), _sample(canary_shares, 50, rng)
        caught += shift_clearly_above(psi(stable, canary), [(stable, canary)], 1.0) is not None
    assert caught >= 180


# latencyP99 from the scrape: cumulative (upper bound, count) buckets of the canary's requests
SLOW = ((0.1, 5), (0.25, 8), (0.5, 10), (1.0, 40), (math.inf, 40))  # 30 of 40 above 0.5 s
FEW_SLOW = ((0.1, 30), (0.25, 36), (0.5, 37), (1.0, 40), (math.inf, 40))  # 3 of 40


@pytest.mark.parametrize(
    ("buckets", "threshold", "counts"),
    [
        (SLOW, 0.5, (30, 40)),
        (SLOW, 0.3, (30, 40)),  # (0.25, 0.5] straddles 0.3: not certainly slower
        (SLOW, 0.25, (32, 40)),
        (SLOW, 2.0, (0, 40)),
        ((), 0.5, (0, 0)),
    ],
)
def test_requests_certainly_slower_than_the_threshold(
    buckets: tuple[tuple[float, float], ...], threshold: float, counts: tuple[int, int]
) -> None:
    from modeldeploy_operator.domain.rollout.evidence import slower_than

    assert slower_than(buckets, threshold) == counts


@pytest.mark.parametrize(
    ("buckets", "result"),
    [
        (SLOW, "Fail"),  # 30 of 40 slower than 0.5 s where a p99 of 0.5 s allows 1 %: P ~ 1e-50
        (FEW_SLOW, "Inconclusive"),  # 3 of 40: P = 7.5e-3
    ],
)
def test_latency_below_min_samples(buckets: tuple[tuple[float, float], ...], result: str) -> None:
    reading = CheckReading("p99", 0.9, 40, NOW, "d", buckets=buckets)
    assert evaluate(P99, reading, ANALYSIS, NOW).result == result
