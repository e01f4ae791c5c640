"""`modeldeploy stream` against a real Kafka broker: predictions, dead letters, a kill -9, lag."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from kafka_broker import Broker
from stream_harness import Record, Topics, feature_records, produce, read_topic, stream_process

pytestmark = pytest.mark.slow


def model_probabilities(bundle: Path, x: np.ndarray) -> np.ndarray:
    """The bundle's own predictions: its runtime called directly, no stream, no server."""
    from modeldeploy_contract.server_settings import ServerSettings
    from modeldeploy_serving.model import load_model

    model = load_model(ServerSettings(model_uri=str(bundle), xgboost_batch_rows=0))
    return np.asarray(model.predict(x.astype(np.float32)).outputs["probabilities"], dtype=np.float64)


def by_request_id(records: list[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for r in records:
        out.setdefault(r.headers["request-id"].decode(), []).append(r)
    return out


def test_100k_records_scored_like_the_model(kafka: Broker, churn_bundle: Path, tmp_path: Path) -> None:
    n = 100_000
    topics = Topics.create(kafka.bootstrap, partitions=2)
    x, values = feature_records(n)
    keys = [b"account-%d" % i for i in range(n)]
    headers = [[("request-id", b"req-%d" % i)] for i in range(n)]
    produce(kafka.bootstrap, topics.input, values, keys, headers)
    started_ms = time.time() * 1000
    with stream_process(kafka.bootstrap, churn_bundle, topics, tmp_path / "stream.log") as stream:
        stream.wait_ready()
        outputs = read_topic(kafka.bootstrap, topics.output, lambda rs: len(rs) >= n, timeout=240)
        # output timestamps: the producer's create time when produced (produce()'s default)
        assert all(started_ms - 1000 <= r.timestamp <= time.time() * 1000 + 1000 for r in outputs)
        # every offset committed: the lag metric drops to 0 on both partitions
        stream.wait_for(
            lambda: (
                stream.metric(r"modeldeploy_stream_consumer_lag\{.*\}") == 0
                and len([k for k in stream.metrics() if k.startswith("modeldeploy_stream_consumer_lag{")])
                == 2
            ),
            timeout=30,
            what="lag 0 on 2 partitions",
        )
        metrics = stream.metrics()
    assert stream.process.returncode == 0
    assert len(outputs) == n  # graceful run: no duplicates
    got = np.full((n, 2), np.nan)
    for r in outputs:
        body = r.json()
        i = int(body["request_id"].removeprefix("req-"))
        assert r.key == keys[i]
        assert r.headers["request-id"] == b"req-%d" % i
        assert (body["model"], body["version"], body["revision"]) == ("churn", "v1", "r1")
        assert body["outputs"]["label"] in (0, 1)
        got[i] = body["outputs"]["probabilities"]
    expected = model_probabilities(churn_bundle, x)
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert metrics['modeldeploy_stream_records_total{model="churn",outcome="scored",version="v1"}'] == n
    assert metrics['modeldeploy_predicted_rows_total{model="churn",version="v1"}'] == n
    assert metrics["modeldeploy_model_ready"] == 1
    assert metrics['modeldeploy_drift_windows_total{model="churn",version="v1"}'] >= 1


ROW = {
    "number_of_projects": 2, "number_of_issues": 35, "number_of_invites": 1, "w1_active_users": 4,
    "w1_max_active_users": 6, "issues_updated": 20, "issues_commented": 8, "issues_assigned": 17,
    "at_mentions": 5, "issues_viewed": 107, "issues_completed": 9, "mobile_usage": None,
    "sprint_started": 2, "sprint_finished": 1,
}  # fmt: skip


def _v2(data: list[float], shape: list[int], **extra: object) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "data": data}], **extra}
    ).encode()


# Every record shape the stream refuses, with the reason kind expected in its dead letter.
BAD: dict[str, tuple[bytes | None, str]] = {
    "null value": (None, "empty"),
    "empty value": (b"", "empty"),
    "too large": (json.dumps({**ROW, "pad": "x" * 3000}).encode(), "too_large"),
    "not json": (b"{not json", "malformed_json"),
    "truncated json": (json.dumps(ROW).encode()[:-5], "malformed_json"),
    "json array": (b"[1, 2, 3]", "invalid_record"),
    "json string": (b'"hello"', "invalid_record"),
    "json number": (b"42", "invalid_record"),
    "unrelated object": (b'{"account": "a-1"}', "invalid_record"),
    "missing feature": (
        json.dumps({k: v for k, v in ROW.items() if k != "at_mentions"}).encode(),
        "invalid_record",
    ),
    "string feature": (json.dumps({**ROW, "at_mentions": "five"}).encode(), "invalid_record"),
    "boolean feature": (json.dumps({**ROW, "at_mentions": True}).encode(), "invalid_record"),
    "list feature": (json.dumps({**ROW, "at_mentions": [5]}).encode(), "invalid_record"),
    "out of float32 range": (json.dumps({**ROW, "at_mentions": 1e300}).encode(), "invalid_record"),
    "infinite feature": (json.dumps({**ROW, "at_mentions": float("inf")}).encode(), "invalid_record"),
    "v2 wrong width": (_v2([1.0] * 13, [1, 13]), "invalid_record"),
    "v2 data length": (_v2([1.0] * 14, [2, 14]), "invalid_record"),
    "v2 empty inputs": (b'{"inputs": []}', "invalid_record"),
    "v2 unknown output": (_v2([1.0] * 14, [1, 14], outputs=[{"name": "nope"}]), "invalid_record"),
    "v2 too many rows": (_v2([1.0] * 14 * 5, [5, 14]), "invalid_record"),
    "v2 string data": (_v2(["a"] * 14, [1, 14]), "invalid_record"),  # type: ignore[list-item]
}


def test_bad_records_go_to_the_dead_letter_topic(kafka: Broker, churn_bundle: Path, tmp_path: Path) -> None:
    topics = Topics.create(kafka.bootstrap)
    good_before = json.dumps(ROW).encode()
    good_v2 = _v2([1.0] * 28, [2, 14], id="v2-request", outputs=[{"name": "label"}])
    good_nan = json.dumps({**ROW, "mobile_usage": float("nan")}).encode()  # Python's NaN literal
    good_after = json.dumps({**ROW, "ignored_extra_key": "x"}).encode()
    names = ["good-before", *BAD, "good-v2", "good-nan", "good-after"]
    values = [good_before, *(v for v, _ in BAD.values()), good_v2, good_nan, good_after]
    produce(kafka.bootstrap, topics.input, values, [n.encode() for n in names])
    env = {"MODELDEPLOY_STREAM_MAX_RECORD_BYTES": "2048", "MODELDEPLOY_STREAM_MAX_RECORD_ROWS": "4"}
    with stream_process(kafka.bootstrap, churn_bundle, topics, tmp_path / "stream.log", env=env) as stream:
        stream.wait_ready()
        dead = read_topic(kafka.bootstrap, topics.dead_letter, lambda rs: len(rs) >= len(BAD))
        outputs = read_topic(kafka.bootstrap, topics.output, lambda rs: len(rs) >= 4)
        stream.wait_for(lambda: stream.metric(r"modeldeploy_stream_consumer_lag\{.*\}") == 0, what="lag 0")
        metrics = stream.metrics()
    assert len(dead) == len(BAD)
    for r in dead:
        name = r.key.decode() if r.key else "?"
        value, kind = BAD[name]
        assert r.headers["modeldeploy-error-kind"].decode() == kind, name
        assert r.headers["modeldeploy-error"], name
        assert r.value == (value or b""), name  # the original record, for replay after a fix
        assert r.headers["modeldeploy-input"].decode().startswith(f"{topics.input}/0/")
    assert {r.key for r in outputs} == {b"good-before", b"good-v2", b"good-nan", b"good-after"}
    v2_out = next(r.json() for r in outputs if r.key == b"good-v2")
    assert v2_out["request_id"] == "v2-request"
    assert [o["name"] for o in v2_out["outputs"]] == ["label"]
    assert v2_out["outputs"][0]["shape"] == [2]
    kinds: dict[str, int] = {}
    for _, kind in BAD.values():
        kinds[kind] = kinds.get(kind, 0) + 1
    for kind, count in kinds.items():
        labels = f'model="churn",reason="{kind}",version="v1"'
        assert metrics[f"modeldeploy_stream_dead_letter_records_total{{{labels}}}"] == count
    assert metrics[
        'modeldeploy_stream_records_total{model="churn",outcome="dead_letter",version="v1"}'
    ] == len(BAD)


def test_kill_9_midway_loses_nothing(kafka: Broker, churn_bundle: Path, tmp_path: Path) -> None:
    n = 60_000
    topics = Topics.create(kafka.bootstrap, partitions=2)
    x, values = feature_records(n, seed=9)
    produce(kafka.bootstrap, topics.input, values, [b"k%d" % i for i in range(n)])
    # Small batches, so that the kill lands with work consumed but not committed.
    # Static membership: the restarted process (same instance id, as a restarted pod would have)
    # takes the partitions back at once instead of after the killed member's session timeout.
    env = {"MODELDEPLOY_STREAM_BATCH_MAX_RECORDS": "500", "MODELDEPLOY_STREAM_GROUP_INSTANCE_ID": "pod-0"}
    log = tmp_path / "stream.log"
    with stream_process(kafka.bootstrap, churn_bundle, topics, log, env=env) as first:
        first.wait_ready()
        first.wait_for(
            lambda: first.metric(r"modeldeploy_stream_records_total\{.*\}") >= n // 3,
            what="a third of the records scored",
        )
        first.kill()
    assert first.process.returncode == -9
    with stream_process(kafka.bootstrap, churn_bundle, topics, log, env=env) as second:
        second.wait_ready()
        outputs = read_topic(
            kafka.bootstrap,
            topics.output,
            lambda rs: len({r.headers["request-id"] for r in rs}) >= n,
            timeout=240,
        )
        second.wait_for(lambda: second.metric(r"modeldeploy_stream_consumer_lag\{.*\}") == 0, what="lag 0")
    ids = by_request_id(outputs)
    # Request ids default to <topic>-<partition>-<offset>: the same for a redelivered record.
    assert len(ids) == n
    duplicates = len(outputs) - n
    print(f"kill -9 test: {len(outputs)} outputs for {n} inputs, {duplicates} duplicates")
    for rid, copies in ids.items():
        assert len({c.value for c in copies}) == 1, f"{rid}: duplicates differ"
    # every input's prediction is there and equal to the model's own
    order = {b"k%d" % i: i for i in range(n)}
    got = np.full((n, 2), np.nan)
    for copies in ids.values():
        key = copies[0].key
        assert key is not None  # produced with keys k0..k<n-1>
        got[order[key]] = copies[0].json()["outputs"]["probabilities"]
    np.testing.assert_allclose(got, model_probabilities(churn_bundle, x), rtol=0, atol=1e-6)


def test_lag_is_exported_and_in_flight_batches_are_bounded(
    kafka: Broker, churn_bundle: Path, tmp_path: Path
) -> None:
    n = 6_000
    topics = Topics.create(kafka.bootstrap, partitions=2)
    _, values = feature_records(n, seed=3)
    produce(kafka.bootstrap, topics.input, values)
    # One small batch in flight at a time: each waits for the broker's acknowledgement, so the
    # backlog drains slowly enough to be seen.
    env = {
        "MODELDEPLOY_STREAM_BATCH_MAX_RECORDS": "50",
        "MODELDEPLOY_STREAM_MAX_IN_FLIGHT_BATCHES": "1",
        "MODELDEPLOY_STREAM_LAG_INTERVAL_SECONDS": "0.2",
    }
    with stream_process(kafka.bootstrap, churn_bundle, topics, tmp_path / "stream.log", env=env) as stream:
        stream.wait_ready()
        seen_lag = 0.0
        max_in_flight = 0.0

        def drained() -> bool:
            nonlocal seen_lag, max_in_flight
            m = stream.metrics()
            lag = sum(v for k, v in m.items() if k.startswith("modeldeploy_stream_consumer_lag{"))
            seen_lag = max(seen_lag, lag)
            max_in_flight = max(max_in_flight, m.get("modeldeploy_stream_in_flight_batches", 0))
            scored = m.get('modeldeploy_stream_records_total{model="churn",outcome="scored",version="v1"}', 0)
            return scored == n and lag == 0

        stream.wait_for(drained, timeout=180, what="backlog drained to lag 0")
    assert seen_lag > 0  # the backlog was visible while it drained
    assert max_in_flight <= 1
