"""Stream mode end to end on the local cluster (issue 14): a real Kafka broker beside the cluster on the
pod network's host address (10.244.0.1), the chart-installed operator, and stream pods of the serving
image on the real node.

One ModelDeployment with spec.stream, in one test (each step needs the previous one's state):
- records in, predictions out: every output equal to its revision's model within 1e-6;
- a bad record lands in the dead-letter topic with its reason;
- a canary (v2) shadows the stable on the shadow topic, is promoted, and the output writer switches
  with no record skipped or scored twice (records keep arriving during the switch);
- another canary (v3) is aborted: its stream pods are deleted, the output writer is unchanged.

Bounded at 20,000 records (the issue's 1,000,000 is for a bigger machine than 2 shared cores); the
exactly-once-across-the-switch check is about the handover, which 20,000 records on 3 partitions with
batches in flight exercise as well.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kubernetes import client

from cluster_helpers import create_mdep, patch_mdep, wait_for
from kafka_broker import Broker, create_topic, kafka_broker
from rollout_helpers import dump, model, ready_on, set_model, status
from stream_harness import Record, feature_records, produce, read_topic

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


def _probabilities(bundle: Path, x: np.ndarray) -> np.ndarray:
    from modeldeploy_contract.server_settings import ServerSettings
    from modeldeploy_serving.model import load_model

    loaded = load_model(ServerSettings(model_uri=str(bundle), xgboost_batch_rows=0))
    return np.asarray(loaded.predict(x.astype(np.float32)).outputs["probabilities"], dtype=np.float64)


def _stream_md(store: str, bundles: Path, bootstrap: str) -> dict[str, Any]:
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
                "inputTopic": INPUT,
                "outputTopic": OUTPUT,
                "replicas": 2,
                "partitions": PARTITIONS,
                "batchMaxRecords": 500,
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
    wait_for("v3's shadow pods", lambda: _stream_pods(kube_api, namespace, "shadow") or None, timeout=180)
    command = {"id": str(uuid.uuid4()), "action": "abort"}
    patch_mdep(
        kube_api,
        namespace,
        "churn",
        {"metadata": {"annotations": {"modeldeploy.io/command": json.dumps(command)}}},
    )
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
