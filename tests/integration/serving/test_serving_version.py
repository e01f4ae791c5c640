"""One truth for a model's version (issue 12), with real model-server processes: a server told another
version than its bundle's manifest refuses the bundle and says why on /v2/health/ready; the operator's
probe (the code the reconciler runs against pods) reads what each server loaded or refused."""

from __future__ import annotations

import time
from typing import Any

import httpx

from modeldeploy_operator.analysis.fetch import new_client
from modeldeploy_operator.analysis.servers import ServerPod, probe
from modeldeploy_operator.domain.observed import ServerReport

from local_processes import STARTUP_TIMEOUT
from serving_harness import Bundles, Server, ServerFactory, v2_body


def settled_health(server: Server) -> tuple[int, dict[str, Any]]:
    """The /v2/health/ready answer once the server has finished loading (ready or failed)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with server.client() as c:
        while time.monotonic() < deadline:
            answer = c.get("/v2/health/ready")
            body = answer.json()
            if body["state"] != "loading":
                return answer.status_code, body
            time.sleep(0.05)
    raise AssertionError(f"server still loading after {STARTUP_TIMEOUT}s; log:\n{server.log.read_text()}")


def assert_refused(server: Server, bundles: Bundles, expected: ServerReport) -> None:
    """A server that refused its bundle never serves it, and the operator's probe reads the refusal."""
    with server.client() as c:
        answer = c.post("/v2/models/churn/infer", json=v2_body(bundles.normal[:1]))
        assert answer.status_code == 503  # never serves the bundle it refused
        assert c.get("/v2/models/churn/ready").status_code == 503
    address = server.url.removeprefix("http://")
    with new_client() as client:
        report = probe(client, ServerPod(("pod", 0), "rev1", address))
    assert report == expected


def test_a_server_told_another_version_refuses_the_bundle(serve: ServerFactory, bundles: Bundles) -> None:
    server = serve(
        str(bundles.v1), {"MODELDEPLOY_SERVER_MODEL_VERSION": "v2", "MODELDEPLOY_SERVER_MODEL_NAME": "churn"}
    )
    status, body = settled_health(server)
    assert status == 503
    assert (body["ready"], body["state"], body["reason"]) == (False, "failed", "ModelVersionMismatch")
    assert body["refused"]["version"] == "v1"
    assert body["refused"]["expectedVersion"] == "v2"
    assert "'v1'" in body["error"]
    expected = ServerReport(
        "rev1",
        "failed",
        version="v1",
        sha256=body["refused"]["sha256"],
        reason="ModelVersionMismatch",
        expected_version="v2",
    )
    assert_refused(server, bundles, expected)


def test_a_server_told_its_bundles_version_reports_the_digest_it_loaded(
    serve: ServerFactory, bundles: Bundles
) -> None:
    server = serve(
        str(bundles.v1), {"MODELDEPLOY_SERVER_MODEL_VERSION": "v1", "MODELDEPLOY_SERVER_MODEL_NAME": "churn"}
    )
    status, body = settled_health(server)
    assert status == 200
    with server.client() as c:
        metadata = c.get("/v2/models/churn").json()
    assert body["model"] == {"name": "churn", "version": "v1", "sha256": metadata["parameters"]["sha256"]}
    address = server.url.removeprefix("http://")
    with new_client() as client:
        report = probe(client, ServerPod(("pod", 0), "rev1", address))
    assert report == ServerReport("rev1", "ready", version="v1", sha256=metadata["parameters"]["sha256"])
    assert isinstance(report, ServerReport)
    assert report.final


def test_the_probe_of_a_server_that_is_gone_is_a_short_reason() -> None:
    with httpx.Client() as c:
        del c  # nothing listens on this port of the loopback (bound and closed by free_port)
    from local_processes import free_port

    with new_client() as client:
        report = probe(client, ServerPod(("pod", 0), "rev1", f"127.0.0.1:{free_port()}"))
    assert isinstance(report, str)
    assert "refused" in report or "unreachable" in report


def test_a_server_told_another_format_refuses_the_bundle(serve: ServerFactory, bundles: Bundles) -> None:
    """spec.model.format (issue 13): an ONNX bundle under a spec that says xgboost is refused, and the
    operator's probe reads the reason and both formats."""
    server = serve(
        str(bundles.onnx_only),
        {"MODELDEPLOY_SERVER_MODEL_FORMAT": "xgboost", "MODELDEPLOY_SERVER_MODEL_NAME": "churn"},
    )
    status, body = settled_health(server)
    assert status == 503
    assert (body["ready"], body["state"], body["reason"]) == (False, "failed", "ModelFormatMismatch")
    assert "bundle is onnx, spec.model.format says xgboost" in body["error"]
    assert (body["refused"]["format"], body["refused"]["expectedFormat"]) == ("onnx", "xgboost")
    expected = ServerReport(
        "rev1",
        "failed",
        version="v1",
        sha256=body["refused"]["sha256"],
        reason="ModelFormatMismatch",
        format="onnx",
        expected_format="xgboost",
    )
    assert_refused(server, bundles, expected)


def test_a_server_told_onnx_serves_an_xgboost_bundle_through_its_onnx_export(
    serve: ServerFactory, bundles: Bundles
) -> None:
    """What every spec said before `auto`: format onnx for the churn example's XGBoost bundles."""
    server = serve(
        str(bundles.v1), {"MODELDEPLOY_SERVER_MODEL_FORMAT": "onnx", "MODELDEPLOY_SERVER_MODEL_NAME": "churn"}
    )
    status, body = settled_health(server)
    assert status == 200, body
    with server.client() as c:
        answer = c.post("/v2/models/churn/infer", json=v2_body(bundles.normal[:2]))
        assert answer.status_code == 200, answer.text
