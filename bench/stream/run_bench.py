"""Stream inference benchmark: records/s of `modeldeploy stream` end to end (consume, predict, produce,
commit) for the churn model, against a ceiling measured in the same run: the same client
(confluent-kafka) consuming the same records and producing them to an output topic, without a model.

    .venv/bin/python bench/stream/run_bench.py [--records 200000] [--processes 1 2] [--rounds 3]
        [--warmup-records N] [--out FILE]

Starts the test broker (Kafka 4.x, KRaft, 127.0.0.1; tests/support/kafka_broker.py), builds the
churn bundle (tests/support/stream_harness.py), fills an input topic with N churn feature records
(one partition per process), then drains it. Throughput is (N - 1) / (last - first) output record
timestamp (set by the producer), so process start-up and model loading are not counted, for both the
stream and the ceiling. Prints one JSON line per measurement and a Markdown table.

The two are measured alike: the input topic is filled before the drain starts (neither waits on a
producer), and the bench only watches the output topic's end offsets while a drain runs, reading the
outputs once it is over (see wait_for_outputs). Before the first round, one ceiling and one stream
pass (1 process, --warmup-records) warm the broker up; they are reported as round 0, not counted.
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process so far (Linux /proc), or NaN when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_outputs(bootstrap: str, topic: str, n: int, timeout: float) -> int:
    """Wait until the topic's partitions' end offsets add up to n or more, then return that sum (the
    outputs stored, duplicates included: the producers are idempotent, not transactional, so an end
    offset is a record count).

    Why not read the outputs meanwhile: until 2026-12-06 the stream's outputs were read by a consumer
    in this process *while* the stream ran, but the ceiling's only after it had run, so only the
    stream shared the 2 cores with a reader building 200,000 Record objects in Python (and with the
    broker serving its fetches), during stream phases of 2.1-4.3 s
    (2026-12-05-merged-quiet-3rounds.json). Watching the end offsets costs one offsets request per
    partition every 0.2 s."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"watch-{uuid.uuid4().hex[:8]}"})
    try:
        partitions = list(c.list_topics(topic, timeout=30).topics[topic].partitions)
        deadline = time.monotonic() + timeout
        while True:
            total = sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)
            if total >= n:
                return total
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: {total} of {n} outputs after {timeout}s")
            time.sleep(0.2)
    finally:
        c.close()


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
        # Any: the stub types every Message's topic, partition and offset Optional; a consumed one
        # without error() has all three (as tests/support/stream_tally.py reads them)
        msgs: list[Any] = c.consume(batch, 0.02)
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


def measure_ceiling(
    bootstrap: str, broker_pid: int, values: list[bytes], processes: int
) -> list[dict[str, Any]]:
    n = len(values)
    rows = []
    topics = Topics.create(bootstrap, partitions=processes, prefix=f"ceil{processes}")
    produce(bootstrap, topics.input, values)
    broker_cpu = cpu_seconds(broker_pid)
    ceiling(bootstrap, topics, n)
    stored = wait_for_outputs(bootstrap, topics.output, n, timeout=600)
    broker_cpu = cpu_seconds(broker_pid) - broker_cpu
    out = read_topic(bootstrap, topics.output, lambda rs: len(rs) >= stored, timeout=600)
    rate, seconds = output_rate(out, n)
    rows.append({"what": "ceiling (client, no model)", "processes": 1, "partitions": processes,
                 "loadavg_1m": os.getloadavg()[0],
                 "records": n, "seconds": round(seconds, 2), "records_per_s": round(rate),
                 "broker_cpu_s": round(broker_cpu, 2)})  # fmt: skip
    print(json.dumps(rows[-1]), flush=True)
    return rows


def run_case(
    bootstrap: str,
    broker_pid: int,
    bundle: Path,
    values: list[bytes],
    processes: int,
    work: Path,
    env: dict[str, str],
    skip_ceiling: bool = False,
    readers: tuple[bool, ...] = (False,),
) -> list[dict[str, Any]]:
    """The ceiling, then the stream once per item of `readers` (True: the outputs read while it runs)."""
    rows = []
    # ceiling: the same client, same records, same partitions, no model (one process)
    if not skip_ceiling:
        rows += measure_ceiling(bootstrap, broker_pid, values, processes)
    for concurrent_reader in readers:
        rows += measure_stream(bootstrap, broker_pid, bundle, values, processes, work, env, concurrent_reader)
    return rows


def measure_stream(
    bootstrap: str,
    broker_pid: int,
    bundle: Path,
    values: list[bytes],
    processes: int,
    work: Path,
    env: dict[str, str],
    concurrent_reader: bool,
) -> list[dict[str, Any]]:
    """modeldeploy stream: `processes` processes in one group, draining a filled input topic."""
    n = len(values)
    rows = []
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
        # CPU of each stream process from its ready (model loaded: it consumes from then on) and of
        # the broker from the first one's, to the last output stored (wait_for_outputs' 0.2 s polls
        # included)
        stream_cpu: list[float] = []
        broker_cpu = 0.0
        for proc in procs:
            proc.wait_ready()
            stream_cpu.append(cpu_seconds(proc.process.pid))
            broker_cpu = broker_cpu or cpu_seconds(broker_pid)
        if concurrent_reader:  # the method before 2026-12-06 (wait_for_outputs says why not)
            out = read_topic(bootstrap, topics.output, lambda rs: len(rs) >= n, timeout=900)
            stored = len(out)
        else:
            stored = wait_for_outputs(bootstrap, topics.output, n, timeout=900)
        stream_cpu = [cpu_seconds(proc.process.pid) - c for proc, c in zip(procs, stream_cpu, strict=True)]
        broker_cpu = cpu_seconds(broker_pid) - broker_cpu
    if not concurrent_reader:
        out = read_topic(bootstrap, topics.output, lambda rs: len(rs) >= stored, timeout=900)
    rate, seconds = output_rate(out, n)
    rows.append({"what": "modeldeploy stream (churn model)", "processes": processes, "partitions": processes,
                 "loadavg_1m": os.getloadavg()[0],
                 "records": n, "seconds": round(seconds, 2), "records_per_s": round(rate),
                 "duplicates": len(out) - n, "broker_cpu_s": round(broker_cpu, 2),
                 "stream_cpu_s": round(sum(stream_cpu), 2),
                 "concurrent_reader": concurrent_reader})  # fmt: skip
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
    ap.add_argument(
        "--warmup-records",
        type=int,
        default=None,
        help="records of the uncounted warm-up pass (ceiling and stream, 1 process) before round 1; "
        "default: --records; 0: none",
    )
    ap.add_argument(
        "--reader",
        choices=["after", "concurrent", "both"],
        default="after",
        help="read the stream's outputs after it ran (default), while it runs (the method before "
        "2026-12-06), or both: two stream measurements a round, in alternating order",
    )
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
            pid = broker.process.pid
            warmup = args.records if args.warmup_records is None else args.warmup_records
            # Round 0, not counted: the broker's JVM is fresh (interpreted code, an empty page cache,
            # the offsets topic being created: "Coordinator load in progress" at the first commit).
            # Before 2026-12-06 round 1 was the slowest of 3 for the stream in every process count and
            # for the ceiling in 2 of 3 (2026-12-05-merged-quiet-3rounds.json: one process
            # 55,172 / 61,050 / 94,741 records/s, its ceiling 123,001 / 123,228 / 153,256).
            modes = {"after": (False,), "concurrent": (True,), "both": (False, True)}[args.reader]
            if warmup:
                rows = run_case(broker.bootstrap, pid, bundle, values[:warmup], 1, work, env, False, modes)
                results += [{**r, "round": 0, "warmup": True} for r in rows]
            for round_ in range(args.rounds):
                for processes in args.processes:
                    rows = run_case(
                        broker.bootstrap,
                        pid,
                        bundle,
                        values,
                        processes,
                        work,
                        env,
                        args.skip_ceiling,
                        modes if round_ % 2 == 0 else modes[::-1],
                    )
                    for r in rows:
                        r["round"] = round_ + 1
                    results += rows
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    print(
        "\n| round | measurement | processes | partitions | load (1 min) | records/s | share of ceiling "
        "| broker CPU, s | stream CPU, s |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    ceil: dict[int, int] = {}
    for r in results:
        if r["what"].startswith("ceiling"):
            ceil[r["partitions"]] = r["records_per_s"]
        share = (
            f"{r['records_per_s'] / ceil[r['partitions']]:.0%}"
            if r["partitions"] in ceil and not r["what"].startswith("ceiling")
            else ""
        )
        round_label = "0 (warm-up)" if r.get("warmup") else r["round"]
        what = r["what"] + (" [reader while running]" if r.get("concurrent_reader") else "")
        cpu = f"{r.get('broker_cpu_s', '')} | {r.get('stream_cpu_s', '')}"
        print(
            f"| {round_label} | {what} | {r['processes']} | {r['partitions']} | {r['loadavg_1m']:.1f} "
            f"| {r['records_per_s']:,} | {share} | {cpu} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
