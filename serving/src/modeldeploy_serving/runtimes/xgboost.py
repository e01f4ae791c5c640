"""XGBoost native models (UBJ or JSON) through xgboost's own in-place predict."""

from __future__ import annotations

import ctypes
import json
import logging
import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from modeldeploy_serving.errors import BundleError

log = logging.getLogger(__name__)
Predict = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


def load_booster(model_bytes: bytes, threads: int = 1) -> object:
    import xgboost as xgb

    booster = xgb.Booster()
    try:
        # load_model takes a bytearray as raw UBJ or JSON: no temporary file, no pickle.
        booster.load_model(bytearray(model_bytes))
    except xgb.core.XGBoostError as exc:
        # The library's message may quote the file (a JSON parse error shows the text around it):
        # it goes to the debug log only, never into the error /v2/health/ready shows.
        log.debug("xgboost load error: %s", exc)
        raise BundleError("xgboost cannot load the model (not a valid UBJ or JSON booster)") from exc
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
        self._predict: Predict = dense_predict(self._booster, n_features, self._inplace_predict) or (
            self._inplace_predict
        )

    def _inplace_predict(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.asarray(self._booster.inplace_predict(x, missing=np.nan), dtype=np.float32)  # type: ignore[attr-defined]

    def predict(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out = self._predict(x)
        if self._binary:
            return np.stack([1.0 - out, out], axis=1)
        return out


def dense_predict(booster: object, n_features: int, reference: Predict) -> Predict | None:
    """xgboost's C prediction entry point (XGBoosterPredictFromDense) with its config built once.

    Booster.inplace_predict re-derives everything on every call (input type dispatch, a JSON config,
    feature checks, ctypes output conversion): ~55 of the ~100 us of a one-row call, measured. The C
    call takes the same arguments. Used only if it gives `reference`'s (inplace_predict's) exact
    answers on a probe batch; None (keep inplace_predict) if the library lacks it or disagrees.
    """
    try:
        from xgboost import core

        lib = core._LIB
        entry = lib.XGBoosterPredictFromDense
        handle = booster.handle  # type: ignore[attr-defined]
        config = core.make_jcargs(
            type=0,
            training=False,
            iteration_begin=0,
            iteration_end=0,
            missing=math.nan,
            strict_shape=False,
            cache_id=0,
        )
        proxy = ctypes.c_void_p()  # no proxy DMatrix: no base margin
    except (ImportError, AttributeError) as exc:
        log.info("xgboost's C predict entry point is unavailable (%s); using inplace_predict", exc)
        return None

    def predict(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        # C order and float32 alignment (binary request bodies can put a tensor at any byte offset,
        # which xgboost's C side refuses).
        x = np.require(x, dtype=np.float32, requirements=["C_CONTIGUOUS", "ALIGNED"])
        interface = b'{"data":[%d,true],"shape":[%d,%d],"strides":null,"typestr":"<f4","version":3}' % (
            x.ctypes.data,
            x.shape[0],
            x.shape[1],
        )
        shape = ctypes.POINTER(ctypes.c_uint64)()
        dims = ctypes.c_uint64()  # bst_ulong
        out = ctypes.POINTER(ctypes.c_float)()
        status = entry(
            handle, interface, config, proxy, ctypes.byref(shape), ctypes.byref(dims), ctypes.byref(out)
        )
        if status != 0:
            raise core.XGBoostError(lib.XGBGetLastError().decode())
        dims_ = tuple(int(shape[i]) for i in range(dims.value))
        # The result buffer belongs to xgboost (reused by the next call in this thread): copy it out.
        return np.ctypeslib.as_array(out, (math.prod(dims_),)).reshape(dims_).copy()

    probe = np.random.default_rng(0).normal(size=(33, n_features)).astype(np.float32) * 10
    probe[::3, 0] = np.nan
    expected = reference(probe)
    try:
        got = predict(probe)
    except Exception as exc:  # any failure: keep the supported path
        log.info("xgboost's C predict entry point failed a probe (%s); using inplace_predict", exc)
        return None
    if got.shape != expected.shape or not np.array_equal(got, expected):
        log.info("xgboost's C predict entry point disagrees with inplace_predict; using inplace_predict")
        return None
    return predict
