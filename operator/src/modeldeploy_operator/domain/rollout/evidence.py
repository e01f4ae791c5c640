"""Is the evidence overwhelming? Early Fail before minSamples (issue 12, "decisions as fast as the
evidence allows"). Pure; the worked examples and error rates are in docs/analysis.md and the table
tests (tests/unit/operator/test_operator_rollout_evidence.py).

Below a check's minSamples a measurement is Inconclusive unless one of these tests says the check
has clearly failed (never an early Pass: passing on little evidence is what minSamples forbids):

- errorRate: an exact one-sided binomial test. With k failed of n requests, Fail when
  P(X >= k | n, p = threshold) <= ALPHA, i.e. the Clopper-Pearson lower bound of the error rate is
  above the threshold. Each measurement is a fresh interval of traffic, so for a canary whose true
  error rate is at most the threshold, each early measurement fails with probability at most ALPHA.
- predictionShift (PSI of canary against stable score histograms): both of
  1. the two histograms differ beyond chance: Pearson's chi-square test of homogeneity on the
     2 x bins table (bins with a count on either side; dof = bins - 1), p <= ALPHA; for a canary
     whose scores come from the stable's distribution, an early Fail has probability at most ALPHA
     (asymptotic; the simulation in the tests checks it at 20 to 300 scores), and
  2. the PSI is above the threshold even after shrinking the small-sample estimate towards 0:
     PSI of the counts plus 1/2 each (Jeffreys), so an empty bin no longer counts as a share of
     1e-4 (the floor that makes a small sample's PSI explode: 5.99 from 150 scores).
  A canary whose true PSI is just at the threshold fails early about as often as the full-sample
  rule (value > threshold) fails it at minSamples: the early rule adds no new boundary error.
- latencyP99 (from the scrape or Prometheus, with the histogram's buckets): a p99 at most the
  threshold means at most 1 % of requests take longer. With k of n requests in buckets whose lower
  bound is at least the threshold (certainly slower), Fail when P(X >= k | n, p = 1 %) <= ALPHA:
  exact, so a canary whose true p99 is within the threshold fails early with probability at most
  ALPHA per measurement.
- shadowAgreement (share of copied rows whose label agrees with the primary's, `threshold.min`): the
  same exact binomial test on the disagreeing rows. With d of n rows disagreeing, Fail when
  P(D >= d | n, p = 1 - min) <= ALPHA (the Clopper-Pearson upper bound of the agreement is below the
  minimum). Rows are the trials, as they are the samples: rows of one request are treated as
  independent, so a canary that disagrees on whole many-row requests is judged on its rows.
- The Kolmogorov-Smirnov checks (inputDriftKS against the profile or the stable, predictionShiftKS):
  a lower confidence bound of the true distance from the Dvoretzky-Kiefer-Wolfowitz inequality with
  Massart's constant, P(sup |F_n - F| > e) <= 2 exp(-2 n e^2) for every n, distribution-free. One
  sample of n against a known reference (the training profile, taken as exact):
  D_true >= D - e(n, ALPHA), e(n, a) = sqrt(ln(2 / a) / (2 n)). Two samples of n and m:
  D_true >= D - e(n, ALPHA / 2) - e(m, ALPHA / 2). It holds for the binned distance too: the binned D
  is read at bin bounds, where the empirical CDFs are within e of the true ones, and the true
  distance at the bounds is at most the true KS distance. A reading that is a maximum over k
  comparisons (features, pods) uses ALPHA / k for each (Bonferroni), and fails early when any
  comparison's bound is above the maximum. For a canary whose true distance is at most the maximum
  (on every feature), an early Fail has probability at most ALPHA per measurement.
  Worked: 150 canary against 150 stable scores, D = 0.9, max 0.2: e = sqrt(ln(4000) / 300) = 0.166 a
  side, bound 0.9 - 0.333 = 0.567 > 0.2: Fail. 20 against 20, D = 0.5: e = 0.455 a side, bound < 0:
  Inconclusive.
- inputDrift (PSI), against the stable's live inputs or the training profile: the predictionShift
  rule on every feature's pair of histograms (stable or profile rows, and canary rows, per bin,
  missing included), each at ALPHA / k over the k features compared (Bonferroni), failing early when
  any feature passes both tests. For a canary whose inputs come from the reference's distribution on
  every feature, an early Fail has probability at most ALPHA per measurement. The profile is itself
  a sample of the training data, and the homogeneity test treats it as one (never as exact), so its
  sampling error counts against an early Fail, not for it.
- shadowScoreDifference (mean |score difference| of copied rows, `threshold.max`): the difference is
  never negative, so Markov's inequality bounds its tail by its mean: a true mean at most the
  maximum m gives P(X > t) <= m / t for every t. From the router's histogram, the rows above a bucket
  bound t (in the buckets after it) are counted exactly; Fail when, for some bound t > m,
  P(K >= k | n, p = m / t) <= ALPHA / b, over the b bounds above m (Bonferroni; which bounds count
  depends on the threshold and the bucket layout, never on the data). Distribution-free: no
  assumption on the scores' range or shape, so it needs a clear excess (e.g. 40 of 40 rows above 0.5
  against a maximum of 0.05: P = 0.1^40). Rows are the trials, as for shadowAgreement.
- prometheus checks: no early decision, and none is possible: an arbitrary query's value has no
  known sampling distribution, and its reading counts 1 sample; they wait for minSamples.
  latencyP99 and shadowScoreDifference from Prometheus ask for the histogram's counts per `le` too,
  and inputDrift / inputDriftKS against the profile for the canary's and the profile's rows per
  feature and bin (analysis/prometheus.py): they are judged as from the scrape (inputDriftKS on the
  binned distance of the interval's rows, the profile taken as exact); increase() extrapolates those
  counts to the window's edges, as it does errorRate's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from modeldeploy_contract.psi import psi
from modeldeploy_operator.domain.readings import HistogramPair, KsComparison

ALPHA = 1e-3
"""Per-measurement probability of an early Fail for a canary that is in fact fine (see above)."""
JEFFREYS = 0.5


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exact (summed in log space)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        for i in range(k, n + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def gamma_q(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function Q(a, x) (series below a + 1, else continued
    fraction; Numerical Recipes 6.2)."""
    if x <= 0:
        return 1.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        denom = a
        for _ in range(10_000):
            denom += 1
            term *= x / denom
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    tiny = 1e-300
    b = x + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = d if abs(d) > tiny else tiny
        c = b + an / c
        c = c if abs(c) > tiny else tiny
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_front) * h)


def chi2_sf(x: float, dof: int) -> float:
    """P(X >= x) for X ~ chi-square with `dof` degrees of freedom."""
    return gamma_q(dof / 2, x / 2) if dof > 0 else 1.0


def homogeneity_p(reference: Sequence[float], current: Sequence[float]) -> float:
    """p-value of Pearson's chi-square test that two histograms (counts over the same bins) come from
    one distribution; 1.0 when either is empty or only one bin has counts."""
    ref_total, cur_total = float(sum(reference)), float(sum(current))
    total = ref_total + cur_total
    if ref_total <= 0 or cur_total <= 0:
        return 1.0
    statistic, bins = 0.0, 0
    for r, c in zip(reference, current, strict=True):
        pooled = r + c
        if pooled <= 0:
            continue
        bins += 1
        for observed, side in ((r, ref_total), (c, cur_total)):
            expected = pooled * side / total
            statistic += (observed - expected) ** 2 / expected
    return chi2_sf(statistic, bins - 1)


def shrunk_psi(reference: Sequence[float], current: Sequence[float]) -> float:
    """PSI of the two histograms with 1/2 added to every bin that has a count on either side."""
    pairs = [(r, c) for r, c in zip(reference, current, strict=True) if r + c > 0]
    if not pairs:
        return math.nan
    return psi([r + JEFFREYS for r, _ in pairs], [c + JEFFREYS for _, c in pairs])


def error_rate_clearly_above(rate: float, samples: int, threshold: float, alpha: float = ALPHA) -> bool:
    """errorRate: `rate` of `samples` requests shows a true error rate above `threshold`."""
    if samples <= 0 or rate <= threshold:
        return False
    failed = round(rate * samples)
    return binomial_sf(failed, samples, threshold) <= alpha


def slower_than(buckets: Sequence[tuple[float, float]], threshold: float) -> tuple[int, int]:
    """(observations certainly above `threshold`, all observations) from cumulative (upper bound,
    count) buckets: those in buckets whose lower bound is at least the threshold."""
    ordered = sorted(buckets)
    if not ordered:
        return 0, 0
    total = max(count for _, count in ordered)
    # Observations up to the first bound at or above the threshold may be within it (that bucket may
    # straddle it); every later bucket starts at or above the threshold.
    below = next((count for bound, count in ordered if bound >= threshold), total)
    return round(total - below), round(total)


def quantile_clearly_above(
    buckets: Sequence[tuple[float, float]], threshold: float, quantile: float, alpha: float = ALPHA
) -> bool:
    """latencyP99: more than 1 - `quantile` of the observations are above `threshold` beyond doubt."""
    slower, total = slower_than(buckets, threshold)
    return total > 0 and binomial_sf(slower, total, 1 - quantile) <= alpha


def shift_clearly_above(
    value: float, pairs: Sequence[HistogramPair], threshold: float, alpha: float = ALPHA
) -> HistogramPair | None:
    """predictionShift, inputDrift against the stable: the (reference, current) pair whose histograms
    differ beyond chance and by more than `threshold` even with the small-sample PSI shrunk towards 0
    (Bonferroni over the pairs), or None; `value` is the reading's PSI, which must be above too."""
    if value <= threshold or not pairs:
        return None
    each = alpha / len(pairs)
    clear = [
        (reference, current)
        for reference, current in pairs
        if shrunk_psi(reference, current) > threshold and homogeneity_p(reference, current) <= each
    ]
    return max(clear, key=lambda pair: shrunk_psi(*pair)) if clear else None


def agreement_clearly_below(share: float, samples: int, minimum: float, alpha: float = ALPHA) -> bool:
    """shadowAgreement: `share` of `samples` rows agreeing shows a true agreement below `minimum`.

    >>> agreement_clearly_below(0.5, 40, 0.95)  # 20 of 40 disagree, P(D >= 20 | 40, 0.05) ~ 1e-17
    True
    >>> agreement_clearly_below(0.8, 10, 0.95)  # 2 of 10 disagree: P = 0.086, could be chance
    False
    """
    if samples <= 0 or share >= minimum:
        return False
    disagreeing = round((1.0 - share) * samples)
    return binomial_sf(disagreeing, samples, 1.0 - minimum) <= alpha


def dkw_epsilon(n: int, alpha: float) -> float:
    """Half-width e of the DKW-Massart band: P(sup |F_n - F| > e) <= alpha for a sample of n.

    >>> round(dkw_epsilon(150, ALPHA / 2), 3)  # sqrt(ln(4000) / 300)
    0.166
    >>> dkw_epsilon(0, ALPHA)
    inf
    """
    if n <= 0:
        return math.inf
    return math.sqrt(math.log(2.0 / alpha) / (2.0 * n))


def ks_lower_bound(comparison: KsComparison, alpha: float = ALPHA) -> float:
    """A lower confidence bound (level 1 - alpha) of the true KS distance behind `comparison`.

    >>> round(ks_lower_bound(KsComparison(0.9, 150, 150)), 3)
    0.567
    >>> round(ks_lower_bound(KsComparison(0.5, 200)), 3)  # one sample against the profile
    0.362
    """
    if comparison.reference is None:
        return comparison.distance - dkw_epsilon(comparison.current, alpha)
    half = alpha / 2
    return (
        comparison.distance - dkw_epsilon(comparison.current, half) - dkw_epsilon(comparison.reference, half)
    )


def ks_clearly_above(
    value: float, comparisons: Sequence[KsComparison], threshold: float, alpha: float = ALPHA
) -> KsComparison | None:
    """The comparison whose KS distance is above `threshold` beyond doubt (Bonferroni over all of
    them), or None; `value` is the reading's distance, which must be above too."""
    finite = [c for c in comparisons if math.isfinite(c.distance)]
    if value <= threshold or not finite:
        return None
    each = alpha / len(comparisons)
    clear = [c for c in finite if ks_lower_bound(c, each) > threshold]
    return max(clear, key=lambda c: ks_lower_bound(c, each)) if clear else None


def mean_clearly_above(
    buckets: Sequence[tuple[float, float]], value: float, threshold: float, alpha: float = ALPHA
) -> tuple[float, int, int] | None:
    """shadowScoreDifference: the mean of a quantity that is never negative, read from its cumulative
    (upper bound, count) buckets, is above `threshold` beyond doubt (Markov's inequality and an exact
    binomial test at each bucket bound above the threshold, Bonferroni over those bounds). Returns
    (bound, rows above it, rows) of the highest bound that shows it, or None; `value` is the reading's mean,
    which must be above the threshold too.

    >>> mean_clearly_above([(0.1, 0), (0.5, 0), (1.0, 40), (math.inf, 40)], 0.7, 0.05)
    (0.5, 40, 40)
    >>> mean_clearly_above([(0.1, 7), (0.5, 9), (1.0, 10), (math.inf, 10)], 0.12, 0.05) is None
    True
    """
    if value <= threshold or threshold <= 0:
        return None
    ordered = sorted(buckets)
    if not ordered:
        return None
    total = round(max(count for _, count in ordered))
    bounds = [(bound, count) for bound, count in ordered if threshold < bound < math.inf]
    if total <= 0 or not bounds:
        return None
    each = alpha / len(bounds)
    for bound, count in reversed(bounds):  # the highest bound that shows it says the most
        above = total - round(count)
        if above > 0 and binomial_sf(above, total, threshold / bound) <= each:
            return bound, above, total
    return None
