"""`modeldeploy pack --model model.ubj` as a new user runs it (a process), then a real model server on
the bundle: the ONNX export pack made itself is what serves, and predicts what XGBoost predicts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from churn_example import load_churn
from serving_harness import ServerFactory, v2_body


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    c = load_churn()
    folder = tmp_path_factory.mktemp("pack-default")
    x, y = c.generate(2000, 21)
    c.train_and_export(x[:1600], y[:1600], folder, 25, 21)
    (folder / "model.onnx").unlink()  # the user has only the XGBoost model
    c.write_csv(folder / "train.csv", x[:1600], y[:1600])
    c.write_csv(folder / "validation.csv", x[1600:], y[1600:])
    return folder


def _pack(folder: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modeldeploy_serving.cli", "pack", "--model", str(folder / "model.ubj"),
         "--train-data", str(folder / "train.csv"), "--validation-data", str(folder / "validation.csv"),
         "--label", "retained", "--name", "churn", "--version", "v1", "--out", str(out), *extra],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip


def _xgboost_probabilities(model: Path, rows: np.ndarray) -> np.ndarray:
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(str(model))
    p1 = booster.inplace_predict(rows.astype(np.float32), missing=np.nan)
    return np.stack([1.0 - p1, p1], axis=1)


def _served_probabilities(client: httpx.Client, rows: np.ndarray) -> np.ndarray:
    body = client.post("/v2/models/churn/infer", json=v2_body(rows)).raise_for_status().json()
    out = next(o for o in body["outputs"] if o["name"] == "probabilities")
    return np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])


@pytest.mark.parametrize(
    ("extra", "runtime", "chosen"),
    [
        ((), "onnxruntime+xgboost", "runtime: onnxruntime (exported by onnxmltools"),
        (("--no-onnx",), "xgboost", "runtime: xgboost (ONNX export turned off"),
    ],
)
def test_packed_bundle_serves_with_the_chosen_runtime(
    trained: Path, tmp_path: Path, serve: ServerFactory, extra: tuple[str, ...], runtime: str, chosen: str
) -> None:
    done = _pack(trained, tmp_path / "bundle", *extra)
    assert chosen in done.stdout
    server = serve(str(tmp_path / "bundle"))
    server.wait_ready()
    c = load_churn()
    rows = c.generate(200, 99)[0]
    rows[::7, :] = np.nan  # all-missing rows and the generator's own gaps
    expected = _xgboost_probabilities(trained / "model.ubj", rows)
    with server.client() as client:
        assert client.get("/v2/models/churn").json()["parameters"]["runtime"] == runtime
        # one row (onnxruntime below XGBOOST_BATCH_ROWS) and a batch of 200 (xgboost above it)
        one = _served_probabilities(client, rows[:1])
        many = _served_probabilities(client, rows)
    np.testing.assert_allclose(one, expected[:1], atol=1e-5, rtol=0)
    np.testing.assert_allclose(many, expected, atol=1e-5, rtol=0)


def test_onnx_only_server_setting_serves_the_export(
    trained: Path, tmp_path: Path, serve: ServerFactory
) -> None:
    """XGBOOST_BATCH_ROWS=0 sends every call to the export pack made: it alone matches XGBoost."""
    _pack(trained, tmp_path / "bundle")
    server = serve(str(tmp_path / "bundle"), env={"MODELDEPLOY_SERVER_XGBOOST_BATCH_ROWS": "0"})
    server.wait_ready()
    rows = load_churn().generate(300, 98)[0]
    with server.client() as client:
        assert client.get("/v2/models/churn").json()["parameters"]["runtime"] == "onnxruntime"
        served = _served_probabilities(client, rows)
    np.testing.assert_allclose(served, _xgboost_probabilities(trained / "model.ubj", rows), atol=1e-5, rtol=0)
