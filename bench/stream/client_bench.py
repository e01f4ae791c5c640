"""Kafka client benchmark: confluent-kafka against aiokafka, no model, same broker, same run.

    .venv/bin/python bench/stream/client_bench.py [--bootstrap HOST:PORT] [--records 200000]

Without --bootstrap it starts the test broker (tests/support/kafka_broker.py: Kafka 4.x, KRaft, on
127.0.0.1). For each client it measures, on fresh topics:
- produce: N churn-shaped JSON records (about 330 bytes) produced and acknowledged;
- pipe: the same N records consumed in a consumer group, each produced to an output topic, offsets
  committed after the outputs were acknowledged (what `modeldeploy stream` does, minus the model).
Prints one JSON line per measurement and a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "support"))

ROW = {
    "number_of_projects": 2, "number_of_issues": 35, "number_of_invites": 1, "w1_active_users": 4,
    "w1_max_active_users": 6, "issues_updated": 20, "issues_commented": 8, "issues_assigned": 17,
    "at_mentions": 5, "issues_viewed": 107, "issues_completed": 9, "mobile_usage": 6.5,
    "sprint_started": 2, "sprint_finished": 1,
}  # fmt: skip
BATCH = 2000


def payloads(n: int) -> list[bytes]:
    return [json.dumps({**ROW, "number_of_issues": i % 500}).encode() for i in range(n)]


# -- confluent-kafka ---------------------------------------------------------------------------------
def ck_produce(bootstrap: str, topic: str, records: list[bytes]) -> float:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    start = time.perf_counter()
    for i, value in enumerate(records):
        while True:
            try:
                p.produce(topic, value, key=b"%d" % i)
                break
            except BufferError:
                p.poll(0.01)
        if i % 1000 == 0:
            p.poll(0)
    p.flush(60)
    return time.perf_counter() - start


def ck_pipe(bootstrap: str, src: str, dst: str, n: int) -> float:
    from confluent_kafka import Consumer, Producer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    c.subscribe([src])
    seen = 0
    start = None
    while seen < n:
        # Any: the stub types every Message's partition and offset Optional; a consumed one without
        # error() has both (as tests/support/stream_tally.py reads them)
        msgs: list[Any] = c.consume(BATCH, 1.0)
        if not msgs:
            continue
        if start is None:
            start = time.perf_counter()
        last: dict[int, int] = {}
        for m in msgs:
            if m.error():
                continue
            p.produce(dst, m.value(), key=m.key())
            last[m.partition()] = m.offset()
        seen += len(msgs)
        p.flush(60)  # outputs acknowledged...
        c.commit(offsets=[TopicPartition(src, k, v + 1) for k, v in last.items()], asynchronous=True)
    assert start is not None
    elapsed = time.perf_counter() - start
    c.close()
    return elapsed


# -- aiokafka ----------------------------------------------------------------------------------------
async def ak_produce(bootstrap: str, topic: str, records: list[bytes]) -> float:
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, enable_idempotence=True)
    await p.start()
    start = time.perf_counter()
    futures = []
    for i, value in enumerate(records):
        futures.append(await p.send(topic, value, key=b"%d" % i))
        if len(futures) >= BATCH:
            await asyncio.gather(*futures)
            futures = []
    await asyncio.gather(*futures)
    elapsed = time.perf_counter() - start
    await p.stop()
    return elapsed


async def ak_pipe(bootstrap: str, src: str, dst: str, n: int) -> float:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    c = AIOKafkaConsumer(
        src,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, enable_idempotence=True)
    await c.start()
    await p.start()
    seen = 0
    start = None
    while seen < n:
        batches = await c.getmany(timeout_ms=1000, max_records=BATCH)
        if not batches:
            continue
        if start is None:
            start = time.perf_counter()
        futures = []
        offsets: dict[Any, int] = {}
        for tp, msgs in batches.items():
            for m in msgs:
                futures.append(await p.send(dst, m.value, key=m.key))
            offsets[TopicPartition(tp.topic, tp.partition)] = msgs[-1].offset + 1
            seen += len(msgs)
        await asyncio.gather(*futures)
        await c.commit(offsets)
    assert start is not None
    elapsed = time.perf_counter() - start
    await c.stop()
    await p.stop()
    return elapsed


def run(bootstrap: str, n: int) -> list[dict[str, Any]]:
    from kafka_broker import create_topic

    records = payloads(n)
    size = sum(len(r) for r in records) / n
    results = []
    for client in ("confluent-kafka", "aiokafka"):
        src, dst = f"bench-in-{uuid.uuid4().hex[:8]}", f"bench-out-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, src)
        create_topic(bootstrap, dst)
        if client == "confluent-kafka":
            produce = ck_produce(bootstrap, src, records)
            pipe = ck_pipe(bootstrap, src, dst, n)
        else:
            produce = asyncio.run(ak_produce(bootstrap, src, records))
            pipe = asyncio.run(ak_pipe(bootstrap, src, dst, n))
        for what, seconds in (("produce", produce), ("consume+produce", pipe)):
            row = {"client": client, "what": what, "records": n, "record_bytes": round(size),
                   "seconds": round(seconds, 3), "records_per_s": round(n / seconds)}  # fmt: skip
            print(json.dumps(row), flush=True)
            results.append(row)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bootstrap", help="an existing broker (default: start the test broker)")
    ap.add_argument("--records", type=int, default=200_000)
    args = ap.parse_args()
    if args.bootstrap:
        results = run(args.bootstrap, args.records)
    else:
        from kafka_broker import kafka_broker

        with tempfile.TemporaryDirectory(prefix="kafka-bench-") as tmp, kafka_broker(Path(tmp)) as broker:
            print(f"# broker up in {broker.start_seconds:.1f}s at {broker.bootstrap}", flush=True)
            results = run(broker.bootstrap, args.records)
    print("\n| client | measurement | records/s |\n| --- | --- | ---: |")
    for r in results:
        print(f"| {r['client']} | {r['what']} | {r['records_per_s']:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
