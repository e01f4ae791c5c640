"""Analysis maths: PromQL's histogram_quantile, PSI between histograms, counter increases."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy_contract.psi import psi  # the one definition the operator's stats use
from modeldeploy_operator.analysis.deltas import group_increase, labels_are, restarted
from modeldeploy_operator.analysis.scrape import GroupScrape, parse_metrics
from modeldeploy_operator.analysis.stats import (
    bucket_counts,
    buckets_from_le,
    histogram_psi,
    histogram_quantile,
)

from analysis_fixtures import group, server_text

INF = math.inf


# Expected values worked out by hand with Prometheus' bucketQuantile (promql/quantile.go, 2.x).
@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [(0.1, 10), (0.2, 20), (INF, 20)], 0.1),  # rank 10 ends the first bucket
        (0.75, [(0.1, 10), (0.2, 20), (INF, 20)], 0.15),  # half-way into (0.1, 0.2]
        (0.99, [(0.1, 50), (0.5, 100), (INF, 100)], 0.1 + 0.4 * (99 - 50) / 50),
        (0.5, [(0.25, 4), (INF, 4)], 0.125),  # first bucket: lower edge 0
        (0.99, [(0.1, 10), (0.2, 10), (INF, 20)], 0.2),  # rank in +Inf: highest finite bound
        (0.5, [(-1.0, 5), (0.0, 8), (INF, 10)], -1.0),  # first bound not positive: returned as is
        (0.5, [(INF, 20), (0.2, 20), (0.1, 10)], 0.1),  # order of the input does not matter
        (0.55, [(0.1, 12), (0.2, 10), (INF, 20)], 0.1 * 11 / 12),  # non-monotonic sums repaired
        (0.9, [(0.1, 12), (0.2, 10), (INF, 20)], 0.2),
    ],
)
def test_histogram_quantile_matches_promql(
    q: float, buckets: list[tuple[float, float]], expected: float
) -> None:
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


@pytest.mark.parametrize(
    "buckets",
    [
        [],
        [(INF, 0)],  # fewer than two buckets
        [(0.1, 0), (INF, 0)],  # no observations: no data, not a fast service
        [(0.1, 3), (0.2, 5)],  # no +Inf bucket
    ],
)
def test_histogram_quantile_without_data_is_nan(buckets: list[tuple[float, float]]) -> None:
    assert math.isnan(histogram_quantile(0.99, buckets))


def test_histogram_quantile_outside_zero_one() -> None:
    assert histogram_quantile(-0.1, [(0.1, 1), (INF, 1)]) == -INF
    assert histogram_quantile(1.5, [(0.1, 1), (INF, 1)]) == INF


def test_buckets_from_le_and_counts() -> None:
    buckets = buckets_from_le({"+Inf": 10.0, "0.5": 7.0, "0.1": 2.0})
    assert buckets == [(0.1, 2.0), (0.5, 7.0), (INF, 10.0)]
    assert bucket_counts(buckets) == [2.0, 5.0, 3.0]


def test_psi_matches_the_servers_definition() -> None:
    assert psi([10, 20, 70], [10, 20, 70]) == 0.0
    assert psi([1, 2, 7], [10, 20, 70]) == pytest.approx(0.0)  # proportions, not counts
    expected = (0.5 - 0.2) * math.log(0.5 / 0.2) + (0.5 - 0.8) * math.log(0.5 / 0.8)
    assert psi([20, 80], [50, 50]) == pytest.approx(expected)
    # An empty bucket counts as 1e-4, so the value stays finite.
    assert psi([0, 100], [50, 50]) == pytest.approx(
        (0.5 - 1e-4) * math.log(0.5 / 1e-4) + (0.5 - 1.0) * math.log(0.5 / 1.0)
    )
    assert math.isnan(psi([0, 0], [1, 1]))
    assert math.isnan(psi([1, 1], [0, 0]))


def test_histogram_psi_needs_the_same_bounds() -> None:
    a = [(0.5, 20.0), (INF, 100.0)]
    b = [(0.5, 50.0), (INF, 100.0)]
    assert histogram_psi(a, b) == pytest.approx(psi([20, 80], [50, 50]))
    assert math.isnan(histogram_psi(a, [(0.4, 50.0), (INF, 100.0)]))


def test_increase_sums_pods_and_label_sets() -> None:
    before = group(a=server_text({200: 10, 500: 1}), b=server_text({200: 5}))
    after = group(a=server_text({200: 30, 500: 3}), b=server_text({200: 25, 400: 2}))
    increase = group_increase(before, after)
    assert increase.total("modeldeploy_requests_total") == 20 + 2 + 20 + 2
    # A series that first appeared on a known pod (b's first 400) counts from zero.
    assert increase.by_label("modeldeploy_request_errors_total", "code") == {"500": 2.0, "400": 2.0}
    assert increase.total("modeldeploy_requests_total", labels_are(code="200")) == 40
    assert (increase.pods_counted, increase.pods_new, increase.pods_lost) == (2, 0, 0)


def test_restarted_pod_counts_from_its_restart_never_negative() -> None:
    before = group(a=server_text({200: 100}, started=1000.0))
    # New process (start time changed): 7 requests since the restart, not 7 - 100.
    after = group(a=server_text({200: 7}, started=2000.0))
    increase = group_increase(before, after)
    assert increase.total("modeldeploy_requests_total") == 7
    assert increase.pods_restarted == 1


def test_a_counter_that_went_down_means_a_restart_without_start_time() -> None:
    before = parse_metrics(server_text({200: 100, 500: 3}).replace("process_start_time_seconds", "x_start"))
    after = parse_metrics(server_text({200: 120, 500: 1}).replace("process_start_time_seconds", "x_start"))
    assert restarted(before, after)
    increase = group_increase(GroupScrape({"a": before}), GroupScrape({"a": after}))
    # Every series of a restarted pod counts from zero: 120 requests, not 20.
    assert increase.total("modeldeploy_requests_total") == 121
    assert not restarted(before, before)


def test_new_pods_wait_for_the_next_reading_and_lost_pods_are_reported() -> None:
    before = group(a=server_text({200: 10}), gone=server_text({200: 10}))
    after = group(a=server_text({200: 15}), fresh=server_text({200: 1000}))
    increase = group_increase(before, after)
    # `fresh` may hold traffic from before the interval: left out rather than over-counted.
    assert increase.total("modeldeploy_requests_total") == 5
    assert (increase.pods_counted, increase.pods_new, increase.pods_lost) == (1, 1, 1)
    assert increase.describe() == "1 pod, 1 new (counted from the next reading), 1 gone or unreachable"


def test_histogram_bucket_increases_keep_their_le() -> None:
    before = group(a=server_text(latencies=[0.002] * 10))
    after = group(a=server_text(latencies=[0.002] * 10 + [0.02] * 5 + [1.0]))
    by_le = group_increase(before, after).by_label("modeldeploy_request_duration_seconds_bucket", "le")
    assert by_le == {"0.001": 0, "0.005": 0, "0.01": 0, "0.05": 5, "0.1": 5, "+Inf": 6}


# --- binned two-sample KS (issue 12) ---------------------------------------------------------------


def _cumulative(
    counts: list[float], bounds: tuple[float, ...] = (0.25, 0.5, 0.75, math.inf)
) -> list[tuple[float, float]]:
    total, out = 0.0, []
    for bound, n in zip(bounds, counts, strict=True):
        total += n
        out.append((bound, total))
    return out


@pytest.mark.parametrize(
    ("p", "q", "distance", "bound"),
    [
        ([10, 10, 10, 10], [1, 1, 1, 1], 0.0, 0.25),  # same shape, any sizes
        ([10, 0, 0, 0], [0, 0, 0, 10], 1.0, 1.0),  # disjoint
        ([50, 50, 0, 0], [0, 50, 50, 0], 0.5, 0.5),
        ([40, 30, 20, 10], [10, 20, 30, 40], 0.4, 0.4),  # CDFs .4 .7 .9 1 vs .1 .3 .6 1
    ],
)
def test_histogram_ks_table(p: list[float], q: list[float], distance: float, bound: float) -> None:
    from modeldeploy_operator.analysis.stats import histogram_ks

    value, error = histogram_ks(_cumulative(p), _cumulative(q))
    assert value == pytest.approx(distance)
    assert error == pytest.approx(bound)


def test_histogram_ks_refuses_mismatched_or_empty_histograms() -> None:
    from modeldeploy_operator.analysis.stats import histogram_ks

    assert all(math.isnan(v) for v in histogram_ks(_cumulative([1, 1, 1, 1]), [(1.0, 1.0), (math.inf, 2.0)]))
    assert all(math.isnan(v) for v in histogram_ks(_cumulative([0, 0, 0, 0]), _cumulative([1, 1, 1, 1])))


@pytest.mark.parametrize(
    ("distance", "n", "m", "low", "high"),
    [
        (0.0, 100, 100, 1.0, 1.0),
        (0.1, 100, 100, 0.6, 0.75),  # scipy.stats.kstwo-like asymptotics: ~0.68
        (0.2, 100, 100, 0.02, 0.05),  # ~0.03
        (0.5, 100, 100, 0.0, 1e-9),
    ],
)
def test_ks_p_value_table(distance: float, n: int, m: int, low: float, high: float) -> None:
    from modeldeploy_operator.analysis.stats import ks_p_value

    assert low <= ks_p_value(distance, n, m) <= high


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 50), min_size=4, max_size=4).filter(lambda c: sum(c) > 0),
    st.lists(st.integers(0, 50), min_size=4, max_size=4).filter(lambda c: sum(c) > 0),
)
def test_binned_ks_is_a_lower_bound_of_the_raw_sample_distance(p: list[int], q: list[int]) -> None:
    """Spread each bucket's samples anywhere inside it: the raw two-sample distance always lies in
    [D, D + bound] (the documented binning error)."""
    from modeldeploy_operator.analysis.stats import histogram_ks

    edges = (0.0, 0.25, 0.5, 0.75, 1.0)

    def samples(counts: list[int], offset: float) -> list[float]:
        return [
            edges[i] + (edges[i + 1] - edges[i]) * ((j * 0.618 + offset) % 1.0)
            for i, n in enumerate(counts)
            for j in range(n)
        ]

    a, b = sorted(samples(p, 0.13)), sorted(samples(q, 0.71))
    points = sorted(set(a) | set(b))
    raw = max(abs(sum(x <= t for x in a) / len(a) - sum(x <= t for x in b) / len(b)) for t in points)
    bounds = (0.25, 0.5, 0.75, math.inf)
    value, error = histogram_ks(
        _cumulative([float(c) for c in p], bounds), _cumulative([float(c) for c in q], bounds)
    )
    assert value <= raw + 1e-9
    assert raw <= value + error + 1e-9
