"""Drift statistics between a reference bin-count vector and a live one (pure functions).

PSI uses an epsilon of 1e-4 for empty bins (rule of thumb: < 0.1 stable, 0.1-0.25 moderate,
> 0.25 major). The KS distance is computed on the binned CDFs of present values (under/overflow and
inner bins, missing excluded) so it needs no raw reference data. Vectors have at most ~25 bins,
where plain Python beats numpy's per-call overhead several times over.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Counts = Sequence[int] | Sequence[float]


def binned_ks(reference: Counts, current: Counts) -> float:
    """Largest gap between the binned CDFs of present values (the last bin, missing, is left out)."""
    ref, cur = reference[:-1], current[:-1]
    ref_total, cur_total = float(sum(ref)), float(sum(cur))
    if ref_total <= 0 or cur_total <= 0:
        return math.nan
    gap = ref_cdf = cur_cdf = 0.0
    for r, c in zip(ref, cur, strict=True):
        ref_cdf += r
        cur_cdf += c
        gap = max(gap, abs(ref_cdf / ref_total - cur_cdf / cur_total))
    return gap


def missing_ratio(current: Counts) -> float:
    total = float(sum(current))
    return current[-1] / total if total > 0 else math.nan


def out_of_range_ratio(current: Counts) -> float:
    """Share of present values below the training minimum or above the training maximum."""
    present = float(sum(current[:-1]))
    return (current[0] + current[-2]) / present if present > 0 else 0.0
