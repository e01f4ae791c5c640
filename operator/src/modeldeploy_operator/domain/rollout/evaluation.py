"""Pure evaluation of analysis readings: Pass, Fail or Inconclusive, and what the counts mean.

Honesty about low traffic is the point, both ways: no reading, a value that is None or NaN
(argo-rollouts#180), or fewer samples than minSamples is Inconclusive, never Pass; but a reading below
minSamples whose evidence of failure is overwhelming (evidence.py: an exact binomial test for
errorRate, latencyP99 and shadowAgreement, a homogeneity test plus a shrunk PSI for predictionShift
and inputDrift, Markov's inequality with a binomial test for shadowScoreDifference,
a DKW confidence bound for the KS checks) is a Fail at once.
Inconclusive never fails a rollout by itself either: it holds an analysis step open until the
progress deadline.

failureLimit counts *total* Fail results of a check during one rollout (argo-rollouts semantics):
the analysis fails when a check has failed more than failureLimit times, so failureLimit 0 fails on
the first Fail. A resume after a failure pause starts the count again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from modeldeploy_operator.domain.readings import CheckReading
from modeldeploy_operator.domain.rollout.evidence import (
    ALPHA,
    agreement_clearly_below,
    error_rate_clearly_above,
    ks_clearly_above,
    ks_lower_bound,
    mean_clearly_above,
    quantile_clearly_above,
    shift_clearly_above,
    shrunk_psi,
    slower_than,
)
from modeldeploy_operator.domain.spec import Analysis, Check
from modeldeploy_operator.domain.status_model import MAX_MEASUREMENTS, CheckResult, CheckStatus, Measurement

P99 = 0.99
NO_TEST = (
    " (a PromQL answer counts as 1 sample, whatever stands behind it, and an arbitrary query has no"
    " test for an early Fail: put the low-traffic guard into the query instead of minSamples)"
)
"""Why a prometheus check below its minSamples waits for ever: its reading's samples are always 1, and
its value could be a ratio, a quantile or a score of anything, whose sampling error is unknown. The
CRD and the operator's spec check (domain/validation.py) refuse such a minSamples (above 1) on a
prometheus check since 2026-12-06; this is for a Check made otherwise."""


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _format(value: float) -> str:
    return f"{value:.6g}"


def _clear_failure(check: Check, value: float, reading: CheckReading) -> str | None:
    """Why the evidence of a reading below minSamples is overwhelming (evidence.py), or None."""
    floor, limit = check.threshold.min, check.threshold.max
    if floor is not None and check.type == "shadowAgreement":
        below = _clearly_below_agreement(value, reading.samples, floor)
        if below is not None:
            return below
    if limit is None:
        return None
    if check.type in ("inputDriftKS", "predictionShiftKS"):
        return _clearly_above_ks(value, reading, limit)
    return _clearly_above(check, value, reading, limit)


def _clearly_below_agreement(value: float, samples: int, floor: float) -> str | None:
    if not agreement_clearly_below(value, samples, floor):
        return None
    disagreeing = round((1.0 - value) * samples)
    return (
        f"{_format(value)} is below the minimum {_format(floor)} beyond doubt ({disagreeing} of "
        f"{samples} rows disagree, binomial test, p <= {ALPHA:g})"
    )


def _clearly_above_ks(value: float, reading: CheckReading, limit: float) -> str | None:
    clear = ks_clearly_above(value, reading.ks or (), limit)
    if clear is None or not reading.ks:
        return None
    sides = f"{clear.current}" + (f" vs {clear.reference}" if clear.reference is not None else "")
    bound = ks_lower_bound(clear, ALPHA / len(reading.ks))
    return (
        f"{_format(value)} is above the maximum {_format(limit)} beyond doubt (KS distance "
        f"{_format(clear.distance)} over {sides} observations is at least {_format(bound)} with "
        f"probability {1 - ALPHA:g}, DKW bound over {len(reading.ks)} comparison(s))"
    )


def _clearly_above(check: Check, value: float, reading: CheckReading, limit: float) -> str | None:
    if check.type == "errorRate" and error_rate_clearly_above(value, reading.samples, limit):
        return (
            f"{_format(value)} is above the maximum {_format(limit)} beyond doubt "
            f"(binomial test, p <= {ALPHA:g})"
        )
    buckets = reading.buckets
    if check.type == "latencyP99" and buckets is not None and quantile_clearly_above(buckets, limit, P99):
        slower, total = slower_than(buckets, limit)
        return (
            f"{_format(value)} is above the maximum {_format(limit)} beyond doubt ({slower} of {total} "
            f"requests slower, binomial test against 1 %, p <= {ALPHA:g})"
        )
    if check.type in ("predictionShift", "inputDrift") and reading.histograms:
        clear = shift_clearly_above(value, reading.histograms, limit)
        if clear is not None:
            count = len(reading.histograms)
            return (
                f"{_format(value)} is above the maximum {_format(limit)} beyond doubt (histograms "
                f"differ, chi-square p <= {ALPHA / count:g}{_over(count, 'histogram pairs')}; "
                f"shrunk PSI {_format(shrunk_psi(*clear))})"
            )
    if check.type == "shadowScoreDifference" and buckets is not None:
        mean = mean_clearly_above(buckets, value, limit)
        if mean is not None:
            bound, above, rows = mean
            return (
                f"{_format(value)} is above the maximum {_format(limit)} beyond doubt ({above} of {rows} "
                f"rows differ by more than {_format(bound)}, which a mean of at most {_format(limit)} "
                f"allows to at most {_format(limit / bound)} of them; binomial test, p <= {ALPHA:g})"
            )
    return None


def _over(count: int, what: str) -> str:
    return f" each, Bonferroni over {count} {what}" if count > 1 else ""


def evaluate(check: Check, reading: CheckReading | None, analysis: Analysis, now: datetime) -> Measurement:
    """One measurement of `check` from its reading (None: the source had nothing for it)."""
    stamped = now.replace(microsecond=0)
    if reading is None:
        return Measurement(time=stamped, result="Inconclusive", message="no data: no reading for the check")
    value = _finite(reading.value)
    # A PromQL query cannot say how many observations stand behind its value: the analysis-wide
    # minimum applies to built-in checks only, a prometheus check has just its own (if any).
    default_min = 0 if check.type == "prometheus" else analysis.min_samples
    min_samples = check.min_samples if check.min_samples is not None else default_min
    detail = f" ({reading.detail})" if reading.detail else ""
    result: CheckResult
    if value is None:
        result, why = "Inconclusive", "no data: the value is missing or not a number"
    elif reading.samples < min_samples:
        early = _clear_failure(check, value, reading)
        if early is not None:
            result, why = "Fail", f"{early}, with {reading.samples} of the {min_samples} samples"
        else:
            fewer = f"{reading.samples} samples, fewer than the {min_samples} needed"
            result, why = "Inconclusive", fewer + (NO_TEST if check.type == "prometheus" else "")
    elif check.threshold.max is not None and value > check.threshold.max:
        result, why = "Fail", f"{_format(value)} is above the maximum {_format(check.threshold.max)}"
    elif check.threshold.min is not None and value < check.threshold.min:
        result, why = "Fail", f"{_format(value)} is below the minimum {_format(check.threshold.min)}"
    else:
        result, why = "Pass", f"{_format(value)} is within the threshold"
    return Measurement(
        time=stamped,
        value=value,
        samples=max(reading.samples, 0),
        result=result,
        message=(why + detail)[:1024],
    )


def record(status: CheckStatus, measurement: Measurement) -> CheckStatus:
    """The check's status with one more measurement (the last MAX_MEASUREMENTS kept)."""
    return status.model_copy(
        update={
            "result": measurement.result,
            "failures": status.failures + (measurement.result == "Fail"),
            "inconclusive": status.inconclusive + (measurement.result == "Inconclusive"),
            "measurements": (*status.measurements, measurement)[-MAX_MEASUREMENTS:],
        }
    )


def measure_all(
    analysis: Analysis,
    checks: Sequence[CheckStatus],
    readings: Iterable[CheckReading],
    now: datetime,
) -> tuple[CheckStatus, ...]:
    """Every check of the spec measured once from the readings (the last reading per check wins)."""
    by_name: dict[str, CheckReading] = {r.check: r for r in readings}
    known: Mapping[str, CheckStatus] = {c.name: c for c in checks}
    return tuple(
        record(
            known.get(check.name, CheckStatus(name=check.name)),
            evaluate(check, by_name.get(check.name), analysis, now),
        )
        for check in analysis.checks
    )


def failed_checks(checks: Sequence[CheckStatus], failure_limit: int) -> list[CheckStatus]:
    """Checks that failed more than failureLimit times: the analysis has failed."""
    return [c for c in checks if c.failures > failure_limit]


def passed_since(checks: Sequence[CheckStatus], names: Iterable[str], since: datetime) -> bool:
    """Whether each named check's latest measurement is a Pass taken at or after `since`."""
    by_name = {c.name: c for c in checks}
    for name in names:
        status = by_name.get(name)
        latest = status.measurements[-1] if status and status.measurements else None
        if latest is None or latest.result != "Pass" or latest.time < since.replace(microsecond=0):
            return False
    return True


def describe(checks: Sequence[CheckStatus]) -> str:
    """`name=Result (message)` for each check's latest measurement, for Events and status."""
    parts = []
    for check in checks:
        latest = check.measurements[-1] if check.measurements else None
        if latest is not None:
            parts.append(f"{check.name}={latest.result} ({latest.message or ''})")
    return "; ".join(parts)


def reset_failures(checks: Sequence[CheckStatus]) -> tuple[CheckStatus, ...]:
    """The checks with their failure counts cleared (a user resumed after a failure)."""
    return tuple(c.model_copy(update={"failures": 0}) for c in checks)
