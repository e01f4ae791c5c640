"""CPU cost of producing prediction-log records to Kafka (a real broker on 127.0.0.1, started here):
one produce() a record with a delivery report (the sink before 2026-12-05), one a record without
reports, and one message per batch of 500 records (predlog.KafkaSink since). 90,000 records of 399
bytes paced at 15,000 a second, linger.ms 20 (the sink's settings); CPU of the producing thread and of
the whole process (librdkafka's threads included), per record.

    .venv/bin/python bench/serving/predlog_produce_cost.py
"""

import os
import sys
import tempfile
import time
from pathlib import Path

import orjson
from confluent_kafka import KafkaError, Message, Producer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "support"))
from kafka_broker import create_topic, kafka_broker

REC = orjson.dumps(
    {
        "request_id": "host-1234-123456",
        "time": 1796197284.991234,
        "deployment": "churn",
        "variant": "",
        "revision": "",
        "model_version": "v1",
        "inputs": {
            "at_mentions": ["hmac:0123456789abcdef0123456789abcdef"],
            "issues_viewed": ["hmac:0123456789abcdef0123456789abcdef"],
            "number_of_issues": [35.0],
            "number_of_projects": [2.0],
        },
        "outputs": {"probabilities": [[0.8123, 0.1877]], "label": [0]},
        "latency_ms": 1.23456,
        "status": "200",
    }
)
print(len(REC), "bytes a record")


def tasks_cpu() -> float:
    tot = 0
    for t in Path("/proc/self/task").iterdir():
        f = (t / "stat").read_text().rsplit(")", 1)[1].split()
        tot += int(f[11]) + int(f[12])
    return tot / os.sysconf("SC_CLK_TCK")


def run(bootstrap: str, variant: str, n: int = 90_000, rate: int = 15_000, chunk: int = 500) -> None:
    conf: dict[str, str | bool] = {
        "bootstrap.servers": bootstrap,
        "linger.ms": "20",
        "queue.buffering.max.messages": "100000",
    }
    if variant == "noreport":
        conf["delivery.report.only.error"] = True
    p = Producer(conf)
    delivered = [0]

    def report(err: KafkaError | None, msg: Message) -> None:
        if err is None:
            delivered[0] += 1

    p.produce("warm", b"x", on_delivery=report)
    p.flush(10)
    recs = [REC] * chunk
    main_cpu = 0.0
    c0 = tasks_cpu()
    t0 = time.monotonic()
    for i in range(n // chunk):
        target = t0 + i * chunk / rate
        d = target - time.monotonic()
        if d > 0:
            time.sleep(d)
        a = time.thread_time()
        if variant == "batch":
            p.produce("t", b"\n".join(recs), on_delivery=report)
        elif variant == "noreport":
            for r in recs:
                p.produce("t", r)
        else:
            for r in recs:
                p.produce("t", r, on_delivery=report)
        p.poll(0)
        main_cpu += time.thread_time() - a
    a = time.thread_time()
    p.flush(30)
    main_cpu += time.thread_time() - a
    c1 = tasks_cpu()
    print(
        f"{variant:9s} main thread {main_cpu / n * 1e6:5.2f} us/rec  "
        f"whole process {(c1 - c0) / n * 1e6:5.2f} us/rec  (delivered msgs {delivered[0]})",
        flush=True,
    )


with kafka_broker(Path(tempfile.mkdtemp(prefix="kafka-"))) as broker:
    create_topic(broker.bootstrap, "t", 1)
    create_topic(broker.bootstrap, "warm", 1)
    for _round in range(1):
        for v in ["record", "noreport", "batch"]:
            run(broker.bootstrap, v)
