"""The built-in scrape against real model servers and a real router: known traffic, known readings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from modeldeploy_operator.analysis import AnalysisTarget, BuiltinScrapeSource
from modeldeploy_operator.domain.readings import CheckReading
from modeldeploy_operator.domain.spec import Check, Threshold

from analysis_harness import WINDOW_ROWS, WINDOW_SECONDS, Churn, model_server, router
from local_processes import free_port

WINDOW = timedelta(seconds=30)
CHECKS = [
    Check(name=kind.lower(), type=kind, threshold=Threshold(max=1))
    for kind in ("errorRate", "latencyP99", "inputDrift", "predictionShift")
]


def by_check(readings: list[CheckReading]) -> dict[str, CheckReading]:
    return {r.check: r for r in readings}


def target(canary: str, stable: str, routers: tuple[str, ...] = ()) -> AnalysisTarget:
    return AnalysisTarget(
        "ml",
        "churn",
        "default",
        "canary1",
        "stable1",
        canary_endpoints=(canary,) if canary else (),
        stable_endpoints=(stable,),
        router_endpoints=routers,
        drift_window_seconds=WINDOW_SECONDS,
    )


def test_good_canary_then_drifted_traffic(churn: Churn, tmp_path: Path) -> None:
    with (
        model_server(churn.bundle("v1"), tmp_path) as stable,
        model_server(churn.bundle("v2"), tmp_path) as canary,
    ):
        source = BuiltinScrapeSource()
        t = target(canary.address, stable.address)
        first = by_check(source.read(CHECKS, t, WINDOW))
        assert all(r.value is None for r in first.values())  # a baseline, and no drift window yet

        canary.send(churn.normal[:400])  # 40 requests, two drift windows
        stable.send(churn.normal[:400])
        for _ in range(10):
            assert canary.bad_request() == 400
        good = by_check(source.read(CHECKS, t, WINDOW))
        assert good["errorrate"].value == pytest.approx(10 / 50)
        assert good["errorrate"].samples == 50
        assert "10 of 50 requests failed (4xx 10, 5xx 0, router 0)" in good["errorrate"].detail
        p99 = good["latencyp99"]
        assert p99.value is not None
        assert 0 < p99.value < 1
        assert p99.samples == 50
        assert good["inputdrift"].value is not None
        assert good["inputdrift"].value < 0.25  # traffic like the training data
        assert good["inputdrift"].samples == WINDOW_ROWS
        shift = good["predictionshift"]
        assert shift.value is not None
        assert shift.value < 0.25  # a healthy retrain scores the same rows much alike
        assert shift.samples == 400

        canary.send(churn.shifted[:400])
        stable.send(churn.shifted[:400])
        drifted = by_check(source.read(CHECKS, t, WINDOW))
        assert drifted["errorrate"].value == 0.0
        assert drifted["errorrate"].samples == 40
        assert drifted["inputdrift"].value is not None
        assert drifted["inputdrift"].value > 0.25  # a shifted population: major drift
        assert drifted["inputdrift"].samples == WINDOW_ROWS


def test_bad_canary_scores_shift(churn: Churn, tmp_path: Path) -> None:
    with (
        model_server(churn.bundle("v1"), tmp_path) as stable,
        model_server(churn.bundle("v3"), tmp_path) as canary,
    ):
        source = BuiltinScrapeSource()
        t = target(canary.address, stable.address)
        source.read(CHECKS, t, WINDOW)
        canary.send(churn.normal[:400])
        stable.send(churn.normal[400:1200])
        shift = by_check(source.read(CHECKS, t, WINDOW))["predictionshift"]
        assert shift.value is not None
        assert shift.value > 0.25
        assert shift.samples == 400  # the smaller side
        assert "canary 400 vs stable 800 scores" in shift.detail


def test_restarted_canary_never_gives_negative_counts(churn: Churn, tmp_path: Path) -> None:
    port = free_port()
    with model_server(churn.bundle("v1"), tmp_path) as stable:
        source = BuiltinScrapeSource()
        with model_server(churn.bundle("v2"), tmp_path, port) as canary:
            t = target(canary.address, stable.address)
            canary.send(churn.normal[:300])
            source.read(CHECKS, t, WINDOW)
        with model_server(churn.bundle("v2"), tmp_path, port) as canary:
            canary.send(churn.normal[:50], per_request=5)
            canary.bad_request()
            errors = by_check(source.read(CHECKS, t, WINDOW))["errorrate"]
    # 11 requests since the restart, not 11 - 30.
    assert errors.value == pytest.approx(1 / 11)
    assert errors.samples == 11
    assert "1 restarted" in errors.detail


def test_router_answered_errors_count_against_the_canary(churn: Churn, tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"  # a canary pod that went away: connections are refused
    with model_server(churn.bundle("v1"), tmp_path) as stable:
        arm = {"variant": "default", "weight_bp": 5_000, "model_name": "churn"}
        arms = [
            {**arm, "revision": "canary1", "endpoints": [dead]},
            {**arm, "revision": "stable1", "endpoints": [stable.address]},
        ]
        with router(arms, tmp_path) as address:
            source = BuiltinScrapeSource()
            t = target("", stable.address, (address,))
            source.read(CHECKS, t, WINDOW)
            body = {
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 14], "data": churn.normal[0]}]
            }
            codes = [
                httpx.post(f"http://{address}/v2/models/churn/infer", json=body, timeout=10).status_code
                for _ in range(40)
            ]
            errors = by_check(source.read(CHECKS, t, WINDOW))["errorrate"]
    failed = codes.count(502)
    assert failed > 0
    assert codes.count(200) + failed == 40
    assert (errors.value, errors.samples) == (1.0, failed)
    assert f"router {failed}" in errors.detail
