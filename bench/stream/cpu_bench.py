"""CPU time per record of the stream's per-batch Python, in process, no broker and no model: the
event loop's share of a batch (StreamRunner._parse, assemble, OutputEncoder.encode, the produce
loop) for churn feature records of about 340 bytes, this checkout against a baseline git revision,
interleaved in the same run.

    .venv/bin/python bench/stream/cpu_bench.py [--baseline main] [--batch 2000] [--rounds 7] [--decoders]

The baseline's records.py and runner.py are read with `git show REV:...` into a throwaway package,
so both versions run on the same interpreter, the same messages and the same producer. Messages are
real confluent_kafka Message objects; the producer is a real Producer whose bootstrap server
(127.0.0.1:9) never answers, so produce() only queues (its queue is purged after each batch); the
model is replaced by fixed outputs of the churn model's shape (label, probabilities); xgboost and
onnxruntime are imported and gc.freeze() called, as in a stream process after loading. Reported: the
median over rounds of the calling thread's CPU time (time.thread_time: the event loop's thread, the
bottleneck; librdkafka's threads not counted) per record, per stage and in total.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "support"))

from churn_example import load_churn  # noqa: E402
from stream_harness import feature_records  # noqa: E402

SOURCES = (
    "serving/src/modeldeploy_serving/stream/records.py",
    "serving/src/modeldeploy_serving/stream/runner.py",
)


def baseline(rev: str, root: Path) -> tuple[ModuleType, ModuleType]:
    """The records and runner modules of `rev`, imported as bench_baseline.records / .runner."""
    pkg = root / "bench_baseline"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for src in SOURCES:
        text = subprocess.run(
            ["git", "show", f"{rev}:{src}"], cwd=REPO, check=True, capture_output=True, text=True
        )
        body = text.stdout.replace("modeldeploy_serving.stream.records", "bench_baseline.records")
        (pkg / Path(src).name).write_text(body)
    sys.path.insert(0, str(root))
    from bench_baseline import records, runner

    return records, runner


def current() -> tuple[ModuleType, ModuleType]:
    from modeldeploy_serving.stream import records, runner

    return records, runner


class Version:
    def __init__(self, name: str, records: ModuleType, runner: ModuleType, features: list[str]) -> None:
        from confluent_kafka import Producer

        from modeldeploy_contract.stream_settings import StreamSettings

        self.name = name
        self.records = records
        self.runner_module = runner
        settings = StreamSettings(
            bootstrap_servers="127.0.0.1:9", input_topic="in", output_topic="out", group_id="g"
        )
        dataplane = SimpleNamespace(metrics=SimpleNamespace(model="churn", version="v1"))
        self.runner = runner.StreamRunner(settings, dataplane)
        self.runner.producer = Producer(
            {
                "bootstrap.servers": "127.0.0.1:9",
                "queue.buffering.max.messages": "1000000",
                "linger.ms": "1000",
                "log_level": 0,
            }
        )
        self.parser = records.RecordParser(features, ["label", "probabilities"], 1 << 20, 1000)
        self.encoder = records.OutputEncoder("churn", "v1", "r1")
        self.runner._loop = asyncio.new_event_loop()

    def batch(self, messages: list[Any], outputs: dict[str, np.ndarray]) -> dict[str, float]:
        """One batch through the loop's stages; CPU seconds per stage."""
        r = self.runner
        b = self.records_batch(messages)
        clock = time.thread_time  # the event loop's thread: librdkafka's own threads are not counted
        t0 = clock()
        good, parsed, ids, bad, *matrix = r._parse(b, self.parser)
        t1 = clock()
        x = matrix[0] if matrix and matrix[0] is not None else self.records.assemble(parsed)
        t2 = clock()
        values = self.encoder.encode(parsed, ids, outputs)
        t3 = clock()
        self.produce(b, good, values, ids)
        t4 = clock()
        r.producer.purge(in_queue=True, in_flight=True)
        r.producer.poll(0)
        assert x.shape[0] == len(messages)
        assert not bad
        return {
            "parse": t1 - t0,
            "assemble": t2 - t1,
            "encode": t3 - t2,
            "produce": t4 - t3,
            "total": t4 - t0,
        }

    def records_batch(self, messages: list[Any]) -> Any:
        assert self.runner._loop is not None
        return self.runner_module.Batch(messages, self.runner._loop)

    def produce(self, batch: Any, good: list[Any], values: list[bytes], ids: list[str]) -> None:
        r = self.runner
        produce_all = getattr(r, "_produce_outputs", None)
        report = r._delivered(batch)
        if produce_all is not None:
            produce_all(good, values, ids, report)
            return
        for m, value, rid in zip(good, values, ids, strict=True):
            r._produce("out", value, m.key(), [("request-id", rid.encode())], report)


def decoders(features: list[str], values: list[bytes], rounds: int) -> None:
    """Values -> float32 matrix, CPU µs per record (median of rounds), for the decoders weighed for
    the stream: this checkout's RecordParser (per-record path + assemble(), batch path), pyarrow's
    JSON reader with an explicit float64 schema (null and NaN literal both read; a missing key and
    null both become null, which it cannot tell apart), and orjson.loads alone (the floor of any
    orjson-based path)."""
    import orjson
    import pyarrow as pa
    import pyarrow.json as pj

    from modeldeploy_serving.stream.records import RecordParser, assemble

    parser = RecordParser(features, ["label"], 1 << 20, 1000)
    schema = pa.schema([(n, pa.float64()) for n in features])
    parse_options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    read_options = pj.ReadOptions(use_threads=False, block_size=1 << 26)

    def arrow() -> Any:
        table = pj.read_json(pa.py_buffer(b"\n".join(values)), read_options, parse_options)
        return np.column_stack([c.to_numpy() for c in table.columns]).astype(np.float32)

    loads = orjson.loads
    cases: dict[str, Callable[[], Any]] = {
        "per-record path + assemble()": lambda: assemble(parser._parse_each(values)),  # type: ignore[arg-type]
        "parse_batch (batch path)": lambda: parser.parse_batch(values),  # type: ignore[arg-type]
        "pyarrow.json.read_json, 1 thread": arrow,
        "orjson.loads alone": lambda: [loads(v) for v in values],
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            t0 = time.thread_time()
            for _ in range(5):
                fn()
            times[name].append((time.thread_time() - t0) / (5 * len(values)) * 1e6)
    print("| decoder | CPU µs per record |\n| --- | ---: |")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.2f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="main", help="git revision to compare with")
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batches", type=int, default=10, help="batches per round and version")
    ap.add_argument("--decoders", action="store_true", help="also time the batch decoders that were weighed")
    args = ap.parse_args()

    from confluent_kafka import Message

    features = list(load_churn().FEATURES)
    _, values = feature_records(args.batch, seed=3)
    messages = [
        Message(topic="churn-in", partition=0, offset=i, value=v, key=str(i % 97).encode())
        for i, v in enumerate(values)
    ]
    rng = np.random.default_rng(0)
    p = rng.random(args.batch).astype(np.float32)
    outputs = {"label": (p > 0.5).astype(np.int64), "probabilities": np.stack([1 - p, p], axis=1)}
    with tempfile.TemporaryDirectory() as tmp:
        versions = [
            Version("baseline", *baseline(args.baseline, Path(tmp)), features),
            Version("this", *current(), features),
        ]
        # same outputs from both, once, before timing
        a, b = (
            v.encoder.encode(*v.runner._parse(v.records_batch(messages), v.parser)[1:3], outputs)
            for v in versions
        )
        assert a == b, "the two versions encode different output records"
        per: dict[str, dict[str, list[float]]] = {v.name: {} for v in versions}
        import onnxruntime  # noqa: F401  # the model's libraries' objects, as in a stream process
        import xgboost  # noqa: F401

        gc.collect()
        gc.freeze()  # as DataPlane does after loading the model
        for round_ in range(args.rounds):
            for v in versions[:: 1 if round_ % 2 else -1]:  # alternate the order
                sums: dict[str, float] = {}
                for _ in range(args.batches):
                    for k, s in v.batch(messages, outputs).items():
                        sums[k] = sums.get(k, 0.0) + s
                for k, s in sums.items():
                    per[v.name].setdefault(k, []).append(s / (args.batches * args.batch) * 1e6)
    if args.decoders:
        decoders(features, values, args.rounds)
    stages = list(per["this"])
    print(f"CPU µs per record (median of {args.rounds} rounds of {args.batches} batches of {args.batch}):")
    print("| version | " + " | ".join(stages) + " |")
    print("| --- | " + " | ".join("---:" for _ in stages) + " |")
    for name, st in per.items():
        print(f"| {name} | " + " | ".join(f"{statistics.median(st[k]):.2f}" for k in stages) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
