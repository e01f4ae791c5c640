"""What analysis sources hand to the rollout planner: one raw reading per check.

Sources (`modeldeploy_operator.analysis`: the built-in scrape of router and server metrics, and
Prometheus) produce these; the pure evaluation in the domain turns them into Pass / Fail /
Inconclusive against the spec's thresholds and minimum samples. A source never decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class KsComparison:
    """One Kolmogorov-Smirnov distance behind a reading and the sample sizes it was computed from."""

    distance: float
    current: int
    """Observations of the canary's side (present values of a feature, or scores)."""
    reference: int | None = None
    """Observations of the other side (the stable's); None when it is a fixed reference (the training
    profile, whose own sampling error is left out)."""


HistogramPair = tuple[tuple[float, ...], tuple[float, ...]]
"""(reference, current) counts over the same bins."""


@dataclass(frozen=True)
class CheckReading:
    check: str
    """Name of the check in spec.rollout.analysis.checks."""
    value: float | None
    """The measured value; None (or NaN) when there was no data: never a pass."""
    samples: int
    """How many observations stand behind the value (requests, rows): compared with minSamples."""
    measured_at: datetime
    detail: str = ""
    """Human-readable context for status and Events (e.g. "canary 3/412 requests failed")."""
    histograms: tuple[HistogramPair, ...] | None = None
    """For a check whose value is the largest PSI of pairs of histograms: every (reference, current)
    pair of counts per bin it was computed from (one for predictionShift: the stable's and the
    canary's scores; one per feature for inputDrift against the stable's inputs or the profile), so
    the evaluation can tell overwhelming evidence from noise before minSamples
    (domain/rollout/evidence.py). None for other checks."""
    buckets: tuple[tuple[float, float], ...] | None = None
    """For a check read from one histogram (latencyP99 and shadowScoreDifference): the
    cumulative (upper bound, count) buckets the value was computed from, so the evaluation can count
    observations certainly above a bound."""
    ks: tuple[KsComparison, ...] | None = None
    """For a KS check (inputDriftKS, predictionShiftKS): every distance the value is the largest of
    (one per feature and pod, one per feature from Prometheus, or the one score comparison) with its
    sample sizes, so the evaluation can bound the true distance before minSamples (DKW). None for
    other checks."""
