"""`modeldeploy stream` through rebalances with batches in flight: every input record's prediction in
the output topic, the bad records (and only they) in the dead-letter topic.

What the pod-kill cluster test (tests/e2e/test_stream_e2e.py) does with two pods, on a real broker
without the cluster: a backlog on 3 partitions, two processes started together (the later to join
takes partitions from the other: its on_revoke with batches in flight), the second SIGKILLed while
scoring (its partitions go back to the first when its session expires, from its last commit), a
third joining (a rebalance again, mid-backlog), all with batches that mix bad and good records (with
and without headers: both of the runner's parse paths)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kafka_broker import Broker
from stream_harness import Record, Topics, feature_records, produce, read_topic, stream_process

pytestmark = pytest.mark.slow

N = 300_000
BAD = [b"{not json", b"", b"[1, 2, 3]", b'{"number_of_projects": 1.0}', b'{"inputs": 7}']
ENV = {
    "MODELDEPLOY_STREAM_BATCH_MAX_RECORDS": "400",
    # the broker's smallest (group.min.session.timeout.ms): the dead member leaves in 6 s
    "MODELDEPLOY_STREAM_SESSION_TIMEOUT_MS": "6000",
}


def _input(n: int) -> tuple[list[bytes], list[bytes], list[list[tuple[str, bytes]] | None]]:
    """n feature records (key b"<i>") and a bad record (key b"bad-<j>", with a request-id header)
    after every 1,000th."""
    _, good = feature_records(n, seed=21)
    values: list[bytes] = []
    keys: list[bytes] = []
    headers: list[list[tuple[str, bytes]] | None] = []
    bad = 0
    for i, value in enumerate(good):
        values.append(value)
        keys.append(b"%d" % i)
        headers.append(None)
        if i % 1000 == 999:
            values.append(BAD[bad % len(BAD)])
            keys.append(b"bad-%d" % bad)
            headers.append([("request-id", b"bad-%d" % bad)])
            bad += 1
    return values, keys, headers


def _keys(records: list[Record]) -> set[bytes]:
    return {r.key for r in records if r.key is not None}


def test_rebalances_with_batches_in_flight_lose_no_record(
    kafka: Broker, churn_bundle: Path, tmp_path: Path
) -> None:
    topics = Topics.create(kafka.bootstrap, partitions=3)
    values, keys, headers = _input(N)
    bad_keys = {k for k in keys if k.startswith(b"bad-")}
    produce(kafka.bootstrap, topics.input, values, keys, headers)  # a backlog: every handover mid-batch
    scored = r"modeldeploy_stream_records_total\{.*\}"
    with (
        stream_process(kafka.bootstrap, churn_bundle, topics, tmp_path / "a.log", env=ENV) as a,
        stream_process(kafka.bootstrap, churn_bundle, topics, tmp_path / "b.log", env=ENV) as b,
    ):
        a.wait_ready()
        b.wait_ready()  # the later of the two to join the group takes partitions from the other
        b.wait_for(lambda: b.metric(scored) >= 5000, timeout=120, what="the second process scoring")
        b.kill()  # its partitions: back to the first when its session expires, from its last commit
        assert b.process.returncode == -9
        with stream_process(kafka.bootstrap, churn_bundle, topics, tmp_path / "c.log", env=ENV) as c:
            c.wait_ready()  # joins: the group rebalances once the dead member is gone
            outputs = read_topic(kafka.bootstrap, topics.output, lambda rs: len(_keys(rs)) >= N, timeout=240)
            dead = read_topic(
                kafka.bootstrap, topics.dead_letter, lambda rs: _keys(rs) >= bad_keys, timeout=120
            )
            assert c.process.poll() is None, c.log.read_text()[-3000:]
            assert a.process.poll() is None, a.log.read_text()[-3000:]
            left = a.metric(scored) + c.metric(scored)
    assert a.process.returncode == 0  # stopped gracefully (SIGTERM: drained, committed)
    assert c.process.returncode == 0
    assert _keys(outputs) == {b"%d" % i for i in range(N)}, "every input record has its prediction"
    kinds = {r.headers["modeldeploy-error-kind"] for r in dead}
    assert _keys(dead) == bad_keys, f"only the bad records are dead letters ({kinds})"
    assert b"prediction_failed" not in kinds
    # a duplicate is the same record scored again: the same request id and the same output
    by_id: dict[bytes, set[bytes]] = {}
    for r in outputs:
        by_id.setdefault(r.headers["request-id"], set()).add(r.value)
    assert all(len(v) == 1 for v in by_id.values())
    assert {json.loads(r.value)["request_id"] for r in outputs} == {k.decode() for k in by_id}
    print(
        f"rebalance test: {len(outputs)} outputs for {N} inputs, {len(outputs) - N} duplicates; "
        f"{left:.0f} scored by the survivors"
    )
