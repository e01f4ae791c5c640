"""Stream inference benchmark: records/s of `modeldeploy stream` end to end (consume, predict, produce,
commit) for the churn model, against a ceiling measured in the same run: the same client
(confluent-kafka) consuming the same records and producing them to an output topic, without a model.

    .venv/bin/python bench/stream/run_bench.py [--records 200000] [--processes 1 2] [--out FILE]

Starts the test broker (Kafka 4.x, KRaft, 127.0.0.1; tests/support/kafka_broker.py), builds the
churn bundle (tests/support/stream_harness.py), fills an input topic with N churn feature records
(one partition per process), then drains it. Throughput is (N - 1) / (last - first) output record
timestamp (set by the producer), so process start-up and model loading are not counted, for both the
stream and the ceiling. Prints one JSON line per measurement and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "support"))

from kafka_broker import kafka_broker  # noqa: E402
from stream_harness import (  # noqa: E402
    Record,
    Topics,
    build_churn_bundle,
    feature_records,
    produce,
    read_topic,
    stream_process,
)


def output_rate(records: list[Record], n: int) -> tuple[float, float]:
    """Records/s and seconds between the first and the last output's timestamp."""
    stamps = sorted(r.timestamp for r in records)
    seconds = (stamps[-1] - stamps[0]) / 1000.0
    return (n - 1) / seconds, seconds


def ceiling(bootstrap: str, topics: Topics, n: int, batch: int = 2000) -> None:
    """The client alone: consume, produce each record unchanged, commit after delivery (no model)."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": topics.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True, "acks": "all"})
    c.subscribe([topics.input])
    seen = 0
    pending: list[dict[tuple[str, int], int]] = []
    while seen < n:
        msgs = c.consume(batch, 0.02)
        offsets: dict[tuple[str, int], int] = {}
        for m in msgs:
            if m.error():
                continue
            while True:
                try:
                    p.produce(topics.output, m.value(), m.key())
                    break
                except BufferError:
                    p.poll(0.001)
            offsets[(m.topic(), m.partition())] = m.offset() + 1
            seen += 1
        p.poll(0)
        if offsets:
            pending.append(offsets)
        if len(pending) >= 4:  # the same bound on unacknowledged batches as the stream's default
            p.flush(60)
            merged: dict[tuple[str, int], int] = {}
            for o in pending:
                merged.update(o)
            c.commit(offsets=[TopicPartition(t, q, o) for (t, q), o in merged.items()], asynchronous=True)
            pending = []
    p.flush(60)
    c.close()


def measure_ceiling(bootstrap: str, values: list[bytes], processes: int) -> list[dict[str, Any]]:
    n = len(values)
    rows = []
    topics = Topics.create(bootstrap, partitions=processes, prefix=f"ceil{processes}")
    produce(bootstrap, topics.input, values)
    ceiling(bootstrap, topics, n)
    out = read_topic(bootstrap, topics.output, lambda rs: len(rs) >= n, timeout=600)
    rate, seconds = output_rate(out, n)
    rows.append({"what": "ceiling (client, no model)", "processes": 1, "partitions": processes,
                 "loadavg_1m": os.getloadavg()[0],
                 "records": n, "seconds": round(seconds, 2), "records_per_s": round(rate)})  # fmt: skip
    print(json.dumps(rows[-1]), flush=True)
    return rows


def run_case(
    bootstrap: str,
    bundle: Path,
    values: list[bytes],
    processes: int,
    work: Path,
    env: dict[str, str],
    skip_ceiling: bool = False,
) -> list[dict[str, Any]]:
    n = len(values)
    rows = []
    # ceiling: the same client, same records, same partitions, no model (one process)
    if not skip_ceiling:
        rows += measure_ceiling(bootstrap, values, processes)
    # modeldeploy stream: `processes` processes in one group
    topics = Topics.create(bootstrap, partitions=processes, prefix=f"stream{processes}")
    produce(bootstrap, topics.input, values)
    with ExitStack() as stack:
        procs = [
            stack.enter_context(
                stream_process(
                    bootstrap,
                    bundle,
                    topics,
                    work / f"stream-{processes}-{i}.log",
                    env={**env, "MODELDEPLOY_STREAM_GROUP_INSTANCE_ID": f"bench-{i}"},
                )
            )
            for i in range(processes)
        ]
        for proc in procs:
            proc.wait_ready()
        out = read_topic(bootstrap, topics.output, lambda rs: len(rs) >= n, timeout=900)
    rate, seconds = output_rate(out, n)
    rows.append({"what": "modeldeploy stream (churn model)", "processes": processes, "partitions": processes,
                 "loadavg_1m": os.getloadavg()[0],
                 "records": n, "seconds": round(seconds, 2), "records_per_s": round(rate),
                 "duplicates": len(out) - n})  # fmt: skip
    print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    ap.add_argument("--env", nargs="*", default=[], help="NAME=VALUE settings for the stream processes")
    ap.add_argument(
        "--trees", type=int, default=200, help="boosting rounds of the churn model (example: 200)"
    )
    ap.add_argument("--rounds", type=int, default=1, help="repeat ceiling + stream this many times")
    ap.add_argument("--skip-ceiling", action="store_true", help="measure the stream only")
    args = ap.parse_args()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="stream-bench-") as tmp:
        work = Path(tmp)
        with kafka_broker(work / "kafka") as broker:
            print(f"# broker up in {broker.start_seconds:.1f}s; {os.cpu_count()} cores", flush=True)
            start = time.monotonic()
            bundle = build_churn_bundle(work / "churn", rows=20_000, trees=args.trees, seed=7)
            print(f"# churn bundle built in {time.monotonic() - start:.1f}s", flush=True)
            _, values = feature_records(args.records, seed=uuid.uuid4().int % 1000)
            env = dict(kv.split("=", 1) for kv in args.env)
            for round_ in range(args.rounds):
                for processes in args.processes:
                    rows = run_case(broker.bootstrap, bundle, values, processes, work, env, args.skip_ceiling)
                    for r in rows:
                        r["round"] = round_ + 1
                    results += rows
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    print("\n| round | measurement | processes | partitions | load (1 min) | records/s | share of ceiling |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    ceil: dict[int, int] = {}
    for r in results:
        if r["what"].startswith("ceiling"):
            ceil[r["partitions"]] = r["records_per_s"]
        share = (
            f"{r['records_per_s'] / ceil[r['partitions']]:.0%}"
            if r["partitions"] in ceil and not r["what"].startswith("ceiling")
            else ""
        )
        print(
            f"| {r['round']} | {r['what']} | {r['processes']} | {r['partitions']} | {r['loadavg_1m']:.1f} "
            f"| {r['records_per_s']:,} | {share} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
