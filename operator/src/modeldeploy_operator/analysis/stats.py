"""Pure statistics on histogram buckets: PromQL's histogram_quantile, PSI and the binned two-sample
Kolmogorov-Smirnov distance between two histograms.

Both the built-in scrape and the Prometheus source feed these functions, so a check computes the
same number whichever source measured it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from modeldeploy_contract.psi import psi

Buckets = Sequence[tuple[float, float]]
"""(upper bound, cumulative count) pairs, in any order; the +Inf bucket included."""


def buckets_from_le(counts: Mapping[str, float]) -> list[tuple[float, float]]:
    """{"0.1": 3, "+Inf": 5} (label value of `le` -> cumulative count) as sorted bucket pairs."""
    return sorted((float(le), count) for le, count in counts.items())


def histogram_quantile(q: float, buckets: Buckets) -> float:
    """The q-quantile estimated from cumulative buckets exactly as PromQL's histogram_quantile does
    (Prometheus 2.x, classic histograms): linear interpolation inside the bucket that holds the
    rank, 0 as the lower edge of the first bucket (unless its bound is not positive), the highest
    finite bound when the rank falls into +Inf. NaN when there are no observations or no +Inf
    bucket, so that "no data" can never look like a fast service."""
    if not 0 <= q <= 1:
        return math.copysign(math.inf, q)  # PromQL: -Inf below 0, +Inf above 1
    ordered = sorted(buckets)
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return math.nan
    # Counts summed from several scrapes may be slightly non-monotonic; Prometheus fixes that too.
    monotonic: list[tuple[float, float]] = []
    running = 0.0
    for bound, count in ordered:
        running = max(running, count)
        monotonic.append((bound, running))
    observations = monotonic[-1][1]
    if observations <= 0:
        return math.nan
    rank = q * observations
    b = next(i for i, (_, count) in enumerate(monotonic) if count >= rank)
    if b == len(monotonic) - 1:
        return monotonic[-2][0]
    if b == 0 and monotonic[0][0] <= 0:
        return monotonic[0][0]
    start = 0.0 if b == 0 else monotonic[b - 1][0]
    end, count = monotonic[b]
    if b > 0:
        count -= monotonic[b - 1][1]
        rank -= monotonic[b - 1][1]
    return start + (end - start) * (rank / count)


def bucket_counts(buckets: Buckets) -> list[float]:
    """Cumulative buckets -> the count inside each bucket, in bound order (negatives clamped)."""
    ordered = sorted(buckets)
    counts, previous = [], 0.0
    for _, cumulative in ordered:
        counts.append(max(cumulative - previous, 0.0))
        previous = max(previous, cumulative)
    return counts


def histogram_psi(expected: Buckets, actual: Buckets) -> float:
    """PSI between two cumulative histograms over the same bucket bounds; NaN if the bounds differ."""
    if sorted(b for b, _ in expected) != sorted(b for b, _ in actual):
        return math.nan
    return psi(bucket_counts(expected), bucket_counts(actual))


def histogram_ks(expected: Buckets, actual: Buckets) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov distance between two cumulative histograms over the same
    bounds, on binned data: D = the largest difference of the two empirical CDFs at the bucket
    bounds. Returns (D, binning error bound); (NaN, NaN) if the bounds differ or a side is empty.

    Error from binning: inside a bucket both CDFs are only known at its edges, so the distance of the
    raw samples lies in [D, D + max over buckets of the larger of the two bucket shares]; the second
    value is that bound (with the model server's 0.1-wide score buckets it is the largest share of
    scores that fall into one tenth of the score range). D never exceeds the raw-sample distance:
    binned KS can miss a shift inside one bucket but never invents one."""
    if sorted(b for b, _ in expected) != sorted(b for b, _ in actual):
        return math.nan, math.nan
    p, q = bucket_counts(expected), bucket_counts(actual)
    n, m = sum(p), sum(q)
    if n <= 0 or m <= 0:
        return math.nan, math.nan
    distance = cdf_p = cdf_q = 0.0
    widest = 0.0
    for a, b in zip(p, q, strict=True):
        cdf_p += a / n
        cdf_q += b / m
        distance = max(distance, abs(cdf_p - cdf_q))
        widest = max(widest, a / n, b / m)
    return min(distance, 1.0), widest


def ks_p_value(distance: float, n: float, m: float) -> float:
    """Asymptotic p-value of a two-sample KS distance (Kolmogorov's series, Stephens' small-sample
    correction), for the reading's detail: the chance of a distance this large between two samples
    of sizes n and m of one distribution. 1.0 for a distance of 0 or an empty side."""
    if distance <= 0 or n <= 0 or m <= 0:
        return 1.0
    effective = math.sqrt(n * m / (n + m))
    lam = (effective + 0.12 + 0.11 / effective) * distance
    total = math.fsum((-1.0) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 101))
    return min(max(2 * total, 0.0), 1.0)
