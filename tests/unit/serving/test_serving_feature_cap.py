"""Metric hygiene: a wide model's drift series are capped per pod, the rest summarised by their
largest value, and the set of series does not change from window to window."""

from __future__ import annotations

import math

import numpy as np
from prometheus_client import REGISTRY

from modeldeploy_contract.server_settings import ServerSettings
from modeldeploy_serving.drift.window import FeatureDrift, WindowResult
from modeldeploy_serving.metrics import OTHER_FEATURES, ModelMetrics, capped_features


def feature(i: int, psi: float) -> FeatureDrift:
    return FeatureDrift(name=f"f{i}", psi=psi, ks=psi / 10, missing_ratio=0.0, out_of_range_ratio=math.nan)


def test_few_features_pass_as_they_are() -> None:
    features = [feature(i, 0.1 * i) for i in range(3)]
    assert capped_features(features, 3) == features


def test_the_rest_is_summarised_by_its_largest_value() -> None:
    features = [feature(i, float(i)) for i in range(10)]
    capped = capped_features(features, 4)
    assert [f.name for f in capped] == ["f0", "f1", "f2", "f3", OTHER_FEATURES]
    other = capped[-1]
    assert other.psi == 9.0
    assert other.ks == 0.9
    assert math.isnan(other.out_of_range_ratio)  # nothing measured: still nothing, not 0
    # A max over the series still sees the drifting feature past the cap.
    assert max(f.psi for f in capped) == max(f.psi for f in features)


def test_published_series_are_bounded_and_stable_across_windows() -> None:
    metrics = ModelMetrics("cap-test", "1", max_feature_series=5)
    for window in range(3):  # which feature drifts most changes; the series do not
        psis = np.random.default_rng(window).random(500)
        metrics.publish_window(
            WindowResult(
                rows=100,
                ended_at=1.0,
                features=[feature(i, float(p)) for i, p in enumerate(psis)],
                score_psi=0.0,
                scores=np.zeros(3),
            )
        )
    names = {
        sample.labels["feature"]
        for family in REGISTRY.collect()
        if family.name == "modeldeploy_feature_drift_psi"
        for sample in family.samples
        if sample.labels.get("model") == "cap-test"
    }
    assert names == {"f0", "f1", "f2", "f3", "f4", OTHER_FEATURES}


def test_the_cap_is_a_server_setting() -> None:
    assert ServerSettings(model_uri="file:///m").drift_max_feature_series == 100
