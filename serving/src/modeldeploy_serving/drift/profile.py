"""The reference profile: how each feature and the prediction score were distributed at training time.

Bin layout, shared by the profile and the live windows (k inner bins from k+1 sorted edges):
    [underflow (x < edges[0]), inner bin 0 .. inner bin k-1, overflow (x > edges[-1]), missing (NaN)]
Inner bins are [e_i, e_i+1) with the last one closed. Continuous features get decile edges of the
non-missing training values; features with at most 20 distinct values get one bin per value.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

PROFILE_NAME = "reference_profile.json"
MAX_DISCRETE_VALUES = 20
DECILES = np.linspace(0.0, 1.0, 11)

FloatArray = npt.NDArray[np.floating]
CountArray = npt.NDArray[np.int64]


class BinnedProfile(BaseModel):
    """Bins and counts of one column (a feature, or the prediction score)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["continuous", "discrete"]
    edges: list[float] = Field(min_length=2)
    counts: list[int]
    """Counts in the bin layout above: underflow, inner bins, overflow, missing."""
    rows: int
    missing_ratio: float
    min: float | None
    max: float | None
    mean: float | None
    std: float | None


class ReferenceProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    features: list[BinnedProfile]
    score: BinnedProfile
    score_source: Literal["validation", "training"]


def edges_for(values: FloatArray) -> tuple[Literal["continuous", "discrete"], npt.NDArray[np.float64]]:
    """Bin edges for one column of training values (NaN ignored)."""
    present = values[~np.isnan(values)].astype(np.float64)
    if present.size == 0:
        return "continuous", np.array([0.0, 0.0])
    distinct = np.unique(present)
    if distinct.size == 1:
        return "discrete", np.array([distinct[0], distinct[0]])
    if distinct.size <= MAX_DISCRETE_VALUES:
        mids = (distinct[:-1] + distinct[1:]) / 2.0
        return "discrete", np.concatenate([[distinct[0]], mids, [distinct[-1]]])
    edges = np.unique(np.quantile(present, DECILES))
    if edges.size == 1:
        edges = np.array([edges[0], edges[0]])
    return "continuous", edges


def bin_counts(values: FloatArray, edges: npt.NDArray[np.float64]) -> CountArray:
    """Counts of `values` in the bin layout of `edges` (see the module docstring).

    One searchsorted and one bincount per column: with the last edge nudged up by one ulp, index 0
    is underflow, 1..k the inner bins (the last one closed) and k+1 overflow, where NaN also lands
    (NaN sorts last), so the missing count is moved from there to its own bin.
    """
    k = max(edges.size - 1, 1)
    if edges.size < 2:
        edges = np.array([edges[0], edges[0]])
    closed = edges.copy()
    closed[-1] = np.nextafter(closed[-1], np.inf)
    index = np.searchsorted(closed, values, side="right")
    counts = np.bincount(index, minlength=k + 2)
    missing = int(np.count_nonzero(np.isnan(values)))
    out = np.empty(k + 3, dtype=np.int64)
    out[: k + 1] = counts[: k + 1]
    out[k + 1] = counts[k + 1] - missing
    out[k + 2] = missing
    return out


def profile_column(name: str, values: FloatArray) -> BinnedProfile:
    values = np.asarray(values, dtype=np.float64)
    kind, edges = edges_for(values)
    present = values[~np.isnan(values)]
    stats = (
        (float(present.min()), float(present.max()), float(present.mean()), float(present.std()))
        if present.size
        else (None, None, None, None)
    )
    return BinnedProfile(
        name=name,
        kind=kind,
        edges=[float(e) for e in edges],
        counts=[int(c) for c in bin_counts(values, edges)],
        rows=int(values.size),
        missing_ratio=float(1.0 - present.size / values.size) if values.size else 0.0,
        min=stats[0],
        max=stats[1],
        mean=stats[2],
        std=stats[3],
    )


def build_profile(
    feature_names: list[str],
    train: FloatArray,
    scores: FloatArray,
    score_source: Literal["validation", "training"],
) -> ReferenceProfile:
    """Profile of the training features (columns of `train`) and of prediction scores."""
    features = [profile_column(name, train[:, i]) for i, name in enumerate(feature_names)]
    return ReferenceProfile(
        features=features, score=profile_column("score", scores), score_source=score_source
    )
