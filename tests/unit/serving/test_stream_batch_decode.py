"""The stream's batch decoder (RecordParser.parse_batch) against its reference, the per-record path
(RecordParser._parse_each): identical Parsed rows and errors for every record of any batch of
hostile bytes, the batch's matrix identical (bit for bit) to assemble() of its parsed records, and
one record's result never depending on the other records of its batch."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy_serving.stream.records import (
    INVALID,
    FeatureRows,
    Parsed,
    RecordError,
    RecordParser,
    assemble,
)

FEATURES = ["a", "b", "c"]
F32_MAX = float(np.finfo(np.float32).max)
MAX_BYTES = 300


def parser() -> RecordParser:
    return RecordParser(FEATURES, ["label"], MAX_BYTES, 8)


def outcome(result: Parsed | RecordError) -> Any:
    """A comparable form of one record's result (NaN compares equal to NaN, ints differ from floats)."""
    if isinstance(result, RecordError):
        return ("error", result.kind, result.message)
    if result.request is not None:
        r = result.request
        return ("v2", repr(r.id), r.x.tobytes(), r.x.shape, repr(r.outputs))
    assert result.row is not None
    return (
        "row",
        [(type(v).__name__, "nan" if isinstance(v, float) and math.isnan(v) else v) for v in result.row],
    )


def check(values: list[bytes | None]) -> tuple[Sequence[Parsed | RecordError], np.ndarray | None]:
    p = parser()
    results, x = p.parse_batch(values)
    reference = p._parse_each(values)
    assert [outcome(r) for r in results] == [outcome(r) for r in reference]
    # each record alone: its result does not depend on its batch
    assert [outcome(r) for r in results] == [outcome(p._parse_each([v])[0]) for v in values]
    parsed = [r for r in results if isinstance(r, Parsed)]
    if x is not None:
        assert all(r.request is None for r in parsed)
        expected = assemble(parsed) if parsed else np.zeros((0, len(FEATURES)), np.float32)
        assert x.dtype == np.float32
        assert x.shape == expected.shape
        assert x.tobytes() == expected.tobytes()  # bit for bit: NaN, -0.0, rounding
    return results, x


# -- hostile record bytes --------------------------------------------------------------------------
def number_text() -> st.SearchStrategy[str]:
    edge = st.sampled_from(
        [
            repr(F32_MAX), "3.4028235e38", "3.4028236e38", "-3.4028235e38", "3.40282356779733661e38",
            "1e39", "-1e400", "1e-400", "5e-324", "-0", "-0.0", "0.0", "9223372036854775807",
            "9223372036854775808", "18446744073709551615", "18446744073709551616", "-9223372036854775809",
            "123456789012345678901234567890", "16777217", "1.0000000596046448", "NaN", "-Infinity",
            "Infinity", "nan", "inf", "1.", ".5", "01", "1e", "+1", "0x10", "1_000",
        ]
    )  # fmt: skip
    return (
        edge
        | st.integers().map(str)
        | st.floats(allow_nan=False, allow_infinity=False).map(repr)
        | st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr)
    )


scalar_text = (
    number_text()
    | st.sampled_from(["null", "true", "false", '""', '"1.5"', '"null"', "[]", "{}", "[1]", '{"a": 1}'])
    | st.text(max_size=4).map(json.dumps)
)
key_text = st.sampled_from([*FEATURES, "inputs", "id", "A", "a ", "\\u0061", "b\\u0000"]) | st.text(
    max_size=3
)


@st.composite
def object_text(draw: st.DrawFn) -> bytes:
    """A JSON-ish object as text: features (some missing), other keys, duplicates, any spacing."""
    keys = draw(st.lists(key_text, max_size=6))
    if draw(st.booleans()):
        keys = [*FEATURES, *keys]  # mostly complete records
    keys = draw(st.permutations(keys))
    space = draw(st.sampled_from(["", " ", "\n", "\t", " \r\n"]))
    pairs = []
    for k in keys:
        key = k if k.startswith("\\u") or "\\u" in k else json.dumps(k)[1:-1]
        pairs.append(f'"{key}":{space}{draw(scalar_text)}')
    return ("{" + f",{space}".join(pairs) + "}").encode()


deep = st.integers(1, 3000).map(lambda n: b'{"a": ' + b"[" * n + b"1" + b"]" * n + b', "b": 1, "c": 1}')
v2_record = st.sampled_from(
    [
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}',
        b'{"id": "r", "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}]}',  # noqa: E501
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}',
        b'{"inputs": 5, "a": 1, "b": 2, "c": 3}',
        b'{"a": 1, "b": 2, "c": 3, "inputs": []}',
    ]
)
record = (
    object_text()
    | object_text().map(lambda b: b.replace(b"1", b"\xff", 1))  # not UTF-8
    | st.binary(max_size=40)
    | st.sampled_from([None, b"", b" ", b"null", b"[]", b"1", b'"s"', b"{}", b'{"a": 1, "b": 2, "c": 3} x'])
    | st.just(b'{"a": 1, "b": 2, "c": 3, "pad": "' + b"x" * MAX_BYTES + b'"}')  # too large
    | deep
    | v2_record
)


@settings(max_examples=600, deadline=None)
@given(values=st.lists(record, max_size=12))
def test_batch_decoder_matches_the_per_record_path_on_hostile_bytes(values: list[bytes | None]) -> None:
    check(values)


good_value = st.none() | st.integers(-(2**40), 2**40) | st.floats(-F32_MAX, F32_MAX)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.tuples(good_value, good_value, good_value, st.integers(0, 3)), min_size=1, max_size=30)
)
def test_valid_batches_take_the_batch_path_with_exact_values(rows: list[tuple[Any, Any, Any, int]]) -> None:
    """Valid feature records (with ids beside them): all parsed, and the batch's matrix is there."""
    values: list[bytes | None] = [
        orjson.dumps({"id": f"e{i}", "a": a, "b": b, "c": c, "t": [t]}) for i, (a, b, c, t) in enumerate(rows)
    ]
    results, x = check(values)
    assert x is not None
    assert x.shape == (len(rows), 3)
    if not (np.abs(x) == np.float32(F32_MAX)).any():  # float32's maximum: checked record by record
        assert isinstance(results, FeatureRows)  # no Parsed made until read
    assert [outcome(results[i]) for i in range(len(rows))] == [outcome(r) for r in results]
    assert [outcome(r) for r in results[1:]] == [outcome(r) for r in list(results)[1:]]
    assert [r.row for r in results] == [[a, b, c] for a, b, c, _ in rows]  # type: ignore[union-attr]


def test_null_is_missing_but_a_missing_key_is_an_invalid_record() -> None:
    values: list[bytes | None] = [
        b'{"a": 1, "b": null, "c": 2.5}',
        b'{"a": 1, "c": 2.5}',
        b'{"a": 1, "b": 2, "c": 3}',
    ]
    results, x = check(values)
    assert isinstance(results[0], Parsed)
    assert results[0].row == [1, None, 2.5]
    assert isinstance(results[1], RecordError)
    assert results[1].kind == INVALID
    assert "missing features: b" in results[1].message
    assert x is not None  # the bad record is left out of the matrix, the good ones are scored
    assert np.array_equal(x, np.array([[1, np.nan, 2.5], [1, 2, 3]], np.float32), equal_nan=True)


def test_refused_values_leave_the_rest_of_the_batch_scored() -> None:
    values: list[bytes | None] = [
        b'{"a": true, "b": 1, "c": 1}',
        b'{"a": "1", "b": 1, "c": 1}',
        b'{"a": 3.4028236e38, "b": 1, "c": 1}',
        b'{"a": 3.4028234663852886e38, "b": 1, "c": 1}',  # float32's maximum itself: valid
        b'{"a": NaN, "b": 1, "c": 1}',  # the stdlib's literal: missing (per-record path)
        None,
        b"{",
        b'{"a": 1, "b": 2, "c": 3}',
    ]
    results, x = check(values)
    kinds = [r.kind if isinstance(r, RecordError) else "ok" for r in results]
    assert kinds == [INVALID, INVALID, INVALID, "ok", "ok", "empty", "malformed_json", "ok"]
    assert x is None  # a record parsed off the batch path (the NaN literal): assemble() makes the matrix
    _, x = check([v for i, v in enumerate(values) if i != 4])
    assert x is not None
    assert x.shape == (2, 3)
