"""/metrics after known traffic: request accounting, drift windows, several workers, micro-batching."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest

from serving_harness import Bundles, Server, ServerFactory, metric, metric_values, v2_body

V1 = {"model": "churn", "version": "v1"}


@pytest.fixture(scope="module")
def drift_server(bundles: Bundles, module_serve: ServerFactory) -> Server:
    s = module_serve(
        str(bundles.v1),
        env={
            "MODELDEPLOY_SERVER_DRIFT_WINDOW_ROWS": "1000",
            "MODELDEPLOY_SERVER_DRIFT_WINDOW_SECONDS": "600",
            "MODELDEPLOY_SERVER_DRIFT_MAX_CPU_SHARE": "1",  # no pause between windows: exact counts
        },
    )
    s.wait_ready()
    return s


def send(client: httpx.Client, rows: np.ndarray, per_request: int) -> None:
    for start in range(0, len(rows), per_request):
        response = client.post("/v2/models/churn/infer", json=v2_body(rows[start : start + per_request]))
        assert response.status_code == 200


def test_request_accounting_and_drift_windows(drift_server: Server, bundles: Bundles) -> None:
    with drift_server.client() as c:
        before = c.get("/metrics").text
        assert metric(before, "modeldeploy_model_info", **V1, format="xgboost") == 1.0
        assert metric(before, "modeldeploy_model_ready") == 1.0
        assert metric_values(before, "modeldeploy_feature_drift_psi") == []  # no window closed yet

        send(c, bundles.normal[:1000], 100)  # one in-distribution window
        text = c.get("/metrics").text
        assert metric(text, "modeldeploy_drift_window_rows", **V1) == 1000
        assert abs(metric(text, "modeldeploy_drift_window_end_timestamp_seconds", **V1) - time.time()) < 30
        assert metric(text, "modeldeploy_drift_windows_total", **V1) == 1
        psi = metric_values(text, "modeldeploy_feature_drift_psi", **V1)
        assert len(psi) == 14
        assert max(psi) < 0.1, psi
        assert max(metric_values(text, "modeldeploy_feature_drift_ks", **V1)) < 0.1
        assert metric(text, "modeldeploy_prediction_drift_psi", **V1) < 0.1
        mobile = {"feature": "mobile_usage", **V1}
        assert (
            0.15 < metric(text, "modeldeploy_feature_missing_ratio", **mobile) < 0.35
        )  # 25% missing by design
        assert max(metric_values(text, "modeldeploy_feature_out_of_range_ratio", **V1)) < 0.02
        assert metric(text, "modeldeploy_prediction_score_count", **V1) == 1000

        send(c, bundles.shifted[:1000], 250)  # a drifted window
        text = c.get("/metrics").text
        assert metric(text, "modeldeploy_drift_windows_total", **V1) == 2
        psi = metric_values(text, "modeldeploy_feature_drift_psi", **V1)
        assert max(psi) > 0.25, psi
        assert metric(text, "modeldeploy_feature_drift_psi", feature="number_of_issues", **V1) > 0.25
        assert metric(text, "modeldeploy_prediction_drift_psi", **V1) > 0.25
        assert metric(text, "modeldeploy_prediction_score_count", **V1) == 2000

        ok = {"protocol": "v2", "code": "200", **V1}
        assert metric(text, "modeldeploy_requests_total", **ok) == 14
        assert metric(text, "modeldeploy_predicted_rows_total", **V1) == 2000
        assert metric(text, "modeldeploy_request_duration_seconds_count", protocol="v2", **V1) == 14
        assert metric(text, "modeldeploy_model_compute_duration_seconds_count", **V1) == 14
        assert metric_values(text, "modeldeploy_request_errors_total") == []
        assert metric(text, "modeldeploy_requests_in_flight") == 0

        assert c.post("/v2/models/churn/infer", content=b"{").status_code == 400
        assert c.post("/v1/models/churn:predict", json={"instances": [[1] * 14]}).status_code == 200
        assert c.post("/v2/models/zzz/infer", json={}).status_code == 404
        text = c.get("/metrics").text
        bad = {"protocol": "v2", "code": "400", **V1}
        assert metric(text, "modeldeploy_requests_total", **bad) == 1
        assert metric(text, "modeldeploy_request_errors_total", **bad) == 1
        assert metric(text, "modeldeploy_requests_total", protocol="v1", code="200", **V1) == 1
        unknown = {"model": "_unknown", "version": "_unknown", "protocol": "v2", "code": "404"}
        assert metric(text, "modeldeploy_request_errors_total", **unknown) == 1


def test_metric_names_follow_conventions(drift_server: Server) -> None:
    with drift_server.client() as c:
        text = c.get("/metrics").text
    types = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE modeldeploy_"))
    names = {name.removesuffix("_total") for name in types}
    expected = {
        "modeldeploy_requests",
        "modeldeploy_request_errors",
        "modeldeploy_request_duration_seconds",
        "modeldeploy_model_compute_duration_seconds",
        "modeldeploy_predicted_rows",
        "modeldeploy_requests_in_flight",
        "modeldeploy_model_info",
        "modeldeploy_model_ready",
        "modeldeploy_feature_drift_psi",
        "modeldeploy_feature_drift_ks",
        "modeldeploy_feature_missing_ratio",
        "modeldeploy_feature_out_of_range_ratio",
        "modeldeploy_prediction_drift_psi",
        "modeldeploy_prediction_score",
        "modeldeploy_drift_window_rows",
        "modeldeploy_drift_window_end_timestamp_seconds",
    }
    assert expected <= names, expected - names
    assert "_created" not in text
    for name, kind in types.items():
        if kind == "counter":
            assert f"{name.removesuffix('_total')}_total" in text


def test_window_closes_early_by_time(bundles: Bundles, serve: ServerFactory) -> None:
    server = serve(
        str(bundles.onnx_only),
        env={"MODELDEPLOY_SERVER_DRIFT_WINDOW_ROWS": "1000", "MODELDEPLOY_SERVER_DRIFT_WINDOW_SECONDS": "1"},
    )
    server.wait_ready()
    with server.client() as c:
        send(c, bundles.normal[:30], 10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = metric_values(c.get("/metrics").text, "modeldeploy_drift_window_rows", **V1)
            if rows:
                break
            time.sleep(0.2)
        assert rows == [30]


def test_drift_cpu_budget_samples_windows_under_load(bundles: Bundles, serve: ServerFactory) -> None:
    # A tiny budget: after each window, buffering pauses for ~1,000x the window's compute time.
    server = serve(
        str(bundles.v1),
        env={
            "MODELDEPLOY_SERVER_DRIFT_WINDOW_ROWS": "100",
            "MODELDEPLOY_SERVER_DRIFT_MAX_CPU_SHARE": "0.001",
        },
    )
    server.wait_ready()
    with server.client() as c:
        send(c, bundles.normal[:2000], 100)
        text = c.get("/metrics").text
    windows = metric(text, "modeldeploy_drift_windows_total", **V1)
    skipped = metric(text, "modeldeploy_drift_skipped_rows_total", **V1)
    assert windows >= 1
    assert skipped > 0
    assert windows * 100 + skipped == 2000
    assert metric(text, "modeldeploy_predicted_rows_total", **V1) == 2000


def test_drift_off_publishes_no_drift(bundles: Bundles, serve: ServerFactory) -> None:
    server = serve(
        str(bundles.v1),
        env={"MODELDEPLOY_SERVER_DRIFT_ENABLED": "false", "MODELDEPLOY_SERVER_DRIFT_WINDOW_ROWS": "10"},
    )
    server.wait_ready()
    with server.client() as c:
        send(c, bundles.normal[:50], 10)
        text = c.get("/metrics").text
    assert metric_values(text, "modeldeploy_drift_window_rows") == []
    assert metric(text, "modeldeploy_predicted_rows_total", **V1) == 50


def test_metrics_are_aggregated_over_workers(bundles: Bundles, serve: ServerFactory) -> None:
    server = serve(
        str(bundles.v1),
        env={"MODELDEPLOY_SERVER_DRIFT_WINDOW_ROWS": "10", "MODELDEPLOY_SERVER_DRIFT_MAX_CPU_SHARE": "1"},
        args=["--workers", "2"],
    )
    server.wait_ready()
    for _ in range(40):  # new connections spread over both workers
        with server.client() as c:
            assert c.post("/v2/models/churn/infer", json=v2_body(bundles.normal[:5])).status_code == 200
            assert c.get("/v2/health/ready").status_code == 200
    time.sleep(2.5)  # each worker flushes its counters every second
    text = server.client().get("/metrics").text
    assert metric(text, "modeldeploy_requests_total", protocol="v2", code="200", **V1) == 40
    assert metric(text, "modeldeploy_predicted_rows_total", **V1) == 200
    assert metric(text, "modeldeploy_request_duration_seconds_count", protocol="v2", **V1) == 40
    assert metric(text, "modeldeploy_model_info", **V1, format="xgboost") == 1
    assert metric(text, "modeldeploy_model_ready") == 1
    assert metric(text, "modeldeploy_requests_in_flight") == 0
    assert metric(text, "modeldeploy_drift_window_rows", **V1) >= 10
    assert len(metric_values(text, "modeldeploy_feature_drift_psi", **V1)) == 14


def test_micro_batching_returns_each_request_its_own_rows(bundles: Bundles, serve: ServerFactory) -> None:
    server = serve(
        str(bundles.v1),
        env={
            "MODELDEPLOY_SERVER_BATCHING_ENABLED": "true",
            "MODELDEPLOY_SERVER_BATCH_MAX_SIZE": "16",
            "MODELDEPLOY_SERVER_BATCH_MAX_WAIT_MS": "2",
        },
    )
    server.wait_ready()
    rows = bundles.normal[:64]
    with server.client() as c:
        expected = c.post("/v2/models/churn/infer", json=v2_body(rows)).json()["outputs"][0]["data"]
    expected = np.asarray(expected).reshape(64, 2)

    async def one(client: httpx.AsyncClient, i: int) -> list[float]:
        body = v2_body(rows[i : i + 1], id=str(i))
        response = await client.post("/v2/models/churn/infer", json=body)
        assert response.json()["id"] == str(i)
        return list(response.json()["outputs"][0]["data"])

    async def burst() -> list[list[float]]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:
            return await asyncio.gather(*(one(client, i) for i in range(64)))

    results = asyncio.run(burst())
    np.testing.assert_allclose(np.asarray(results), expected, rtol=1e-6)
    text = server.client().get("/metrics").text
    calls = metric(text, "modeldeploy_model_batch_rows_count", **V1)
    rows_sum = metric(text, "modeldeploy_model_batch_rows_sum", **V1)
    assert rows_sum == 128  # the 64-row request (above the batch size: alone) + 64 single rows
    assert calls < 65  # some single-row requests shared a model call
