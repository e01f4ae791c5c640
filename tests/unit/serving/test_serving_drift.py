"""Drift statistics, binning and windows as pure functions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modeldeploy_contract.psi import psi
from modeldeploy_serving.drift import stats
from modeldeploy_serving.drift.profile import bin_counts, build_profile, edges_for
from modeldeploy_serving.drift.window import DriftWindow


def test_psi_of_identical_distributions_is_zero() -> None:
    assert psi([10, 20, 30, 0], [1, 2, 3, 0]) == pytest.approx(0.0)


def test_psi_matches_the_textbook_formula() -> None:
    ref, cur = [50, 50], [80, 20]
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert psi(ref, cur) == pytest.approx(expected)


def test_psi_uses_epsilon_for_empty_bins_and_nan_for_empty_windows() -> None:
    value = psi([100, 0], [90, 10])
    expected = (0.9 - 1.0) * math.log(0.9 / 1.0) + (0.1 - 1e-4) * math.log(0.1 / 1e-4)
    assert value == pytest.approx(expected)
    assert math.isnan(psi([1, 2], [0, 0]))


def test_binned_ks_ignores_the_missing_bin() -> None:
    # layout: under, b0, b1, over, missing
    assert stats.binned_ks([0, 50, 50, 0, 0], [0, 50, 50, 0, 900]) == pytest.approx(0.0)
    assert stats.binned_ks([0, 100, 0, 0, 0], [0, 0, 100, 0, 0]) == pytest.approx(1.0)
    assert stats.binned_ks([0, 50, 50, 0, 0], [0, 75, 25, 0, 0]) == pytest.approx(0.25)
    assert math.isnan(stats.binned_ks([0, 1, 1, 0, 0], [0, 0, 0, 0, 5]))


def test_missing_and_out_of_range_ratios() -> None:
    counts = [5, 40, 40, 15, 100]
    assert stats.missing_ratio(counts) == pytest.approx(0.5)
    assert stats.out_of_range_ratio(counts) == pytest.approx(0.2)
    assert stats.out_of_range_ratio([0, 0, 0, 0, 3]) == 0.0


def test_discrete_features_get_one_bin_per_value() -> None:
    values = np.array([1, 1, 2, 3, 3, 3, np.nan])
    kind, edges = edges_for(values)
    assert kind == "discrete"
    np.testing.assert_allclose(edges, [1, 1.5, 2.5, 3])
    counts = bin_counts(np.array([0, 1, 2, 3, 4, np.nan, np.nan]), edges)
    assert counts.tolist() == [1, 1, 1, 1, 1, 2]  # under, 1, 2, 3, over, missing


def test_continuous_features_get_decile_edges() -> None:
    values = np.random.default_rng(0).normal(size=10_000)
    kind, edges = edges_for(values)
    assert kind == "continuous"
    assert len(edges) == 11
    counts = bin_counts(values, edges)
    assert counts[0] == counts[-2] == counts[-1] == 0
    assert all(abs(c - 1000) <= 2 for c in counts[1:-2])
    assert bin_counts(np.array([edges[-1]]), edges)[-3] == 1  # the max lands in the last (closed) bin


def test_constant_and_all_missing_columns() -> None:
    kind, edges = edges_for(np.array([4.0, 4.0, np.nan]))
    assert kind == "discrete"
    assert bin_counts(np.array([4.0, 5.0, np.nan]), edges).tolist() == [0, 1, 1, 1]
    _, edges = edges_for(np.array([np.nan, np.nan]))
    assert bin_counts(np.array([np.nan]), edges).tolist() == [0, 0, 0, 1]


def _profile(rng: np.random.Generator) -> tuple[object, np.ndarray]:
    train = np.column_stack([rng.normal(size=5000), rng.integers(0, 5, 5000).astype(float)])
    train[rng.random(5000) < 0.1, 0] = np.nan
    scores = rng.uniform(size=2000)
    return build_profile(["a", "b"], train, scores, "validation"), train


def test_profile_records_counts_and_summary() -> None:
    profile, train = _profile(np.random.default_rng(1))
    a = profile.features[0]  # type: ignore[attr-defined]
    assert a.rows == 5000
    assert sum(a.counts) == 5000
    assert a.missing_ratio == pytest.approx(np.isnan(train[:, 0]).mean())
    assert profile.features[1].kind == "discrete"  # type: ignore[attr-defined]
    assert len(profile.score.edges) == 11  # type: ignore[attr-defined]


def test_window_stable_then_drifted() -> None:
    rng = np.random.default_rng(2)
    profile, _ = _profile(rng)
    window = DriftWindow(profile, max_rows=1000, max_seconds=60)  # type: ignore[arg-type]
    same = np.column_stack([rng.normal(size=1000), rng.integers(0, 5, 1000)]).astype(np.float32)
    same[rng.random(1000) < 0.1, 0] = np.nan
    full = False
    for i in range(0, 1000, 100):
        full = window.add(same[i : i + 100], rng.uniform(size=100).astype(np.float32))
    assert full
    result = window.close()
    assert result.rows == 1000
    assert window.rows == 0
    assert all(f.psi < 0.1 for f in result.features)
    assert result.score_psi < 0.1
    assert result.features[0].missing_ratio == pytest.approx(np.isnan(same[:, 0]).mean())

    moved = np.column_stack([rng.normal(1.0, 1.0, 1000), np.full(1000, 7.0)]).astype(np.float32)
    window.add(moved, rng.beta(5, 1, 1000).astype(np.float32))
    result = window.close()
    assert result.features[0].psi > 0.25
    assert result.features[1].out_of_range_ratio == 1.0
    assert result.features[1].ks == pytest.approx(1.0)
    assert result.score_psi > 0.25


def test_window_expires_by_time_only_with_rows() -> None:
    profile, _ = _profile(np.random.default_rng(3))
    window = DriftWindow(profile, max_rows=1000, max_seconds=5)  # type: ignore[arg-type]
    assert not window.expired(now=window.started_at + 100)
    window.add(np.zeros((1, 2), dtype=np.float32), np.zeros(1, dtype=np.float32))
    assert not window.expired(now=window.started_at + 1)
    assert window.expired(now=window.started_at + 5)


def test_window_skips_rows_while_paused() -> None:
    profile, _ = _profile(np.random.default_rng(4))
    window = DriftWindow(profile, max_rows=10, max_seconds=60)  # type: ignore[arg-type]
    window.paused_until = window.started_at + 3600
    assert not window.add(np.zeros((50, 2), dtype=np.float32), np.zeros(50, dtype=np.float32))
    assert window.rows == 0
    assert window.skipped_rows == 50
    window.paused_until = 0.0
    assert window.add(np.zeros((10, 2), dtype=np.float32), np.zeros(10, dtype=np.float32))


def test_window_exports_its_bin_counts_and_layout_for_comparison_with_the_stable() -> None:
    """issue 12: inputDrift with reference: stable compares these counts between revisions."""
    from prometheus_client import REGISTRY

    from modeldeploy_serving.drift.window import layout_id
    from modeldeploy_serving.metrics import ModelMetrics

    rng = np.random.default_rng(5)
    profile, _ = _profile(rng)
    window = DriftWindow(profile, max_rows=100, max_seconds=60)  # type: ignore[arg-type]
    rows = np.column_stack([rng.normal(size=100), rng.integers(0, 5, 100)]).astype(np.float32)
    rows[:7, 0] = np.nan
    window.add(rows, rng.uniform(size=100).astype(np.float32))
    result = window.close()
    a = result.features[0]
    assert sum(a.counts) == 100
    assert a.counts[-1] == 7  # the missing bin
    assert a.layout == layout_id(profile.features[0].edges)  # type: ignore[attr-defined]
    assert len(a.layout) == 8
    assert result.features[1].layout != a.layout
    ModelMetrics("bins-test", "1").publish_window(result)
    labels = {"model": "bins-test", "version": "1", "feature": "a", "layout": a.layout}
    missing = REGISTRY.get_sample_value("modeldeploy_feature_bin_rows_total", {**labels, "bin": "missing"})
    assert missing == 7
    total = sum(
        REGISTRY.get_sample_value("modeldeploy_feature_bin_rows_total", {**labels, "bin": str(i)}) or 0.0
        for i in range(len(a.counts) - 1)
    )
    assert total == 93
    # the profile's rows in the same layout, for the operator's early decision against the profile
    assert a.reference == tuple(profile.features[0].counts)  # type: ignore[attr-defined]
    reference = {
        i: REGISTRY.get_sample_value("modeldeploy_feature_reference_rows", {**labels, "bin": str(i)})
        for i in range(len(a.reference) - 1)
    }
    assert {i: n for i, n in reference.items() if n} == {i: n for i, n in enumerate(a.reference[:-1]) if n}
    # published again with the next window: still the profile's rows, never added up
    ModelMetrics("bins-test", "1").publish_window(result)
    assert REGISTRY.get_sample_value("modeldeploy_feature_reference_rows", {**labels, "bin": "0"}) == (
        a.reference[0] or None
    )
