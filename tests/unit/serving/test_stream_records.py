"""The stream record parser and output encoder (pure: no Kafka), and the stream settings."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy_contract.stream_settings import StreamSettings
from modeldeploy_serving.stream.records import (
    REASONS,
    OutputEncoder,
    RecordError,
    RecordParser,
    assemble,
)

FEATURES = ["a", "b", "c"]
OUTPUTS = ["probabilities", "label"]
F32_MAX = float(np.finfo(np.float32).max)


def parser(max_bytes: int = 4096, max_rows: int = 8) -> RecordParser:
    return RecordParser(FEATURES, OUTPUTS, max_bytes, max_rows)


def v2(data: Any, shape: list[int], **extra: Any) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": data}], **extra}
    ).encode()


def test_feature_record_is_one_row_in_feature_order() -> None:
    p = parser().parse(b'{"c": 3, "a": 1.5, "b": null, "extra": "ignored"}')
    assert p.request is None
    assert p.row == [1.5, None, 3]
    assert p.rows == 1


def test_nan_literal_means_missing() -> None:
    p = parser().parse(b'{"a": NaN, "b": 1, "c": 2}')
    assert p.row is not None
    assert math.isnan(p.row[0])  # type: ignore[arg-type]


def test_v2_record_is_decoded_like_a_rest_request() -> None:
    p = parser().parse(v2([1, 2, 3, 4, 5, 6], [2, 3], id="r-1", outputs=[{"name": "label"}]))
    assert p.request is not None
    assert p.rows == 2
    assert p.v2_id == "r-1"
    assert p.request.outputs == [("label", False)]


@pytest.mark.parametrize(
    ("value", "kind", "words"),
    [
        (None, "empty", "no value"),
        (b"", "empty", "no value"),
        (b'{"a": 1, "b": 2, "c": 3, "pad": "' + b"x" * 5000 + b'"}', "too_large", "limit"),
        (b"{nope", "malformed_json", "malformed JSON"),
        (b"[1, 2]", "invalid_record", "array"),
        (b'"s"', "invalid_record", "string"),
        (b"null", "invalid_record", "null"),
        (b"true", "invalid_record", "boolean"),
        (b"1", "invalid_record", "number"),
        (b'{"z": 1}', "invalid_record", "neither V2"),
        (b'{"a": 1, "b": 2}', "invalid_record", "missing features: c"),
        (b'{"a": "1", "b": 2, "c": 3}', "invalid_record", "string value"),
        (b'{"a": true, "b": 2, "c": 3}', "invalid_record", "boolean value"),
        (b'{"a": {}, "b": 2, "c": 3}', "invalid_record", "object value"),
        (b'{"a": [1], "b": 2, "c": 3}', "invalid_record", "array value"),
        (b'{"a": 1e39, "b": 2, "c": 3}', "invalid_record", "float32 range"),
        (b'{"a": -1e39, "b": 2, "c": 3}', "invalid_record", "float32 range"),
        (b'{"a": Infinity, "b": 2, "c": 3}', "invalid_record", "float32 range"),
        (b'{"inputs": []}', "invalid_record", "non-empty list"),
        (b'{"inputs": "x"}', "invalid_record", "non-empty list"),
        (v2([1, 2], [1, 2]), "invalid_record", "expected [N, 3]"),
        (v2([1, 2, 3], [2, 3]), "invalid_record", "needs 6"),
        (v2([1] * 27, [9, 3]), "invalid_record", "more than the 8"),
        (v2(["a", "b", "c"], [1, 3]), "invalid_record", "not valid FP32"),
        (v2([1, 2, 3], [1, 3], outputs=[{"name": "nope"}]), "invalid_record", "unknown output"),
    ],
)
def test_bad_records_name_their_problem(value: bytes | None, kind: str, words: str) -> None:
    with pytest.raises(RecordError) as caught:
        parser().parse(value)
    assert caught.value.kind == kind
    assert kind in REASONS
    assert words in caught.value.message


# -- property: any JSON value either parses into exactly the features' values or is refused ----------
json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
feature_value = (
    st.none()
    | st.integers(-(2**31), 2**31)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | json_value
)


@settings(max_examples=400, deadline=None)
@given(record=st.dictionaries(st.sampled_from([*FEATURES, "inputs", "other"]), feature_value) | json_value)
def test_parser_accepts_exactly_valid_records(record: Any) -> None:
    raw = json.dumps(record).encode() if _orjson_cannot_write(record) else orjson.dumps(record)
    error: RecordError | None = None
    try:
        parsed = parser(max_bytes=1 << 20).parse(raw)
    except RecordError as exc:
        error = exc
    if error is not None:
        assert error.kind in REASONS
        assert error.message
        if isinstance(record, dict) and "inputs" not in record:
            assert not _valid_features(record)
        return
    assert isinstance(record, dict)
    if parsed.request is None:
        assert _valid_features(record)
        assert parsed.row == [record[f] for f in FEATURES]
        x = assemble([parsed])
        assert x.shape == (1, 3)
        assert x.dtype == np.float32
    else:
        assert "inputs" in record


def _orjson_cannot_write(value: Any) -> bool:
    """An integer beyond 64 bits (orjson refuses it) or an infinity (orjson writes null for it):
    json.dumps writes the record instead (its Infinity literal is read by the stdlib fallback)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) >= 2**63
    if isinstance(value, float):
        return math.isinf(value)
    if isinstance(value, list):
        return any(_orjson_cannot_write(v) for v in value)
    if isinstance(value, dict):
        return any(_orjson_cannot_write(v) for v in value.values())
    return False


def _valid_features(record: dict[str, Any]) -> bool:
    for f in FEATURES:
        if f not in record:
            return False
        v = record[f]
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or abs(v) > F32_MAX:
            return False
    return True


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.none() | st.floats(-1e6, 1e6, width=32), min_size=3, max_size=3), min_size=1, max_size=20
    )
)
def test_assemble_keeps_record_order_and_missing_values(rows: list[list[float | None]]) -> None:
    p = parser(max_bytes=1 << 20)
    parsed = [p.parse(orjson.dumps(dict(zip(FEATURES, r, strict=True)))) for r in rows]
    parsed.insert(len(parsed) // 2, p.parse(v2([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3])))
    x = assemble(parsed)
    assert x.shape == (len(rows) + 2, 3)
    expected = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float32)
    half = len(rows) // 2
    np.testing.assert_array_equal(x[:half], expected[:half])
    np.testing.assert_array_equal(x[half : half + 2], [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(x[half + 2 :], expected[half:])


def test_output_records_carry_id_model_version_revision_and_outputs() -> None:
    p = parser()
    parsed = [
        p.parse(b'{"a": 1, "b": 2, "c": 3}'),
        p.parse(v2([1, 2, 3, 4, 5, 6], [2, 3], outputs=[{"name": "label"}])),
        p.parse(b'{"a": 1, "b": 2, "c": null}'),
    ]
    probabilities = np.array([[0.25, 0.75], [0.5, 0.5], [0.9, 0.1], [np.nan, 1.0]], dtype=np.float32)
    label = np.array([1, 0, 0, 1], dtype=np.int64)
    values = OutputEncoder("churn", "v1", "rev-3").encode(
        parsed, ["id-0", "id-1", "id-2"], {"probabilities": probabilities, "label": label}
    )
    first, second, third = (json.loads(v) for v in values)
    assert first == {
        "request_id": "id-0", "model": "churn", "version": "v1", "revision": "rev-3",
        "outputs": {"probabilities": [0.25, 0.75], "label": 1},
    }  # fmt: skip
    assert second["outputs"] == [{"name": "label", "datatype": "INT64", "shape": [2], "data": [0, 0]}]
    assert third["outputs"] == {"probabilities": [None, 1.0], "label": 1}


def test_stream_settings_from_env_and_secret_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "password").write_text("s3cret\n")
    (tmp_path / "user").write_text("svc-stream\n")
    for name, value in {
        "BOOTSTRAP_SERVERS": "k1:9093,k2:9093",
        "INPUT_TOPIC": "events",
        "OUTPUT_TOPIC": "scores",
        "GROUP_ID": "churn-r3",
        "SECURITY_PROTOCOL": "SASL_SSL",
        "SASL_MECHANISM": "SCRAM-SHA-512",
        "SASL_USERNAME_FILE": str(tmp_path / "user"),
        "SASL_PASSWORD_FILE": str(tmp_path / "password"),
        "SSL_CA_FILE": "/etc/kafka/ca.pem",
        "CLIENT_CONFIG": '{"socket.keepalive.enable": "true"}',
    }.items():
        monkeypatch.setenv(f"MODELDEPLOY_STREAM_{name}", value)
    s = StreamSettings()  # type: ignore[call-arg]  # read from the environment
    assert s.dead_letter == "events.dlq"
    config = s.kafka_config()
    assert config == {
        "socket.keepalive.enable": "true",
        "bootstrap.servers": "k1:9093,k2:9093",
        "security.protocol": "sasl_ssl",
        "ssl.ca.location": "/etc/kafka/ca.pem",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc-stream",
        "sasl.password": "s3cret",
    }
    assert "s3cret" not in repr(s)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"output_topic": "in"}, "three different topics"),
        ({"dead_letter_topic": "out"}, "three different topics"),
        ({"security_protocol": "SASL_SSL"}, "needs sasl_mechanism"),
        ({"client_config": "[1]"}, "JSON object"),
    ],
)
def test_stream_settings_refuse_inconsistent_values(fields: dict[str, str], words: str) -> None:
    base = {"bootstrap_servers": "k:9092", "input_topic": "in", "output_topic": "out", "group_id": "g"}
    with pytest.raises(ValueError, match=words):
        StreamSettings(**{**base, **fields})  # type: ignore[arg-type]
