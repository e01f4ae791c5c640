"""V2 (JSON and binary) and V1 codecs as pure functions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modeldeploy_serving.errors import BadRequestError
from modeldeploy_serving.model import Prediction
from modeldeploy_serving.protocol import v1, v2
from modeldeploy_serving.protocol.tensors import parse_json
from modeldeploy_serving.rows import ListRows

FEATURES = {"a": 0, "b": 1, "c": 2}
OUTPUTS = ["probabilities", "label"]


def decode(body: object, header_length: int | None = None, max_rows: int = 100) -> v2.InferRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return v2.decode_request(raw, header_length, FEATURES, OUTPUTS, max_rows)


def tensor(**kw: object) -> dict[str, object]:
    return {"name": "input", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]} | kw


def test_parse_json_accepts_nan_literals_and_names_malformed_input() -> None:
    assert parse_json(b'{"x": 1}') == {"x": 1}
    value = parse_json(b'{"x": [NaN, 1]}')
    assert np.isnan(value["x"][0])
    with pytest.raises(BadRequestError, match="malformed JSON"):
        parse_json(b'{"x": ')


def test_v2_flat_nested_and_null() -> None:
    flat = decode({"inputs": [tensor()], "id": "r1"})
    assert flat.id == "r1"
    assert flat.x.dtype == np.float32
    np.testing.assert_array_equal(flat.x, [[1, 2, 3], [4, 5, 6]])
    nested = decode({"inputs": [tensor(data=[[1, 2, 3], [4, 5, 6]])]})
    np.testing.assert_array_equal(nested.x, flat.x)
    missing = decode({"inputs": [tensor(data=[1, None, 3, 4, 5, None])]})
    assert np.isnan(missing.x[0, 1])
    assert np.isnan(missing.x[1, 2])
    nan_literal = v2.decode_request(
        b'{"inputs":[{"name":"i","datatype":"FP64","shape":[1,3],"data":[NaN,1,2]}]}',
        None,
        FEATURES,
        OUTPUTS,
        10,
    )
    assert np.isnan(nan_literal.x[0, 0])


def test_v2_per_feature_inputs() -> None:
    columns = [
        {"name": "c", "datatype": "FP32", "shape": [2], "data": [3, 6]},
        {"name": "a", "datatype": "INT64", "shape": [2, 1], "data": [1, 4]},
        {"name": "b", "datatype": "FP64", "shape": [2], "data": [2, None]},
    ]
    x = decode({"inputs": columns}).x
    np.testing.assert_array_equal(x[:, [0, 2]], [[1, 3], [4, 6]])
    assert x[0, 1] == 2
    assert np.isnan(x[1, 1])
    with pytest.raises(BadRequestError, match="missing inputs for features: b"):
        decode({"inputs": [columns[0], columns[1]]})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "JSON object"),
        ({"inputs": []}, "non-empty list"),
        ({"inputs": [{"datatype": "FP32"}]}, "string 'name'"),
        ({"inputs": [tensor(datatype="FP16")]}, "unsupported datatype 'FP16'"),
        ({"inputs": [tensor(shape=[2, "3"])]}, "'shape'"),
        ({"inputs": [tensor(shape=[3, 3])]}, "has 6 values but shape [3, 3] needs 9"),
        ({"inputs": [tensor(shape=[3, 2])]}, "expected [N, 3]"),
        ({"inputs": [tensor(data="123456")]}, "'data' must be a list"),
        ({"inputs": [tensor(data=[1, 2, 3, 4, 5, {}])]}, "dict value"),
        ({"inputs": [tensor(data=[1, 2, 3, 4, 5, "6"])]}, "string values are not valid"),
        ({"inputs": [tensor(datatype="INT32", data=[1, 2, 3, 4, 5, 6.5])]}, "non-integer"),
        ({"inputs": [tensor(shape=[200, 3])]}, "more than the 100 allowed"),
        ({"inputs": [tensor()], "outputs": [{"name": "logits"}]}, "unknown output 'logits'"),
        ({"inputs": [tensor()], "outputs": "label"}, "'outputs' must be a list"),
        ({"inputs": [tensor(data=[1, 2, 3, 4, 5, 1e300])]}, "infinite"),
    ],
)
def test_v2_bad_requests_name_the_problem(body: object, message: str) -> None:
    with pytest.raises(BadRequestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode(body)


def binary_body(x: np.ndarray, datatype: str, **extra: object) -> tuple[bytes, int]:
    blob = x.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": datatype,
                    "shape": list(x.shape),
                    "parameters": {"binary_data_size": len(blob)},
                }
            ],
            **extra,
        }
    ).encode()
    return header + blob, len(header)


@pytest.mark.parametrize(
    ("dtype", "datatype"), [("<f4", "FP32"), ("<f8", "FP64"), ("<i4", "INT32"), ("<i8", "INT64")]
)
def test_v2_binary_inputs(dtype: str, datatype: str) -> None:
    x = np.arange(6).reshape(2, 3).astype(dtype)
    body, length = binary_body(x, datatype)
    np.testing.assert_array_equal(decode(body, length).x, x.astype(np.float32))
    with pytest.raises(BadRequestError, match="binary bytes after"):
        decode(body + b"\0", length)
    with pytest.raises(BadRequestError, match="fewer binary bytes"):
        decode(body[:-1], length)


def test_v2_encode_json_and_binary_and_never_nan() -> None:
    probs = np.array([[0.25, 0.75], [np.nan, np.nan]], dtype=np.float32)
    pred = Prediction({"probabilities": probs, "label": np.array([1, 0], dtype=np.int64)}, probs[:, 1])
    request = v2.InferRequest(np.zeros((2, 3), np.float32), "id-1", None, False)
    body, length = v2.encode_response("m", "v", request, pred)
    assert length is None
    decoded = json.loads(body)
    assert decoded["id"] == "id-1"
    assert decoded["outputs"][0] == {
        "name": "probabilities",
        "datatype": "FP32",
        "shape": [2, 2],
        "data": [0.25, 0.75, None, None],
    }
    assert b"NaN" not in body

    wanted = v2.InferRequest(
        np.zeros((2, 3), np.float32), None, [("label", True), ("probabilities", False)], False
    )
    body, length = v2.encode_response("m", "v", wanted, pred)
    assert length is not None
    header = json.loads(body[:length])
    assert "id" not in header
    assert [o["name"] for o in header["outputs"]] == ["label", "probabilities"]
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 16}
    np.testing.assert_array_equal(np.frombuffer(body[length:], "<i8"), [1, 0])


def test_v2_requested_binary_flags() -> None:
    req = decode(
        {"inputs": [tensor()], "parameters": {"binary_data_output": True}, "outputs": [{"name": "label"}]}
    )
    assert req.outputs == [("label", True)]
    req = decode(
        {
            "inputs": [tensor()],
            "outputs": [{"name": "label", "parameters": {"binary_data": True}}, {"name": "probabilities"}],
        }
    )
    assert req.outputs == [("label", True), ("probabilities", False)]


def test_v1_lists_and_objects() -> None:
    lists = v1.decode_request(b'{"instances": [[1, 2, 3], [4, null, 6]]}', FEATURES, 10)
    objects = v1.decode_request(b'{"instances": [{"a": 1, "b": 2, "c": 3}, {"c": 6, "a": 4}]}', FEATURES, 10)
    np.testing.assert_array_equal(lists, objects)
    assert np.isnan(lists[1, 1])
    inputs_key = v1.decode_request(b'{"inputs": [[1, 2, 3]]}', FEATURES, 10)
    assert inputs_key.shape == (1, 3)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"instances": []}', "non-empty"),
        (b'{"instances": [{"a": 1, "z": 2}]}', "unknown features: z"),
        (b'{"instances": [{"a": 1}, [1, 2, 3]]}', "not an object"),
        (b'{"instances": [[1, 2]]}', "expected"),
        (b'{"instances": [[1, 2, 3], [1]]}', "ragged"),
        (b'{"instances": [["x", 2, 3]]}', "string values"),
        (b'{"instances": [[1, 2, 3], [1, 2, 3], [1, 2, 3]]}', "more than the 2"),
    ],
)
def test_v1_bad_requests(body: bytes, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        v1.decode_request(body, FEATURES, 2)


def test_v1_encode_follows_kserve_xgboost() -> None:
    probs = np.array([[0.2, 0.8], [0.9, 0.1]], dtype=np.float32)
    binary = Prediction({"probabilities": probs, "label": np.array([1, 0])}, probs[:, 1])
    assert json.loads(v1.encode_response(binary)) == {"predictions": pytest.approx([0.8, 0.1])}
    three = np.array([[0.2, 0.3, 0.5]], dtype=np.float32)
    multi = Prediction({"probabilities": three, "label": np.array([2])}, three[:, 2])
    assert json.loads(v1.encode_response(multi))["predictions"] == [pytest.approx([0.2, 0.3, 0.5])]
    reg = Prediction({"predictions": np.array([1.5, np.nan], dtype=np.float32)}, np.zeros(2, np.float32))
    assert json.loads(v1.encode_response(reg)) == {"predictions": [1.5, None]}


FAST_PATH_BODIES = [
    {"inputs": [tensor()]},
    {"inputs": [tensor(data=[1.5, None, 3, 4, None, -6.25])], "id": "r-1"},
    {"inputs": [tensor(datatype="FP64", data=[10**30, 2**70, 0, -1e38, 1e-40, 5])], "id": 7},
    {"inputs": [tensor(shape=[1, 3], data=[None, None, None])], "parameters": {"binary_data_output": False}},
    {"inputs": [tensor(parameters={"content_type": "np"})], "id": {"nested": [1, 2]}},
]
GENERAL_PATH_BODIES = [  # the fast path must hand these to the general path, which decides
    {"inputs": [tensor(data=[1e39, 2, 3, 4, 5, 6])]},  # beyond float32: refused
    {"inputs": [tensor(data=[10**400, 2, 3, 4, 5, 6])]},  # beyond float64: refused
    {"inputs": [tensor(data=[True, 2, 3, 4, 5, 6])]},  # a boolean: numpy takes it as 1
    {"inputs": [tensor(data=["1", 2, 3, 4, 5, 6])]},  # a string: refused
    {"inputs": [tensor(data=[[1, 2, 3], [4, 5, 6]])]},  # nested rows
    {"inputs": [tensor(datatype="INT64")]},  # integer datatype checks
    {"inputs": [tensor(shape=[2, 4], data=list(range(8)))]},  # wrong feature count
    {"inputs": [tensor(data=[1, 2, 3])]},  # data shorter than shape
    {"inputs": [tensor(shape=[0, 3], data=[])]},  # no rows
    {"inputs": [tensor(shape=[True, 3])]},  # a boolean dimension
    {"inputs": [tensor(shape=[200, 3], data=[0] * 600)]},  # too many rows
    {"inputs": [tensor(shape=[17, 3], data=[0.5] * 51)]},  # more rows than the fast path takes
    {"inputs": [tensor()], "outputs": [{"name": "label"}]},
    {"inputs": [tensor()], "parameters": {"binary_data_output": True}},
    {"inputs": [tensor(name=5)]},
    {"inputs": [tensor(), tensor()]},
    {"inputs": [tensor(parameters={"binary_data_size": 24})]},
]


def _general(body: dict[str, object]) -> v2.InferRequest | str:
    try:
        return v2.decode_general(json.loads(json.dumps(body)), None, FEATURES, OUTPUTS, 100)
    except BadRequestError as exc:
        return f"error: {exc.message}"


def _decoded(body: dict[str, object]) -> v2.InferRequest | str:
    try:
        return decode(body)
    except BadRequestError as exc:
        return f"error: {exc.message}"


@pytest.mark.parametrize("body", FAST_PATH_BODIES + GENERAL_PATH_BODIES)
def test_v2_fast_path_decodes_exactly_as_the_general_path(body: dict[str, object]) -> None:
    fast, general = _decoded(body), _general(body)
    if isinstance(general, str):
        assert fast == general
        return
    assert isinstance(fast, v2.InferRequest)
    assert fast.x.dtype == general.x.dtype == np.float32
    np.testing.assert_array_equal(fast.x, general.x)
    assert (fast.id, fast.outputs, fast.binary_output) == (general.id, general.outputs, general.binary_output)


@pytest.mark.parametrize("body", FAST_PATH_BODIES)
def test_v2_fast_path_keeps_json_rows_as_a_list(body: dict[str, object]) -> None:
    assert isinstance(decode(body).rows, ListRows)


@pytest.mark.parametrize("body", GENERAL_PATH_BODIES[:6])
def test_v2_general_path_bodies_do_not_take_the_fast_path(body: dict[str, object]) -> None:
    decoded = _decoded(body)
    assert isinstance(decoded, str) or isinstance(decoded.rows, np.ndarray)


def _predictions() -> list[Prediction]:
    probs = np.array([[0.25, 0.75], [np.nan, np.nan], [0.1, 0.9], [1.0, 0.0]], dtype=np.float32)
    binary = Prediction(
        {"probabilities": probs, "label": np.array([1, 0, 1, 0], dtype=np.int64)}, probs[:, 1]
    )
    reg = np.array([1.5, np.nan, -2.25e-8, 3e30], dtype=np.float32)
    regression = Prediction({"predictions": reg}, reg)
    three = np.arange(12, dtype=np.float32).reshape(4, 3) / 11
    multi = Prediction({"probabilities": three, "label": np.array([2, 2, 2, 2], dtype=np.int64)}, three[:, 2])
    cube = np.zeros((4, 2, 2), np.float32)
    unusual = Prediction({"tensor": cube}, np.zeros(4, np.float32))
    return [binary, regression, multi, unusual]


@pytest.mark.parametrize("request_id", [None, "r-1", 7, {"a": [1, None]}, 'quote " and %s'])
def test_v2_batch_encoder_writes_what_the_general_encoder_writes(request_id: object) -> None:
    request = v2.InferRequest(np.zeros((1, 3), np.float32), request_id, None, False)
    for whole in _predictions():
        for start, stop in [(0, 1), (1, 2), (3, 4), (0, 4), (1, 3)]:
            view = whole.rows(start, stop)
            body, length = v2.encode_response("m%", 'v"1', request, view)
            expected, expected_length = v2.encode_general("m%", 'v"1', request, view)
            assert length is None
            assert expected_length is None
            assert body == expected
            assert b"NaN" not in body
