"""Harness for stream inference tests and benchmarks: a churn bundle, `modeldeploy stream` processes,
and producing / reading topics of the real broker (kafka_broker.py). Everything on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from churn_example import load_churn
from kafka_broker import create_topic
from local_processes import free_port

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def build_churn_bundle(root: Path, rows: int = 4000, trees: int = 40, seed: int = 11) -> Path:
    """One churn bundle (XGBoost + its checked ONNX export), as `modeldeploy pack` makes it."""
    churn = load_churn()
    from modeldeploy_serving.pack import pack

    x, y = churn.generate(rows, seed)
    cut = int(rows * 0.8)
    artifacts = root / "artifacts"
    churn.train_and_export(x[:cut], y[:cut], artifacts, trees, seed)
    churn.write_csv(artifacts / "train.csv", x[:cut], y[:cut])
    churn.write_csv(artifacts / "validation.csv", x[cut:], y[cut:])
    result = pack(
        model=artifacts / "model.ubj",
        onnx=artifacts / "model.onnx",
        train_data=artifacts / "train.csv",
        validation_data=artifacts / "validation.csv",
        label=churn.LABEL,
        name="churn",
        version="v1",
        out=root / "bundle",
    )
    return Path(result.out)


def feature_records(n: int, seed: int = 5) -> tuple[np.ndarray, list[bytes]]:
    """n churn rows (NaN = missing) and their JSON feature records (missing as null): the bytes of
    json.dumps of a {name: value} dict, from one format string per record (3x faster: 5.6 against 17
    µs per record, 2026-12-04; the pod-kill test makes 1,000,000 of them)."""
    churn = load_churn()
    x = churn.generate(n, seed)[0]
    template = "{" + ", ".join(f"{json.dumps(name)}: %r" for name in churn.FEATURES) + "}"
    # %r of a float is json.dumps' spelling; a NaN's is "nan", a missing value's null in JSON.
    values = [(template % tuple(row)).replace(": nan", ": null").encode() for row in x.tolist()]
    return x, values


@dataclass
class Topics:
    input: str
    output: str
    dead_letter: str
    group: str

    @classmethod
    def create(cls, bootstrap: str, partitions: int = 1, prefix: str = "t") -> Topics:
        tag = f"{prefix}-{uuid.uuid4().hex[:8]}"
        topics = cls(f"{tag}-in", f"{tag}-out", f"{tag}-in.dlq", f"{tag}-group")
        for name in (topics.input, topics.output, topics.dead_letter):
            create_topic(bootstrap, name, partitions)
        return topics


def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes | None],
    keys: Iterable[bytes | None] | None = None,
    headers: Iterable[list[tuple[str, bytes]] | None] | None = None,
) -> int:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    keys_it = iter(keys) if keys is not None else None
    headers_it = iter(headers) if headers is not None else None
    n = 0
    for value in values:
        key = next(keys_it) if keys_it is not None else b"%d" % n
        hdrs = next(headers_it) if headers_it is not None else None
        while True:
            try:
                p.produce(topic, value, key, headers=None if hdrs is None else list(hdrs))
                break
            except BufferError:
                p.poll(0.01)
        n += 1
        if n % 1000 == 0:
            p.poll(0)
    remaining = p.flush(60)
    assert remaining == 0, f"{remaining} records not delivered"
    return n


@dataclass
class Record:
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    partition: int
    offset: int
    timestamp: int = 0  # milliseconds (the producer's create time)

    def json(self) -> Any:
        return json.loads(self.value)


def read_topic(
    bootstrap: str,
    topic: str,
    until: Callable[[list[Record]], bool],
    timeout: float = 120.0,
) -> list[Record]:
    """Every record of a topic from the start, read until `until(records)` holds (bounded in time)."""
    from confluent_kafka import Consumer

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    try:
        while not until(records):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: condition not met after {timeout}s ({len(records)} records)")
            for m in c.consume(5000, 0.5):
                if m.error():
                    continue
                pairs, partition, offset = m.headers() or [], m.partition(), m.offset()
                # a consumed record has a partition and an offset, and its headers as a list of
                # pairs (the dict form is only for producing)
                assert isinstance(pairs, list)
                assert partition is not None
                assert offset is not None
                headers = {k: v for k, v in pairs if isinstance(v, bytes)}
                records.append(
                    Record(m.key(), m.value() or b"", headers, partition, offset, m.timestamp()[1])
                )
    finally:
        c.close()
    return records


def log_records(messages: list[Record]) -> list[dict[str, Any]]:
    """The prediction-log records of a log topic's messages: each message holds JSON lines
    (`content-type: application/jsonl`, `modeldeploy-records` of them: predlog.KafkaSink)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        assert m.headers.get("content-type") == b"application/jsonl", m.headers
        lines = m.value.splitlines()
        assert len(lines) == int(m.headers["modeldeploy-records"])
        out += [json.loads(line) for line in lines]
    return out


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


@dataclass
class StreamProcess:
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    args: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return parse_metrics(httpx.get(f"{self.url}/metrics", timeout=10).text)

    def metric(self, pattern: str) -> float:
        """Sum of the samples whose name and labels match the regular expression."""
        return sum(v for k, v in self.metrics().items() if re.fullmatch(pattern, k))

    def wait_ready(self, timeout: float = 240) -> None:
        """A bound for a broken setup: a stream process took over 60 s to load its model at load 20-26
        on this 2-core machine (2026-12-02), failing tests that had nothing wrong."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"stream exited {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"stream not ready after {timeout}s:\n{self.log.read_text()}")

    def wait_for(self, condition: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"stream exited {self.process.returncode}:\n{self.log.read_text()}")
            time.sleep(0.1)
        raise AssertionError(f"{what} not met after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no drain, no commit."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


@contextmanager
def stream_process(
    bootstrap: str,
    bundle: Path,
    topics: Topics,
    log: Path,
    revision: str = "r1",
    env: dict[str, str] | None = None,
) -> Iterator[StreamProcess]:
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "MODELDEPLOY_"))}
    args = [
        str(VENV_BIN / "python"),
        "-m",
        "modeldeploy_serving.cli",
        "stream",
        "--model-uri",
        str(bundle),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--bootstrap-servers",
        bootstrap,
        "--input-topic",
        topics.input,
        "--output-topic",
        topics.output,
        "--dead-letter-topic",
        topics.dead_letter,
        "--group",
        topics.group,
        "--revision",
        revision,
    ]
    with log.open("ab") as out:
        proc = subprocess.Popen(args, env={**base, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
    sp = StreamProcess(proc, f"http://127.0.0.1:{port}", log, args)
    try:
        yield sp
    finally:
        sp.stop()
