"""`modeldeploy preflight` against real model servers: the golden set replayed over V2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import raw_http

from modeldeploy_contract.preflight import REPLAY_HEADER, v2_request
from modeldeploy_serving.cli import main as cli_main

from serving_harness import Bundles, Server, ServerFactory, metric, metric_values, v2_body

V1 = {"model": "churn", "version": "v1"}


@pytest.fixture(scope="module")
def servers(bundles: Bundles, module_serve: ServerFactory) -> dict[str, Server]:
    env = {"MODELDEPLOY_SERVER_DRIFT_WINDOW_ROWS": "100", "MODELDEPLOY_SERVER_DRIFT_MAX_CPU_SHARE": "1"}
    found = {version: module_serve(str(getattr(bundles, version)), env=env) for version in ("v1", "v2", "v3")}
    for s in found.values():
        s.wait_ready()
    return found


def preflight(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    capsys.readouterr()
    code = cli_main(["preflight", "--format", "json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out)


def failed(report: dict[str, object]) -> set[str]:
    checks = report["checks"]
    assert isinstance(checks, list)
    return {c["name"] for c in checks if c["passed"] is False}


def test_the_packed_model_passes(
    bundles: Bundles, servers: dict[str, Server], capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = preflight(
        capsys, "--bundle", str(bundles.v1), "--url", servers["v1"].url, "--stable-url", servers["v1"].url
    )
    assert code == 0, report
    assert report["verdict"] == "Passed"
    assert report["rows"] == 1000
    assert report["labelled_rows"] == 1000
    assert isinstance(report["max_abs_diff"], float)
    assert report["max_abs_diff"] <= 1e-6  # the same runtime, the same float32 values
    # The text form for people.
    capsys.readouterr()
    assert cli_main(["preflight", "--bundle", str(bundles.v1), "--url", servers["v1"].url]) == 0
    assert "preflight Passed: 1000 golden rows (1000 labelled)" in capsys.readouterr().out


def test_a_swapped_model_is_stopped_by_the_recorded_outputs(
    bundles: Bundles, servers: dict[str, Server], capsys: pytest.CaptureFixture[str]
) -> None:
    """The pods serve v2's (valid, verified) bundle where v1 was packed: the outputs tell."""
    code, report = preflight(
        capsys, "--bundle", str(bundles.v1), "--url", servers["v2"].url, "--stable-url", servers["v1"].url
    )
    assert code == 1
    assert "outputs-match-bundle" in failed(report)


def test_a_worse_model_is_stopped_by_its_auc_drop(
    bundles: Bundles, servers: dict[str, Server], capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = preflight(
        capsys, "--bundle", str(bundles.v3), "--url", servers["v3"].url, "--stable-url", servers["v1"].url
    )
    assert code == 1
    assert failed(report) >= {"auc-drop"}
    assert "outputs-match-bundle" not in failed(report)  # it is the packed model, just a bad one
    new, stable = report["new"], report["stable"]
    assert isinstance(new, dict)
    assert isinstance(stable, dict)
    assert stable["auc"] - new["auc"] > 0.05


def test_replays_count_in_no_live_metric_or_drift_window(
    bundles: Bundles, servers: dict[str, Server], capsys: pytest.CaptureFixture[str]
) -> None:
    server = servers["v1"]
    with server.client() as c:
        before = c.get("/metrics").text
        for start in range(0, 300, 30):
            rows = [
                [None if np.isnan(v) else float(v) for v in r] for r in bundles.normal[start : start + 30]
            ]
            r = c.post("/v2/models/churn/infer", json=v2_request(rows), headers={REPLAY_HEADER: "1"})
            assert r.status_code == 200
        after = c.get("/metrics").text
        for name in (
            "modeldeploy_requests_total",
            "modeldeploy_predicted_rows_total",
            "modeldeploy_drift_windows_total",
            "modeldeploy_request_duration_seconds_count",
            "modeldeploy_model_compute_duration_seconds_count",
        ):
            assert metric_values(after, name, **V1) == metric_values(before, name, **V1), name
        # A replay refused by its declared length (413, before a byte of it is read) is no live request
        # either: the replay header is read before anything can refuse the request.
        refused = raw_http.post(
            server.address,
            "/v2/models/churn/infer",
            declared=10**12,
            body=0,
            close=True,
            extra_head=f"{REPLAY_HEADER}: 1\r\n".encode(),
        )
        assert refused.answer()[0] == 413, refused
        assert metric_values(c.get("/metrics").text, "modeldeploy_requests_total", **V1) == metric_values(
            before, "modeldeploy_requests_total", **V1
        )
        # The same rows without the header are live traffic: counted, and they close drift windows.
        r = c.post("/v2/models/churn/infer", json=v2_body(bundles.normal[:100]), headers={REPLAY_HEADER: "0"})
        assert r.status_code == 200
        live = c.get("/metrics").text
        rows_before = sum(metric_values(after, "modeldeploy_predicted_rows_total", **V1))
        assert metric(live, "modeldeploy_predicted_rows_total", **V1) == rows_before + 100
        windows_before = sum(metric_values(after, "modeldeploy_drift_windows_total", **V1))
        assert metric(live, "modeldeploy_drift_windows_total", **V1) == windows_before + 1


def test_a_server_that_cannot_answer_is_an_error_not_a_verdict(
    bundles: Bundles, capsys: pytest.CaptureFixture[str]
) -> None:
    from local_processes import free_port

    code = cli_main(["preflight", "--bundle", str(bundles.v1), "--url", f"http://127.0.0.1:{free_port()}"])
    assert code == 2
    assert "ConnectError" in capsys.readouterr().err


# --- the operator's side: the golden set from the server, replayed by the operator's own client ---


def test_the_server_hands_out_its_verified_golden_set(bundles: Bundles, servers: dict[str, Server]) -> None:
    from modeldeploy_contract.preflight import GOLDEN_PATH

    with servers["v1"].client() as c:
        r = c.get(GOLDEN_PATH)
    assert r.status_code == 200
    assert r.content == (bundles.v1 / "golden.json").read_bytes()
    assert len(r.headers["x-model-sha256"]) == 64


def _operator_replay(servers: dict[str, Server], new: str, stable: str) -> object:
    from modeldeploy_operator.analysis.fetch import new_client
    from modeldeploy_operator.analysis.replay import Replayer, ReplayTarget
    from modeldeploy_operator.domain.spec import Preflight

    target = ReplayTarget(
        model="churn",
        variant="default",
        revision=new,
        endpoint=servers[new].url.removeprefix("http://"),
        stable_revision=stable,
        stable_endpoint=servers[stable].url.removeprefix("http://"),
    )
    with new_client() as client:
        return Replayer(client).run(target, Preflight())


def test_the_operator_replay_passes_the_packed_model_and_stops_a_worse_one(
    servers: dict[str, Server],
) -> None:
    from modeldeploy_operator.domain.status_model import PreflightStatus

    good = _operator_replay(servers, "v1", "v1")
    assert isinstance(good, PreflightStatus)
    assert good.result == "Passed", good.message
    assert good.rows == 1000
    bad = _operator_replay(servers, "v3", "v1")
    assert isinstance(bad, PreflightStatus)
    assert bad.result == "Failed"
    failed_checks = {c.name for c in bad.checks if c.passed is False}
    assert "auc-drop" in failed_checks
    assert "outputs-match-bundle" not in failed_checks
    assert bad.new is not None
    assert bad.stable is not None
    assert bad.stable.auc is not None
    assert bad.new.auc is not None
    assert bad.stable.auc - bad.new.auc > 0.05
