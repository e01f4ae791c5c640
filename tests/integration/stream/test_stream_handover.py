"""The stream rollout's handover against a real broker: a shadow canary beside the stable, then the
promotion as the operator carries it out (domain/stream.py): the stable's output pods stop (SIGTERM:
drain, commit, close), and only when they are gone does the new revision start in the output
consumer group, from the offsets the stable committed. No record skipped, none scored twice."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from test_stream_inference import by_request_id, model_probabilities

from kafka_broker import Broker, create_topic
from stream_harness import Topics, feature_records, produce, read_topic, stream_process

pytestmark = pytest.mark.slow

N = 20_000
"""Bounded (issue 14 asks 1,000,000 on the cluster): enough for batches in flight at the switch on
3 partitions with 500-record batches, small enough for a loaded 2-core machine."""


def test_promotion_switches_the_output_writer_without_skip_or_duplicate(
    kafka: Broker, churn_bundle: Path, tmp_path: Path
) -> None:
    topics = Topics.create(kafka.bootstrap, partitions=3, prefix="handover")
    shadow_topic = f"{topics.output}.shadow"
    create_topic(kafka.bootstrap, shadow_topic, 3)
    create_topic(kafka.bootstrap, f"{shadow_topic}.dlq", 3)
    x, values = feature_records(N, seed=21)
    keys = [b"k%d" % i for i in range(N)]
    first, middle = 8_000, 16_000
    produce(kafka.bootstrap, topics.input, values[:first], keys[:first])
    small = {"MODELDEPLOY_STREAM_BATCH_MAX_RECORDS": "500"}
    shadow_topics = Topics(topics.input, shadow_topic, f"{shadow_topic}.dlq", f"{topics.group}.shadow.r2")
    log = tmp_path / "stream.log"

    with (
        stream_process(kafka.bootstrap, churn_bundle, topics, log, revision="r1", env=small) as stable,
        stream_process(
            kafka.bootstrap,
            churn_bundle,
            shadow_topics,
            tmp_path / "shadow.log",
            revision="r2",
            env={**small, "MODELDEPLOY_STREAM_AUTO_OFFSET_RESET": "latest"},
        ) as shadow,
    ):
        stable.wait_ready()
        shadow.wait_ready()
        stable.wait_for(
            lambda: stable.metric(r"modeldeploy_stream_records_total\{.*\}") >= first // 2,
            what="the stable scoring",
        )
        # Records keep arriving while the writer changes.
        during = threading.Thread(
            target=produce, args=(kafka.bootstrap, topics.input, values[first:middle], keys[first:middle])
        )
        during.start()
        shadow.wait_for(
            lambda: shadow.metric(r"modeldeploy_stream_records_total\{.*\}") > 0,
            what="the shadow scoring the same input",
        )
        # Promotion, step 1: the old writer stops; the operator waits until its pods are gone.
        assert stable.stop() == 0
        assert shadow.stop() == 0
        during.join()
    produce(kafka.bootstrap, topics.input, values[middle:], keys[middle:])
    # Step 2: the new writer starts in the output group, from the committed boundary.
    with stream_process(kafka.bootstrap, churn_bundle, topics, log, revision="r2", env=small) as writer:
        writer.wait_ready()
        outputs = read_topic(
            kafka.bootstrap,
            topics.output,
            lambda rs: len({r.headers["request-id"] for r in rs}) >= N,
            timeout=240,
        )
        writer.wait_for(lambda: writer.metric(r"modeldeploy_stream_consumer_lag\{.*\}") == 0, what="lag 0")
        scored_by_new = writer.metric(r"modeldeploy_stream_records_total\{.*\}")
    ids = by_request_id(outputs)
    assert len(ids) == N  # none skipped
    assert len(outputs) == N, f"{len(outputs) - N} records scored twice across the switch"
    assert scored_by_new >= N - middle
    # Per partition: the old revision scored a prefix of the offsets, the new one the rest.
    revisions: dict[int, list[tuple[int, str]]] = {}
    for r in outputs:
        body = r.json()
        _, partition, offset = body["request_id"].rsplit("-", 2)
        revisions.setdefault(int(partition), []).append((int(offset), body["revision"]))
    for partition, scored in revisions.items():
        order = [rev for _, rev in sorted(scored)]
        boundary = order.index("r2") if "r2" in order else len(order)
        assert set(order[:boundary]) <= {"r1"}, partition
        assert set(order[boundary:]) == {"r2"}, partition
    print(f"handover: {N - scored_by_new:.0f} records scored by r1, {scored_by_new:.0f} by r2, 0 duplicates")
    index = {k: i for i, k in enumerate(keys)}
    got = np.full((N, 2), np.nan)
    for r in outputs:
        got[index[r.key or b""]] = r.json()["outputs"]["probabilities"]
    np.testing.assert_allclose(got, model_probabilities(churn_bundle, x), rtol=0, atol=1e-6)
    # The shadow wrote its own topic only, with its own revision.
    shadowed = read_topic(kafka.bootstrap, shadow_topic, lambda rs: len(rs) > 0, timeout=60)
    assert {r.json()["revision"] for r in shadowed} == {"r2"}
