"""The HTTP API against a real server: V2 (JSON and binary), V1, missing values, every bad input."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from serving_harness import Bundles, Server, ServerFactory, v2_body

MAX_BODY = 64 * 1024
MAX_ROWS = 300


@pytest.fixture(scope="module")
def server(bundles: Bundles, module_serve: ServerFactory) -> Server:
    s = module_serve(
        str(bundles.v1),
        env={
            "MODELDEPLOY_SERVER_MAX_BODY_BYTES": str(MAX_BODY),
            "MODELDEPLOY_SERVER_MAX_BATCH_ROWS": str(MAX_ROWS),
        },
    )
    s.wait_ready()
    return s


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def probabilities(body: dict[str, Any]) -> np.ndarray:
    out = next(o for o in body["outputs"] if o["name"] == "probabilities")
    return np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])


def test_server_metadata_and_health(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready").json()
    assert (ready["ready"], ready["state"], ready["model"]["version"]) == (True, "ready", "v1")
    meta = client.get("/v2").json()
    assert meta["name"] == "modeldeploy"
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata(client: httpx.Client, bundles: Bundles) -> None:
    for path in ("/v2/models/churn", "/v2/models/churn/versions/v1"):
        meta = client.get(path).json()
        assert meta["name"] == "churn"
        assert meta["versions"] == ["v1"]
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 14]}]
        assert [o["name"] for o in meta["outputs"]] == ["probabilities", "label"]
        assert meta["parameters"]["feature_names"][0] == "number_of_projects"
    assert client.get("/v2/models/churn/versions/v2").status_code == 404
    assert client.get("/v2/models/other").status_code == 404
    assert client.get("/v2/models/churn/versions/v1/ready").json() == {"name": "churn", "ready": True}
    assert client.get("/v1/models/churn").json() == {"name": "churn", "ready": True}


@pytest.mark.parametrize("path", ["/v2/models/churn/infer", "/v2/models/churn/versions/v1/infer"])
@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT32", "INT64"])
def test_infer_datatypes_id_and_parameters(
    client: httpx.Client, bundles: Bundles, path: str, datatype: str
) -> None:
    rows = np.nan_to_num(bundles.normal[:3], nan=0.0)
    if datatype.startswith("INT"):
        rows = np.round(rows)
    body = v2_body(rows, datatype, id="req-42", parameters={"trace": True})
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["id"] == "req-42"
    assert out["model_name"] == "churn"
    assert out["model_version"] == "v1"
    probs = probabilities(out)
    assert probs.shape == (3, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    label = next(o for o in out["outputs"] if o["name"] == "label")
    assert label == {
        "name": "label",
        "datatype": "INT64",
        "shape": [3],
        "data": list(np.argmax(probs, axis=1)),
    }


def test_nested_data_and_per_feature_inputs_match_flat(client: httpx.Client, bundles: Bundles) -> None:
    rows = np.nan_to_num(bundles.normal[:4], nan=1.0)
    flat = probabilities(client.post("/v2/models/churn/infer", json=v2_body(rows)).json())
    nested = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [4, 14], "data": rows.tolist()}]}
    np.testing.assert_allclose(probabilities(client.post("/v2/models/churn/infer", json=nested).json()), flat)
    names = client.get("/v2/models/churn").json()["parameters"]["feature_names"]
    columns = {
        "inputs": [
            {"name": n, "datatype": "FP32", "shape": [4], "data": rows[:, i].tolist()}
            for i, n in enumerate(names)
        ][::-1]  # order of per-feature inputs does not matter
    }
    np.testing.assert_allclose(
        probabilities(client.post("/v2/models/churn/infer", json=columns).json()), flat
    )


def test_requested_outputs_only(client: httpx.Client, bundles: Bundles) -> None:
    body = v2_body(bundles.normal[:2], outputs=[{"name": "label"}])
    out = client.post("/v2/models/churn/infer", json=body).json()
    assert [o["name"] for o in out["outputs"]] == ["label"]


def test_null_and_nan_literal_mean_missing(client: httpx.Client, bundles: Bundles) -> None:
    row = bundles.normal[0].copy()
    row[[0, 11]] = np.nan
    with_null = client.post("/v2/models/churn/infer", json=v2_body(row[None, :]))
    raw = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 14], "data": row.tolist()}]}
    )  # Python's json writes NaN
    assert "NaN" in raw
    with_nan = client.post(
        "/v2/models/churn/infer", content=raw, headers={"content-type": "application/json"}
    )
    assert with_null.status_code == with_nan.status_code == 200
    np.testing.assert_allclose(probabilities(with_nan.json()), probabilities(with_null.json()))
    all_missing = v2_body(np.full((1, 14), np.nan))
    response = client.post("/v2/models/churn/infer", json=all_missing)
    assert response.status_code == 200
    assert "NaN" not in response.text
    assert "nan" not in response.text.lower().replace("name", "")


def test_v1_rows_as_lists_and_objects(client: httpx.Client, bundles: Bundles) -> None:
    rows = bundles.normal[:3]
    names = client.get("/v2/models/churn").json()["parameters"]["feature_names"]
    as_lists = [[None if np.isnan(v) else v for v in row] for row in rows]
    as_objects = [{n: v for n, v in zip(names, row, strict=True) if v is not None} for row in as_lists]
    expected = probabilities(client.post("/v2/models/churn/infer", json=v2_body(rows)).json())[:, 1]
    for instances in (as_lists, as_objects):
        response = client.post("/v1/models/churn:predict", json={"instances": instances})
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-6)
    # An object with a feature left out equals one with that feature null.
    partial = client.post("/v1/models/churn:predict", json={"instances": [{"number_of_projects": 3}]}).json()
    nulls = client.post("/v1/models/churn:predict", json={"instances": [[3] + [None] * 13]}).json()
    assert partial == nulls


def binary_request(
    rows: np.ndarray, datatype: str = "FP32", outputs: list[dict[str, Any]] | None = None
) -> tuple[bytes, dict[str, str]]:
    dtype = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8"}[datatype]
    blob = rows.astype(dtype).tobytes()
    header: dict[str, Any] = {
        "inputs": [
            {
                "name": "input",
                "datatype": datatype,
                "shape": list(rows.shape),
                "parameters": {"binary_data_size": len(blob)},
            }
        ]
    }
    if outputs is not None:
        header["outputs"] = outputs
    raw = json.dumps(header).encode()
    return raw + blob, {
        "Inference-Header-Content-Length": str(len(raw)),
        "Content-Type": "application/octet-stream",
    }


def decode_binary_response(response: httpx.Response) -> dict[str, np.ndarray]:
    length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:length])
    offset, out = length, {}
    for o in header["outputs"]:
        dtype = {"FP32": "<f4", "INT64": "<i8"}[o["datatype"]]
        if "data" in o:
            out[o["name"]] = np.asarray(o["data"], dtype=dtype).reshape(o["shape"])
            continue
        size = o["parameters"]["binary_data_size"]
        out[o["name"]] = np.frombuffer(response.content[offset : offset + size], dtype=dtype).reshape(
            o["shape"]
        )
        offset += size
    assert offset == len(response.content)
    return out


def test_binary_extension_round_trip(client: httpx.Client, bundles: Bundles) -> None:
    rows = bundles.normal[:64]  # with NaNs, sent as raw float32 bytes
    expected = probabilities(client.post("/v2/models/churn/infer", json=v2_body(rows)).json())
    body, headers = binary_request(
        rows, outputs=[{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "label"}]
    )
    response = client.post("/v2/models/churn/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    outputs = decode_binary_response(response)
    np.testing.assert_allclose(outputs["probabilities"], expected, rtol=1e-6)
    np.testing.assert_array_equal(outputs["label"], np.argmax(expected, axis=1))
    # Binary input, JSON output (no binary_data asked): a plain JSON answer.
    body, headers = binary_request(rows.astype(np.float64), "FP64")
    plain = client.post("/v2/models/churn/infer", content=body, headers=headers)
    assert plain.headers["content-type"] == "application/json"
    np.testing.assert_allclose(probabilities(plain.json()), expected, rtol=1e-6)
    # binary_data_output for every output, with an id.
    body, headers = binary_request(rows)
    header_len = int(headers["Inference-Header-Content-Length"])
    header = json.loads(body[:header_len]) | {"parameters": {"binary_data_output": True}, "id": "b1"}
    raw = json.dumps(header).encode()
    response = client.post(
        "/v2/models/churn/infer",
        content=raw + body[header_len:],
        headers={"Inference-Header-Content-Length": str(len(raw))},
    )
    outputs = decode_binary_response(response)
    assert set(outputs) == {"probabilities", "label"}


GOOD = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 14], "data": [1.0] * 14}]}


def tensor(**overrides: Any) -> bytes:
    t = {"name": "input", "datatype": "FP32", "shape": [1, 14], "data": [1.0] * 14} | overrides
    return json.dumps({"inputs": [t]}).encode()


SIZED = json.dumps(
    {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [1, 14], "parameters": {"binary_data_size": 8}}
        ]
    }
).encode()
UNSIZED = tensor(parameters={"binary_data_size": 56})
SIZED_FLOAT = json.dumps(
    {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [1, 14], "parameters": {"binary_data_size": 56.0}}
        ]
    }
).encode()
NAN_INF = (
    b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,14],"data":[NaN,Infinity' + b",1" * 12 + b"]}]}"
)
INF_FIRST = NAN_INF.replace(b"[NaN,Infinity", b"[Infinity,NaN")
BIG_ID = b'{"id":' + b"9" * 30 + b"," + NAN_INF[1:].replace(b"Infinity", b"1")
TWO_INPUTS = json.dumps({"inputs": [GOOD["inputs"][0], GOOD["inputs"][0] | {"name": "nope"}]}).encode()
WITH_OUTPUT = json.dumps(GOOD | {"outputs": [{"name": "x"}]}).encode()
GOOD_BYTES = json.dumps(GOOD).encode()
V2 = "/v2/models/churn/infer"
V1 = "/v1/models/churn:predict"
HL = "Inference-Header-Content-Length"

BAD_REQUESTS: list[tuple[str, str, bytes, dict[str, str], int, str]] = [
    ("malformed json", V2, b'{"inputs": [', {}, 400, "malformed JSON"),
    ("not an object", V2, b"[1, 2]", {}, 400, "JSON object"),
    ("no inputs", V2, b"{}", {}, 400, "'inputs'"),
    ("wrong shape", V2, tensor(shape=[1, 13], data=[1.0] * 13), {}, 400, "expected [N, 14]"),
    ("3d shape", V2, tensor(shape=[1, 14, 1]), {}, 400, "expected [N, 14]"),
    ("bad shape value", V2, tensor(shape=[1, -14]), {}, 400, "'shape'"),
    ("wrong datatype", V2, tensor(datatype="BYTES"), {}, 400, "unsupported datatype 'BYTES'"),
    ("string data", V2, tensor(data=["a"] * 14), {}, 400, "not valid FP32 data"),
    ("float in int", V2, tensor(datatype="INT64", data=[1.5] * 14), {}, 400, "non-integer"),
    ("null in int", V2, tensor(datatype="INT32", data=[None] * 14), {}, 400, "null"),
    ("length vs shape", V2, tensor(shape=[2, 14]), {}, 400, "has 14 values but shape [2, 14] needs 28"),
    ("ragged nested", V2, tensor(data=[[1.0] * 14, [1.0]]), {}, 400, "ragged"),
    ("infinity", V2, tensor(data=[1e39] * 14), {}, 400, "infinite"),
    ("zero rows", V2, tensor(shape=[0, 14], data=[]), {}, 400, "no rows"),
    ("too many rows", V2, tensor(shape=[MAX_ROWS + 1, 14], data=[]), {}, 400, "more than the 300"),
    ("unknown output", V2, WITH_OUTPUT, {}, 400, "unknown output 'x'"),
    ("unknown feature input", V2, TWO_INPUTS, {}, 400, "not a feature"),
    ("unknown model", "/v2/models/nope/infer", GOOD_BYTES, {}, 404, "unknown model 'nope'"),
    ("unknown version", "/v2/models/churn/versions/v7/infer", GOOD_BYTES, {}, 404, "no version 'v7'"),
    ("bad infer path", "/v2/models/churn/x/y/z/infer", GOOD_BYTES, {}, 404, "no such endpoint"),
    (
        "binary size mismatch",
        V2,
        SIZED + b"12345678",
        {HL: str(len(SIZED))},
        400,
        "binary_data_size 8 does not",
    ),
    ("binary without header", V2, UNSIZED, {}, 400, "without an Inference-Header-Content-Length"),
    ("header length too big", V2, GOOD_BYTES, {HL: "999999"}, 400, "does not fit"),
    ("header length not a number", V2, GOOD_BYTES, {HL: "abc"}, 400, "must be a number"),
    ("v1 malformed", V1, b"{nope", {}, 400, "malformed JSON"),
    ("v1 no instances", V1, b'{"rows": []}', {}, 400, "'instances'"),
    ("v1 wrong width", V1, b'{"instances": [[1, 2, 3]]}', {}, 400, "expected [N, 14]"),
    ("v1 unknown feature", V1, b'{"instances": [{"colour": 1}]}', {}, 400, "unknown features: colour"),
    ("v1 mixed rows", V1, b'{"instances": [{"at_mentions": 1}, [1]]}', {}, 400, "not an object"),
    ("v1 unknown model", "/v1/models/nope:predict", b'{"instances": [[1]]}', {}, 404, "unknown model"),
    ("v1 too many rows", V1, json.dumps({"instances": [[1] * 14] * (MAX_ROWS + 1)}).encode(), {}, 400, "300"),
    # Hostile input that once got a 500 or reached the model (docs/reliability.md).
    ("nesting beyond the parser", V2, b'{"inputs":' + b"[" * 5000 + b"]" * 5000 + b"}", {}, 400, "JSON"),
    ("deep nesting with NaN", V2, b'{"x":NaN,"inputs":' + b"[" * 5000 + b"]" * 5000 + b"}", {}, 400, "JSON"),
    ("v1 deep nesting", V1, b'{"instances":' + b"[" * 5000 + b"]" * 5000 + b"}", {}, 400, "JSON"),
    ("float binary_data_size", V2, SIZED_FLOAT + b"\0" * 56, {HL: str(len(SIZED_FLOAT))}, 400, "56.0"),
    ("5000-digit header length", V2, GOOD_BYTES, {HL: "9" * 5000}, 400, "at most 19 digits"),
    ("NaN then Infinity", V2, NAN_INF, {}, 400, "infinite"),
    ("Infinity first", V2, INF_FIRST, {}, 400, "infinite"),
    ("v1 Infinity", V1, b'{"instances": [[NaN, Infinity' + b", 1" * 12 + b"]]}", {}, 400, "infinite"),
    ("booleans as FP32", V2, tensor(data=[True] + [1.0] * 13), {}, 400, "true/false"),
    ("only booleans as INT64", V2, tensor(datatype="INT64", data=[True] * 14), {}, 400, "true/false"),
    ("boolean with null", V2, tensor(data=[None, True] + [1.0] * 12), {}, 400, "bool"),
    ("v1 boolean", V1, b'{"instances": [{"at_mentions": true}]}', {}, 400, "bool"),
    ("INT32 overflow", V2, tensor(datatype="INT32", data=[2**31] + [1] * 13), {}, 400, "range of INT32"),
    ("INT64 overflow", V2, tensor(datatype="INT64", data=[2**64] + [1] * 13), {}, 400, "range of INT64"),
    ("big id with NaN", V2, BIG_ID, {}, 400, "64-bit"),
]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "message"),
    [c[1:] for c in BAD_REQUESTS],
    ids=[c[0] for c in BAD_REQUESTS],
)
def test_bad_input_is_a_named_4xx_and_the_next_request_works(
    client: httpx.Client, path: str, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    response = client.post(path, content=body, headers={"content-type": "application/json", **headers})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"]
    good = client.post("/v2/models/churn/infer", json=GOOD)
    assert good.status_code == 200


def test_body_over_the_limit_is_413(client: httpx.Client) -> None:
    big = b'{"inputs": [' + b" " * MAX_BODY + b"]}"
    response = client.post("/v2/models/churn/infer", content=big)
    assert response.status_code == 413
    assert "limit" in response.json()["error"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        yield b'{"inputs": ['
        for _ in range(MAX_BODY // 1024 + 1):
            yield b" " * 1024

    with httpx.Client(base_url=str(client.base_url), timeout=30) as fresh:
        response = fresh.post("/v1/models/churn:predict", content=chunked())
        assert response.status_code == 413
        assert "limit" in response.json()["error"]
    assert client.post("/v2/models/churn/infer", json=GOOD).status_code == 200


def test_unknown_routes_and_methods_answer_json(client: httpx.Client) -> None:
    missing = client.get("/v3/nothing")
    assert missing.status_code == 404
    assert "error" in missing.json()
    wrong_method = client.get("/v2/models/churn/infer")
    assert wrong_method.status_code in (404, 405)
    assert "error" in wrong_method.json()


def test_large_batch_json_and_binary(client: httpx.Client, bundles: Bundles) -> None:
    rows = bundles.normal[:MAX_ROWS]
    body, headers = binary_request(
        rows, outputs=[{"name": "probabilities", "parameters": {"binary_data": True}}]
    )
    response = client.post("/v2/models/churn/infer", content=body, headers=headers)
    assert response.status_code == 200
    probs = decode_binary_response(response)["probabilities"]
    assert probs.shape == (MAX_ROWS, 2)
    small = probabilities(client.post("/v2/models/churn/infer", json=v2_body(rows[:5])).json())
    np.testing.assert_allclose(probs[:5], small, rtol=1e-6)
    assert struct.calcsize("<f") == 4


def raw_exchange(server: Server, request: bytes) -> bytes:
    """Send raw bytes on a fresh socket; the server's answer up to its close or 64 KiB."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        size = 0
        while size < 65536:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    return b"".join(chunks)


def test_absurd_lengths_are_a_4xx_never_a_5xx(server: Server) -> None:
    for header in (b"content-length: " + b"9" * 5000, b"inference-header-content-length: " + b"9" * 5000):
        answer = raw_exchange(
            server,
            b"POST /v2/models/churn/infer HTTP/1.1\r\nhost: x\r\n" + header + b"\r\n\r\n" + GOOD_BYTES,
        )
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
        assert 400 <= status < 500, answer[:200]
    with server.client() as c:
        assert c.post(V2, json=GOOD).status_code == 200
