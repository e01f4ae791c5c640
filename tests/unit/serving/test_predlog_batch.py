"""The prediction log's batch encoding equals its record-by-record reference byte for byte.

The drain encodes a run of records at once; the REST server's C path
(`RestRecords._one_row_lines`: _predlog_lines.one_row_lines) must write exactly what `dumps` of
each record's dict (`RecordEncoder.one`, what the log wrote before) writes, request ids included,
for hostile values: NaN, infinities, -0.0, the largest int64s, unicode and newlines in ids, commas
in ids, missing fields (failed requests, no model), numpy rows, several micro-batches in one run.
"""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modeldeploy_contract.predlog_settings import PredictionLogSettings
from modeldeploy_serving.app import InferenceApp, RestRecords
from modeldeploy_serving.model import Prediction
from modeldeploy_serving.predlog import (
    JsonLinesSink,
    PiiPolicy,
    PredictionLog,
    RecordEncoder,
    line_pieces,
)
from modeldeploy_serving.rows import ListRows

FEATURES = ["account_id", "plan", "logins", "email", "w1"]
INDEX = {n: i for i, n in enumerate(FEATURES)}
KEY = b"batch-key-0123456789abcdef"

hostile_text = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12),
    st.sampled_from(["\n", ",\n,", "\u2028", '"', "%b", ",", "},{", "\x00"]),
)
json_number = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e16, 5e-324, 2**63 - 1, -(2**63)]),
)
json_value = st.recursive(
    st.none() | st.booleans() | json_number | hostile_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.dictionaries(hostile_text, json_value, max_size=5), max_size=20), json_value)
def test_log_records_lines_equal_one_by_one(inputs: list[dict[str, Any]], outputs: Any) -> None:
    from modeldeploy_serving.predlog import _LOG_RECORDS, LogRecord

    policy = PiiPolicy.from_lists(KEY, keep=["a"], pseudonymise=["b"], default="keep")
    items = [
        (_LOG_RECORDS, LogRecord(f"r{i}", 1.5, "d", "v", "r", "1", x, outputs, 0.1, "200", "k"))
        for i, x in enumerate(inputs)
    ]
    try:
        want = b"".join(_LOG_RECORDS.one(item, policy) + b"\n" for item in items)
    except TypeError:  # orjson refuses an int beyond 64 bits, either way
        return
    assert _LOG_RECORDS.lines(items, policy) == want


def app_for(deployment: str = "", variant: str = "v", revision: str = "r1") -> InferenceApp:
    app = InferenceApp.__new__(InferenceApp)
    app._ids = itertools.count()
    app._id_prefix = "host-7"
    app.log_settings = PredictionLogSettings(deployment=deployment, variant=variant, revision=revision)
    return app


model_a = SimpleNamespace(name="churn", version="v1", feature_index=INDEX)
model_b = SimpleNamespace(name="churn", version="v2", feature_index=INDEX)

row_value = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, 6.5, 1e16, 3.4e38]),
)
header_id = st.binary(min_size=1, max_size=6) | st.sampled_from([b"req,1", b'q"x', b"\xe9\xff", b"a\nb"])
plain_id = st.binary(min_size=1, max_size=300).map(
    lambda b: bytes(0x20 + c % 95 for c in b).replace(b'"', b"'").replace(b"\\", b"/")
)  # printable ASCII, no quote or backslash: what the C encoder copies as it is


@st.composite
def requests(draw: Any, usual: bool, plain: bool = False) -> list[tuple[Any, ...]]:
    """A run of RestRecords items: `usual` mostly one-row JSON requests of one model (the C path),
    else anything the server may queue; `plain`: only what the C path writes itself (ids of printable
    ASCII, every model call's outputs alike), so it must not give up."""
    n = draw(st.integers(1, 40))
    with_headers = draw(st.sampled_from(["none", "all", "mixed"]))
    items = []
    batches: list[tuple[Prediction, int]] = []
    for i in range(n):
        if not batches or draw(st.integers(0, 3)) == 0:  # a new micro-batch
            size = draw(st.integers(1, 6))
            probs = np.array(
                draw(st.lists(st.floats(width=32, allow_nan=True), min_size=2 * size, max_size=2 * size)),
                dtype=np.float32,
            ).reshape(size, 2)
            labels = np.array(
                draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=size, max_size=size)), dtype=np.int64
            )
            outputs: dict[str, Any] = {"probabilities": probs, "label": labels}
            # now and then a model call whose outputs differ in shape
            odd = 7 if plain else draw(st.integers(0, 7))
            if odd == 0:
                outputs = {"label": labels, "probabilities": probs}  # the other order
            elif odd == 1:
                outputs = {"probabilities": probs, "label": labels.reshape(size, 1)}  # 2-D
            elif odd == 2:
                outputs = {"probabilities": probs}
            batches.append((Prediction(outputs, probs[:, 0]), 0))
        whole, used = batches[-1]
        size = len(whole.scores)
        row = used % size
        batches[-1] = (whole, used + 1)
        prediction = whole.rows(row, row + 1)
        values = draw(st.lists(row_value, min_size=len(FEATURES), max_size=len(FEATURES)))
        rows: Any = ListRows(values, 1, len(FEATURES))
        body_id = None
        model: Any = model_a
        logged: Any = (rows, prediction, body_id)
        status = 200
        if not usual:
            kind = draw(st.integers(0, 7))
            if kind == 0:
                logged = None  # a failed request
                status = draw(st.sampled_from([400, 413, 500, 503]))
            elif kind == 1:
                model = None
            elif kind == 2:
                logged = (
                    np.array([[0 if v is None else v for v in values]], dtype=np.float64),
                    prediction,
                    None,
                )
            elif kind == 3:
                logged = (rows, prediction, draw(st.one_of(hostile_text, st.integers(), st.just(""))))
            elif kind == 4:
                model = model_b
            elif kind == 5:
                multi = ListRows(values + values, 2, len(FEATURES))
                logged = (multi, whole, None)
        headers = [(b"host", b"x"), (b"content-length", b"10")]
        if with_headers == "all" or (with_headers == "mixed" and i % 2):
            name = draw(st.sampled_from([b"x-request-id", b"request-id"]))
            headers.append((name, draw(plain_id if plain else header_id)))
        elapsed = draw(st.floats(0, 10, allow_nan=False))
        at = draw(st.floats(1e9, 2e9, allow_nan=False))
        items.append((None, None, headers, model, logged, status, elapsed, at))
    return items


def compare(items: list[tuple[Any, ...]], policy: PiiPolicy, **labels: str) -> None:
    batch_app, reference_app = app_for(**labels), app_for(**labels)
    batch, reference = RestRecords(batch_app), RestRecords(reference_app)
    run = [(batch, *item[1:]) for item in items]
    got = batch.lines(run, policy)
    want = b"".join(reference.one((reference, *item[1:]), policy) + b"\n" for item in items)
    assert got == want
    assert next(batch_app._ids) == next(reference_app._ids)  # as many ids made, in the same order


policies = st.sampled_from(
    [
        PiiPolicy.from_lists(KEY, pseudonymise=["account_id", "email"], keep=["plan", "logins"]),
        PiiPolicy.from_lists(KEY, pseudonymise=["w1"]),
        PiiPolicy.from_lists(KEY, keep=["logins"]),
        PiiPolicy.from_lists(KEY),  # logs no input
        PiiPolicy.from_lists(KEY, drop=["email"], pseudonymise=["account_id"], default="keep"),
    ]
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    requests(usual=True),
    policies,
    st.sampled_from([{}, {"deployment": 'd"%b\n', "variant": "é,", "revision": ""}]),
)
def test_rest_c_path_equals_the_record_reference(
    items: list[tuple[Any, ...]], policy: PiiPolicy, labels: dict[str, str]
) -> None:
    compare(items, policy, **labels)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(usual=True, plain=True), policies)
def test_the_c_path_writes_every_usual_run_itself(items: list[tuple[Any, ...]], policy: PiiPolicy) -> None:
    """Ids of printable ASCII (up to 300 bytes: the log keeps 256), mixed with made ones, any numbers:
    the C encoder writes the run (no fallback) and equals the reference."""
    app = app_for()
    encoder = RestRecords(app)
    assert encoder._one_row_lines([(encoder, *item[1:]) for item in items], policy) is not None
    compare(items, policy)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(usual=False), policies)
def test_rest_batch_path_equals_the_record_reference_for_any_request(
    items: list[tuple[Any, ...]], policy: PiiPolicy
) -> None:
    compare(items, policy)


def test_the_usual_run_takes_the_c_path() -> None:
    """The bench's requests (one JSON row, no id) are encoded in C (else the speed-up is gone)."""
    policy = PiiPolicy.from_lists(KEY, pseudonymise=["account_id"], keep=["plan"])
    probs = np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)
    whole = Prediction({"probabilities": probs, "label": np.array([1, 0])}, probs[:, 0])
    encoder = RestRecords(app_for())
    items = [
        (
            encoder,
            None,
            [(b"host", b"x")],
            model_a,
            (ListRows([i, 2, 3, 4, 5], 1, 5), whole.rows(i, i + 1), None),
            200,
            0.001,
            1.5e9,
        )
        for i in range(2)
    ]
    text = encoder._one_row_lines(items, policy)
    assert text is not None
    first = orjson.loads(text.splitlines()[0])
    assert first["request_id"] == "host-7-0"
    assert first["inputs"] == {"account_id": [policy.token(0)], "plan": [2]}
    assert first["outputs"] == {"probabilities": [[0.25, 0.75]], "label": [1]}


def test_line_pieces_are_the_record_around_its_slots() -> None:
    """The fixed bytes of a line, escaped by orjson, with a slot per varying field: filled with
    the slots' texts they are `dumps` of the record."""
    pieces = line_pieces('d"%b', "v", "", "1", ("a", "b\n"), (("p", 2), ("label", 1)))
    slots = [b'"id"', b"1.5", b"3", b'"hmac:x"', b"0.25,0.75", b"1", b"0.1", b'"200"']
    assert len(pieces) == len(slots) + 1
    line = b"".join(p + s for p, s in zip(pieces, [*slots, b""], strict=True))
    assert orjson.loads(line) == {
        "request_id": "id",
        "time": 1.5,
        "deployment": 'd"%b',
        "variant": "v",
        "revision": "",
        "model_version": "1",
        "inputs": {"a": [3], "b\n": ["hmac:x"]},
        "outputs": {"p": [[0.25, 0.75]], "label": [1]},
        "latency_ms": 0.1,
        "status": "200",
    }
    assert line.endswith(b"}\n")
    assert line.count(b"\n") == 1
    empty = line_pieces("d", "v", "r", "1", (), ())
    assert b'"inputs":{},"outputs":{},"latency_ms":' in empty[2]


class Exploding(RecordEncoder):
    """Fails on one record: the drain falls back to record by record and loses only that one."""

    def body(self, item: tuple[Any, ...], policy: PiiPolicy) -> dict[str, Any]:
        if item[1] == 3:
            return {"x": 2**64}  # orjson refuses it
        return {"i": item[1], "nan": math.nan}


def test_a_record_that_cannot_be_encoded_costs_only_itself() -> None:
    import io

    out = io.StringIO()
    plog = PredictionLog(JsonLinesSink(out), PiiPolicy.from_lists(KEY))
    encoder = Exploding()
    for i in range(10):
        assert plog.defer((encoder, i))
    plog.close()
    assert [orjson.loads(line)["i"] for line in out.getvalue().splitlines()] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert (plog.written, plog.failed) == (9, 1)
