"""Open Inference Protocol V2 (REST) with Triton's binary tensor data extension.

Binary extension: the request's Inference-Header-Content-Length header gives the length of the JSON
part; raw little-endian tensor bytes follow it, one blob per input whose parameters carry
binary_data_size, in input order. Outputs are returned the same way when a requested output has
parameters.binary_data=true or the request parameters have binary_data_output=true.
"""

from __future__ import annotations

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
    numeric_array,
    parse_json,
    shape_of,
)

HEADER_LENGTH = "inference-header-content-length"


@dataclass(frozen=True)
class InferRequest:
    x: npt.NDArray[np.float32]
    id: Any
    outputs: list[tuple[str, bool]] | None
    """Requested outputs as (name, binary), in the order asked; None for all outputs as JSON."""
    binary_output: bool


def _decode_tensor(
    t: Any, binary: memoryview | None, offset: int, max_rows: int
) -> tuple[npt.NDArray[Any], int]:
    if not isinstance(t, dict) or not isinstance(t.get("name"), str):
        raise BadRequestError("every input must be an object with a string 'name'")
    what = f"input {t['name']!r}"
    datatype = t.get("datatype")
    if datatype not in DTYPES:
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
        if size != expected:
            raise BadRequestError(
                f"{what}: binary_data_size {size} does not match shape {shape} of {datatype} ({expected})"
            )
        if offset + size > len(binary):
            raise BadRequestError(f"{what}: the body holds fewer binary bytes than binary_data_size says")
        arr = np.frombuffer(binary[offset : offset + size], dtype=DTYPES[datatype]).reshape(shape)
        return arr, offset + size
    if "data" not in t:
        raise BadRequestError(f"{what}: no 'data' (and no binary_data_size)")
    arr = numeric_array(t["data"], datatype, what)
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
    req = parse_json(header)
    if not isinstance(req, dict):
        raise BadRequestError("the request body must be a JSON object")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequestError("'inputs' must be a non-empty list of tensors")
    offset = 0
    tensors = []
    for t in inputs:
        arr, offset = _decode_tensor(t, binary, offset, max_rows)
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
    return InferRequest(
        x, req.get("id"), _requested_outputs(req.get("outputs"), output_names, binary_output), binary_output
    )


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
