"""JSON parsing and tensor conversion shared by the V2 and V1 codecs."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from modeldeploy_serving.errors import BadRequestError

# Wire datatypes and their little-endian numpy dtypes (the binary extension is little-endian).
DTYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
}
INTEGER_TYPES = frozenset({"INT32", "INT64"})
WIRE_TYPE = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64", np.dtype(np.int64): "INT64"}


def parse_json(body: bytes | memoryview) -> Any:
    """orjson first (fast); the stdlib parser only when that fails, because common V2 clients
    (Python's json module among them) emit the non-standard NaN / Infinity literals."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as first:
        try:
            return json.loads(bytes(body))
        except (ValueError, UnicodeDecodeError):
            raise BadRequestError(f"malformed JSON: {first}") from None


def shape_of(value: Any, what: str) -> list[int]:
    if not isinstance(value, list) or not all(type(d) is int and d >= 0 for d in value):
        raise BadRequestError(f"{what}: 'shape' must be a list of non-negative integers, got {value!r}")
    return value


def numeric_array(data: Any, datatype: str, what: str) -> npt.NDArray[Any]:
    """Convert JSON data (flat or nested lists) to an array; null means NaN for float datatypes."""
    if not isinstance(data, list):
        raise BadRequestError(f"{what}: 'data' must be a list of numbers")
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError):
        raise BadRequestError(f"{what}: nested data is ragged (rows of different lengths)") from None
    kind = arr.dtype.kind
    if kind in "biu" or (kind == "f" and datatype not in INTEGER_TYPES):
        return arr
    if kind == "f":
        # 3.0 is how many JSON writers spell 3; only a fractional part makes it not an integer.
        if np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            return arr
        raise BadRequestError(f"{what}: non-integer values in {datatype} data")
    if kind == "O":
        if datatype in INTEGER_TYPES:
            raise BadRequestError(
                f"{what}: null or non-number in {datatype} data (use FP32/FP64 for missing values)"
            )
        for value in arr.flat:
            if value is not None and not isinstance(value, int | float):
                raise BadRequestError(
                    f"{what}: {type(value).__name__} value {value!r} is not valid {datatype} data"
                )
        try:
            return np.array(data, dtype=np.float64)  # None becomes NaN here
        except OverflowError:  # an integer literal beyond float64 (JSON has no size limit)
            raise BadRequestError(f"{what}: a value is too large for {datatype}") from None
    kinds = {"U": "string", "S": "bytes", "M": "date", "m": "duration", "V": "raw"}
    raise BadRequestError(f"{what}: {kinds.get(kind, kind)} values are not valid {datatype} data")


def as_model_input(arr: npt.NDArray[Any], what: str) -> npt.NDArray[np.float32]:
    """The float32 matrix the runtimes take; infinities are refused (only NaN means missing)."""
    if arr.dtype == np.float64:
        with np.errstate(over="ignore"):  # FP64 beyond float32's range becomes inf, refused just below
            x = arr.astype(np.float32)
    else:
        x = np.ascontiguousarray(arr, dtype=np.float32)
    if np.isinf(x).any():
        raise BadRequestError(f"{what}: infinite values are not supported (null or NaN means missing)")
    return x


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
