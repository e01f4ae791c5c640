"""The serving image ships xgboost's CPU-only wheel (`xgboost-cpu`): the same library built without
CUDA and NCCL, about 700 MB smaller. This proves it trains and predicts bit-identically to the full
`xgboost` wheel over the churn example's rows.

The golden digests below were recorded with the full wheel (xgboost 3.2.0, manylinux_2_28_x86_64):
the churn example's v1-style model (4000 rows, 40 trees, seed 11, as the serving tests build it),
then predictions over 3000 normal, 3000 shifted and the 800 held-out rows. To re-record them after a
version bump, run this file as a script in a virtualenv that has the full wheel:
    python tests/integration/images/test_xgboost_cpu.py
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from script_module import script_module

REPO = Path(__file__).resolve().parents[3]

GOLDEN_FULL_WHEEL = {
    "xgboost": "3.2.0",
    "rows": 6800,
    "model_sha256": "124d468c85ec9470c81f7342acc3eff1e26a2c7f4724ce5467c5572ac0505932",
    "proba_sha256": "920d05a88e8220edf4f9f18226ff76c5fb528daf5bd0b385359db09c2334f677",
    "margin_sha256": "71db8eeb94979df993b7eb3bbe5a3277ff38d4423be535af6322faa13a11e8e2",
}


def _churn() -> ModuleType:
    return script_module("churn_make_models_cpu", REPO / "examples/churn/make_models.py")


def churn_predictions(folder: Path) -> dict[str, Any]:
    """Train the churn model into `folder` and digest the model and its predictions."""
    import xgboost as xgb

    churn = _churn()
    x, y = churn.generate(4000, 11)
    churn.train_and_export(x[:3200], y[:3200], folder, 40, 11)
    booster = xgb.Booster()
    booster.load_model(str(folder / "model.ubj"))
    rows = np.vstack(
        [churn.generate(3000, 12345)[0], churn.generate(3000, 54321, shift=1.5)[0], x[3200:]]
    ).astype(np.float32)
    matrix = xgb.DMatrix(rows, feature_names=churn.FEATURES)
    proba = booster.predict(matrix)
    margin = booster.predict(matrix, output_margin=True)
    # The runtime serves through inplace_predict: it must agree with the DMatrix path bit for bit.
    assert booster.inplace_predict(rows).tobytes() == proba.tobytes()
    return {
        "xgboost": xgb.__version__,
        "rows": len(rows),
        "model_sha256": hashlib.sha256((folder / "model.ubj").read_bytes()).hexdigest(),
        "proba_sha256": hashlib.sha256(proba.tobytes()).hexdigest(),
        "margin_sha256": hashlib.sha256(margin.tobytes()).hexdigest(),
    }


def test_the_cpu_wheel_is_what_the_lock_installs() -> None:
    from importlib.metadata import PackageNotFoundError, distribution

    assert distribution("xgboost-cpu").version
    with pytest.raises(PackageNotFoundError):
        distribution("xgboost")  # both would write the same `xgboost` package folder
    with pytest.raises(PackageNotFoundError):
        distribution("nvidia-nccl-cu12")


def test_cpu_wheel_trains_and_predicts_like_the_full_wheel(tmp_path: Path) -> None:
    import xgboost as xgb

    if xgb.__version__ != GOLDEN_FULL_WHEEL["xgboost"]:
        pytest.skip(
            f"golden digests are for xgboost {GOLDEN_FULL_WHEEL['xgboost']}, installed {xgb.__version__}: "
            "re-record them with the full wheel (see this module's docstring)"
        )
    assert churn_predictions(tmp_path) == GOLDEN_FULL_WHEEL


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(churn_predictions(Path(folder)), indent=4))
    sys.exit(0)
