"""Prometheus source: answers of the HTTP API, failures as readings, PromQL templates, routing."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from modeldeploy_contract.psi import psi
from modeldeploy_operator.analysis import (
    AddressPolicy,
    AnalysisSources,
    AnalysisTarget,
    BuiltinScrapeSource,
    promql,
)
from modeldeploy_operator.analysis.prometheus import (
    PrometheusClient,
    PrometheusReader,
    QueryResult,
    parse_answer,
    single_value,
)
from modeldeploy_operator.domain.rollout.evaluation import evaluate
from modeldeploy_operator.domain.spec import Analysis, Check, Threshold

from analysis_fixtures import T0

TARGET = AnalysisTarget("ml", "churn", "default", "c0ffee", "1b9e04", canary_endpoints=("10.0.0.1:8080",))
LABELS = promql.SeriesLabels()


def vector(*samples: tuple[dict[str, str], str]) -> dict[str, Any]:
    result = [{"metric": m, "value": [1700000000.0, v]} for m, v in samples]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def check(kind: str, query: str | None = None) -> Check:
    return Check(name=kind.lower(), type=kind, threshold=Threshold(max=1), query=query)  # type: ignore[arg-type]


def prometheus(answer: Callable[[str], httpx.Response], seen: list[str] | None = None) -> PrometheusReader:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/prom/api/v1/query"
        query = request.url.params["query"]
        if seen is not None:
            seen.append(query)
        return answer(query)

    client = PrometheusClient(
        "http://prometheus:9090/prom/", 5, httpx.Client(transport=httpx.MockTransport(handler))
    )
    return PrometheusReader(client, clock=lambda: T0)


def test_parse_answer_vectors_scalars_and_errors() -> None:
    assert parse_answer(vector(({"a": "1"}, "0.5"))).samples == (({"a": "1"}, 0.5),)
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "2"]}}
    assert parse_answer(scalar).samples == (({}, 2.0),)
    error = {"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}
    assert parse_answer(error).error == "bad_data: parse error at char 3"
    matrix = {"status": "success", "data": {"resultType": "matrix", "result": []}}
    assert "expected an instant vector" in str(parse_answer(matrix).error)
    assert "malformed" in str(
        parse_answer({"status": "success", "data": {"resultType": "vector", "result": [{}]}}).error
    )
    assert parse_answer([1, 2]).error == "answer is not a JSON object"


@pytest.mark.parametrize(
    ("result", "value", "why"),
    [
        (QueryResult(samples=(({}, 0.25),)), 0.25, ""),
        (QueryResult(), None, "query returned no data"),
        (QueryResult(error="timeout after 5s"), None, "query failed: timeout after 5s"),
        (
            QueryResult(samples=(({}, float("nan")),)),
            None,
            "query returned nan (e.g. a division by zero requests)",
        ),
        (
            QueryResult(samples=(({}, float("inf")),)),
            None,
            "query returned inf (e.g. a division by zero requests)",
        ),
        (QueryResult(samples=(({"a": "1"}, 1.0), ({"a": "2"}, 2.0))), None, "query returned 2 series"),
    ],
)
def test_single_value(result: QueryResult, value: float | None, why: str) -> None:
    got, reason = single_value(result)
    assert got == value
    assert reason.startswith(why)


def test_user_query_reading() -> None:
    reader = prometheus(lambda q: httpx.Response(200, json=vector(({}, "0.042"))))
    reading = reader.read_one(check("prometheus", "sum(rate(x[1m]))"), TARGET, 60)
    assert (reading.check, reading.value, reading.samples, reading.measured_at) == (
        "prometheus",
        0.042,
        1,
        T0,
    )
    assert reading.detail == "sum(rate(x[1m])) = 0.042"


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (lambda q: httpx.Response(200, json=vector()), "query returned no data"),
        (lambda q: httpx.Response(200, json=vector(({}, "NaN"))), "query returned nan"),
        (lambda q: httpx.Response(200, json=vector(({}, "+Inf"))), "query returned inf"),
        (
            lambda q: httpx.Response(400, json={"status": "error", "errorType": "bad_data", "error": "oops"}),
            "query failed: bad_data: oops",
        ),
        (
            lambda q: httpx.Response(502, text="<html>bad gateway</html>"),
            "query failed: HTTP 502, not a JSON",
        ),
    ],
)
def test_user_query_without_a_usable_value_is_none(answer: Callable[[str], httpx.Response], why: str) -> None:
    reading = prometheus(answer).read_one(check("prometheus", "up"), TARGET, 60)
    assert reading.value is None
    assert reading.detail.startswith(why)


def test_transport_failures_are_readings_not_exceptions() -> None:
    def timeout(q: str) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    def refused(q: str) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    assert (
        prometheus(timeout)
        .read_one(check("errorRate"), TARGET, 60)
        .detail.startswith("no samples (query failed: timeout)")
    )
    assert (
        "connection refused or unreachable"
        in prometheus(refused).read_one(check("prometheus", "up"), TARGET, 60).detail
    )


def test_builtin_check_sends_value_and_samples_queries() -> None:
    seen: list[str] = []
    answers = {True: vector(({}, "412")), False: vector(({}, "0.0073"))}
    reader = prometheus(
        lambda q: httpx.Response(200, json=answers[q.startswith("(sum(increase(modeldeploy_requests")]), seen
    )
    reading = reader.read_one(check("errorRate"), TARGET, 60)
    assert (reading.value, reading.samples) == (0.0073, 412)
    queries = promql.error_rate(TARGET, 60, LABELS)
    assert seen == [queries.samples, queries.value]


def test_builtin_check_with_zero_samples_is_none_without_asking_for_the_value() -> None:
    seen: list[str] = []
    reader = prometheus(lambda q: httpx.Response(200, json=vector(({}, "0"))), seen)
    reading = reader.read_one(check("latencyP99"), TARGET, 60)
    assert reading.value is None
    assert len(seen) == 1


def test_prediction_shift_from_two_bucket_vectors() -> None:
    def buckets(counts: dict[str, str]) -> dict[str, Any]:
        return vector(*(({"le": le}, n) for le, n in counts.items()))

    def answer(q: str) -> httpx.Response:
        if 'modeldeploy_io_revision="1b9e04"' in q:
            return httpx.Response(200, json=buckets({"0.5": "400", "1.0": "500", "+Inf": "500"}))
        return httpx.Response(200, json=buckets({"0.5": "100", "1.0": "300", "+Inf": "300"}))

    reading = prometheus(answer).read_one(check("predictionShift"), TARGET, 60)
    assert reading.value == pytest.approx(psi([400, 100, 0], [100, 200, 0]))
    assert reading.samples == 300
    assert reading.histograms == (((400, 100, 0), (100, 200, 0)),)


def test_promql_templates() -> None:
    sel = 'namespace="ml", modeldeploy_io_deployment="churn", modeldeploy_io_revision="c0ffee"'
    router = 'namespace="ml", modeldeploy_io_deployment="churn", variant="default", revision="c0ffee"'
    errors = promql.error_rate(TARGET, 60, LABELS)
    routed = f"(sum(increase(modeldeploy_router_errors_total{{{router}}}[60s])) or vector(0))"
    assert errors.samples == f"(sum(increase(modeldeploy_requests_total{{{sel}}}[60s])) + {routed})"
    assert errors.value == (
        f"((sum(increase(modeldeploy_request_errors_total{{{sel}}}[60s])) or vector(0)) + {routed})"
        f" / {errors.samples}"
    )
    p99 = promql.latency_p99(TARGET, 90.4, LABELS)
    buckets = f"modeldeploy_request_duration_seconds_bucket{{{sel}}}[90s]"
    assert p99.value == f"histogram_quantile(0.99, sum by (le) (increase({buckets})))"
    drift = promql.input_drift(TARGET, 120, LABELS)
    fresh = f"and on (instance) (time() - modeldeploy_drift_window_end_timestamp_seconds{{{sel}}} < 120)"
    assert drift.value == f"max(modeldeploy_feature_drift_psi{{{sel}}} {fresh})"
    assert promql.reference_bins(TARGET, LABELS) == (
        f"max by (feature, layout, bin) (modeldeploy_feature_reference_rows{{{sel}}})"
    )
    assert drift.samples == f"min(modeldeploy_drift_window_rows{{{sel}}} {fresh})"
    assert promql.quote('a"b\\c') == '"a\\"b\\\\c"'


def test_sources_route_checks_and_keep_their_order() -> None:
    def offline(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no pods here", request=request)

    scrape = BuiltinScrapeSource(httpx.Client(transport=httpx.MockTransport(offline)))
    sources = AnalysisSources(scrape, policy=AddressPolicy(("http://prometheus:9090/prom",)))
    checks = (check("prometheus", "up"), check("errorRate"))
    without = Analysis(interval="30s", checks=checks)
    user, errors = sources.read(without, checks, TARGET)
    assert (user.check, user.value) == ("prometheus", None)
    assert "need spec.rollout.analysis.prometheus" in user.detail
    assert errors.check == "errorrate"
    assert "no canary pod could be scraped" in errors.detail

    seen: list[str] = []
    reader = prometheus(lambda q: httpx.Response(200, json=vector(({}, "1"))), seen)
    with_prometheus = Analysis.model_validate(
        {"interval": "30s", "checks": checks, "prometheus": {"address": "http://prometheus:9090/prom"}}
    )
    sources._prometheus[("http://prometheus:9090/prom", 10.0)] = reader  # the cached client of that address
    readings = sources.read(with_prometheus, checks, TARGET)
    assert [r.check for r in readings] == ["prometheus", "errorrate"]
    assert all(r.value == 1.0 for r in readings)
    assert "[30s]" in seen[-1]  # the interval is the range of the built-in queries


def test_promql_templates_of_the_copy_and_ks_checks() -> None:
    router = 'namespace="ml", modeldeploy_io_deployment="churn", variant="default", revision="c0ffee"'
    agreement = promql.shadow_agreement(TARGET, 60, LABELS)
    rows = f"sum(increase(modeldeploy_router_shadow_label_agreement_total{{{router}}}[60s]))"
    assert agreement.samples == rows
    agree = f'{router},result="agree"'
    agreed = f"sum(increase(modeldeploy_router_shadow_label_agreement_total{{{agree}}}[60s]))"
    assert agreement.value == f"({agreed} or vector(0)) / {rows}"
    difference = promql.shadow_score_difference(TARGET, 60, LABELS)
    assert difference.value.startswith("sum(increase(modeldeploy_router_shadow_score_difference_sum{")
    assert difference.samples.startswith("sum(increase(modeldeploy_router_shadow_score_difference_count{")
    assert promql.input_drift(TARGET, 120, LABELS, "modeldeploy_feature_drift_ks").value.startswith(
        "max(modeldeploy_feature_drift_ks{"
    )


def test_prediction_shift_ks_from_two_bucket_vectors() -> None:
    def buckets(counts: dict[str, str]) -> dict[str, Any]:
        return vector(*(({"le": le}, n) for le, n in counts.items()))

    def answer(q: str) -> httpx.Response:
        if 'modeldeploy_io_revision="1b9e04"' in q:
            return httpx.Response(200, json=buckets({"0.5": "400", "1.0": "500", "+Inf": "500"}))
        return httpx.Response(200, json=buckets({"0.5": "100", "1.0": "300", "+Inf": "300"}))

    reading = prometheus(answer).read_one(check("predictionShiftKS"), TARGET, 60)
    assert reading.value == pytest.approx(0.8 - 1 / 3)  # CDFs at 0.5: 400/500 vs 100/300
    assert reading.samples == 300
    assert "binned KS distance" in reading.detail
    assert reading.ks is not None  # both sample sizes, for the early DKW decision
    assert [(c.current, c.reference) for c in reading.ks] == [(300, 500)]


def test_input_drift_against_the_stable_carries_every_features_bins() -> None:
    """The operator computes the PSI per feature from the two revisions' bin rows, and hands every
    feature's pair of histograms on for the early decision (domain/rollout/evidence.py)."""

    def bins(counts: dict[tuple[str, str], str]) -> dict[str, Any]:
        return vector(*(({"feature": f, "layout": "ab12", "bin": b}, n) for (f, b), n in counts.items()))

    def answer(q: str) -> httpx.Response:
        assert "sum by (feature, layout, bin) (increase(modeldeploy_feature_bin_rows_total{" in q
        if 'modeldeploy_io_revision="1b9e04"' in q:  # stable
            return httpx.Response(200, json=bins({("x", "0"): "10", ("x", "1"): "90", ("y", "0"): "50"}))
        return httpx.Response(200, json=bins({("x", "0"): "90", ("x", "1"): "10", ("y", "0"): "50"}))

    drift = Check.model_validate(
        {"name": "drift", "type": "inputDrift", "threshold": {"max": 0.2}, "reference": "stable"}
    )
    reading = prometheus(answer).read_one(drift, TARGET, 60)
    assert reading.value == pytest.approx(psi([10, 90, 0], [90, 10, 0]))
    assert reading.samples == 50
    assert reading.histograms == (((10, 90, 0), (90, 10, 0)), ((50, 0), (50, 0)))


def _histogram_answers(value: str, samples: str, buckets: dict[str, str]) -> Callable[[str], httpx.Response]:
    """Prometheus answering a histogram check: its value, its sample count, and its counts per `le`."""

    def answer(q: str) -> httpx.Response:
        if q.startswith("sum by (le)"):
            return httpx.Response(200, json=vector(*(({"le": le}, n) for le, n in buckets.items())))
        if q.startswith("histogram_quantile") or " / " in q:
            return httpx.Response(200, json=vector(({}, value)))  # a quantile, or a sum over a count
        return httpx.Response(200, json=vector(({}, samples)))

    return answer


def test_latency_from_prometheus_carries_its_buckets_and_fails_early_when_clearly_slow() -> None:
    """The early Fail of a clearly slow canary (issue 12), from Prometheus as from the scrape: 30 of
    40 requests above 0.5 s where a p99 of 0.5 s allows 1 %, with 200 samples needed."""
    seen: list[str] = []
    buckets = {"0.1": "5", "0.25": "8", "0.5": "10", "1": "40", "+Inf": "40"}
    reader = prometheus(_histogram_answers("0.95", "40", buckets), seen)
    p99 = Check(name="p99", type="latencyP99", threshold=Threshold(max=0.5))
    reading = reader.read_one(p99, TARGET, 60)
    queries = promql.latency_p99(TARGET, 60, LABELS)
    assert seen == [queries.samples, queries.value, queries.buckets]
    assert (reading.value, reading.samples) == (0.95, 40)
    assert reading.buckets == ((0.1, 5.0), (0.25, 8.0), (0.5, 10.0), (1.0, 40.0), (math.inf, 40.0))
    analysis = Analysis(interval="30s", min_samples=200, checks=(p99,))
    measured = evaluate(p99, reading, analysis, T0)
    assert measured.result == "Fail", measured
    assert "30 of 40 requests slower" in (measured.message or "")


def test_shadow_score_difference_from_prometheus_fails_early_on_a_clear_excess() -> None:
    buckets = {"0.1": "0", "0.5": "0", "1": "40", "+Inf": "40"}
    difference = Check(name="diff", type="shadowScoreDifference", threshold=Threshold(max=0.05))
    reading = prometheus(_histogram_answers("0.7", "40", buckets)).read_one(difference, TARGET, 60)
    assert (reading.value, reading.samples) == (0.7, 40)
    assert reading.buckets == ((0.1, 0.0), (0.5, 0.0), (1.0, 40.0), (math.inf, 40.0))
    analysis = Analysis(interval="30s", min_samples=200, checks=(difference,))
    assert evaluate(difference, reading, analysis, T0).result == "Fail"


@pytest.mark.parametrize(
    "buckets",
    [
        {},  # no series
        {"0.5": "3", "1": "4"},  # no +Inf bucket: not a whole histogram
        {"0.5": "3", "+Inf": "NaN"},
        {"fast": "3", "+Inf": "4"},  # an `le` that is not a number
    ],
)
def test_latency_without_a_usable_histogram_keeps_its_reading_without_early_evidence(
    buckets: dict[str, str],
) -> None:
    reading = prometheus(_histogram_answers("0.95", "40", buckets)).read_one(check("latencyP99"), TARGET, 60)
    assert (reading.value, reading.samples, reading.buckets) == (0.95, 40, None)


def test_a_failed_bucket_query_keeps_the_reading() -> None:
    def answer(q: str) -> httpx.Response:
        if q.startswith("sum by (le)"):
            return httpx.Response(503, text="overloaded")
        return _histogram_answers("0.95", "40", {})(q)

    reading = prometheus(answer).read_one(check("latencyP99"), TARGET, 60)
    assert (reading.value, reading.buckets) == (0.95, None)


PROFILE_ROWS = {"0": "30", "1": "40", "2": "30"}
"""The profile's rows of feature x (modeldeploy_feature_reference_rows), docs/analysis.md's example."""


def _drift_answers(
    canary_bins: Callable[[], httpx.Response], profile_bins: Callable[[], httpx.Response], value: str = "9.0"
) -> Callable[[str], httpx.Response]:
    """Prometheus answering inputDrift(KS) against the profile: the servers' largest PSI or KS
    distance over a window of 100 rows, the canary's rows per bin over the interval, and the profile's."""

    def answer(q: str) -> httpx.Response:
        if q.startswith(("max(modeldeploy_feature_drift_psi", "max(modeldeploy_feature_drift_ks")):
            return httpx.Response(200, json=vector(({}, value)))
        if q.startswith("min(modeldeploy_drift_window_rows"):
            return httpx.Response(200, json=vector(({}, "100")))
        if q.startswith("sum by (feature, layout, bin) (increase(modeldeploy_feature_bin_rows_total{"):
            return canary_bins()
        assert q.startswith("max by (feature, layout, bin) (modeldeploy_feature_reference_rows{"), q
        return profile_bins()

    return answer


def _bins(rows: dict[str, str], feature: str = "x", layout: str = "ab12") -> Callable[[], httpx.Response]:
    series = [({"feature": feature, "layout": layout, "bin": b}, n) for b, n in rows.items()]
    return lambda: httpx.Response(200, json=vector(*series))


def test_input_drift_against_the_profile_from_prometheus_fails_early_when_clearly_drifted() -> None:
    """The early Fail of a clearly drifted canary (issue 12), from Prometheus as from the scrape: the
    interval's 100 canary rows `5 25 70` against the profile's `30 40 30`, with 200 samples needed."""
    seen: list[str] = []
    answer = _drift_answers(_bins({"0": "5", "1": "25", "2": "70"}), _bins(PROFILE_ROWS))
    drift = Check(name="drift", type="inputDrift", threshold=Threshold(max=0.25))
    reading = prometheus(answer, seen).read_one(drift, TARGET, 60)
    values = promql.input_drift(TARGET, TARGET.drift_lookback_seconds(60), LABELS)
    canary = promql.feature_bins(TARGET, TARGET.canary_revision, 60, LABELS)
    assert seen == [values.samples, values.value, canary, promql.reference_bins(TARGET, LABELS)]
    assert (reading.value, reading.samples) == (9.0, 100)
    assert reading.histograms == (((30.0, 40.0, 30.0, 0.0), (5.0, 25.0, 70.0, 0.0)),)  # missing last
    measured = evaluate(drift, reading, Analysis(interval="30s", min_samples=200, checks=(drift,)), T0)
    assert measured.result == "Fail", measured
    assert "histograms differ" in (measured.message or "")


def test_input_drift_against_the_profile_from_prometheus_is_not_failed_early_on_a_fine_canary() -> None:
    answer = _drift_answers(_bins({"0": "28", "1": "42", "2": "30"}), _bins(PROFILE_ROWS))
    drift = Check(name="drift", type="inputDrift", threshold=Threshold(max=0.25))
    reading = prometheus(answer).read_one(drift, TARGET, 60)
    assert reading.histograms is not None
    analysis = Analysis(interval="30s", min_samples=200, checks=(drift,))
    assert evaluate(drift, reading, analysis, T0).result == "Inconclusive"


def test_input_drift_ks_against_the_profile_from_prometheus_fails_early_when_clearly_drifted() -> None:
    """inputDriftKS from Prometheus as from the scrape: the DKW bound of each feature's binned KS
    distance against the profile (taken as exact) over the canary's present rows of the interval.
    150 rows `140 5 5` against the profile's `300 400 300`: D = 0.933 - 0.3 = 0.633, and
    eps(150, 0.001) = sqrt(ln(2000) / 300) = 0.159, so the true distance is at least 0.47 > 0.2."""
    canary = _bins({"0": "140", "1": "5", "2": "5", "missing": "7"})
    answer = _drift_answers(canary, _bins({"0": "300", "1": "400", "2": "300"}), value="0.6")
    drift = Check(name="drift", type="inputDriftKS", threshold=Threshold(max=0.2))
    reading = prometheus(answer).read_one(drift, TARGET, 60)
    assert (reading.value, reading.samples, reading.histograms) == (0.6, 100, None)
    assert reading.ks is not None
    assert [(round(c.distance, 3), c.current, c.reference) for c in reading.ks] == [(0.633, 150, None)]
    measured = evaluate(drift, reading, Analysis(interval="30s", min_samples=200, checks=(drift,)), T0)
    assert measured.result == "Fail", measured
    # A mild shift over as many rows is no proof: D = 0.367 - 0.3 = 0.067, bound below 0.
    mild = _drift_answers(
        _bins({"0": "55", "1": "55", "2": "40"}), _bins({"0": "300", "1": "400", "2": "300"})
    )
    reading = prometheus(mild).read_one(drift, TARGET, 60)
    assert reading.ks is not None
    analysis = Analysis(interval="30s", min_samples=200, checks=(drift,))
    assert evaluate(drift, reading, analysis, T0).result == "Inconclusive"


def _failed() -> httpx.Response:
    return httpx.Response(400, json={"status": "error", "errorType": "bad_data", "error": "oops"})


@pytest.mark.parametrize(
    ("canary", "profile", "why"),
    [
        (_failed, _bins(PROFILE_ROWS), "query failed: bad_data: oops"),
        (_bins({"0": "5", "2": "70"}), _failed, "query failed: bad_data: oops"),
        (lambda: httpx.Response(502, text="<html/>"), _bins(PROFILE_ROWS), "query failed: HTTP 502"),
        (_bins({"0": "5", "2": "70"}), _bins({}), "export no modeldeploy_feature_reference_rows"),
        (_bins({}), _bins(PROFILE_ROWS), "no canary rows"),  # no window closed in the interval
        (_bins({"0": "0", "2": "0"}), _bins(PROFILE_ROWS), "no canary rows"),
        (_bins({"0": "5"}, layout="other"), _bins(PROFILE_ROWS), "no canary rows"),  # re-profiled
        (_bins({"0": "5"}, feature="y"), _bins(PROFILE_ROWS), "no canary rows"),
        (_bins({"0": "NaN", "1": "-3", "2": "+Inf"}), _bins(PROFILE_ROWS), "no canary rows"),
        (_bins({"0": "5"}), _bins({"0": "NaN", "1": "-1"}), "export no modeldeploy_feature_reference_rows"),
    ],
)
@pytest.mark.parametrize("kind", ["inputDrift", "inputDriftKS"])
def test_input_drift_against_the_profile_without_usable_bins_keeps_its_reading_and_says_why(
    canary: Callable[[], httpx.Response], profile: Callable[[], httpx.Response], why: str, kind: str
) -> None:
    drift = Check(name="drift", type=kind, threshold=Threshold(max=0.25))  # type: ignore[arg-type]
    reading = prometheus(_drift_answers(canary, profile)).read_one(drift, TARGET, 60)
    assert (reading.value, reading.samples, reading.histograms, reading.ks) == (9.0, 100, None, None)
    assert "; no early decision (no rows per bin: " in reading.detail
    assert why in reading.detail
    measured = evaluate(drift, reading, Analysis(interval="30s", min_samples=200, checks=(drift,)), T0)
    assert measured.result == "Inconclusive"
    assert "no early decision" in (measured.message or "")


def test_input_drift_bins_that_are_no_bin_index_are_left_out() -> None:
    """Labels from an answer become bin indices in one place (builtin._bin_indices): "²" passes
    isdigit() but not int(), and an index of 10**9 would make a billion-bin histogram."""
    canary = _bins({"0": "5", "1": "25", "2": "70", "²": "9", "1000000000": "9", "x": "9", "missing": "1"})
    reading = prometheus(_drift_answers(canary, _bins(PROFILE_ROWS))).read_one(
        check("inputDrift"), TARGET, 60
    )
    assert reading.histograms == (((30.0, 40.0, 30.0, 0.0), (5.0, 25.0, 70.0, 1.0)),)


def test_a_failed_drift_value_asks_for_no_bins() -> None:
    seen: list[str] = []

    def answer(q: str) -> httpx.Response:
        if q.startswith("min(modeldeploy_drift_window_rows"):
            return httpx.Response(200, json=vector(({}, "100")))
        return httpx.Response(200, json=vector())

    reading = prometheus(answer, seen).read_one(check("inputDrift"), TARGET, 60)
    assert reading.value is None
    assert len(seen) == 2
