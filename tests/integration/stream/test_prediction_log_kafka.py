"""The prediction log's Kafka sink against the real broker: every record arrives, personal data does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from kafka_broker import Broker
from stream_harness import Topics, log_records, read_topic

pytestmark = pytest.mark.slow


def test_prediction_log_to_kafka_keeps_personal_data_out(kafka: Broker, tmp_path: Path) -> None:
    from confluent_kafka import Producer

    from modeldeploy_serving.predlog import KafkaSink, LogRecord, PiiPolicy, PredictionLog

    topics = Topics.create(kafka.bootstrap, prefix="predlog")
    policy = PiiPolicy.from_lists(
        b"secret-key-from-a-Secret-0123456789", drop=["name"], pseudonymise=["email"], keep=["plan"]
    )
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "linger.ms": 5})
    plog = PredictionLog(KafkaSink(producer, topics.output), policy, capacity=50_000)
    n = 5_000
    markers = [f"MARKER-{i:05d}-zq" for i in range(n)]
    for i in range(n):
        inputs = {"email": f"{markers[i]}@example.com", "name": markers[i], "plan": "pro", "w1": 4}
        record = LogRecord(
            f"req-{i}", 1.0, "churn", "stable", "r1", "v1", inputs, {"label": 1}, 0.3, "ok", markers[i]
        )
        assert plog.log(record)
    plog.close()
    assert plog.dropped == 0
    assert plog.written == n
    messages = read_topic(kafka.bootstrap, topics.output, lambda ms: len(log_records(ms)) >= n)
    records = log_records(messages)  # JSON lines, a batch of records a message
    assert len(records) == n
    assert len(messages) < n / 10
    blob = b"\n".join(m.value for m in messages)
    assert b"MARKER-" not in blob  # not one marker in the clear, in any field
    first = records[0]
    assert first["inputs"]["plan"] == "pro"
    assert set(first["inputs"]) == {"email", "plan"}
    assert [r["request_id"] for r in records] == [f"req-{i}" for i in range(n)]  # one partition: in order
