"""Hostile and odd input to the codecs: every case is a named 400, never an exception of another kind."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modeldeploy_serving.errors import BadRequestError
from modeldeploy_serving.protocol import v1, v2
from modeldeploy_serving.protocol.tensors import parse, parse_length

FEATURES = {"a": 0, "b": 1, "c": 2}
OUTPUTS = ["probabilities", "label"]


def v2_tensor(datatype: str, data: bytes) -> bytes:
    return b'{"inputs":[{"name":"i","datatype":"%s","shape":[1,3],"data":%s}]}' % (datatype.encode(), data)


def binary(size: bytes) -> tuple[bytes, int]:
    head = (
        b'{"inputs":[{"name":"i","datatype":"FP32","shape":[1,3],"parameters":{"binary_data_size":%s}}]}'
        % size
    )
    return head + np.zeros(3, "<f4").tobytes(), len(head)


WITH_ID = b'{"id":%s,"inputs":[{"name":"i","datatype":"FP32","shape":[1,3],"data":[NaN,1,2]}]}'
DEEP = b"[" * 5000 + b"]" * 5000
V2_BAD: list[tuple[str, bytes, int | None, str]] = [
    ("nesting", b'{"inputs":' + DEEP + b"}", None, "malformed JSON"),
    ("nesting with NaN", b'{"x":NaN,"inputs":' + DEEP + b"}", None, "JSON"),
    ("nested data", v2_tensor("FP32", b"[" * 900 + b"1" + b"]" * 900), None, ""),
    ("nested data with NaN", v2_tensor("FP32", b"[" * 900 + b"NaN" + b"]" * 900), None, ""),
    ("float binary_data_size", *binary(b"12.0"), "binary_data_size 12.0"),
    ("string binary_data_size", *binary(b'"12"'), "binary_data_size 12"),
    ("negative binary_data_size", *binary(b"-12"), "binary_data_size"),
    ("NaN then Infinity", v2_tensor("FP32", b"[NaN,Infinity,1]"), None, "infinite"),
    ("NaN then -Infinity (FP64)", v2_tensor("FP64", b"[NaN,-Infinity,1]"), None, "infinite"),
    ("1e400", v2_tensor("FP64", b"[1e400,1,1]"), None, "infinite"),
    ("booleans in FP32", v2_tensor("FP32", b"[true,false,1]"), None, "true/false"),
    ("only booleans in INT64", v2_tensor("INT64", b"[true,false,true]"), None, "true/false"),
    ("boolean beside null", v2_tensor("FP32", b"[null,true,1]"), None, "bool"),
    ("nested booleans", v2_tensor("FP32", b"[[1,2,false]]"), None, "true/false"),
    ("INT32 above range", v2_tensor("INT32", b"[2147483648,1,2]"), None, "range of INT32"),
    ("INT32 below range", v2_tensor("INT32", b"[-2147483649,1,2]"), None, "range of INT32"),
    ("INT32 as float above range", v2_tensor("INT32", b"[3e9,1,2]"), None, "range of INT32"),
    ("INT64 above range", v2_tensor("INT64", b"[9223372036854775808,1,2]"), None, "range of INT64"),
    ("INT64 far above range", v2_tensor("INT64", b"[1" + b"0" * 30 + b",1,2]"), None, "range of INT64"),
    ("INT64 below range", v2_tensor("INT64", b"[-9223372036854775809,1,2]"), None, "range of INT64"),
    ("id beyond 64 bits (stdlib parse)", WITH_ID % (b"9" * 30), None, "64-bit"),
    ("lone surrogate (stdlib parse)", WITH_ID % b'"\\ud800"', None, "surrogates"),
    # Found by the fuzzer (tests/fuzz): an unhashable datatype was looked up in a dict.
    (
        "list as datatype",
        b'{"inputs":[{"name":"i","datatype":["FP32"],"shape":[1,3],"data":[1,2,3]}]}',
        None,
        "datatype",
    ),
    (
        "list as datatype, second input",
        b'{"inputs":[{"name":"a","datatype":"FP64","shape":[1],"data":[1]},{"name":"c","datatype":[3]}]}',
        None,
        "datatype",
    ),
    ("huge repr in data", v2_tensor("FP32", b'[{"k":"' + b"x" * 10_000 + b'"},1,2]'), None, "dict value"),
]


@pytest.mark.parametrize(
    ("body", "header_length", "message"), [c[1:] for c in V2_BAD], ids=[c[0] for c in V2_BAD]
)
def test_v2_hostile_input_is_a_named_400(body: bytes, header_length: int | None, message: str) -> None:
    with pytest.raises(BadRequestError, match=None) as caught:
        v2.decode_request(body, header_length, FEATURES, OUTPUTS, 100)
    assert message in caught.value.message
    assert len(caught.value.message) < 500  # nothing echoes the whole body


V1_BAD = [
    ("nesting", b'{"instances":' + DEEP + b"}", "malformed JSON"),
    ("Infinity", b'{"instances":[[NaN,Infinity,1]]}', "infinite"),
    ("booleans", b'{"instances":[[true,false,true]]}', "true/false"),
    ("boolean in an object row", b'{"instances":[{"a":true}]}', "bool"),
    ("boolean among numbers", b'{"instances":[[1,2,false]]}', "true/false"),
]


@pytest.mark.parametrize(("body", "message"), [c[1:] for c in V1_BAD], ids=[c[0] for c in V1_BAD])
def test_v1_hostile_input_is_a_named_400(body: bytes, message: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        v1.decode_request(body, FEATURES, 100)
    assert message in caught.value.message


def test_nan_means_missing_and_in_range_integers_pass() -> None:
    nan = v2.decode_request(v2_tensor("FP32", b"[NaN,1,2]"), None, FEATURES, OUTPUTS, 10)
    assert np.isnan(nan.x[0, 0])
    edges = v2.decode_request(
        v2_tensor("INT32", b"[2147483647,-2147483648,2.0]"), None, FEATURES, OUTPUTS, 10
    )
    assert edges.x[0, 2] == 2
    int64 = v2.decode_request(v2_tensor("INT64", b"[9223372036854775807,0,1]"), None, FEATURES, OUTPUTS, 10)
    assert int64.x.shape == (1, 3)
    # "true" inside a string is not a boolean: the literal check only gates the scan.
    named = json.dumps(
        {"id": "true", "inputs": [{"name": "i", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    )
    assert v2.decode_request(named.encode(), None, FEATURES, OUTPUTS, 10).id == "true"


def test_the_stdlib_parser_runs_only_for_nan_or_infinity_literals() -> None:
    assert parse(b'{"a": 1}') == ({"a": 1}, True)
    doc, standard = parse(b'{"a": NaN}')
    assert not standard
    assert np.isnan(doc["a"])
    with pytest.raises(BadRequestError, match="malformed JSON"):
        parse(b'{"a": nan}')  # not a literal the stdlib accepts either: orjson's message


@pytest.mark.parametrize("raw", [b"9" * 5000, b"12a", b"", b"-1", b"1.5", "١٢".encode()])
def test_length_headers_are_digits_only_and_bounded(raw: bytes) -> None:
    with pytest.raises(BadRequestError, match="at most 19 digits"):
        parse_length(raw, "Inference-Header-Content-Length")
    assert parse_length(b"0042", "x") == 42
