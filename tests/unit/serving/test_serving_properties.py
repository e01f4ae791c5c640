"""Property-based tests (hypothesis) of the decoders: any input is decoded or refused by name.

The property for every decoder: the result is a float32 [N, F] matrix without infinities, or a
BadRequestError (a named 400); nothing else may escape (it would be a 500). And the V2 fast path
decodes exactly as the general path whenever it takes a request.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modeldeploy_serving.errors import BadRequestError
from modeldeploy_serving.protocol import v1, v2

FEATURES = {"a": 0, "b": 1, "c": 2}
OUTPUTS = ["probabilities", "label"]
MAX_ROWS = 32
# A bounded run in the suite; `make fuzz` sets FUZZ_EXAMPLES=5000.
BOUNDED = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.booleans(),
)
scalars = st.one_of(numbers, st.text(max_size=5))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=30,
)
datatypes = st.sampled_from(["FP32", "FP64", "INT32", "INT64", "BYTES", "fp32"]) | values
shapes = st.lists(st.integers(min_value=-1, max_value=40), max_size=3) | values
tensor = st.fixed_dictionaries(
    {"name": st.sampled_from(["input", "a", "b", "c", "x"]) | values, "datatype": datatypes, "shape": shapes},
    optional={
        "data": st.lists(numbers, max_size=40)
        | st.lists(st.lists(numbers, max_size=4), max_size=10)
        | values,
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": st.integers(-5, 200) | values})
        | values,
    },
)
request = st.fixed_dictionaries(
    {"inputs": st.lists(tensor, max_size=4) | values},
    optional={
        "id": values,
        "outputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(OUTPUTS) | values}), max_size=3)
        | values,
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_output": values}) | values,
    },
)


def body_of(doc: Any) -> bytes:
    """The stdlib writer (NaN/Infinity literals, integers of any size), as many clients send."""
    return json.dumps(doc).encode()


def assert_decoded_or_refused(decode: Any) -> None:
    try:
        x = decode()
    except BadRequestError:
        return
    assert x.dtype == np.float32
    assert x.ndim == 2
    assert x.shape[1] == len(FEATURES)
    assert 0 < x.shape[0] <= MAX_ROWS
    assert not np.isinf(x).any()


@BOUNDED
@given(request)
def test_v2_json_any_structure(doc: Any) -> None:
    body = body_of(doc)
    assert_decoded_or_refused(lambda: v2.decode_request(body, None, FEATURES, OUTPUTS, MAX_ROWS).x)


@BOUNDED
@given(request, st.binary(max_size=64), st.integers(min_value=-3, max_value=3))
def test_v2_binary_extension_any_structure(doc: Any, blob: bytes, shift: int) -> None:
    header = body_of(doc)
    length = len(header) + shift  # also lengths that cut the JSON or reach into the blob
    assert_decoded_or_refused(lambda: v2.decode_request(header + blob, length, FEATURES, OUTPUTS, MAX_ROWS).x)


@BOUNDED
@given(st.binary(max_size=300), st.none() | st.integers(min_value=-2, max_value=400))
def test_v2_any_bytes(body: bytes, length: int | None) -> None:
    assert_decoded_or_refused(lambda: v2.decode_request(body, length, FEATURES, OUTPUTS, MAX_ROWS).x)


v1_rows = st.lists(
    st.lists(numbers, min_size=0, max_size=4)
    | st.dictionaries(st.sampled_from(["a", "b", "c", "z"]), numbers)
    | values,
    max_size=8,
)


@BOUNDED
@given(
    st.fixed_dictionaries({}, optional={"instances": v1_rows | values, "inputs": v1_rows | values}) | values
)
def test_v1_any_structure(doc: Any) -> None:
    body = body_of(doc)
    assert_decoded_or_refused(lambda: v1.decode_request(body, FEATURES, MAX_ROWS))


@BOUNDED
@given(st.binary(max_size=300))
def test_v1_any_bytes(body: bytes) -> None:
    assert_decoded_or_refused(lambda: v1.decode_request(body, FEATURES, MAX_ROWS))


finite_or_missing = st.one_of(
    st.none(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-3e38, max_value=3e38),
)


@BOUNDED
@given(
    st.integers(min_value=1, max_value=20).flatmap(
        lambda n: st.tuples(st.just(n), st.lists(finite_or_missing, min_size=3 * n, max_size=3 * n))
    ),
    st.sampled_from(["FP32", "FP64"]),
    st.none() | st.text(max_size=8) | st.integers(-5, 5),
)
def test_v2_fast_path_decodes_as_the_general_path(
    rows_and_data: tuple[int, list[Any]], datatype: str, request_id: Any
) -> None:
    rows, data = rows_and_data
    doc: dict[str, Any] = {
        "inputs": [{"name": "input", "datatype": datatype, "shape": [rows, 3], "data": data}]
    }
    if request_id is not None:
        doc["id"] = request_id
    body = orjson.dumps(doc)
    try:
        fast: Any = v2.decode_request(body, None, FEATURES, OUTPUTS, MAX_ROWS)
    except BadRequestError as exc:
        fast = exc.message
    try:
        general: Any = v2.decode_general(orjson.loads(body), None, FEATURES, OUTPUTS, MAX_ROWS)
    except BadRequestError as exc:
        general = exc.message
    if isinstance(general, str):
        assert fast == general
        return
    np.testing.assert_array_equal(fast.x, general.x)
    assert fast.id == general.id
    assert all(math.isfinite(v) or math.isnan(v) for v in fast.x.reshape(-1).tolist())
