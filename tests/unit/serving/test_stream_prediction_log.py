"""Stream mode's prediction-log records (issue 14): REST's record shape, one per input record, the
policy applied to its rows, its own slice of the batch's outputs; dead letters with their status and
no inputs. StreamRunner._log driven directly (no broker)."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson

from modeldeploy_contract.stream_settings import StreamSettings
from modeldeploy_serving.predlog import JsonLinesSink, PiiPolicy, PredictionLog
from modeldeploy_serving.stream.records import INVALID, PREDICTION_FAILED, RecordError, RecordParser
from modeldeploy_serving.stream.runner import Batch, StreamRunner

FEATURES = ["account_id", "plan_code", "logins"]
RECORD_KEYS = {
    "request_id", "time", "deployment", "variant", "revision", "model_version", "inputs", "outputs",
    "latency_ms", "status",
}  # fmt: skip  # LogRecord's (the REST server's) keys; the router adds sticky_key


def runner(plog: PredictionLog) -> StreamRunner:
    settings = StreamSettings(
        bootstrap_servers="127.0.0.1:9", input_topic="in", output_topic="out", group_id="g", revision="r7"
    )
    return StreamRunner(settings, SimpleNamespace(), plog, ("churn", "stable"))  # type: ignore[arg-type]


def test_stream_records_have_rests_shape_with_the_policy_applied() -> None:
    out = io.StringIO()
    policy = PiiPolicy.from_lists(
        b"stream-key-0123456789abcdef", pseudonymise=["account_id"], keep=["logins"]
    )
    plog = PredictionLog(JsonLinesSink(out), policy)
    r = runner(plog)
    model = SimpleNamespace(
        name="churn",
        version="v3",
        feature_names=FEATURES,
        feature_index={n: i for i, n in enumerate(FEATURES)},
    )
    parser = RecordParser(FEATURES, ["label", "probabilities"], 1 << 20, 100)
    values: list[bytes | None] = [
        orjson.dumps({"account_id": 918273645, "plan_code": 3, "logins": 5}),
        orjson.dumps(
            {
                "id": "v2-rec",
                "inputs": [
                    {"name": "input", "datatype": "FP32", "shape": [2, 3], "data": [11, 1, 2, 12, 1, 3]}
                ],
            }
        ),
    ]
    parsed: list[Any] = parser.parse_many(values)
    outputs = {
        "label": np.array([1, 0, 1]),
        "probabilities": np.array([[0.25, 0.75], [0.5, 0.5], [0.125, 0.875]], dtype=np.float32),
    }
    bad = [
        (None, RecordError(INVALID, "the value must be a JSON object"), "bad-1"),
        (None, RecordError(PREDICTION_FAILED, "boom"), "bad-2"),
    ]
    batch = Batch([], SimpleNamespace(create_future=lambda: None))  # type: ignore[arg-type]
    r._log(plog, batch, model, parsed, ["feat-rec", "v2-rec"], outputs, bad)  # type: ignore[arg-type]
    plog.close()
    records = {rec["request_id"]: rec for rec in map(json.loads, out.getvalue().splitlines())}
    assert set(records) == {"feat-rec", "v2-rec", "bad-1", "bad-2"}
    assert all(set(rec) == RECORD_KEYS for rec in records.values())
    one, two = records["feat-rec"], records["v2-rec"]
    assert (one["deployment"], one["variant"], one["revision"], one["model_version"], one["status"]) == (
        "churn", "stable", "r7", "v3", "200",
    )  # fmt: skip
    assert one["inputs"]["logins"] == [5]  # kept, a column like REST's (one row)
    assert one["inputs"]["account_id"][0].startswith("hmac:")
    assert "plan_code" not in one["inputs"]  # default: drop
    assert "918273645" not in out.getvalue()
    assert one["outputs"] == {"label": [1], "probabilities": [[0.25, 0.75]]}
    assert two["inputs"]["logins"] == [2.0, 3.0]
    assert two["outputs"] == {"label": [0, 1], "probabilities": [[0.5, 0.5], [0.125, 0.875]]}
    assert (records["bad-1"]["status"], records["bad-1"]["inputs"], records["bad-1"]["outputs"]) == (
        "400",
        {},
        None,
    )
    assert records["bad-2"]["status"] == "500"
    # the same policy token as REST's for the same value: the logs join across modes
    assert one["inputs"]["account_id"][0] == policy.token(918273645)


def test_stream_log_sampling_and_a_failing_encoder_never_stop_the_stream() -> None:
    out = io.StringIO()
    plog = PredictionLog(JsonLinesSink(out), PiiPolicy.from_lists(b"stream-key-0123456789abcdef"), 0.0)
    r = runner(plog)
    batch = Batch([], SimpleNamespace(create_future=lambda: None))  # type: ignore[arg-type]
    r._log(plog, batch, None, [object()], [], {}, [])  # type: ignore[arg-type, list-item]  # a bug: logged, not raised
    plog.close()
    assert out.getvalue() == ""
