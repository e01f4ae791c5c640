"""Model sources and loading: both formats, every URI scheme, digests, honest readiness."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import numpy as np
import pytest
import xgboost as xgb

from modeldeploy_serving.bundle import sha256_file

from local_processes import free_port
from serving_harness import Bundles, ServerFactory, v2_body


class BundleHTTPServer:
    """Serves bundle folders over HTTP (plain paths, and GCS JSON API object URLs) with a settable delay."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.delay = 0.0
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                parts = urlsplit(self.path)
                path = unquote(parts.path)
                if path.startswith("/storage/v1/b/"):  # GCS: /storage/v1/b/<bucket>/o/<object>?alt=media
                    _, _, _, _, bucket, _, obj = path.split("/", 6)
                    if "alt=media" not in parts.query:
                        self.send_error(400)
                        return
                    path = f"/{bucket}/{obj}"
                file = outer.root / path.lstrip("/")
                if not file.resolve().is_relative_to(outer.root.resolve()) or not file.is_file():
                    self.send_error(404)
                    return
                if file.name != "manifest.json":
                    time.sleep(outer.delay)
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_root(bundles: Bundles) -> Iterator[BundleHTTPServer]:
    server = BundleHTTPServer(bundles.root)
    yield server
    server.close()


def reference_probabilities(bundle: Path, rows: np.ndarray) -> np.ndarray:
    model = next(p for p in (bundle / "model.ubj", bundle.parent / "artifacts" / "model.ubj") if p.exists())
    booster = xgb.Booster()
    booster.load_model(str(model))
    return np.asarray(booster.inplace_predict(rows.astype(np.float32), missing=np.nan))


def assert_predicts_like_xgboost(client: httpx.Client, bundle: Path, rows: np.ndarray) -> dict[str, Any]:
    response = client.post("/v2/models/churn/infer", json=v2_body(rows))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    outputs = {o["name"]: o for o in body["outputs"]}
    probs = np.asarray(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    np.testing.assert_allclose(probs[:, 1], reference_probabilities(bundle, rows), atol=1e-5)
    assert outputs["label"]["data"] == [int(p > 0.5) for p in probs[:, 1]]
    return body


@pytest.mark.parametrize(
    ("which", "runtime"),
    [("xgb_only", "xgboost"), ("onnx_only", "onnxruntime"), ("v1", "onnxruntime+xgboost")],
)
def test_both_formats_serve_the_same_predictions(
    bundles: Bundles, serve: ServerFactory, which: str, runtime: str
) -> None:
    bundle: Path = getattr(bundles, which)
    server = serve(str(bundle))
    server.wait_ready()
    rows = bundles.normal[:50]
    with server.client() as c:
        meta = c.get("/v2/models/churn").json()
        assert meta["parameters"]["runtime"] == runtime
        assert meta["platform"] == ("onnx" if which == "onnx_only" else "xgboost")
        assert meta["parameters"]["sha256"] == sha256_file(bundle / "manifest.json")
        ref_bundle = bundles.root / "xgb-only" if which != "v1" else bundle
        assert_predicts_like_xgboost(c, ref_bundle, rows)


def test_xgboost_bundle_served_by_xgboost_when_onnx_not_preferred(
    bundles: Bundles, serve: ServerFactory
) -> None:
    server = serve(str(bundles.v1), env={"MODELDEPLOY_SERVER_PREFER_ONNX": "false"})
    server.wait_ready()
    with server.client() as c:
        assert c.get("/v2/models/churn").json()["parameters"]["runtime"] == "xgboost"
        assert_predicts_like_xgboost(c, bundles.v1, bundles.normal[:20])


def test_file_uri_and_name_override(bundles: Bundles, serve: ServerFactory) -> None:
    server = serve(bundles.v1.as_uri(), args=["--name", "renamed"])
    server.wait_ready()
    with server.client() as c:
        assert c.post("/v2/models/renamed/infer", json=v2_body(bundles.normal[:2])).status_code == 200
        assert c.post("/v2/models/churn/infer", json=v2_body(bundles.normal[:2])).status_code == 404


def test_http_uri_with_expected_digest(
    bundles: Bundles, serve: ServerFactory, http_root: BundleHTTPServer
) -> None:
    digest = sha256_file(bundles.v2 / "manifest.json")
    server = serve(f"{http_root.url}/v2", env={"MODELDEPLOY_SERVER_MODEL_SHA256": digest})
    server.wait_ready()
    with server.client() as c:
        assert c.get("/v2/models/churn/versions/v2/ready").status_code == 200
        assert_predicts_like_xgboost(c, bundles.v2, bundles.normal[:20])
    assert {"/v2/manifest.json", "/v2/model.ubj", "/v2/model.onnx", "/v2/reference_profile.json"} <= set(
        http_root.requests
    )


def test_gs_uri_through_the_json_api(
    bundles: Bundles, serve: ServerFactory, http_root: BundleHTTPServer
) -> None:
    # NO_GCE_CHECK: no credential is configured, and google-auth would otherwise look for a metadata
    # server at 169.254.169.254 before reading anonymously (tests/integration/serving/
    # test_storage_gcs_identity.py covers the credential chain against local stubs).
    server = serve(
        "gs://v1", env={"MODELDEPLOY_SERVER_GCS_ENDPOINT_URL": http_root.url, "NO_GCE_CHECK": "true"}
    )
    server.wait_ready()
    with server.client() as c:
        assert_predicts_like_xgboost(c, bundles.v1, bundles.normal[:20])


def test_s3_uri_through_a_local_s3_server(bundles: Bundles, serve: ServerFactory) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        creds = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="models")
        for file in bundles.v3.iterdir():
            s3.upload_file(str(file), "models", f"churn/v3/{file.name}")
        server = serve("s3://models/churn/v3", env={**creds, "MODELDEPLOY_SERVER_S3_ENDPOINT_URL": endpoint})
        server.wait_ready()
        with server.client() as c:
            assert c.get("/v2/models/churn").json()["versions"] == ["v3"]
            assert_predicts_like_xgboost(c, bundles.v3, bundles.normal[:20])
        # A missing object keeps the server not ready (fail closed), it does not crash it.
        missing = serve(
            "s3://models/nothing-here", env={**creds, "MODELDEPLOY_SERVER_S3_ENDPOINT_URL": endpoint}
        )
        with missing.client() as c:
            deadline = time.monotonic() + 30  # wait for the load attempt to end, not for a fixed time
            ready = c.get("/v2/health/ready")
            while ready.json()["state"] == "loading" and time.monotonic() < deadline:
                time.sleep(0.05)
                ready = c.get("/v2/health/ready")
            assert ready.status_code == 503
            assert ready.json()["state"] == "failed"
            assert "s3://models/nothing-here/manifest.json" in ready.json()["error"]
    finally:
        moto.stop()


def test_manifest_digest_mismatch_is_refused(bundles: Bundles, serve: ServerFactory) -> None:
    server = serve(str(bundles.v1), env={"MODELDEPLOY_SERVER_MODEL_SHA256": "0" * 64})
    _assert_refused(server, "manifest sha256")


def test_tampered_file_is_refused(bundles: Bundles, serve: ServerFactory, tmp_path: Path) -> None:
    copy = tmp_path / "tampered"
    shutil.copytree(bundles.v1, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    (copy / "model.onnx").write_bytes(bytes(data))
    server = serve(str(copy))
    _assert_refused(server, "sha256 mismatch for model.onnx")


def test_tampered_remote_file_is_refused(
    bundles: Bundles, serve: ServerFactory, http_root: BundleHTTPServer, tmp_path: Path
) -> None:
    copy = bundles.root / "tampered-remote"
    if not copy.exists():
        shutil.copytree(bundles.v1, copy)
        (copy / "reference_profile.json").write_bytes((copy / "reference_profile.json").read_bytes() + b" ")
    server = serve(f"{http_root.url}/tampered-remote")
    _assert_refused(server, "reference_profile.json")


def _assert_refused(server: object, message: str) -> None:
    deadline = time.monotonic() + 20
    with server.client() as c:  # type: ignore[attr-defined]
        while time.monotonic() < deadline:
            ready = c.get("/v2/health/ready").json()
            if ready["state"] != "loading":
                break
            time.sleep(0.05)
        assert ready["state"] == "failed"
        assert message in ready["error"]
        assert c.get("/v2/health/ready").status_code == 503
        assert c.get("/v2/health/live").status_code == 200
        infer = c.post("/v2/models/churn/infer", json={"inputs": []})
        assert infer.status_code == 503
        assert "failed to load" in infer.json()["error"]
        assert c.get("/v2/models/churn/ready").status_code == 503
        metrics = c.get("/metrics").text
        assert "modeldeploy_model_load_failures_total 1.0" in metrics
        assert "modeldeploy_model_ready 0.0" in metrics


def test_not_ready_until_a_slow_load_finishes(
    bundles: Bundles, serve: ServerFactory, http_root: BundleHTTPServer
) -> None:
    http_root.delay = 1.0  # per model file: three files, so about three seconds of loading
    server = serve(f"{http_root.url}/v1", args=["--name", "churn"])
    with server.client() as c:
        assert c.get("/v2/health/live").status_code == 200
        ready = c.get("/v2/health/ready")
        assert ready.status_code == 503
        assert ready.json() == {"ready": False, "state": "loading"}
        assert c.get("/v2/models/churn/ready").status_code == 503
        early = c.post("/v2/models/churn/infer", json=v2_body(bundles.normal[:1]))
        assert early.status_code == 503
        assert "loading" in early.json()["error"]
        assert c.post("/v2/models/other/infer", json=v2_body(bundles.normal[:1])).status_code == 404
    server.wait_ready()
    with server.client() as c:
        assert c.get("/v2/models/churn/ready").json() == {"name": "churn", "ready": True}
        assert c.post("/v2/models/churn/infer", json=v2_body(bundles.normal[:1])).status_code == 200
        assert "modeldeploy_model_ready 1.0" in c.get("/metrics").text


def test_missing_bundle_keeps_server_not_ready(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve(str(tmp_path / "no-such-bundle"))
    _assert_refused(server, "does not exist")
