"""Stream mode end to end on the local cluster (issue 14): a real Kafka broker beside the cluster on the
pod network's host address (10.244.0.1), the chart-installed operator, and stream pods of the serving
image on the real node.

Two tests, each with a ModelDeployment with spec.stream. The first (each step needs the previous
one's state):
- records in, predictions out: every output equal to its revision's model within 1e-6;
- a bad record lands in the dead-letter topic with its reason;
- a canary (v2) shadows the stable on the shadow topic, is promoted, and the output writer switches
  with no record skipped or scored twice (records keep arriving during the switch);
- another canary (v3) is aborted: its stream pods are deleted, the output writer is unchanged.
It is bounded at 20,000 records: the exactly-once-across-the-switch check is about the handover,
which 20,000 records on 3 partitions with batches in flight exercise as well.

The second streams MODELDEPLOY_STREAM_RECORDS records (50,000 by default; the issue's 1,000,000 was
run with it, docs/benchmarks.md) and SIGKILLs one stream pod midway: every record's output, outputs
within 1e-6 of the model's, duplicates counted, bad records in the dead-letter topic.

Issue 14's "Done when" is the two together (the volume and the kill in the second, the promoted and
the rolled-back canary in the first), with tests/e2e/test_prediction_log_pii_e2e.py for the
personal-data search. The canary part is not repeated at 1,000,000 records: it would only add the
shadow pods' share of the 2 cores to the volume run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kubernetes import client

from churn_example import load_churn
from cluster_helpers import container_pids, create_mdep, patch_mdep, process_gone, wait_for
from kafka_broker import Broker, create_topic, kafka_broker
from rollout_helpers import dump, model, ready_on, set_model, status
from stream_harness import Record, feature_records, produce, read_topic
from stream_tally import OutputTally

# The session's first test also waits for the cluster lock and builds the images: pytest-timeout counts
# that setup, so the default 600 s is not enough here.
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.usefixtures("operator_release"),
    pytest.mark.timeout(2400),
]

N = 20_000
PARTITIONS = 3
INPUT, OUTPUT = "accounts", "churn-scores"
DEAD_LETTER, SHADOW = f"{INPUT}.dlq", f"{OUTPUT}.shadow"
STREAM_LABEL = "app.kubernetes.io/component=stream"


@pytest.fixture(scope="module")
def kafka_on_bridge(local_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with kafka_broker(tmp_path_factory.mktemp("kafka"), host=local_cluster.host_ip) as broker:
        for topic in (INPUT, OUTPUT, DEAD_LETTER, SHADOW, f"{SHADOW}.dlq"):
            create_topic(broker.bootstrap, topic, PARTITIONS)
        yield broker


def _load(bundle: Path) -> Any:
    from modeldeploy_contract.server_settings import ServerSettings
    from modeldeploy_serving.model import load_model

    return load_model(ServerSettings(model_uri=str(bundle), xgboost_batch_rows=0))


def _probabilities(bundle: Path | Any, x: np.ndarray) -> np.ndarray:
    """The model's own probabilities for rows x (a bundle's folder, or a model _load made)."""
    loaded = _load(bundle) if isinstance(bundle, Path) else bundle
    return np.asarray(loaded.predict(x.astype(np.float32)).outputs["probabilities"], dtype=np.float64)


def _stream_md(
    store: str,
    bundles: Path,
    bootstrap: str,
    topics: tuple[str, str] = (INPUT, OUTPUT),
    batch_max_records: int = 500,
) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "churn"},
        "spec": {
            "model": model(store, bundles, "1"),
            "replicas": 1,
            "rollout": {
                "strategy": "Canary",
                # No REST traffic here: the canary shadows the stream for the pause, then is promoted.
                "steps": [{"setWeight": 50}, {"pause": {"duration": "20s"}}],
                "progressDeadlineSeconds": 300,
                "scaleDownDelaySeconds": 5,
            },
            "stream": {
                "bootstrapServers": bootstrap,
                "inputTopic": topics[0],
                "outputTopic": topics[1],
                "replicas": 2,
                "partitions": PARTITIONS,
                "batchMaxRecords": batch_max_records,
            },
        },
    }


def _stream_deployments(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    items = client.AppsV1Api(api).list_namespaced_deployment(namespace, label_selector=STREAM_LABEL).items
    return {d.metadata.name: d for d in items}


def _stream_pods(api: client.ApiClient, namespace: str, role: str) -> list[Any]:
    selector = f"{STREAM_LABEL},modeldeploy.io/stream-role={role}"
    return list(client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items)


def _ready_writer(api: client.ApiClient, namespace: str, revision: str) -> bool:
    pods = _stream_pods(api, namespace, "output")
    return (
        len(pods) == 2
        and all(p.metadata.labels.get("modeldeploy.io/stream-revision") == revision for p in pods)
        and all(
            any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or [])) for p in pods
        )
    )


class Feeder:
    """Produces records in the background, a chunk at a time, so that records arrive during a rollout."""

    def __init__(self, bootstrap: str, values: list[bytes], keys: list[bytes], chunk: int = 250) -> None:
        self.bootstrap, self.values, self.keys, self.chunk = bootstrap, values, keys, chunk
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while self.sent < len(self.values) and not self.stop.is_set():
            end = min(self.sent + self.chunk, len(self.values))
            produce(self.bootstrap, INPUT, self.values[self.sent : end], self.keys[self.sent : end])
            self.sent = end
            self.stop.wait(0.5)  # a steady trickle (chunk per half second), not a wait for a condition

    def __enter__(self) -> Feeder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(120)


def test_stream_records_dead_letters_and_a_promoted_and_an_aborted_stream_canary(
    kube_api: client.ApiClient,
    namespace: str,
    model_store: str,
    churn_bundles: Path,
    kafka_on_bridge: Broker,
) -> None:
    try:
        _stream_scenario(kube_api, namespace, model_store, churn_bundles, kafka_on_bridge)
    except BaseException:
        dump(kube_api, namespace)
        raise


def _stream_scenario(
    kube_api: client.ApiClient,
    namespace: str,
    model_store: str,
    churn_bundles: Path,
    kafka_on_bridge: Broker,
) -> None:
    bootstrap = kafka_on_bridge.bootstrap
    x, values = feature_records(N, seed=31)
    keys = [b"account-%d" % i for i in range(N)]
    create_mdep(kube_api, namespace, _stream_md(model_store, churn_bundles, bootstrap))
    v1 = wait_for("v1 Ready", lambda: ready_on(kube_api, namespace, "1"), timeout=180)["stableRevision"]
    wait_for("v1's stream pods ready", lambda: _ready_writer(kube_api, namespace, v1), timeout=180)

    # 1. records in, predictions out; a bad record to the dead-letter topic
    first = N // 4
    produce(bootstrap, INPUT, values[:first], keys[:first])
    produce(bootstrap, INPUT, [b"{not json"], [b"bad-key"], [[("request-id", b"bad-1")]])
    dead = read_topic(bootstrap, DEAD_LETTER, lambda rs: len(rs) >= 1, timeout=120)
    assert [(r.key, r.headers["request-id"], r.headers["modeldeploy-error-kind"]) for r in dead] == [
        (b"bad-key", b"bad-1", b"malformed_json")
    ]

    # 2. a canary shadows on its own topic while records keep arriving (about 200/s, from before the
    #    canary until after the promotion), and is promoted
    reserve = 2_000  # produced after the promotion: the new writer must score them
    pool = slice(first, N - reserve)
    with Feeder(bootstrap, values[pool], keys[pool], chunk=100) as feeder:
        set_model(kube_api, namespace, model(model_store, churn_bundles, "2"))
        canary = wait_for(
            "the v2 canary", lambda: status(kube_api, namespace).get("canaryRevision"), timeout=120
        )
        shadowed = read_topic(bootstrap, SHADOW, lambda rs: len(rs) >= 100, timeout=180)
        assert {r.json()["revision"] for r in shadowed} == {canary}
        wait_for("v2 promoted", lambda: ready_on(kube_api, namespace, "2"), timeout=240)
        wait_for("v2 writing the output", lambda: _ready_writer(kube_api, namespace, canary), timeout=240)
    sent = first + feeder.sent
    print(f"stream e2e: {feeder.sent} records produced during the rollout")
    produce(bootstrap, INPUT, values[N - reserve :], keys[N - reserve :])
    used = [*range(sent), *range(N - reserve, N)]
    outputs = read_topic(
        bootstrap, OUTPUT, lambda rs: len({r.headers["request-id"] for r in rs}) >= len(used), timeout=300
    )
    _check_outputs(
        outputs, x[used], [keys[i] for i in used], {v1: churn_bundles / "v1", canary: churn_bundles / "v2"}
    )
    assert sum(r.json()["revision"] == canary for r in outputs) >= reserve

    # 3. another canary is aborted: its stream pods go, the writer stays (the same pods: neither v3's
    #    shadow nor the abort touches the output Deployment)
    writers = {p.metadata.uid for p in _stream_pods(kube_api, namespace, "output")}
    set_model(kube_api, namespace, model(model_store, churn_bundles, "3"))
    # v3's own shadow pods: v2's may still be going after its promotion (the CI run of 2026-12-05 took
    # them for v3's, sent the abort before v3's rollout began, had it ignored, and saw v3 promoted).
    v3 = wait_for(
        "the v3 canary",
        lambda: (
            (revision := status(kube_api, namespace).get("canaryRevision")) not in (None, canary) and revision
        ),
        timeout=120,
    )
    wait_for(
        "v3's shadow pods",
        lambda: (
            [
                p
                for p in _stream_pods(kube_api, namespace, "shadow")
                if p.metadata.labels.get("modeldeploy.io/stream-revision") == v3
            ]
            or None
        ),
        timeout=180,
    )
    command = {"id": str(uuid.uuid4()), "action": "abort"}
    patch_mdep(
        kube_api,
        namespace,
        "churn",
        {"metadata": {"annotations": {"modeldeploy.io/command": json.dumps(command)}}},
    )
    wait_for(
        "the abort taken",
        lambda: (status(kube_api, namespace).get("lastCommand") or {}).get("id") == command["id"] or None,
        timeout=120,
    )
    assert status(kube_api, namespace)["lastCommand"]["result"] != "Ignored", status(kube_api, namespace)
    wait_for(
        "v3's stream pods deleted",
        lambda: (
            not _stream_pods(kube_api, namespace, "shadow")
            and not any(n.endswith("-shadow") for n in _stream_deployments(kube_api, namespace))
        ),
        timeout=180,
    )
    # Same pods, not recreated. Their readiness is waited for, not sampled once: stop 21's CI found the
    # writer not ready at the one instant it was read (its pod dump was cut off); a readiness probe
    # (2 s timeout) can miss beats on a loaded 2-core machine. A recreated writer still fails here.
    assert {p.metadata.uid for p in _stream_pods(kube_api, namespace, "output")} == writers
    wait_for("v2 still the ready writer", lambda: _ready_writer(kube_api, namespace, canary), timeout=120)
    assert {p.metadata.uid for p in _stream_pods(kube_api, namespace, "output")} == writers
    assert status(kube_api, namespace)["stableRevision"] == canary


def _check_outputs(outputs: list[Record], x: np.ndarray, keys: list[bytes], bundles: dict[str, Path]) -> None:
    by_id: dict[str, list[Record]] = {}
    for r in outputs:
        by_id.setdefault(r.headers["request-id"].decode(), []).append(r)
    n = len(keys)
    assert len(by_id) == n, "every input record has its prediction"
    duplicates = len(outputs) - n
    print(f"stream e2e: {len(outputs)} outputs for {n} inputs, {duplicates} duplicates")
    assert duplicates == 0, "no record scored twice (graceful pod stops, committed-offset handover)"
    index = {k: i for i, k in enumerate(keys)}
    expected = {rev: _probabilities(bundle, x) for rev, bundle in bundles.items()}
    per_partition: dict[int, list[tuple[int, str]]] = {}
    counts = dict.fromkeys(bundles, 0)
    for r in outputs:
        body = r.json()
        revision = body["revision"]
        counts[revision] += 1
        got = np.asarray(body["outputs"]["probabilities"], dtype=np.float64)
        np.testing.assert_allclose(got, expected[revision][index[r.key or b""]], rtol=0, atol=1e-6)
        _, partition, offset = body["request_id"].rsplit("-", 2)
        per_partition.setdefault(int(partition), []).append((int(offset), revision))
    print(f"stream e2e: scored per revision {counts}")
    old, new = list(bundles)
    for partition, scored in per_partition.items():
        order = [rev for _, rev in sorted(scored)]
        boundary = order.index(new) if new in order else len(order)
        assert set(order[:boundary]) <= {old}, partition
        assert set(order[boundary:]) <= {new}, partition


# -- a stream pod killed midway through N records -------------------------------------------------

RECORDS_ENV = "MODELDEPLOY_STREAM_RECORDS"
KILL_RECORDS = int(os.environ.get(RECORDS_ENV, "50000"))
"""Records of the pod-kill test: 50,000 by default (a few minutes on the loaded 2-core machine, in
CI's budget); the issue's 1,000,000 with MODELDEPLOY_STREAM_RECORDS=1000000 (docs/benchmarks.md)."""
KILL_INPUT, KILL_OUTPUT = "events", "events-scores"
KILL_DEAD_LETTER = f"{KILL_INPUT}.dlq"
KILL_BATCH, KILL_IN_FLIGHT = 2000, 4  # the stream's defaults (batchMaxRecords, maxInFlightBatches)
CHUNK = 25_000  # records generated and predicted at a time
KILL_RESOURCES = {"requests": {"cpu": "10m", "memory": "128Mi"}, "limits": {"cpu": "250m", "memory": "1Gi"}}
"""The stream pods' resources in the pod-kill test: a CPU limit, to widen the window in which the kill
finds both pods mid-batch. Unlimited, they went through 50,000 records in 1.3 s (38,197 records/s,
2026-12-04). With it: 15,847-40,279 records/s before the kill, by the machine's load (whether the
real node enforces it was not checked); the gate on both pods holding partitions (_busy_member) is
what makes the kill land mid-batch."""
KILL_SESSION_TIMEOUT = 10
"""spec.stream.sessionTimeoutSeconds of the pod-kill test: the killed member's partitions move 10 s
after the kill instead of Kafka's default 45 s (35 s of the suite's critical path in CI)."""
TOLERANCE = 1e-6


def figure(text: str) -> None:
    """A measured figure: printed (run with -s to see it) for docs/benchmarks.md."""
    print(f"\nFIGURE {text}", flush=True)


def _bad_records(features: list[str]) -> list[tuple[bytes, bytes]]:
    """Records the stream cannot score, with the dead-letter reason each must get."""
    row = dict.fromkeys(features, 1.0)
    return [
        (b"{not json", b"malformed_json"),
        (b"", b"empty"),
        (b"[1, 2, 3]", b"invalid_record"),
        (json.dumps({features[0]: 1.0}).encode(), b"invalid_record"),  # features missing
        (json.dumps(row | {features[1]: "many"}).encode(), b"invalid_record"),
    ]


def _generate(n: int, model: Any) -> tuple[list[list[bytes]], np.ndarray]:
    """n feature records in chunks, and the model's own probabilities for them. Record i has the key
    b"i"."""
    expected = np.empty((n, 2))
    chunks = []
    for c, start in enumerate(range(0, n, CHUNK)):
        x, values = feature_records(min(CHUNK, n - start), seed=1000 + c)
        expected[start : start + len(values)] = _probabilities(model, x)
        chunks.append(values)
    return chunks, expected


class Producing(threading.Thread):
    """Produces the chunks (keys: the records' indexes) with one producer, as fast as the client goes,
    a bad record (key and request id b"bad-j") after some chunks."""

    def __init__(self, bootstrap: str, chunks: list[list[bytes]], bad: list[tuple[bytes, bytes]]) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.chunks, self.bad = bootstrap, chunks, bad
        self.error: BaseException | None = None
        self.seconds = 0.0

    def _records(self) -> Iterator[tuple[bytes, bytes, list[tuple[str, bytes]] | None]]:
        after = {j: j * len(self.chunks) // len(self.bad) for j in range(len(self.bad))}
        start = 0
        for c, values in enumerate(self.chunks):
            for i, value in enumerate(values, start):
                yield value, b"%d" % i, None
            start += len(values)
            for j in (j for j, chunk in after.items() if chunk == c):
                yield self.bad[j][0], b"bad-%d" % j, [("request-id", b"bad-%d" % j)]

    def run(self) -> None:
        started = time.monotonic()
        try:
            # three lazy views of one sequence: no list of 1,000,000 keys or headers
            values = (r[0] for r in self._records())
            keys = (r[1] for r in self._records())
            produce(self.bootstrap, KILL_INPUT, values, keys, (r[2] for r in self._records()))
        except BaseException as error:  # reported by the test's thread
            self.error = error
        self.seconds = time.monotonic() - started


def _ends(consumer: Any, topic: str) -> dict[int, int]:
    """Each partition's end offset (high watermark), asked of the broker."""
    from confluent_kafka import TopicPartition

    return {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
        for p in range(PARTITIONS)
    }


def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets (-1001: none yet)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        found = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        return {tp.partition: tp.offset for tp in found}
    finally:
        c.close()


def _restarted(api: client.ApiClient, namespace: str, name: str, restarts: int) -> Any:
    pod = client.CoreV1Api(api).read_namespaced_pod(name, namespace)
    statuses = pod.status.container_statuses or []
    return pod if statuses and statuses[0].restart_count > restarts else None


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


@pytest.mark.timeout(2400 + KILL_RECORDS // 200)
def test_a_stream_pod_killed_midway_loses_no_record(
    kube_api: client.ApiClient,
    namespace: str,
    model_store: str,
    churn_bundles: Path,
    kafka_on_bridge: Broker,
) -> None:
    """Issue 14's "Done when", with the test above (a stream canary promoted and another aborted on the
    shadow comparison) and tests/e2e/test_prediction_log_pii_e2e.py (the personal-data search):
    MODELDEPLOY_STREAM_RECORDS records (and 5 bad ones) through two stream pods on 3 partitions
    (CPU-limited, KILL_RESOURCES), the container of the pod with more partitions SIGKILLed when about
    half the outputs are in, the kubelet restarting it. Then every
    input record has an output carrying its key and request id, each output's probabilities equal the
    model's own within 1e-6, duplicates (the killed pod's records after its last commit) carry their
    first output's request id and are counted, the bad records are in the dead-letter topic with their
    reason, and the stream's group has committed every input record.

    Memory: the input's JSON is generated before the pods join (it must then be produced faster than
    they score) and held once, about 360 MB at 1,000,000 records; the outputs are never held (per
    record: a count, the first request id and the largest difference, OutputTally)."""
    try:
        _kill_scenario(kube_api, namespace, model_store, churn_bundles, kafka_on_bridge)
    except BaseException:
        dump(kube_api, namespace)
        raise


def _busy_member(bootstrap: str, group: str) -> str | None:
    """The pod (its name) of the stream group's member with the most partitions, once the group is
    stable with both pods holding partitions (the client id is modeldeploy-stream-<pod name>)."""
    from confluent_kafka import ConsumerGroupState, KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})  # held: its thread answers the future
    try:
        found = admin.describe_consumer_groups([group], request_timeout=10)[group].result(20)
    except KafkaException:  # NOT_COORDINATOR before the group's first member (its coordinator) exists
        return None
    members = [m for m in found.members if m.assignment.topic_partitions]
    if found.state != ConsumerGroupState.STABLE or len(members) != 2:
        return None
    busiest = max(members, key=lambda m: len(m.assignment.topic_partitions))
    return str(busiest.client_id).removeprefix("modeldeploy-stream-")


def _kill_scenario(
    kube_api: client.ApiClient,
    namespace: str,
    model_store: str,
    churn_bundles: Path,
    kafka_on_bridge: Broker,
) -> None:
    bootstrap, n = kafka_on_bridge.bootstrap, KILL_RECORDS
    for topic in (KILL_INPUT, KILL_OUTPUT, KILL_DEAD_LETTER):
        create_topic(bootstrap, topic, PARTITIONS)
    bad = _bad_records(load_churn().FEATURES)
    generate_started = time.monotonic()
    chunks, expected = _generate(n, _load(churn_bundles / "v1"))
    generate_seconds = time.monotonic() - generate_started
    from confluent_kafka import Consumer

    watermarks = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ends-{uuid.uuid4().hex[:8]}"})
    md = _stream_md(model_store, churn_bundles, bootstrap, (KILL_INPUT, KILL_OUTPUT), KILL_BATCH)
    md["spec"]["resources"] = KILL_RESOURCES
    md["spec"]["stream"]["sessionTimeoutSeconds"] = KILL_SESSION_TIMEOUT
    create_mdep(kube_api, namespace, md)
    group = f"modeldeploy-{namespace}-churn"
    # Records only once both pods are in the group with their partitions, then as fast as the client
    # goes (faster than the CPU-limited pods score): the pods work through a backlog and the kill
    # finds the victim busy. Produced before the pods started, the first to load its model took all
    # 3 partitions; produced a chunk at a time as they were generated, the pods kept up and the kill
    # found them waiting for input (0 duplicates both times, 2026-12-04).
    name = wait_for("both stream pods in the group", lambda: _busy_member(bootstrap, group), timeout=300)
    victim = client.CoreV1Api(kube_api).read_namespaced_pod(name, namespace)
    revision = victim.metadata.labels["modeldeploy.io/stream-revision"]
    restarts = victim.status.container_statuses[0].restart_count
    pids = container_pids(victim.status.container_statuses[0].container_id)
    producing = Producing(bootstrap, chunks, bad)
    producing.start()

    def half_out() -> bool:
        assert producing.error is None, producing.error
        return sum(_ends(watermarks, KILL_OUTPUT).values()) >= n // 2

    wait_for("half the outputs", half_out, timeout=300 + n // 200, interval=0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    killed_at, killed_wall = time.monotonic(), time.time()
    outputs_at_kill = sum(_ends(watermarks, KILL_OUTPUT).values())
    wait_for("the stream pod's processes gone", lambda: all(map(process_gone, pids)), timeout=30)
    wait_for(
        "the killed container restarted",
        lambda: _restarted(kube_api, namespace, victim.metadata.name, restarts),
        timeout=180,
        interval=0.2,
    )
    restarted_at = time.monotonic()
    wait_for(
        "the restarted pod ready",
        lambda: _ready(client.CoreV1Api(kube_api).read_namespaced_pod(victim.metadata.name, namespace)),
        timeout=300,
        interval=0.2,
    )
    ready_at = time.monotonic()
    producing.join(300 + n // 1000)
    assert producing.error is None, producing.error
    del chunks
    producing.chunks = []  # the input's JSON: about 360 MB at 1,000,000 records
    inputs = _ends(watermarks, KILL_INPUT)
    assert sum(inputs.values()) == n + len(bad)
    # Every record committed by the stream's group: no more outputs can come.
    group_timeout = 300 + n // 200
    wait_for(
        "the stream's group committed every record",
        lambda: _committed(bootstrap, group, KILL_INPUT) == inputs,
        timeout=group_timeout,
        interval=0.5,
    )
    committed_at = time.monotonic()
    outputs = _ends(watermarks, KILL_OUTPUT)
    # The outputs are read once the input is in (a reader beside the producer took the GIL from it:
    # 3,900 records/s produced, 2026-12-04), to the end of the topic.
    with OutputTally(bootstrap, KILL_OUTPUT, expected, PARTITIONS, TOLERANCE) as tally:
        wait_for("the outputs read to the end", lambda: tally.read_up_to(outputs), timeout=group_timeout)
        missing = tally.missing()
    watermarks.close()

    dead = read_topic(
        bootstrap,
        KILL_DEAD_LETTER,
        lambda rs: {r.headers.get("request-id") for r in rs} >= {b"bad-%d" % j for j in range(len(bad))},
        timeout=120,
    )
    # A record without an output says where it went: a dead letter (its kind: prediction_failed is a
    # batch the model refused) or nowhere (committed without being produced).
    dead_kinds: dict[bytes, int] = {}
    for r in dead:
        dead_kinds[r.headers["modeldeploy-error-kind"]] = (
            dead_kinds.get(r.headers["modeldeploy-error-kind"], 0) + 1
        )
    dead_missing = {r.key for r in dead} & {b"%d" % i for i in missing}
    assert not missing, (
        f"{len(missing)} input records without a prediction (keys {missing[:3]}..{missing[-3:]}), "
        f"{len(dead_missing)} of them in the dead-letter topic; dead letters by kind {dead_kinds}"
    )
    duplicates = int(tally.counts.sum()) - n
    seconds = (tally.last_ms - tally.first_ms) / 1000
    before_kill = killed_wall - tally.first_ms / 1000
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    figure(
        f"stream pod kill: {n:,} records ({len(bad)} bad) generated and predicted in "
        f"{generate_seconds:.1f} s, produced in {producing.seconds:.1f} s "
        f"({n / producing.seconds:,.0f} records/s) while the stream ran, through 2 pods on "
        f"{PARTITIONS} partitions: first to last output {seconds:.1f} s "
        f"({n / seconds:,.0f} records/s), before the kill {outputs_at_kill / before_kill:,.0f} records/s; "
        f"killed at {outputs_at_kill:,} outputs; kill to restart {restarted_at - killed_at:.1f} s, "
        f"to ready {ready_at - killed_at:.1f} s, to every record committed {committed_at - killed_at:.1f} s; "
        f"{tally.total:,} outputs, {duplicates:,} duplicates, {len(dead) - len(bad)} duplicate dead "
        f"letters; largest difference from the model {tally.max_error:.2e}; load average {load}"
    )
    assert outputs_at_kill < n, "killed midway, not after the last output"
    assert tally.unexpected == [], tally.unexpected[:5]
    assert tally.revisions == {revision}
    assert tally.mismatched == 0, f"{tally.mismatched} outputs off by more than {TOLERANCE}: {tally.worst}"
    assert int(np.count_nonzero(tally.counts)) == n, "every input record has its prediction"
    assert tally.other_ids == 0, "a duplicate carries its record's request id"
    # At least once: what the killed pod had produced but not committed is scored again, at most the
    # batches in flight (produced, unacknowledged) and those acknowledged but not yet committed (the
    # runner commits at each poll, and polls only below maxInFlightBatches): 2 x 4 x 2,000. The other
    # pod commits what it acknowledged before giving partitions away (the runner's on_revoke).
    assert duplicates <= 2 * KILL_IN_FLIGHT * KILL_BATCH, duplicates
    assert {(r.key, r.headers["request-id"], r.headers["modeldeploy-error-kind"]) for r in dead} == {
        (b"bad-%d" % j, b"bad-%d" % j, reason) for j, (_, reason) in enumerate(bad)
    }
    assert all(r.headers.get("modeldeploy-error") for r in dead), "the reason's detail in a header"
