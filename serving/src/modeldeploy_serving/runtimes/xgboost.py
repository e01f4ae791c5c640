"""XGBoost native models (UBJ or JSON) through xgboost's own in-place predict."""

from __future__ import annotations

import json

import numpy as np
import numpy.typing as npt

from modeldeploy_serving.errors import BundleError


def load_booster(model_bytes: bytes, threads: int = 1) -> object:
    import xgboost as xgb

    booster = xgb.Booster()
    try:
        # load_model takes a bytearray as raw UBJ or JSON: no temporary file, no pickle.
        booster.load_model(bytearray(model_bytes))
    except xgb.core.XGBoostError as exc:
        raise BundleError(f"xgboost cannot load the model: {exc}") from exc
    if threads > 0:
        booster.set_param({"nthread": threads})
    return booster


def objective_of(booster: object) -> str:
    config = json.loads(booster.save_config())  # type: ignore[attr-defined]
    return str(config["learner"]["objective"]["name"])


def task_of(objective: str) -> str:
    return (
        "classification"
        if objective in ("binary:logistic", "multi:softprob", "multi:softmax")
        else "regression"
    )


class XGBoostRuntime:
    name = "xgboost"

    def __init__(self, model_bytes: bytes, n_features: int, task: str, threads: int = 1) -> None:
        self._booster = load_booster(model_bytes, threads)
        found = self._booster.num_features()  # type: ignore[attr-defined]
        if found != n_features:
            raise BundleError(f"XGBoost model has {found} features, the manifest {n_features}")
        objective = objective_of(self._booster)
        if objective == "multi:softmax":
            raise BundleError("multi:softmax gives no probabilities; train with multi:softprob")
        if task_of(objective) != task:
            raise BundleError(f"XGBoost objective {objective} does not match task {task}")
        self._binary = objective == "binary:logistic"

    def predict(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out = np.asarray(self._booster.inplace_predict(x, missing=np.nan), dtype=np.float32)  # type: ignore[attr-defined]
        if self._binary:
            return np.stack([1.0 - out, out], axis=1)
        return out
