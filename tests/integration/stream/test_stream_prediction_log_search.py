"""The personal-data search in stream mode (issue 14): `modeldeploy stream` with the prediction log
to a Kafka topic, fed feature records whose pseudonymised and dropped fields hold unique markers (and
one bad record carrying a marker); the log topic, the output topic, the process's output and its
/metrics hold none of them, while the kept field is there and every record is logged once.
(The dead-letter topic holds bad records as they came, by design: it is not searched.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kafka_broker import Broker
from stream_harness import Topics, feature_records, log_records, produce, read_topic, stream_process

pytestmark = pytest.mark.slow

N = 200
PSEUDONYMISED = [918_273.5 + i for i in range(N)]  # at_mentions (float32-exact)
DROPPED = [827_364.25 + i for i in range(N)]  # issues_viewed
BAD = b'{"at_mentions": "MARKER-bad-zq", "number_of_projects": 1}'  # missing features: a dead letter


def test_stream_prediction_log_to_kafka_holds_no_marker(
    kafka: Broker, churn_bundle: Path, tmp_path: Path
) -> None:
    topics = Topics.create(kafka.bootstrap, prefix="plogin")
    log_topic = Topics.create(kafka.bootstrap, prefix="plog").output
    _, values = feature_records(N)
    records = []
    for i, value in enumerate(values):
        record = json.loads(value)
        record["at_mentions"], record["issues_viewed"] = PSEUDONYMISED[i], DROPPED[i]
        records.append(json.dumps(record).encode())
    records.append(BAD)
    headers = [[("request-id", b"req-%d" % i)] for i in range(N + 1)]
    produce(kafka.bootstrap, topics.input, records, [None] * (N + 1), headers)
    key = tmp_path / "hmac.key"
    key.write_text("a-key-from-a-Secret-0123456789")
    env = {
        "MODELDEPLOY_PREDLOG_ENABLED": "true",
        "MODELDEPLOY_PREDLOG_HMAC_KEY_FILE": str(key),
        "MODELDEPLOY_PREDLOG_SINK": "kafka",
        "MODELDEPLOY_PREDLOG_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "MODELDEPLOY_PREDLOG_KAFKA_TOPIC": log_topic,
        "MODELDEPLOY_PREDLOG_KEEP": "number_of_projects",
        "MODELDEPLOY_PREDLOG_PSEUDONYMISE": "at_mentions",
        "MODELDEPLOY_PREDLOG_DROP": "issues_viewed",
        "MODELDEPLOY_PREDLOG_DEPLOYMENT": "churn",
        "MODELDEPLOY_PREDLOG_VARIANT": "default",
    }
    log = tmp_path / "stream.log"
    with stream_process(kafka.bootstrap, churn_bundle, topics, log, env=env) as stream:
        stream.wait_ready()
        outputs = read_topic(kafka.bootstrap, topics.output, lambda rs: len(rs) >= N, timeout=120)
        stream.wait_for(
            lambda: stream.metric(r'modeldeploy_prediction_log_records_total\{outcome="written"\}') >= N + 1,
            what="every record logged",
        )
        metrics_text = json.dumps(stream.metrics())
    logged = read_topic(kafka.bootstrap, log_topic, lambda ms: len(log_records(ms)) >= N + 1, timeout=60)
    by_id = {r["request_id"]: r for r in log_records(logged)}
    assert len(log_records(logged)) == len(by_id) == N + 1
    for i in range(N):
        record = by_id[f"req-{i}"]
        assert (record["deployment"], record["variant"], record["revision"], record["status"]) == (
            "churn",
            "default",
            "r1",
            "200",
        )
        assert set(record["inputs"]) == {"number_of_projects", "at_mentions"}
        assert record["inputs"]["at_mentions"][0].startswith("hmac:")
        assert len(record["outputs"]["probabilities"]) == 1
    assert (by_id[f"req-{N}"]["status"], by_id[f"req-{N}"]["inputs"]) == ("400", {})

    # The values as JSON writes them ("918273.5"): six digits alone would match inside hex tokens.
    markers = [str(v) for v in PSEUDONYMISED + DROPPED] + ["MARKER-"]
    searched = {
        "log topic": b"\n".join(r.value for r in logged).decode(),
        "output topic": b"\n".join(r.value for r in outputs).decode(),
        "stream process output": log.read_text(),
        "/metrics": metrics_text,
    }
    assert [(where, m) for where, text in searched.items() for m in markers if m in text] == []
