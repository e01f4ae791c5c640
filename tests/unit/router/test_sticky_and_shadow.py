"""Sticky-key extraction (headers, V1 and V2 bodies), shadow answer parsing, request framing."""

from __future__ import annotations

import orjson
import pytest

from modeldeploy_contract.router_config import ShadowConfig
from modeldeploy_serving.router.shadow import Answer, parse_answer
from modeldeploy_serving.router.sticky import body_key, header_value
from modeldeploy_serving.router.upstream import request_head

SHADOW = ShadowConfig(variant="v", revision="r", percent=100)


def test_header_value_is_first_match_and_blank_is_absent() -> None:
    headers = [(b"x-user-id", b" u1 "), (b"x-user-id", b"u2"), (b"x-empty", b"  ")]
    assert header_value(headers, b"x-user-id") == "u1"
    assert header_value(headers, b"x-empty") is None
    assert header_value(headers, b"x-missing") is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"instances": [{"customer_id": "c-1", "age": 3}, {"customer_id": "c-2"}]}, "c-1"),  # V1 objects
        ({"instances": [[1, 2, 3]]}, None),  # V1 rows carry no field names
        ({"parameters": {"customer_id": 42}, "inputs": []}, "42"),  # V2 request parameters
        ({"inputs": [{"name": "customer_id", "datatype": "INT64", "shape": [1], "data": [42.0]}]}, "42"),
        ({"inputs": [{"name": "customer_id", "datatype": "BYTES", "shape": [1, 1], "data": [["ab"]]}]}, "ab"),
        ({"inputs": [{"name": "other", "data": [1]}]}, None),
        ({"parameters": {"customer_id": True}}, None),  # booleans are not keys
        ([1, 2], None),
    ],
)
def test_body_key(body: object, expected: str | None) -> None:
    assert body_key(orjson.dumps(body), "customer_id") == expected


def test_body_key_tolerates_garbage() -> None:
    assert body_key(b"not json", "customer_id") is None


V1_BODY = {"instances": [{"customer_id": "c-1"}]}
V2_BODY = {"parameters": {"customer_id": "c-2"}, "inputs": [{"name": "customer_id", "data": ["c-3"]}]}
BOTH = {**V1_BODY, **V2_BODY}  # a body carrying both shapes: the protocol decides which counts


@pytest.mark.parametrize(
    ("body", "protocol", "expected"),
    [
        (V1_BODY, "v1", "c-1"),
        (V1_BODY, "v2", None),  # a V1 body where callers speak V2: no key from it
        (V2_BODY, "v2", "c-2"),
        (V2_BODY, "v1", None),
        ({"inputs": [{"name": "customer_id", "data": ["c-3"]}]}, "v2", "c-3"),
        (BOTH, "v1", "c-1"),
        (BOTH, "v2", "c-2"),
        (BOTH, None, "c-1"),  # no protocol (hand-written tables): either shape, V1 first, as before
        ({"instances": "not a list"}, "v1", None),
        ({"parameters": ["not", "a", "map"]}, "v2", None),
    ],
)
def test_body_key_reads_only_the_configured_protocols_shape(
    body: object, protocol: str | None, expected: str | None
) -> None:
    assert body_key(orjson.dumps(body), "customer_id", protocol) == expected


V2 = {
    "outputs": [
        {"name": "label", "datatype": "INT64", "shape": [2], "data": [1, 0]},
        {"name": "probabilities", "datatype": "FP32", "shape": [2, 2], "data": [0.3, 0.7, 0.9, 0.1]},
    ]
}


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (V2, Answer(0.7, 1)),  # first row of flat row-major probabilities; label output
        (
            {"outputs": [{"name": "probabilities", "shape": [1, 3], "data": [[0.2, 0.5, 0.3]]}]},
            Answer(0.5, 1),
        ),
        ({"outputs": [{"name": "score", "shape": [1], "data": [0.25]}]}, Answer(0.25, None)),
        ({"predictions": [0.8, 0.1]}, Answer(0.8, 0.8)),  # V1 binary: positive-class probability
        ({"predictions": [[0.1, 0.9]]}, Answer(0.9, 1)),
        ({"error": "boom"}, None),
    ],
)
def test_parse_answer(response: object, expected: Answer | None) -> None:
    assert parse_answer(orjson.dumps(response), SHADOW) == expected


def test_parse_answer_honours_configured_outputs() -> None:
    config = ShadowConfig(variant="v", revision="r", percent=1, score_output="label", label_output="label")
    assert parse_answer(orjson.dumps(V2), config) == Answer(1.0, 1)


def test_request_head_drops_hop_by_hop_headers_and_reframes() -> None:
    headers = [
        (b"host", b"router"),
        (b"x-request-id", b"abc"),
        (b"connection", b"close"),
        (b"transfer-encoding", b"chunked"),
        (b"content-length", b"999"),
    ]
    head = request_head("POST", b"/v2/models/m/infer?x=1", headers, 12)
    assert head == (
        b"POST /v2/models/m/infer?x=1 HTTP/1.1\r\n"
        b"host: router\r\nx-request-id: abc\r\ncontent-length: 12\r\n\r\n"
    )
