"""PromQL checks against a real Prometheus (Debian's package) scraping real model servers every second.

The same traffic is measured by the built-in scrape too: both sources must agree, since the
operator may use either for the same check.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from modeldeploy_contract.metric_names import PREDICTION_SCORE
from modeldeploy_operator.analysis import (
    AddressPolicy,
    AnalysisSources,
    AnalysisTarget,
    BuiltinScrapeSource,
    PrometheusClient,
    PrometheusReader,
)
from modeldeploy_operator.domain.readings import CheckReading
from modeldeploy_operator.domain.spec import Analysis, Check, Threshold
from modeldeploy_serving.metrics import LATENCY_BUCKETS

from analysis_harness import WINDOW_SECONDS, Churn, model_server, prometheus
from local_processes import free_port

WINDOW = timedelta(seconds=30)
BUILTIN = [
    Check(name=kind.lower(), type=kind, threshold=Threshold(max=1))
    for kind in ("errorRate", "latencyP99", "inputDrift", "predictionShift")
]


WINDOW_ROWS = 10
"""Drift windows of one 10-row request: see the warm-up below."""


def user_check(query: str) -> Check:
    return Check(name="custom", type="prometheus", threshold=Threshold(max=1), query=query)


def by_check(readings: list[CheckReading]) -> dict[str, CheckReading]:
    return {r.check: r for r in readings}


def test_promql_checks_with_a_real_prometheus(churn: Churn, tmp_path: Path) -> None:
    with (
        model_server(churn.bundle("v1"), tmp_path, window_rows=WINDOW_ROWS) as stable,
        model_server(churn.bundle("v3"), tmp_path, window_rows=WINDOW_ROWS) as canary,
        prometheus({stable.address: "stable1", canary.address: "canary1"}, tmp_path) as prom,
    ):
        t = AnalysisTarget(
            "ml",
            "churn",
            "default",
            "canary1",
            "stable1",
            canary_endpoints=(canary.address,),
            stable_endpoints=(stable.address,),
            drift_window_seconds=WINDOW_SECONDS,
        )
        # Warm-up: every series exists and has been scraped a few times before the measured traffic
        # (increase() counts from a series' first sample). One request of a whole drift window each,
        # so the score histograms exist too and the measured rows fill whole windows; a window is one
        # measured request's rows, so the warm-up takes as long as the others (increase() may count it:
        # a slower one moved Prometheus' p99 into the next latency bucket).
        canary.send(churn.normal[:WINDOW_ROWS], per_request=WINDOW_ROWS)
        canary.bad_request()
        stable.send(churn.normal[:WINDOW_ROWS], per_request=WINDOW_ROWS)
        prom.wait_scraped(2, "canary1")
        # ...and the stable's warm-up too, score series included: Prometheus scrapes each target on its
        # own schedule, and a stable whose first scrape came after its measured rows began had them
        # counted from there (CI runs of 2026-12-04 and 2026-12-06: predictionShift over 319 and 320
        # of the stable's 400 rows, with the final count already waited for below).
        for revision in ("canary1", "stable1"):
            scores = f'sum({PREDICTION_SCORE}_count{{modeldeploy_io_revision="{revision}"}})'
            prom.wait_value(scores, WINDOW_ROWS)
        time.sleep(3)
        scrape = BuiltinScrapeSource()
        scrape.read(BUILTIN, t, WINDOW)

        measured_from = time.monotonic()
        canary.send(churn.normal[:400])
        stable.send(churn.normal[400:800])
        for _ in range(10):
            canary.bad_request()
        prom.wait_scraped(52, "canary1")
        # Every series the checks read, of both revisions, scraped at its final count: the stable is
        # scraped on its own schedule, and under load its last scrape came after the query (the CI run
        # of 2026-12-04: predictionShift over 319 of the stable's 400 rows).
        for revision in ("canary1", "stable1"):
            scores = f'sum({PREDICTION_SCORE}_count{{modeldeploy_io_revision="{revision}"}})'
            prom.wait_value(scores, WINDOW_ROWS + 400)  # the warm-up's window and the measured rows
        time.sleep(3)  # a few more samples after the last increment

        # The window must hold all of the measured traffic: on a stalled machine (2026-12-02, a
        # cluster e2e test beside it) sending and scraping took longer than 30 s and the window held
        # only the 10 bad requests (error rate 1.0 over 10). Widened only then, so that it may take
        # in the warm-up's two requests (one bad: 11/52, within the tolerances below).
        elapsed = time.monotonic() - measured_from
        window = max(WINDOW, timedelta(seconds=elapsed + 5))
        reader = PrometheusReader(PrometheusClient(prom.url, timeout_seconds=5))
        via_prometheus = by_check(reader.read(BUILTIN, t, window))
        via_scrape = by_check(scrape.read(BUILTIN, t, window))

        errors = via_prometheus["errorrate"]
        assert errors.value == pytest.approx(10 / 50, abs=0.03), errors
        assert errors.samples == pytest.approx(50, rel=0.2)
        assert via_scrape["errorrate"].value == pytest.approx(10 / 50)

        p99 = via_prometheus["latencyp99"]
        assert p99.value is not None
        # Both are interpolated inside a histogram bucket; where depends on increase()'s extrapolated
        # counts against the scrape's exact ones. The p99 of 50 requests is their slowest: when it is
        # alone in its bucket, the extrapolated rank can fall just below that bucket (the CI's red run,
        # 2026-12-04, on a loaded machine: one bucket apart). Agreement is to a bucket's neighbour.
        assert _adjacent_buckets(p99.value, via_scrape["latencyp99"].value), (
            p99,
            via_scrape["latencyp99"],
        )
        # The counts per bucket came too, for an early Fail: the same layout as the scrape's, and
        # about its counts (increase() extrapolates).
        scraped = via_scrape["latencyp99"].buckets
        assert p99.buckets is not None, p99
        assert scraped is not None
        assert [bound for bound, _ in p99.buckets] == [bound for bound, _ in scraped]
        assert p99.buckets[-1][1] == pytest.approx(scraped[-1][1], rel=0.2)

        drift = via_prometheus["inputdrift"]
        assert drift.value == pytest.approx(via_scrape["inputdrift"].value)  # the same gauges
        assert drift.samples == WINDOW_ROWS
        # Every feature's rows per bin came too, for an early Fail: the profile's from the same gauges
        # as the scrape's (so the same features and bin layouts), the canary's about the scrape's
        # increases (increase() extrapolates).
        scraped_bins = via_scrape["inputdrift"].histograms
        assert drift.histograms is not None, drift
        assert scraped_bins is not None
        assert [profile for profile, _ in drift.histograms] == [profile for profile, _ in scraped_bins]
        for (_, from_prometheus), (_, from_scrape) in zip(drift.histograms, scraped_bins, strict=True):
            assert sum(from_prometheus) == pytest.approx(sum(from_scrape), rel=0.2)
        # inputDriftKS reads the same rows: one binned distance per feature, over its present rows.
        ks_check = Check(name="ks", type="inputDriftKS", threshold=Threshold(max=1))
        ks = reader.read_one(ks_check, t, window.total_seconds())
        assert ks.ks is not None, ks
        assert len(ks.ks) == len(drift.histograms)
        for comparison, (_, canary_rows) in zip(ks.ks, drift.histograms, strict=True):
            assert 0 <= comparison.distance <= 1
            assert comparison.reference is None  # the profile, taken as exact
            assert comparison.current == pytest.approx(sum(canary_rows[:-1]), rel=0.2, abs=1)

        shift = via_prometheus["predictionshift"]
        assert shift.value is not None
        assert shift.value > 0.25  # v3's scores against v1's
        assert shift.value == pytest.approx(via_scrape["predictionshift"].value, rel=0.25)
        assert shift.samples == pytest.approx(400, rel=0.2)

        total = 'sum(modeldeploy_requests_total{modeldeploy_io_revision="canary1"})'
        custom = reader.read_one(user_check(total), t, 30)
        assert (custom.value, custom.samples) == (52.0, 1)
        nan = reader.read_one(user_check("vector(0) / vector(0)"), t, 30)
        assert nan.value is None
        assert nan.detail.startswith("query returned nan")
        broken = reader.read_one(user_check("sum(rate(x[1m]"), t, 30)
        assert broken.value is None
        assert broken.detail.startswith("query failed: bad_data")
        several = reader.read_one(user_check("modeldeploy_requests_total"), t, 30)
        assert several.value is None
        assert "series" in several.detail
        unknown = reader.read_one(user_check('sum(up{job="nothing"})'), t, 30)
        assert (unknown.value, unknown.detail) == (None, "query returned no data")

        # The whole entry point: a Prometheus source configured, so built-in checks use PromQL too.
        analysis = Analysis.model_validate(
            {"interval": "30s", "checks": [*BUILTIN, user_check(total)], "prometheus": {"address": prom.url}}
        )
        routed = AnalysisSources(policy=AddressPolicy((prom.url,))).read(analysis, analysis.checks, t)
        assert [r.check for r in routed] == [c.name for c in analysis.checks]
        assert all(r.value is not None for r in routed), routed


def test_an_unreachable_prometheus_gives_readings_without_values() -> None:
    reader = PrometheusReader(PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout_seconds=1))
    t = AnalysisTarget("ml", "churn", "default", "canary1", "stable1")
    readings = reader.read([*BUILTIN, user_check("up")], t, WINDOW)
    assert all(r.value is None for r in readings)
    assert all("connection refused or unreachable" in r.detail for r in readings), readings


def _adjacent_buckets(a: float | None, b: float | None) -> bool:
    """Both values lie within two neighbouring buckets of the server's latency histogram (edges
    included)."""
    assert a is not None
    assert b is not None
    edges = (0.0, *LATENCY_BUCKETS)
    return any(low <= min(a, b) and max(a, b) <= high for low, high in zip(edges, edges[2:], strict=False))
