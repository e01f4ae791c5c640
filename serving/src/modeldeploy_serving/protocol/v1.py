"""KServe V1: {"instances": [...]} in, {"predictions": [...]} out.

Rows are lists in feature order or objects keyed by feature name (an absent key is a missing
value). Predictions follow KServe's XGBoost server: P(class 1) for binary classifiers, the
probability vector for multi-class ones, the value for regressors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from modeldeploy_serving.errors import BadRequestError
from modeldeploy_serving.model import Prediction
from modeldeploy_serving.protocol.tensors import as_model_input, may_hold_bool, numeric_array, parse_json


def decode_request(body: bytes, features: dict[str, int], max_rows: int) -> npt.NDArray[np.float32]:
    req = parse_json(body)
    if not isinstance(req, dict):
        raise BadRequestError("the request body must be a JSON object with 'instances'")
    rows = req.get("instances", req.get("inputs"))
    if not isinstance(rows, list) or not rows:
        raise BadRequestError("'instances' must be a non-empty list of rows")
    if len(rows) > max_rows:
        raise BadRequestError(f"{len(rows)} rows is more than the {max_rows} allowed in one request")
    check_bool = may_hold_bool(body)
    if isinstance(rows[0], dict):
        names = list(features)
        known = features.keys()
        table = []
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise BadRequestError(f"instance {i} is not an object like instance 0")
            unknown = row.keys() - known
            if unknown:
                raise BadRequestError(f"instance {i} has unknown features: {', '.join(sorted(unknown))}")
            table.append([row.get(name) for name in names])
        arr = numeric_array(table, "FP64", "instances", check_bool)
    else:
        arr = numeric_array(rows, "FP64", "instances", check_bool)
    if arr.ndim != 2 or arr.shape[1] != len(features):
        raise BadRequestError(
            f"instances have shape {list(arr.shape)}; expected [N, {len(features)}] (one value per feature)"
        )
    return as_model_input(arr, "instances")


def encode_response(prediction: Prediction) -> bytes:
    if "probabilities" in prediction.outputs:
        probs = prediction.outputs["probabilities"]
        result: Any = np.ascontiguousarray(probs[:, 1]) if probs.shape[1] == 2 else probs
    else:
        result = prediction.outputs["predictions"]
    return orjson.dumps({"predictions": result}, option=orjson.OPT_SERIALIZE_NUMPY)
