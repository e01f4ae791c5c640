"""Check evaluation: threshold compare; no data, NaN or too few samples is Inconclusive, never Pass."""

from __future__ import annotations

import math

import pytest

from modeldeploy_operator.domain.readings import CheckReading
from modeldeploy_operator.domain.rollout.evaluation import evaluate, failed_checks, measure_all, passed_since
from modeldeploy_operator.domain.spec import Analysis, Check

from modeldeploy_builders import NOW

ANALYSIS = Analysis.model_validate(
    {
        "minSamples": 100,
        "failureLimit": 1,
        "checks": [
            {"name": "errors", "type": "errorRate", "threshold": {"max": 0.05}},
            {"name": "auc", "type": "prometheus", "query": "x", "threshold": {"min": 0.7}, "minSamples": 10},
        ],
    }
)
ERRORS, AUC = ANALYSIS.checks


@pytest.mark.parametrize(
    ("check", "value", "samples", "result"),
    [
        (ERRORS, 0.01, 500, "Pass"),
        (ERRORS, 0.05, 500, "Pass"),  # on the bound is within
        (ERRORS, 0.06, 500, "Fail"),
        (ERRORS, 0.01, 99, "Inconclusive"),  # below the analysis' minSamples
        (ERRORS, 0.9, 99, "Fail"),  # too few samples, but overwhelming: 89 of 99 failed (evidence.py)
        (ERRORS, 0.1, 99, "Inconclusive"),  # too few samples, and 10 of 99 could be chance
        (ERRORS, None, 500, "Inconclusive"),
        (ERRORS, math.nan, 500, "Inconclusive"),  # argo-rollouts#180
        (ERRORS, math.inf, 500, "Inconclusive"),
        (AUC, 0.8, 10, "Pass"),  # the check's own minSamples
        (AUC, 0.6, 10, "Fail"),  # below min
    ],
)
def test_evaluate(check: Check, value: float | None, samples: int, result: str) -> None:
    measurement = evaluate(check, CheckReading(check.name, value, samples, NOW, "d"), ANALYSIS, NOW)
    assert measurement.result == result
    assert measurement.value is None or math.isfinite(measurement.value)


def test_no_reading_is_inconclusive() -> None:
    measurement = evaluate(ERRORS, None, ANALYSIS, NOW)
    assert (measurement.result, measurement.value) == ("Inconclusive", None)


def test_failure_limit_counts_total_failures() -> None:
    fail = [CheckReading("errors", 0.5, 500, NOW), CheckReading("auc", 0.9, 50, NOW)]
    passing = [CheckReading("errors", 0.0, 500, NOW), CheckReading("auc", 0.9, 50, NOW)]
    checks = measure_all(ANALYSIS, (), fail, NOW)
    assert failed_checks(checks, 1) == []
    checks = measure_all(ANALYSIS, checks, passing, NOW)
    checks = measure_all(ANALYSIS, checks, fail, NOW)  # not consecutive, still 2 > 1
    assert [c.name for c in failed_checks(checks, 1)] == ["errors"]
    assert failed_checks(checks, 0)


def test_measurements_are_bounded_and_passed_since_needs_fresh_passes() -> None:
    checks = measure_all(ANALYSIS, (), [], NOW)
    for _ in range(15):
        checks = measure_all(ANALYSIS, checks, [], NOW)
    assert all(len(c.measurements) == 10 and c.inconclusive == 16 for c in checks)
    assert not passed_since(checks, ["errors"], NOW)
    good = [CheckReading("errors", 0.0, 500, NOW), CheckReading("auc", 0.9, 50, NOW)]
    checks = measure_all(ANALYSIS, checks, good, NOW)
    assert passed_since(checks, ["errors", "auc"], NOW)


def test_prometheus_checks_are_not_held_to_the_analysis_wide_minimum() -> None:
    # A PromQL value carries no sample count (1); only a check's own minSamples applies to it.
    import datetime as dt

    from modeldeploy_operator.domain.readings import CheckReading
    from modeldeploy_operator.domain.rollout.evaluation import evaluate
    from modeldeploy_operator.domain.spec import Analysis, Check, PrometheusSource, Threshold

    check = Check(name="p", type="prometheus", query="vector(1)", threshold=Threshold(max=2))
    analysis = Analysis(
        min_samples=100, checks=(check,), prometheus=PrometheusSource(address="http://p:9090")
    )
    reading = CheckReading(check="p", value=1.0, samples=1, measured_at=dt.datetime.now(dt.UTC))
    assert evaluate(check, reading, analysis, reading.measured_at).result == "Pass"


def test_a_prometheus_check_below_its_own_minimum_says_it_cannot_fail_early() -> None:
    """An arbitrary query's value has no known sampling distribution, and its reading counts 1 sample:
    far above the maximum or not, it waits (docs/analysis.md), and the message says why."""
    check = Check.model_validate(
        {"name": "p", "type": "prometheus", "query": "x", "threshold": {"max": 0.1}, "minSamples": 10}
    )
    analysis = Analysis(checks=(check,))
    measured = evaluate(check, CheckReading("p", 50.0, 1, NOW, "x = 50"), analysis, NOW)
    assert measured.result == "Inconclusive"
    assert "an arbitrary query has no test for an early Fail" in (measured.message or "")
    assert "fewer than the 10 needed" in (measured.message or "")
