"""The model server labels the router's copies traffic="mirror" (issue 12): two label values only."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from modeldeploy_serving import metrics
from modeldeploy_serving.app import traffic_of


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], "live"),
        ([(b"x-modeldeploy-traffic", b"mirror")], "mirror"),
        ([(b"x-modeldeploy-traffic", b"MIRROR")], "live"),
        ([(b"x-modeldeploy-traffic", b"anything-else" * 100)], "live"),  # never a label value
        ([(b"x-other", b"mirror")], "live"),
    ],
)
def test_traffic_of(headers: list[tuple[bytes, bytes]], expected: str) -> None:
    assert traffic_of(headers) == expected


def test_mirrored_requests_are_counted_apart() -> None:
    accounting = metrics.ModelMetrics("traffic-label-test", "1")
    accounting.request("v2", 200, 0.01)
    accounting.request("v2", 200, 0.01, "mirror")
    accounting.request("v2", 500, 0.01, "mirror")
    accounting.flush()

    def count(name: str, code: str, traffic: str) -> float:
        labels = {
            "model": "traffic-label-test",
            "version": "1",
            "protocol": "v2",
            "code": code,
            "traffic": traffic,
        }
        return REGISTRY.get_sample_value(name, labels) or 0.0

    assert count("modeldeploy_requests_total", "200", "live") == 1
    assert count("modeldeploy_requests_total", "200", "mirror") == 1
    assert count("modeldeploy_request_errors_total", "500", "mirror") == 1
    assert count("modeldeploy_request_errors_total", "200", "live") == 0
