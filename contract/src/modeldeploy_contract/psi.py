"""The population stability index, in one place: the model server computes input and prediction drift
with it, and the operator's analysis compares canary and stable score histograms with it, so a PSI
threshold means the same thing on both sides."""

from __future__ import annotations

import math
from collections.abc import Sequence

PSI_EPSILON = 1e-4
"""Floor of a bin's share, so an empty bin on one side gives a large but finite term."""


def psi(reference: Sequence[float], current: Sequence[float], epsilon: float = PSI_EPSILON) -> float:
    """PSI of `current` against `reference` (counts over the same bins); NaN if either is empty.

    Rule of thumb: below 0.1 stable, 0.1 to 0.25 moderate shift, above 0.25 major shift."""
    ref_total, cur_total = float(sum(reference)), float(sum(current))
    if ref_total <= 0 or cur_total <= 0:
        return math.nan
    value = 0.0
    for r, c in zip(reference, current, strict=True):
        p = max(r / ref_total, epsilon)
        q = max(c / cur_total, epsilon)
        value += (q - p) * math.log(q / p)
    return value
