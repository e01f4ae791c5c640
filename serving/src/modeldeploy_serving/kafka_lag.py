"""Consumer lag of a Kafka consumer group, as both of our consumers export it (stream mode's input
topic, the joiner's label topic): per assigned partition, the end offset minus the group's committed
offset, i.e. records the group has not finished yet.

A partition the group never committed counts from its low watermark (the oldest record still
there: what `auto.offset.reset=earliest` starts at), not from 0, so records the broker already
deleted for retention are not reported as lag forever.

Blocking broker round trips (committed offsets, watermarks): call it from the consumer's own thread,
which is the only one allowed to use the consumer.
"""

from __future__ import annotations

from typing import Any

PartitionKey = tuple[str, int]


def consumer_lag(consumer: Any, timeout: float = 2.0) -> dict[PartitionKey, int]:
    """(topic, partition) -> lag of every partition assigned to `consumer` (a confluent_kafka.Consumer);
    empty while nothing is assigned. Raises what the client raises (the broker gone: KafkaException)."""
    from confluent_kafka import TopicPartition

    assignment = consumer.assignment()
    if not assignment:
        return {}
    out: dict[PartitionKey, int] = {}
    for tp in consumer.committed(assignment, timeout=timeout):
        low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout)
        start = tp.offset if tp.offset >= 0 else low
        out[(tp.topic, tp.partition)] = max(0, high - start)
    return out
