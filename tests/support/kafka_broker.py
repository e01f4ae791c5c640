"""A real Apache Kafka broker for tests: Kafka 4.x in KRaft mode (one process, broker and controller),
from its Maven Central jars (tests/kafka/fetch-kafka.sh, cached under $MODELDEPLOY_CACHE/kafka), on
the machine's Java 17, listening on 127.0.0.1 only, with its log dir in a temporary folder.

    with kafka_broker(tmp_path) as broker:
        broker.bootstrap  # "127.0.0.1:PORT"
        broker.stop(); broker.start()  # gone and back: same port, same log dir

The `kafka` session fixture (tests/integration/stream/conftest.py) starts one for a whole session.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from local_processes import free_port

REPO = Path(__file__).resolve().parents[2]
FETCH = REPO / "tests" / "kafka" / "fetch-kafka.sh"
KAFKA_VERSION = os.environ.get("KAFKA_VERSION", "4.1.1")
HEAP = os.environ.get("MODELDEPLOY_KAFKA_HEAP", "-Xmx512m")

LOG4J2 = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      target: SYSTEM_OUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
"""


class BrokerUnavailableError(RuntimeError):
    pass


@dataclass
class Broker:
    bootstrap: str
    process: subprocess.Popen[bytes]
    log: Path
    start_seconds: float  # format + start until the broker accepted a metadata request
    command: list[str] = field(default_factory=list)
    folder: Path | None = None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """The broker gone (SIGTERM, a clean shutdown; SIGKILL after 15 s); its log dir stays."""
        _stop(self.process)

    def start(self, timeout: float = 90.0) -> None:
        """The same broker back on the same port and log dir (topics, records, committed offsets)."""
        assert self.folder is not None
        assert self.process.poll() is not None, "stop() it first"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, cwd=self.folder
            )
        _wait_ready(self.process, self.bootstrap, self.log, timeout)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], bootstrap: str, log: Path, timeout: float) -> None:
    host, port = bootstrap.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while not (_answers(int(port), host) and _broker_ready(bootstrap)):
        if proc.poll() is not None:
            tail = log.read_text()[-4000:]
            raise BrokerUnavailableError(f"the broker exited ({proc.returncode}):\n{tail}")
        if time.monotonic() > deadline:
            tail = log.read_text()[-4000:]
            raise BrokerUnavailableError(f"the broker was not up after {timeout}s:\n{tail}")
        time.sleep(0.2)


def kafka_libs() -> Path:
    """The broker's jar folder, fetched on first use (idempotent, cached)."""
    if shutil.which("java") is None or shutil.which("mvn") is None:
        raise BrokerUnavailableError("java and mvn are needed for the Kafka broker (make system-deps)")
    out = subprocess.run(
        [str(FETCH)],
        env={**os.environ, "KAFKA_VERSION": KAFKA_VERSION},
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if out.returncode != 0:
        raise BrokerUnavailableError(f"fetching Kafka {KAFKA_VERSION} failed: {out.stderr[-2000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def cluster_id() -> str:
    """A KRaft cluster id, as Kafka's Uuid.randomUuid makes them: never starting with "-", which
    kafka-storage's argument parser takes for an option ("argument --cluster-id/-t: expected one
    argument": one start in 64, every Kafka test of a CI run in error, 2026-12-03)."""
    while True:
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not found.startswith("-"):
            return found


def _properties(folder: Path, port: int, controller_port: int, host: str = "127.0.0.1") -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://{host}:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={folder / 'data'}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "num.network.threads=2",
            "num.io.threads=2",
            "log.flush.interval.messages=9223372036854775807",
            "",
        ]
    )


def _java(libs: Path, main: str, *args: str, heap: str = HEAP, log4j: Path | None = None) -> list[str]:
    cmd = ["java", heap, "-Xms64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
    if log4j is not None:
        cmd.append(f"-Dlog4j2.configurationFile={log4j}")
    return [*cmd, "-cp", f"{libs}/*", main, *args]


def _answers(port: int, host: str = "127.0.0.1") -> bool:
    """Whether the broker's listener accepts a connection (cheap readiness precheck)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _broker_ready(bootstrap: str) -> bool:
    """Whether the broker answers a metadata request with itself as an unfenced broker."""
    from confluent_kafka.admin import AdminClient

    try:
        meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=2)
    except Exception:
        return False
    return bool(meta.brokers)


@contextmanager
def kafka_broker(folder: Path, timeout: float = 90.0, host: str = "127.0.0.1") -> Iterator[Broker]:
    """Format a fresh KRaft log dir under `folder`, start the broker, yield it, stop it (SIGTERM,
    then SIGKILL after 15 s) and leave its log at folder/broker.log.

    `host`: the address clients use (listener and advertised listener); the cluster tests pass the
    pod network's host address (10.244.0.1) so that pods reach the broker beside the cluster. The
    controller listener stays on 127.0.0.1."""
    libs = kafka_libs()
    folder.mkdir(parents=True, exist_ok=True)
    port, controller_port = _free_port_on(host), free_port()
    props = folder / "server.properties"
    props.write_text(_properties(folder, port, controller_port, host))
    log4j = folder / "log4j2.yaml"
    log4j.write_text(LOG4J2)
    log = folder / "broker.log"
    start = time.monotonic()
    fmt = subprocess.run(
        _java(
            libs, "kafka.tools.StorageTool", "format", "-t", cluster_id(), "-c", str(props), heap="-Xmx256m"
        ),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if fmt.returncode != 0:
        raise BrokerUnavailableError(f"formatting the KRaft log dir failed: {fmt.stdout}{fmt.stderr}")
    command = _java(libs, "kafka.Kafka", str(props), log4j=log4j)
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=folder)
    bootstrap = f"{host}:{port}"
    broker = Broker(bootstrap, proc, log, 0.0, command, folder)
    try:
        _wait_ready(proc, bootstrap, log, timeout)
        broker.start_seconds = time.monotonic() - start
        yield broker
    finally:
        _stop(broker.process)  # the one running now (a test may have restarted it)


def _free_port_on(host: str) -> int:
    if host == "127.0.0.1":
        return free_port()
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def create_topic(bootstrap: str, name: str, partitions: int = 1, timeout: float = 30.0) -> None:
    """Create a topic and wait until its metadata shows every partition with a leader."""
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic  # confluent_kafka.admin's re-export is not marked public

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=timeout)
    futures[name].result(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topic = admin.list_topics(name, timeout=5).topics.get(name)
        if (
            topic is not None
            and topic.error is None
            and len(topic.partitions) == partitions
            and all(p.leader >= 0 for p in topic.partitions.values())
        ):
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {name} has no leaders after {timeout}s")
