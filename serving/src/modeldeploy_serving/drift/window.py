"""A count-based tumbling window of live rows, closed early by time.

The hot path only appends references to the request's (already converted) arrays: a list append
and an integer add; rows that are views into a request body are copied (only those rows), so a
window never keeps a body alive. Binning and statistics run once per window, vectorised over all
buffered rows.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from modeldeploy_contract.psi import psi
from modeldeploy_serving.drift import stats
from modeldeploy_serving.drift.profile import ReferenceProfile, bin_counts


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    psi: float
    ks: float
    missing_ratio: float
    out_of_range_ratio: float
    counts: tuple[int, ...] = ()
    """The window's rows per bin of the profile's layout (exported, so that the operator can compare
    the canary's live inputs with the stable's over the same interval)."""
    layout: str = ""
    """Identifies the bin edges (a hash): two revisions' counts are comparable only when it is equal."""
    reference: tuple[int, ...] = ()
    """The profile's rows per bin of the same layout (exported beside `counts`, so that the operator
    can tell overwhelming drift from small-sample noise before minSamples)."""


def layout_id(edges: Sequence[float]) -> str:
    """A short, stable name of a bin layout (8 hex digits of the SHA-256 of the edges' reprs)."""
    return hashlib.sha256(",".join(repr(float(e)) for e in edges).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class WindowResult:
    rows: int
    ended_at: float
    features: list[FeatureDrift]
    score_psi: float
    scores: npt.NDArray[np.float64]


def _own(a: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The rows in memory of their own when they are a view into a foreign buffer (a binary tensor
    is a view into the request body: keeping it would keep the whole body alive for a window)."""
    root = a
    while isinstance(root.base, np.ndarray):
        root = root.base
    return a if root.base is None else a.copy()


@dataclass
class DriftWindow:
    profile: ReferenceProfile
    max_rows: int
    max_seconds: float
    _inputs: list[npt.NDArray[np.float32]] = field(default_factory=list)
    _scores: list[npt.NDArray[np.floating]] = field(default_factory=list)
    rows: int = 0
    started_at: float = field(default_factory=time.monotonic)
    paused_until: float = 0.0
    """No rows are buffered before this time.monotonic() (the drift CPU budget, see the data plane)."""
    skipped_rows: int = 0

    def __post_init__(self) -> None:
        self._edges = [np.asarray(f.edges, dtype=np.float64) for f in self.profile.features]
        self._score_edges = np.asarray(self.profile.score.edges, dtype=np.float64)
        self._layouts = [layout_id(f.edges) for f in self.profile.features]

    def add(self, inputs: npt.NDArray[np.float32], scores: npt.NDArray[np.floating]) -> bool:
        """Buffer a batch; True when the window is full and should be closed."""
        if self.rows == 0:
            now = time.monotonic()
            if now < self.paused_until:
                self.skipped_rows += inputs.shape[0]
                return False
            self.started_at = now
        self._inputs.append(_own(inputs))
        self._scores.append(scores)
        self.rows += inputs.shape[0]
        return self.rows >= self.max_rows

    def expired(self, now: float | None = None) -> bool:
        return self.rows > 0 and ((now or time.monotonic()) - self.started_at) >= self.max_seconds

    def take(self) -> tuple[list[npt.NDArray[np.float32]], list[npt.NDArray[np.floating]]]:
        """Hand over the buffered rows and start a new window (cheap: the caller may compute elsewhere)."""
        taken = (self._inputs, self._scores)
        self._inputs, self._scores, self.rows = [], [], 0
        return taken

    def close(self) -> WindowResult:
        """Compute the statistics of the buffered rows and start a new window."""
        return self.compute(*self.take())

    def compute(
        self, input_parts: list[npt.NDArray[np.float32]], score_parts: list[npt.NDArray[np.floating]]
    ) -> WindowResult:
        """Statistics of one window's rows against the reference profile (touches no window state)."""
        inputs = np.concatenate(input_parts) if len(input_parts) > 1 else input_parts[0]
        scores = np.concatenate(score_parts).astype(np.float64)
        rows = inputs.shape[0]
        features = []
        # One contiguous float64 row per feature: searchsorted against float64 edges then needs no
        # per-call cast, and float32 -> float64 is exact, so values land where pack's did.
        columns = inputs.T.astype(np.float64)
        for i, (ref, edges) in enumerate(zip(self.profile.features, self._edges, strict=True)):
            counts = bin_counts(columns[i], edges).tolist()
            layout = self._layouts[i]
            features.append(
                FeatureDrift(
                    name=ref.name,
                    psi=psi(ref.counts, counts),
                    ks=stats.binned_ks(ref.counts, counts),
                    missing_ratio=stats.missing_ratio(counts),
                    out_of_range_ratio=stats.out_of_range_ratio(counts),
                    counts=tuple(counts),
                    layout=layout,
                    reference=tuple(ref.counts),
                )
            )
        score_psi = psi(self.profile.score.counts, bin_counts(scores, self._score_edges).tolist())
        return WindowResult(
            rows=rows, ended_at=time.time(), features=features, score_psi=score_psi, scores=scores
        )
