"""The scikit-learn and LightGBM example: exported to ONNX (with the converters' default ZipMap output,
and without it), packed, served by a real model server, and predicting what the library predicts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from serving_harness import ServerFactory, v2_body
from sklearn_lightgbm_example import load_example


@pytest.fixture(scope="module", params=[True, False], ids=["zipmap", "no-zipmap"])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    example = load_example()
    out = tmp_path_factory.mktemp("sklearn-lightgbm")
    result: dict[str, Any] = example.build(out, rows=1200, seed=4, zipmap=request.param)
    return result


@pytest.mark.parametrize(("name", "n_classes"), [("sklearn", 2), ("lightgbm", 3)])
def test_served_probabilities_match_predict_proba(
    built: dict[str, Any], serve: ServerFactory, name: str, n_classes: int
) -> None:
    example = load_example()
    model, folder = built[name]
    server = serve(str(folder))
    server.wait_ready()
    rows = example.generate(150, 404)[0]
    rows[::11, :] = np.nan  # all-missing rows besides the generator's gaps
    expected = model.predict_proba(rows.astype(np.float32).astype(np.float64))
    with server.client() as client:
        meta = client.get(f"/v2/models/{name}").json()
        assert meta["platform"] == "onnx"
        assert meta["parameters"]["runtime"] == "onnxruntime"
        assert meta["parameters"]["classes"] == list(range(n_classes))
        for batch in (rows[:1], rows):
            body = client.post(f"/v2/models/{name}/infer", json=v2_body(batch)).raise_for_status().json()
            outputs = {o["name"]: o for o in body["outputs"]}
            probs = outputs["probabilities"]
            assert probs["datatype"] == "FP32"
            assert probs["shape"] == [len(batch), n_classes]
            served = np.asarray(probs["data"], dtype=np.float64).reshape(probs["shape"])
            np.testing.assert_allclose(served, expected[: len(batch)], atol=1e-5, rtol=0)
            assert outputs["label"]["data"] == np.argmax(served, axis=1).tolist()
