"""Built-in checks from scrapes: readings, sample counts, no data as None, and the scrape itself."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import httpx
import pytest

from modeldeploy_contract.psi import psi
from modeldeploy_operator.analysis import builtin
from modeldeploy_operator.analysis.scrape import (
    MAX_BODY_BYTES,
    GroupScrape,
    Snapshot,
    parse_metrics,
    scrape_pod,
)
from modeldeploy_operator.analysis.scrape_source import BuiltinScrapeSource
from modeldeploy_operator.analysis.target import AnalysisTarget
from modeldeploy_operator.domain.readings import CheckReading
from modeldeploy_operator.domain.spec import Check, Threshold

from analysis_fixtures import T0, group, router_text, server_text, snapshot

TARGET = AnalysisTarget(
    namespace="ml", deployment="churn", variant="default", canary_revision="c0ffee", stable_revision="1b9e04"
)
LATER = T0 + timedelta(seconds=60)


def check(kind: str, name: str | None = None) -> Check:
    return Check.model_validate({"name": name or kind.lower(), "type": kind, "threshold": Threshold(max=1)})


def read(kind: str, previous: Snapshot | None, current: Snapshot, window: float = 60.0) -> CheckReading:
    [reading] = builtin.readings([check(kind)], TARGET, previous, current, window)
    return reading


def test_error_rate_counts_server_4xx_5xx_and_router_answered_errors() -> None:
    before = snapshot(
        canary=group(a=server_text({200: 100}), b=server_text({200: 50})),
        router=group(r=router_text({("default", "c0ffee", "connect"): 1})),
    )
    after = snapshot(
        LATER,
        canary=group(a=server_text({200: 190, 400: 3}), b=server_text({200: 140, 503: 2})),
        router=group(
            r=router_text(
                {
                    ("default", "c0ffee", "connect"): 2,
                    ("default", "c0ffee", "timeout"): 3,
                    ("default", "1b9e04", "timeout"): 50,  # the stable arm: not the canary's
                }
            )
        ),
    )
    reading = read("errorRate", before, after)
    # 90 + 3 + 90 + 2 server requests, 5 failed; 4 more answered by the router itself.
    assert reading.value == pytest.approx(9 / 189)
    assert reading.samples == 189
    assert reading.measured_at == LATER
    assert reading.detail.startswith(
        "canary: 9 of 189 requests failed (4xx 3, 5xx 2, router 4) in 60s, 2 pods"
    )


def test_error_rate_without_requests_is_none_not_zero() -> None:
    before = snapshot(canary=group(a=server_text({200: 10})))
    after = snapshot(LATER, canary=group(a=server_text({200: 10})))
    reading = read("errorRate", before, after)
    assert reading.value is None
    assert reading.samples == 0
    assert "no canary requests in 60s" in reading.detail


def test_counter_checks_need_a_baseline_and_a_scraped_canary() -> None:
    current = snapshot(LATER, canary=group(a=server_text({200: 10})))
    first = read("errorRate", None, current)
    assert first.value is None
    assert "first scrape" in first.detail
    nothing = snapshot(LATER, canary=GroupScrape({}, {"10.0.0.5:8080": "timeout"}))
    unreachable = read("latencyP99", current, nothing)
    assert unreachable.value is None
    assert "10.0.0.5:8080: timeout" in unreachable.detail


def test_latency_p99_from_bucket_increases() -> None:
    before = snapshot(canary=group(a=server_text(latencies=[0.5] * 40)))
    # 100 new requests: 50 at 2 ms, 50 at 30 ms -> rank 99 in (0.01, 0.05].
    after = snapshot(LATER, canary=group(a=server_text(latencies=[0.5] * 40 + [0.002] * 50 + [0.03] * 50)))
    reading = read("latencyP99", before, after)
    assert reading.value == pytest.approx(0.01 + 0.04 * (99 - 50) / 50)
    assert reading.samples == 100
    assert "canary p99" in reading.detail
    # the increases behind the value, for the evaluation's early decision (domain/rollout/evidence.py)
    assert reading.buckets is not None
    assert reading.buckets[-1] == (math.inf, 100.0)  # counts are counter increases: floats
    assert dict(reading.buckets)[0.05] == 100


def test_input_drift_takes_the_largest_psi_of_fresh_windows() -> None:
    now = LATER.timestamp()
    current = snapshot(
        LATER,
        canary=group(
            a=server_text(feature_psi={"x": 0.05, "y": 0.4}, window_rows=1000, window_end=now - 5),
            b=server_text(feature_psi={"x": 0.1, "y": math.nan}, window_rows=800, window_end=now - 30),
            old=server_text(feature_psi={"x": 9.0}, window_rows=1000, window_end=now - 500),
        ),
    )
    reading = read("inputDrift", None, current)  # gauges: no baseline needed
    assert reading.value == pytest.approx(0.4)
    assert reading.samples == 800  # the smallest window behind the value
    assert "2 drift window(s)" in reading.detail


def test_input_drift_without_a_recent_window_is_none() -> None:
    stale = snapshot(
        LATER,
        canary=group(a=server_text(feature_psi={"x": 0.05}, window_rows=10, window_end=T0.timestamp() - 600)),
    )
    assert read("inputDrift", None, stale).value is None
    never = snapshot(LATER, canary=group(a=server_text({200: 1})))
    reading = read("inputDrift", None, never)
    assert reading.value is None
    assert "no canary drift window closed in the last 120s" in reading.detail


def test_prediction_shift_compares_canary_and_stable_score_increases() -> None:
    before = snapshot(
        canary=group(a=server_text(scores=[0.95] * 30)),
        stable=group(s=server_text(scores=[0.95] * 30)),
    )
    stable_new, canary_new = [0.15] * 400 + [0.85] * 100, [0.15] * 100 + [0.85] * 200
    after = snapshot(
        LATER,
        canary=group(a=server_text(scores=[0.95] * 30 + canary_new)),
        stable=group(s=server_text(scores=[0.95] * 30 + stable_new)),
    )
    reading = read("predictionShift", before, after)
    expected = psi([0, 400, 0, 0, 0, 0, 0, 0, 100, 0, 0], [0, 100, 0, 0, 0, 0, 0, 0, 200, 0, 0])
    assert reading.value == pytest.approx(expected)
    assert reading.samples == 300
    assert "canary 300 vs stable 500 scores" in reading.detail
    # the counts behind the value, for the evaluation's early decision (domain/rollout/evidence.py)
    assert reading.histograms == (
        (
            (0, 400, 0, 0, 0, 0, 0, 0, 100, 0, 0),
            (0, 100, 0, 0, 0, 0, 0, 0, 200, 0, 0),
        ),
    )


def test_prediction_shift_needs_scores_on_both_sides() -> None:
    before = snapshot(canary=group(a=server_text(scores=[0.5])), stable=group(s=server_text(scores=[0.5])))
    after = snapshot(
        LATER, canary=group(a=server_text(scores=[0.5] * 20)), stable=group(s=server_text(scores=[0.5]))
    )
    reading = read("predictionShift", before, after)
    assert reading.value is None
    assert "canary 19 vs stable 0 scores" in reading.detail
    no_stable = AnalysisTarget("ml", "churn", "default", "c0ffee")
    [reading] = builtin.readings([check("predictionShift")], no_stable, before, after, 60)
    assert reading.value is None


def test_prometheus_checks_are_not_scraped() -> None:
    current = snapshot(LATER, canary=group(a=server_text({200: 1})))
    user = Check(name="p", type="prometheus", threshold=Threshold(max=1), query="up")
    [reading] = builtin.readings([user], TARGET, current, current, 60)
    assert reading.value is None


# --- the scrape ---------------------------------------------------------------------------------


def test_parse_metrics_keeps_labels_and_refuses_garbage() -> None:
    pod = parse_metrics(server_text({200: 3}))
    series = pod.series("modeldeploy_requests_total")
    assert list(series.values()) == [3.0]
    assert dict(next(iter(series))) == {"code": "200", "model": "churn", "protocol": "v2", "version": "v1"}
    assert pod.value("process_start_time_seconds") == 1_700_000_000.0
    with pytest.raises(ValueError):  # noqa: PT011 - the parser raises a bare ValueError
        parse_metrics("this is { not metrics\n")


def _client(handler: httpx.MockTransport) -> httpx.Client:
    return httpx.Client(transport=handler, timeout=1)


def test_scrape_pod_reports_failures_as_reasons() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host == "10.0.0.1":
            return httpx.Response(200, text=server_text({200: 1}))
        if host == "10.0.0.2":
            return httpx.Response(503, text="not ready")
        if host == "10.0.0.3":
            raise httpx.ConnectTimeout("slow", request=request)
        if host == "10.0.0.4":
            return httpx.Response(200, content=b"x" * (MAX_BODY_BYTES + 10))
        if host == "10.0.0.5":
            return httpx.Response(200, text="{{{ nonsense\n")
        raise httpx.ConnectError("refused", request=request)

    with _client(httpx.MockTransport(handler)) as client:
        ok = scrape_pod(client, "10.0.0.1:8080")
        assert not isinstance(ok, str)
        assert ok.series("modeldeploy_requests_total")
        assert scrape_pod(client, "10.0.0.2:8080") == "HTTP 503"
        assert scrape_pod(client, "10.0.0.3:8080") == "connect timeout"
        assert "larger than" in str(scrape_pod(client, "10.0.0.4:8080"))
        assert "unparsable" in str(scrape_pod(client, "10.0.0.5:8080"))
        assert scrape_pod(client, "10.0.0.6:8080") == "connection refused or unreachable"


class Clock:
    def __init__(self) -> None:
        self.now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


def test_scrape_source_keeps_the_previous_scrape_per_target() -> None:
    pods: dict[str, str] = {}  # metrics text per pod host, changed between reads

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=pods[request.url.host])

    clock = Clock()
    source = BuiltinScrapeSource(_client(httpx.MockTransport(handler)), clock=clock)
    target = AnalysisTarget(
        "ml", "churn", "default", "c0ffee", "1b9e04", canary_endpoints=("10.0.0.1:8080", "10.0.0.2:8080")
    )
    checks = [check("errorRate", "errors"), check("latencyP99", "p99")]
    pods.update({"10.0.0.1": server_text({200: 10}), "10.0.0.2": server_text({200: 10})})
    first = source.read(checks, target, timedelta(minutes=1))
    assert [r.check for r in first] == ["errors", "p99"]
    assert all(r.value is None for r in first)

    clock.now = LATER
    pods.update({"10.0.0.1": server_text({200: 20, 500: 10}), "10.0.0.2": server_text({200: 30})})
    errors, _ = source.read(checks, target, timedelta(minutes=1))
    assert errors.value == pytest.approx(10 / 40)
    assert errors.samples == 40

    # Another canary revision is another series of readings.
    other = AnalysisTarget("ml", "churn", "default", "beef00", "1b9e04", canary_endpoints=("10.0.0.1:8080",))
    assert source.read(checks, other, timedelta(minutes=1))[0].value is None

    # Only the rollout under way keeps its baseline: the other target's goes, then (rollout over) all.
    assert source.retain("ml", "churn", target.key) == 1
    assert source.baselines() == 1
    assert source.retain("ml", "other", None) == 0
    assert source.retain("ml", "churn", None) == 1
    assert source.baselines() == 0
    clock.now = LATER + timedelta(seconds=60)
    assert source.read(checks, target, timedelta(minutes=1))[0].value is None


# --- issue 12: checks on mirrored/shadow copies, KS drift ----------------------------------------


def _copies_text(agree: int, disagree: int, differences: list[float], revision: str = "c0ffee") -> str:
    """A router's comparison counters for copies sent to (default, revision)."""
    arm = f'revision="{revision}",variant="default"'
    lines = ["# TYPE modeldeploy_router_shadow_label_agreement_total counter"]
    lines.append(f'modeldeploy_router_shadow_label_agreement_total{{result="agree",{arm}}} {agree}.0')
    lines.append(f'modeldeploy_router_shadow_label_agreement_total{{result="disagree",{arm}}} {disagree}.0')
    lines.append("# TYPE modeldeploy_router_shadow_score_difference histogram")
    for bound in (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0):  # the router's buckets
        within = sum(d <= bound for d in differences)
        lines.append(f'modeldeploy_router_shadow_score_difference_bucket{{{arm},le="{bound}"}} {within}.0')
    lines.append(f'modeldeploy_router_shadow_score_difference_bucket{{{arm},le="+Inf"}} {len(differences)}.0')
    lines.append(f"modeldeploy_router_shadow_score_difference_count{{{arm}}} {len(differences)}.0")
    lines.append(f"modeldeploy_router_shadow_score_difference_sum{{{arm}}} {sum(differences)}")
    return "\n".join(lines) + "\n"


def test_shadow_agreement_is_the_share_of_compared_rows_whose_labels_agree() -> None:
    before = snapshot(router=group(r=_copies_text(10, 5, [0.1] * 15) + _copies_text(0, 99, [], "1b9e04")))
    after = snapshot(
        LATER,
        # no canary pod scraped: the router alone answers this check
        router=group(r=_copies_text(100, 15, [0.1] * 15 + [0.3] * 100) + _copies_text(0, 500, [], "1b9e04")),
    )
    reading = read("shadowAgreement", before, after)
    assert reading.value == pytest.approx(90 / 100)  # the stable arm's rows are not the canary's
    assert reading.samples == 100
    assert "labels agree on 90 of 100 rows" in reading.detail
    difference = read("shadowScoreDifference", before, after)
    assert difference.value == pytest.approx(0.3)
    assert difference.samples == 100
    # the increases of the router's buckets, for the evaluation's early decision (evidence.py)
    assert difference.buckets is not None
    assert dict(difference.buckets) == {
        **dict.fromkeys((0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2), 0.0),
        **dict.fromkeys((0.3, 0.5, 1.0, math.inf), 100.0),
    }


def test_shadow_agreement_without_copies_is_none_not_zero() -> None:
    same = snapshot(router=group(r=_copies_text(3, 1, [0.2] * 4)))
    later = snapshot(LATER, router=group(r=_copies_text(3, 1, [0.2] * 4)))
    for kind in ("shadowAgreement", "shadowScoreDifference"):
        reading = read(kind, same, later)
        assert reading.value is None
        assert reading.samples == 0
        assert "no " in reading.detail
    assert read("shadowAgreement", None, later).value is None  # counters need a baseline


def test_input_drift_ks_takes_the_largest_feature_ks_of_fresh_windows() -> None:
    now = LATER.timestamp()
    ks = "# TYPE modeldeploy_feature_drift_ks gauge\n" + "".join(
        f'modeldeploy_feature_drift_ks{{feature="{f}",model="churn",version="v1"}} {v}\n'
        for f, v in {"x": 0.12, "y": 0.31}.items()
    )
    current = snapshot(
        LATER,
        canary=group(a=server_text(feature_psi={"x": 9.0}, window_rows=500, window_end=now - 5) + ks),
    )
    reading = read("inputDriftKS", None, current)
    assert reading.value == pytest.approx(0.31)  # the KS gauge, not the PSI one
    assert reading.samples == 500
    assert "KS distance" in reading.detail


def test_prediction_shift_ks_is_the_binned_two_sample_distance() -> None:
    before = snapshot(canary=group(a=server_text(scores=[0.5])), stable=group(s=server_text(scores=[0.5])))
    stable_new, canary_new = [0.15] * 400 + [0.85] * 100, [0.15] * 100 + [0.85] * 200
    after = snapshot(
        LATER,
        canary=group(a=server_text(scores=[0.5, *canary_new])),
        stable=group(s=server_text(scores=[0.5, *stable_new])),
    )
    reading = read("predictionShiftKS", before, after)
    # CDFs at 0.2: stable 0.8, canary 1/3 -> D = 0.4667; flat until 0.8 where both jump to 1.
    assert reading.value == pytest.approx(0.8 - 1 / 3)
    assert reading.samples == 300
    assert "binned KS distance" in reading.detail
    assert "at most 1.000" in reading.detail  # D + the largest bucket share (0.8), capped at 1


def _bins_text(bins: dict[str, dict[str, int]], layout: str = "abcd1234", version: str = "v1") -> str:
    """A server's modeldeploy_feature_bin_rows_total per feature and bin."""
    lines = ["# TYPE modeldeploy_feature_bin_rows_total counter"]
    for feature, counts in bins.items():
        for bin_name, n in counts.items():
            labels = (
                f'bin="{bin_name}",feature="{feature}",layout="{layout}",model="churn",version="{version}"'
            )
            lines.append(f"modeldeploy_feature_bin_rows_total{{{labels}}} {n}.0")
    return "\n".join(lines) + "\n"


def drift_check(kind: str, reference: str) -> Check:
    return Check.model_validate(
        {"name": "drift", "type": kind, "threshold": {"max": 0.2}, "reference": reference}
    )


def test_input_drift_against_the_stable_compares_live_bins_over_the_same_interval() -> None:
    zero = {"x": {"0": 0, "1": 0, "missing": 0}, "y": {"0": 0, "1": 0}}
    before = snapshot(canary=group(a=_bins_text(zero)), stable=group(s=_bins_text(zero)))
    canary = {"x": {"0": 50, "1": 50, "missing": 0}, "y": {"0": 90, "1": 10}}
    stable = {"x": {"0": 50, "1": 50, "missing": 0}, "y": {"0": 10, "1": 90}}
    after = snapshot(LATER, canary=group(a=_bins_text(canary)), stable=group(s=_bins_text(stable)))
    [ks] = builtin.readings([drift_check("inputDriftKS", "stable")], TARGET, before, after, 60)
    assert ks.value == pytest.approx(0.8)  # feature y: CDFs at bin 0: 0.9 vs 0.1
    assert ks.samples == 100
    assert "(y)" in ks.detail
    [p] = builtin.readings([drift_check("inputDrift", "stable")], TARGET, before, after, 60)
    assert p.value == pytest.approx(psi([10, 90, 0], [90, 10, 0]))
    # every feature's (stable, canary) rows per bin, missing last, for the early decision
    assert p.histograms == (((50.0, 50.0, 0.0), (50.0, 50.0, 0.0)), ((10.0, 90.0, 0.0), (90.0, 10.0, 0.0)))
    assert ks.histograms is None  # the KS check carries its comparisons instead
    # No baseline yet: Inconclusive, never 0.
    [first] = builtin.readings([drift_check("inputDriftKS", "stable")], TARGET, None, after, 60)
    assert first.value is None


def test_input_drift_against_the_stable_skips_features_of_another_bin_layout() -> None:
    canary = {"x": {"0": 50, "1": 50}}
    after = snapshot(
        LATER,
        canary=group(a=_bins_text(canary, layout="aaaa0000")),
        stable=group(s=_bins_text(canary, layout="bbbb1111")),
    )
    before = snapshot(canary=group(a=_bins_text({})), stable=group(s=_bins_text({})))
    [reading] = builtin.readings([drift_check("inputDriftKS", "stable")], TARGET, before, after, 60)
    assert reading.value is None
    assert "bin layouts differ" in reading.detail
    no_stable = AnalysisTarget("ml", "churn", "default", "c0ffee")
    [reading] = builtin.readings([drift_check("inputDrift", "stable")], no_stable, before, after, 60)
    assert reading.value is None


# --- issue 12: what the early KS decision needs travels with the reading -----------------------


def _ks_text(ks: dict[str, float], missing: dict[str, float]) -> str:
    model = 'model="churn",version="v1"'
    lines = ["# TYPE modeldeploy_feature_drift_ks gauge"]
    lines += [f'modeldeploy_feature_drift_ks{{feature="{f}",{model}}} {v}' for f, v in ks.items()]
    lines.append("# TYPE modeldeploy_feature_missing_ratio gauge")
    lines += [f'modeldeploy_feature_missing_ratio{{feature="{f}",{model}}} {v}' for f, v in missing.items()]
    return "\n".join(lines) + "\n"


def test_input_drift_ks_against_the_profile_carries_every_feature_and_its_present_values() -> None:
    now = LATER.timestamp()
    fresh = server_text(window_rows=200, window_end=now - 5)
    a = fresh + _ks_text({"x": 0.5, "y": 0.1, "_other": 0.9}, {"x": 0.25, "y": 0.0, "_other": 0.0})
    b = fresh + _ks_text({"x": 0.2, "y": "NaN"}, {"x": 0.0, "y": 1.0})  # type: ignore[dict-item]
    stale = server_text(window_rows=900, window_end=now - 3600) + _ks_text({"x": 0.99}, {"x": 0.0})
    current = snapshot(LATER, canary=group(a=a, b=b, c=stale))
    reading = read("inputDriftKS", None, current)
    assert reading.ks is not None
    # x of pod a: 200 rows, a quarter missing -> 150 present; `_other` (unknown feature count), a NaN
    # distance and the stale window count for nothing.
    assert sorted((c.distance, c.current, c.reference) for c in reading.ks) == [
        (0.1, 200, None),
        (0.2, 200, None),
        (0.5, 150, None),
    ]
    psi_reading = builtin.readings([check("inputDrift")], TARGET, None, current, 60.0)[0]
    assert psi_reading.ks is None  # PSI has no early decision


def test_two_sample_ks_readings_carry_both_sample_sizes() -> None:
    before = snapshot(canary=group(a=server_text(scores=[0.5])), stable=group(s=server_text(scores=[0.5])))
    after = snapshot(
        LATER,
        canary=group(a=server_text(scores=[0.5] + [0.85] * 120)),
        stable=group(s=server_text(scores=[0.5] + [0.15] * 300)),
    )
    reading = read("predictionShiftKS", before, after)
    assert reading.ks is not None
    [comparison] = reading.ks
    assert comparison.distance == pytest.approx(1.0)
    assert (comparison.current, comparison.reference) == (120, 300)
    assert read("predictionShift", before, after).ks is None

    zero = {"x": {"0": 0, "1": 0, "missing": 0}, "y": {"0": 0, "1": 0}}
    bins_before = snapshot(canary=group(a=_bins_text(zero)), stable=group(s=_bins_text(zero)))
    canary = {"x": {"0": 40, "1": 40, "missing": 20}, "y": {"0": 90, "1": 10}}
    stable = {"x": {"0": 50, "1": 50, "missing": 0}, "y": {"0": 10, "1": 90}}
    bins_after = snapshot(LATER, canary=group(a=_bins_text(canary)), stable=group(s=_bins_text(stable)))
    [ks] = builtin.readings([drift_check("inputDriftKS", "stable")], TARGET, bins_before, bins_after, 60)
    assert ks.ks is not None
    assert sorted((c.current, c.reference) for c in ks.ks) == [(80, 100), (100, 100)]  # x: 20 missing


def _reference_text(bins: dict[str, dict[str, int]], layout: str = "abcd1234") -> str:
    """A server's modeldeploy_feature_reference_rows: the profile's rows per feature and bin."""
    lines = ["# TYPE modeldeploy_feature_reference_rows gauge"]
    for feature, counts in bins.items():
        for bin_name, n in counts.items():
            labels = f'bin="{bin_name}",feature="{feature}",layout="{layout}",model="churn",version="v1"'
            lines.append(f"modeldeploy_feature_reference_rows{{{labels}}} {n}.0")
    return "\n".join(lines) + "\n"


def test_input_drift_against_the_profile_carries_the_profile_and_the_intervals_bins() -> None:
    """For the early decision: per feature, the profile's rows (the servers' reference gauge) and the
    canary's rows of the windows closed between the scrapes, in the same layout."""
    now = LATER.timestamp()
    profile = {"x": {"0": 500, "1": 500}, "y": {"0": 900, "1": 100}}
    window = server_text(feature_psi={"x": 0.01, "y": 3.2}, window_rows=100, window_end=now - 5)
    before = snapshot(canary=group(a=_reference_text(profile) + _bins_text({"x": {"0": 10, "1": 10}})))
    after_bins = {"x": {"0": 60, "1": 60}, "y": {"0": 5, "1": 95}}  # x: 50 + 50 new; y: all new
    after = snapshot(
        LATER,
        canary=group(
            a=window + _reference_text(profile) + _bins_text(after_bins), b=_reference_text(profile)
        ),
    )
    [reading] = builtin.readings([drift_check("inputDrift", "profile")], TARGET, before, after, 60)
    assert reading.value == pytest.approx(3.2)  # the servers' window PSI, as before
    assert reading.histograms == (
        ((500.0, 500.0, 0.0), (50.0, 50.0, 0.0)),
        ((900.0, 100.0, 0.0), (5.0, 95.0, 0.0)),
    )
    # no baseline scrape, a pod without the reference gauge (an older server) or no window in
    # between: the value alone, no early evidence
    [first] = builtin.readings([drift_check("inputDrift", "profile")], TARGET, None, after, 60)
    assert first.value == pytest.approx(3.2)
    assert first.histograms is None
    older = snapshot(LATER, canary=group(a=window + _bins_text(after_bins)))
    [old] = builtin.readings([drift_check("inputDrift", "profile")], TARGET, before, older, 60)
    assert old.histograms is None
    [same] = builtin.readings([drift_check("inputDrift", "profile")], TARGET, after, after, 60)
    assert same.histograms is None
