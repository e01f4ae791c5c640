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


INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_LIMIT = 2.0**63  # float: the bound checked on float arrays (all |values| < 2**63 fit INT64)
# More digits than any 64-bit length has: int() of a longer string is refused by Python itself
# (4,300 digits) or is a waste of CPU, and no body can be that long.
MAX_LENGTH_DIGITS = 19


def parse_length(raw: bytes, what: str) -> int:
    """A non-negative decimal length header, or a 400 naming it (never Python's int() errors)."""
    if not raw.isdigit() or len(raw) > MAX_LENGTH_DIGITS:
        shown = raw[:40].decode(errors="replace") + ("..." if len(raw) > 40 else "")
        raise BadRequestError(f"{what} must be a number of at most {MAX_LENGTH_DIGITS} digits, got {shown!r}")
    return int(raw)


def parse(body: bytes | memoryview) -> tuple[Any, bool]:
    """The parsed body and whether it was standard JSON (orjson parsed it).

    orjson first (fast). The stdlib parser runs only when that fails and the body really has a
    NaN or Infinity literal (common V2 clients, Python's json module among them, emit them) or a
    number beyond float64: it is ~10x slower, so a malformed body never pays for it. A
    stdlib-parsed document can hold what orjson would not have produced (NaN and infinities,
    integers beyond 64 bits, lone surrogates): callers must not take fast paths that assume
    standard JSON with it, and must check what they echo (echoable).
    """
    try:
        return orjson.loads(body), True
    except orjson.JSONDecodeError as first:
        raw = bytes(body)
        # orjson also refuses numbers beyond float64 ("number is infinity"), which is valid JSON.
        if b"NaN" not in raw and b"Infinity" not in raw and "infinity" not in str(first):
            raise BadRequestError(f"malformed JSON: {first}") from None
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nesting too deep
            raise BadRequestError(f"malformed JSON: {first}") from None
        return doc, False


def echoable(value: Any, what: str) -> Any:
    """The value, if orjson can write it back (a stdlib-parsed one may not be: 2**70, lone surrogates)."""
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise BadRequestError(f"{what} cannot be echoed: {exc}") from None
    return value


def parse_json(body: bytes | memoryview) -> Any:
    """The parsed body (see parse)."""
    return parse(body)[0]


def has_bool(data: list[Any]) -> bool:
    """Whether nested lists hold a JSON true/false (numpy would take them as 1/0)."""
    stack = [data]
    while stack:
        for value in stack.pop():
            kind = type(value)
            if kind is bool:
                return True
            if kind is list:
                stack.append(value)
    return False


def may_hold_bool(body: bytes | memoryview) -> bool:
    """False when the JSON text has no true/false literal: the per-value scan can be skipped."""
    raw = body if isinstance(body, bytes) else body.tobytes()
    return b"true" in raw or b"false" in raw


def shape_of(value: Any, what: str) -> list[int]:
    if not isinstance(value, list) or not all(type(d) is int and d >= 0 for d in value):
        raise BadRequestError(f"{what}: 'shape' must be a list of non-negative integers, got {value!r}")
    return value


def numeric_array(data: Any, datatype: str, what: str, check_bool: bool = True) -> npt.NDArray[Any]:
    """Convert JSON data (flat or nested lists) to an array; null means NaN for float datatypes.

    JSON true/false are refused (numpy would read them as 1/0); check_bool=False skips that scan
    when the body has no such literal (may_hold_bool). Integer datatypes are range-checked.
    """
    if not isinstance(data, list):
        raise BadRequestError(f"{what}: 'data' must be a list of numbers")
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, RecursionError):
        raise BadRequestError(f"{what}: nested data is ragged (rows of different lengths)") from None
    kind = arr.dtype.kind
    if kind == "b" or (check_bool and kind in "iuf" and has_bool(data)):
        raise BadRequestError(f"{what}: true/false are not valid {datatype} data")
    if datatype in INTEGER_TYPES and kind in "iuf":
        _check_integers(arr, datatype, what)
        return arr
    if kind in "iuf":
        return arr
    if kind == "O":
        if datatype in INTEGER_TYPES:
            raise BadRequestError(
                f"{what}: null or non-number in {datatype} data (use FP32/FP64 for missing values)"
            )
        for value in arr.flat:
            if value is not None and (type(value) is bool or not isinstance(value, int | float)):
                raise BadRequestError(
                    # the type only, never the value: it may be personal data (docs/serving.md#prediction-log)
                    f"{what}: a {type(value).__name__} value is not valid {datatype} data"
                )
        try:
            return np.array(data, dtype=np.float64)  # None becomes NaN here
        except OverflowError:  # an integer literal beyond float64 (JSON has no size limit)
            raise BadRequestError(f"{what}: a value is too large for {datatype}") from None
    kinds = {"U": "string", "S": "bytes", "M": "date", "m": "duration", "V": "raw"}
    raise BadRequestError(f"{what}: {kinds.get(kind, kind)} values are not valid {datatype} data")


def _check_integers(arr: npt.NDArray[Any], datatype: str, what: str) -> None:
    if arr.size == 0:
        return
    # 3.0 is how many JSON writers spell 3; only a fractional part makes it not an integer.
    if arr.dtype.kind == "f" and not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
        raise BadRequestError(f"{what}: non-integer values in {datatype} data")
    low, high = arr.min(), arr.max()
    if datatype == "INT32":
        ok = low >= INT32_MIN and high <= INT32_MAX
    else:  # INT64: uint64 arrays hold values >= 2**63; floats came from integers beyond 64 bits
        ok = arr.dtype.kind == "i" or (arr.dtype.kind == "f" and low > -INT64_LIMIT and high < INT64_LIMIT)
    if not ok:
        raise BadRequestError(f"{what}: a value is out of the range of {datatype}")


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
