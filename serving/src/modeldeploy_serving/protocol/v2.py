"""Open Inference Protocol V2 (REST) with Triton's binary tensor data extension.

Binary extension: the request's Inference-Header-Content-Length header gives the length of the JSON
part; raw little-endian tensor bytes follow it, one blob per input whose parameters carry
binary_data_size, in input order. Outputs are returned the same way when a requested output has
parameters.binary_data=true or the request parameters have binary_data_output=true.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from modeldeploy_serving.errors import BadRequestError
from modeldeploy_serving.model import Prediction
from modeldeploy_serving.protocol.tensors import (
    DTYPES,
    WIRE_TYPE,
    as_model_input,
    echoable,
    may_hold_bool,
    numeric_array,
    parse,
    shape_of,
)
from modeldeploy_serving.rows import ListRows, Rows, as_array

HEADER_LENGTH = "inference-header-content-length"
FLOAT_DATATYPES = frozenset({"FP32", "FP64"})
NONE_TYPE = type(None)
PLAIN_VALUE_TYPES = frozenset({int, float, NONE_TYPE})
FLOAT32_MAX = float(np.finfo(np.float32).max)
# The fast path's checks are per value in Python: cheaper than numpy's fixed costs for a few rows,
# dearer from about 16 rows on (measured: 1 row 1.7 vs 6.1 us, 16 rows 11 vs 11 us, 64 rows 36 vs 25).
SIMPLE_MAX_ROWS = 16


@dataclass(slots=True)
class InferRequest:
    rows: Rows
    """The input rows (the data plane takes them as they are; x converts them)."""
    id: Any
    outputs: list[tuple[str, bool]] | None
    """Requested outputs as (name, binary), in the order asked; None for all outputs as JSON."""
    binary_output: bool

    @property
    def x(self) -> npt.NDArray[np.float32]:
        """The rows as the float32 [N, F] matrix the model takes."""
        return as_array(self.rows)


def _decode_tensor(
    t: Any, binary: memoryview | None, offset: int, max_rows: int, check_bool: bool
) -> tuple[npt.NDArray[Any], int]:
    if not isinstance(t, dict) or not isinstance(t.get("name"), str):
        raise BadRequestError("every input must be an object with a string 'name'")
    what = f"input {t['name']!r}"
    datatype = t.get("datatype")
    if type(datatype) is not str or datatype not in DTYPES:  # a list is unhashable: check the type first
        raise BadRequestError(
            f"{what}: unsupported datatype {datatype!r}; expected one of {', '.join(DTYPES)}"
        )
    shape = shape_of(t.get("shape"), what)
    if shape and shape[0] > max_rows:
        raise BadRequestError(f"{what}: {shape[0]} rows is more than the {max_rows} allowed in one request")
    count = math.prod(shape)
    params = t.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if binary is None:
            raise BadRequestError(
                f"{what}: binary_data_size given without an Inference-Header-Content-Length header"
            )
        expected = count * DTYPES[datatype].itemsize
        if type(size) is not int or size != expected:
            raise BadRequestError(
                f"{what}: binary_data_size {size} does not match shape {shape} of {datatype} ({expected})"
            )
        if offset + size > len(binary):
            raise BadRequestError(f"{what}: the body holds fewer binary bytes than binary_data_size says")
        arr = np.frombuffer(binary[offset : offset + size], dtype=DTYPES[datatype]).reshape(shape)
        return arr, offset + size
    if "data" not in t:
        raise BadRequestError(f"{what}: no 'data' (and no binary_data_size)")
    arr = numeric_array(t["data"], datatype, what, check_bool)
    if arr.size != count:
        raise BadRequestError(f"{what}: data has {arr.size} values but shape {shape} needs {count}")
    return arr.reshape(shape), offset


def _assemble(
    tensors: list[tuple[str, npt.NDArray[Any]]], features: dict[str, int]
) -> npt.NDArray[np.float32]:
    n_features = len(features)
    if len(tensors) == 1:
        name, arr = tensors[0]
        if arr.ndim != 2 or arr.shape[1] != n_features:
            raise BadRequestError(
                f"input {name!r} has shape {list(arr.shape)}; expected [N, {n_features}] (N rows, F features)"
            )
        return as_model_input(arr, f"input {name!r}")
    # One tensor per feature ([N] or [N, 1] each), as some clients send columns by name.
    columns: list[npt.NDArray[Any] | None] = [None] * n_features
    rows = None
    for name, arr in tensors:
        if name not in features:
            raise BadRequestError(f"input {name!r} is not a feature of this model")
        if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] != 1):
            raise BadRequestError(
                f"input {name!r} has shape {list(arr.shape)}; per-feature inputs are [N] or [N, 1]"
            )
        if rows is not None and arr.shape[0] != rows:
            raise BadRequestError(f"input {name!r} has {arr.shape[0]} rows, other inputs {rows}")
        rows = arr.shape[0]
        columns[features[name]] = arr.reshape(-1)
    missing = [f for f, i in features.items() if columns[i] is None]
    if missing:
        raise BadRequestError(f"missing inputs for features: {', '.join(missing)}")
    return as_model_input(np.column_stack(columns), "inputs")  # type: ignore[arg-type]


def decode_request(
    body: bytes,
    header_length: int | None,
    features: dict[str, int],
    output_names: list[str],
    max_rows: int,
) -> InferRequest:
    binary: memoryview | None = None
    header: bytes | memoryview = body
    if header_length is not None:
        if not 0 < header_length <= len(body):
            raise BadRequestError(
                f"Inference-Header-Content-Length {header_length} does not fit a {len(body)}-byte body"
            )
        view = memoryview(body)
        header, binary = view[:header_length], view[header_length:]
    req, standard = parse(header)
    if binary is None and standard:  # the fast path assumes no NaN/Infinity (only the stdlib makes them)
        simple = _decode_simple(req, len(features), max_rows)
        if simple is not None:
            return simple
    return decode_general(req, binary, features, output_names, max_rows, check_bool=may_hold_bool(header))


def decode_general(
    req: Any,
    binary: memoryview | None,
    features: dict[str, int],
    output_names: list[str],
    max_rows: int,
    check_bool: bool = True,
) -> InferRequest:
    """Any V2 request (parsed JSON header plus binary part): every shape, datatype and option.
    check_bool=False when the JSON text has no true/false literal (skips a per-value scan)."""
    if not isinstance(req, dict):
        raise BadRequestError("the request body must be a JSON object")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequestError("'inputs' must be a non-empty list of tensors")
    offset = 0
    tensors = []
    for t in inputs:
        arr, offset = _decode_tensor(t, binary, offset, max_rows, check_bool)
        tensors.append((t["name"], arr))
    if binary is not None and offset != len(binary):
        raise BadRequestError(f"{len(binary) - offset} binary bytes after the last input's data")
    x = _assemble(tensors, features)
    if x.shape[0] == 0:
        raise BadRequestError("the request has no rows")
    if x.shape[0] > max_rows:
        raise BadRequestError(f"{x.shape[0]} rows is more than the {max_rows} allowed in one request")
    params = req.get("parameters")
    binary_output = bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    request_id = req.get("id")
    if request_id is not None:  # stdlib-parsed: maybe an integer beyond 64 bits or a lone surrogate
        echoable(request_id, "'id'")
    return InferRequest(
        x, request_id, _requested_outputs(req.get("outputs"), output_names, binary_output), binary_output
    )


def _decode_simple(req: Any, n_features: int, max_rows: int) -> InferRequest | None:
    """The common request in one pass, or None to take the general path (which also names errors).

    Most online callers send a few rows as one float tensor [N, F] with flat row-major data and want
    every output as JSON.
    The general path spends ~6 us per one-row request on checks written for every other shape; this
    one checks the list in one pass and leaves it a list, converted with the rest of its micro-batch
    (rows.py). It accepts exactly what the general path accepts for these requests and leaves
    anything unusual, including every error, to it.
    """
    t = _plain_tensor(req)
    if t is None:
        return None
    shape, data = t["shape"], t["data"]  # shape: a non-empty list (_plain_tensor)
    rows = shape[0]
    if (
        len(shape) != 2
        or type(rows) is not int
        or shape[1] != n_features
        or not 0 < rows <= min(max_rows, SIMPLE_MAX_ROWS)
        or type(data) is not list
        or len(data) != rows * n_features
    ):
        return None
    types = set(map(type, data))
    if not types <= PLAIN_VALUE_TYPES:  # nested lists, strings, booleans: general path
        return None
    # Values beyond float32's range would become infinities, which the general path refuses by name.
    # min/max over the Python list is a fraction of numpy's isinf on the converted array.
    present = data if NONE_TYPE not in types else [v for v in data if v is not None]
    if present and (max(present) > FLOAT32_MAX or min(present) < -FLOAT32_MAX):
        return None
    return InferRequest(ListRows(data, rows, n_features), req.get("id"), None, False)


def _plain_tensor(req: Any) -> dict[str, Any] | None:
    """The request's only input if the request is plain: one float tensor with JSON data, no binary
    parts, no output selection (so every output comes back as JSON)."""
    if type(req) is not dict or req.get("outputs") is not None:
        return None
    params = req.get("parameters")
    inputs = req.get("inputs")
    if (params is not None and (type(params) is not dict or params.get("binary_data_output"))) or (
        type(inputs) is not list or len(inputs) != 1
    ):
        return None
    t = inputs[0]
    if (
        type(t) is not dict
        or type(t.get("datatype")) is not str  # before the set lookup: a list is unhashable
        or t["datatype"] not in FLOAT_DATATYPES
        or type(t.get("name")) is not str
    ):
        return None
    tensor_params = t.get("parameters")
    if tensor_params is not None and (type(tensor_params) is not dict or "binary_data_size" in tensor_params):
        return None
    if type(t.get("shape")) is not list or not t["shape"] or "data" not in t:
        return None
    return t


def _requested_outputs(
    value: Any, output_names: list[str], binary_default: bool
) -> list[tuple[str, bool]] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise BadRequestError("'outputs' must be a list of objects with a 'name'")
    wanted = []
    for o in value:
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise BadRequestError("'outputs' must be a list of objects with a 'name'")
        if o["name"] not in output_names:
            raise BadRequestError(f"unknown output {o['name']!r}; this model has {', '.join(output_names)}")
        params = o.get("parameters")
        binary = params.get("binary_data", binary_default) if isinstance(params, dict) else binary_default
        wanted.append((o["name"], bool(binary)))
    return wanted


def encode_response(
    model_name: str, version: str, request: InferRequest, prediction: Prediction
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the length of its JSON header."""
    if request.outputs is None and not request.binary_output:
        fast = _encode_all_json(model_name, version, request.id, prediction)
        if fast is not None:
            return fast, None
    return encode_general(model_name, version, request, prediction)


def encode_general(
    model_name: str, version: str, request: InferRequest, prediction: Prediction
) -> tuple[bytes, int | None]:
    """Any answer: outputs picked and ordered as asked, each as JSON or binary."""
    wanted = request.outputs or [(name, request.binary_output) for name in prediction.outputs]
    outputs = []
    blobs = []
    for name, binary in wanted:
        arr = np.ascontiguousarray(prediction.outputs[name])
        out: dict[str, Any] = {"name": name, "datatype": WIRE_TYPE[arr.dtype], "shape": list(arr.shape)}
        if binary:
            blob = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            out["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            out["data"] = arr.reshape(-1)  # orjson writes NaN as null: responses never hold NaN
        outputs.append(out)
    response: dict[str, Any] = {"model_name": model_name, "model_version": version, "outputs": outputs}
    if request.id is not None:
        response["id"] = request.id
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def _encode_all_json(model_name: str, version: str, request_id: Any, prediction: Prediction) -> bytes | None:
    """Every output as JSON (what most callers ask for), or None for outputs that are not 1-D or 2-D.

    The outputs part of a one-row answer is made for every row of the micro-batch at once, from one
    orjson call per output (row_texts): a request only adds the head and its id. That halves the
    per-request encoding cost of the single-row requests that dominate online traffic.
    """
    texts = row_texts(prediction)
    if texts is None:
        return None
    if prediction.stop - prediction.start == 1:
        outputs = _one_row_outputs(prediction, texts)[prediction.start]
    else:
        outputs = _rows_outputs(prediction, texts)
    head = _response_head(model_name, version)
    if request_id is None:
        return b"%s%s]}" % (head, outputs)
    return b'%s%s],"id":%s}' % (head, outputs, orjson.dumps(request_id))


def row_texts(prediction: Prediction) -> list[list[bytes]] | None:
    """Per output, the JSON text of each row of the batch (cached in the batch; the prediction log's
    records reuse them, so a record's outputs are the answer's text). orjson writes a
    [N] array as [a,b,...] and an [N, K] one as [[a,b],[c,d],...]; numbers and null hold no
    brackets or commas, so splitting at the separators gives exactly the rows."""
    cache = prediction.batch_cache
    if "v2.rows" in cache:
        texts: list[list[bytes]] | None = cache["v2.rows"]
        return texts
    texts = []
    for arr in prediction.batch_outputs.values():
        if arr.ndim not in (1, 2) or 0 in arr.shape:
            texts = None
            break
        text = orjson.dumps(np.ascontiguousarray(arr), option=orjson.OPT_SERIALIZE_NUMPY)
        texts.append(text[1:-1].split(b",") if arr.ndim == 1 else text[2:-2].split(b"],["))
    cache["v2.rows"] = texts
    return texts


def _one_row_outputs(prediction: Prediction, texts: list[list[bytes]]) -> list[bytes]:
    """The "outputs" list text of a one-row answer, for every row of the batch (cached in the batch)."""
    cache = prediction.batch_cache
    if "v2.one_row" not in cache:
        template = b"},".join(
            _output_head(name, WIRE_TYPE[arr.dtype], (1, *arr.shape[1:])).replace(b"%", b"%%") + b"[%s]"
            for name, arr in prediction.batch_outputs.items()
        )
        cache["v2.one_row"] = [template % row + b"}" for row in zip(*texts, strict=True)]
    rows: list[bytes] = cache["v2.one_row"]
    return rows


def _rows_outputs(prediction: Prediction, texts: list[list[bytes]]) -> bytes:
    start, stop = prediction.start, prediction.stop
    return (
        b"},".join(
            _output_head(name, WIRE_TYPE[arr.dtype], (stop - start, *arr.shape[1:]))
            + b"["
            + b",".join(rows[start:stop])
            + b"]"
            for (name, arr), rows in zip(prediction.batch_outputs.items(), texts, strict=True)
        )
        + b"}"
    )


@functools.lru_cache(maxsize=16)
def _response_head(model_name: str, version: str) -> bytes:
    return b'{"model_name":%s,"model_version":%s,"outputs":[' % (
        orjson.dumps(model_name),
        orjson.dumps(version),
    )


@functools.lru_cache(maxsize=256)
def _output_head(name: str, datatype: str, shape: tuple[int, ...]) -> bytes:
    return b'{"name":%s,"datatype":"%s","shape":%s,"data":' % (
        orjson.dumps(name),
        datatype.encode(),
        orjson.dumps(shape),
    )
