"""Drift statistics between a reference bin-count vector and a live one (pure functions).

PSI uses an epsilon of 1e-4 for empty bins (rule of thumb: < 0.1 stable, 0.1-0.25 moderate,
> 0.25 major). The KS distance is computed on the binned CDFs of present values (under/overflow and
inner bins, missing excluded) so it needs no raw reference data.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

PSI_EPSILON = 1e-4

Counts = npt.NDArray[np.int64] | list[int]


def psi(reference: Counts, current: Counts, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of `current` against `reference` (same bins); NaN if either is empty."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.sum() <= 0 or cur.sum() <= 0:
        return math.nan
    p = np.maximum(ref / ref.sum(), epsilon)
    q = np.maximum(cur / cur.sum(), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def binned_ks(reference: Counts, current: Counts) -> float:
    """Largest gap between the binned CDFs of present values (the last bin, missing, is left out)."""
    ref = np.asarray(reference, dtype=np.float64)[:-1]
    cur = np.asarray(current, dtype=np.float64)[:-1]
    if ref.sum() <= 0 or cur.sum() <= 0:
        return math.nan
    return float(np.max(np.abs(np.cumsum(ref) / ref.sum() - np.cumsum(cur) / cur.sum())))


def missing_ratio(current: Counts) -> float:
    cur = np.asarray(current, dtype=np.float64)
    total = cur.sum()
    return float(cur[-1] / total) if total > 0 else math.nan


def out_of_range_ratio(current: Counts) -> float:
    """Share of present values below the training minimum or above the training maximum."""
    cur = np.asarray(current, dtype=np.float64)
    present = cur[:-1].sum()
    return float((cur[0] + cur[-2]) / present) if present > 0 else 0.0
