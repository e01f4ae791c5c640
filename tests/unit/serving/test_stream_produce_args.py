"""StreamRunner._produce_outputs calls confluent-kafka's produce() with positional arguments (cheaper
than keywords): the message it queues must be the one the keyword call queues. No broker: the
producer's bootstrap address refuses connections, the queued messages are purged, and the purge's
delivery reports show what was queued: topic, partition, key, value (not the headers nor the
timestamp, which a purged message's report does not carry: the output records' request-id headers
are checked end to end in tests/integration/stream, their timestamps by bench/stream/run_bench.py,
which times outputs by them)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from modeldeploy_contract.stream_settings import StreamSettings
from modeldeploy_serving.stream.runner import StreamRunner

confluent_kafka = pytest.importorskip("confluent_kafka")


def queued(produce: Any) -> list[tuple[Any, ...]]:
    """What `produce(producer, report)` queued, read from the purge's delivery reports."""
    producer = confluent_kafka.Producer({"bootstrap.servers": "127.0.0.1:9", "log_level": 0})
    seen: list[tuple[Any, ...]] = []

    def report(err: Any, msg: Any) -> None:
        seen.append((msg.topic(), msg.partition(), msg.key(), msg.value(), err.code()))

    produce(producer, report)
    producer.purge()
    producer.poll(0)
    producer.flush(5)
    return seen


def test_positional_produce_queues_what_the_keyword_call_queues() -> None:
    settings = StreamSettings(
        bootstrap_servers="127.0.0.1:9", input_topic="in", output_topic="out", group_id="g"
    )
    messages = [
        confluent_kafka.Message(topic="in", partition=0, offset=i, value=b"x", key=k)
        for i, k in enumerate([b"k0", None, b""])
    ]
    values, ids = [b'{"a":1}', b'{"a":2}', b"{}"], ["in-0-0", "req-\u00e9", "in-0-2"]

    def positional(producer: Any, report: Any) -> None:
        runner = StreamRunner(settings, SimpleNamespace())  # type: ignore[arg-type]
        runner.producer = producer
        runner._produce_outputs(messages, values, ids, report)

    def keywords(producer: Any, report: Any) -> None:
        for m, value, rid in zip(messages, values, ids, strict=True):
            producer.produce(
                "out", value, m.key(), headers=[("request-id", rid.encode())], on_delivery=report
            )

    got, expected = queued(positional), queued(keywords)
    assert got == expected
    assert [g[2] for g in got] == [b"k0", None, b""]
