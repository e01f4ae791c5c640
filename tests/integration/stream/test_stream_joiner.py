"""The label joiner beside stream mode, against the real broker (issue 15): stream pods feed it their
predictions, and labels arrive on a Kafka topic as well as over HTTP."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from local_postgres import LocalPostgres, local_postgres, postgres_url  # noqa: F401 (fixtures)

from kafka_broker import Broker
from local_processes import free_port, running
from stream_harness import Topics, feature_records, parse_metrics, produce, read_topic, stream_process

pytestmark = pytest.mark.slow


@dataclass
class JoinerProcess:
    url: str
    log: Path

    def metrics(self) -> dict[str, float]:
        return parse_metrics(httpx.get(f"{self.url}/metrics", timeout=10).text)

    def count(self, family: str, outcome: str) -> float:
        return self.metrics().get(f'modeldeploy_joiner_{family}_total{{outcome="{outcome}"}}', 0.0)

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
        """Until condition() holds (a bound for a broken setup, not a time window)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        raise AssertionError(f"{what} not met after {timeout}s:\n{self.log.read_text()[-3000:]}")


@contextmanager
def joiner_process(
    tmp_path: Path, env: dict[str, str] | None = None, name: str = "joiner", database: str | None = None
) -> Iterator[JoinerProcess]:
    """`database`: None, a SQLite file in tmp_path."""
    port = free_port()
    args = [sys.executable, "-m", "modeldeploy_serving.cli", "joiner", "--host", "127.0.0.1"]
    args += ["--port", str(port), "--database", database or f"sqlite:///{tmp_path / 'joiner.db'}"]
    log = tmp_path / f"{name}.log"
    url = f"http://127.0.0.1:{port}"
    with running(args, log, env, ready=f"{url}/readyz"):
        yield JoinerProcess(url, log)


def arm(joiner: JoinerProcess, variant: str = "default", revision: str = "r1") -> dict[str, Any] | None:
    summary = httpx.get(f"{joiner.url}/v1/effectiveness", params={"fresh": "true"}, timeout=10).json()
    for deployment in summary["deployments"]:
        for a in deployment["windows"][-1]["arms"]:
            if (a["variant"], a["revision"]) == (variant, revision):
                return dict(a["quality"])
    return None


# --- stream pods feed the joiner (point 2) ---
def test_stream_predictions_reach_the_joiner_under_their_output_request_ids(
    kafka: Broker, churn_bundle: Path, tmp_path: Path
) -> None:
    n = 2000
    topics = Topics.create(kafka.bootstrap, partitions=2)
    _, values = feature_records(n)
    v2 = json.dumps(
        {
            "id": "v2-req",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 14], "data": [1.0] * 28}],
        }
    ).encode()
    headers: list[list[tuple[str, bytes]] | None] = [[("request-id", b"req-%d" % i)] for i in range(n)]
    produce(kafka.bootstrap, topics.input, [*values, v2, b"{not json"], headers=[*headers, None, None])
    with joiner_process(tmp_path) as joiner:
        feed = {
            "MODELDEPLOY_FEED_URL": joiner.url,
            "MODELDEPLOY_FEED_DEPLOYMENT": "churn",
            "MODELDEPLOY_FEED_VARIANT": "default",
            "MODELDEPLOY_FEED_REVISION": "r1",
        }
        with stream_process(
            kafka.bootstrap, churn_bundle, topics, tmp_path / "stream.log", env=feed
        ) as stream:
            stream.wait_ready()
            outputs = read_topic(kafka.bootstrap, topics.output, lambda rs: len(rs) >= n + 1, timeout=240)
            # every scored row is recorded: n one-row records and the V2 record's two rows; the dead
            # letter is not (it has no prediction)
            joiner.wait_for(lambda: joiner.count("predictions", "stored") >= n + 2, "n + 2 records stored")
            stream.wait_for(
                lambda: stream.metric(r'modeldeploy_joiner_feed_records_total\{outcome="sent"\}') == n + 2,
                what="the feed counted what it sent",
            )
        ids = [r.headers["request-id"].decode() for r in outputs]
        assert sorted(ids) == sorted([f"req-{i}" for i in range(n)] + ["v2-req"])
        labels = [{"request_id": f"req-{i}", "label": i % 2} for i in range(n)]
        labels += [{"request_id": "v2-req:0", "label": 1}, {"request_id": "v2-req:1", "label": 0}]
        answer = httpx.post(f"{joiner.url}/v1/feedback", json={"labels": labels}, timeout=30).json()
        assert answer["counts"] == {"joined": n + 2}
        assert joiner.count("predictions", "stored") == n + 2
        quality = arm(joiner)
        assert quality is not None
        assert (quality["labelled"], quality["predictions"]) == (n + 2, n + 2)


# --- labels from a Kafka topic (point 1) ---
def _prediction(rid: str, at: float) -> dict[str, Any]:
    return {"request_id": rid, "deployment": "churn", "variant": "default", "revision": "r1",
            "model_version": "v1", "score": 0.8, "label": 1, "time": at}  # fmt: skip


def _committed(bootstrap: str, topic: str, group: str, partitions: int) -> list[int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in got]
    finally:
        c.close()


def test_labels_from_a_topic_join_like_feedback_and_bad_ones_block_nothing(
    kafka: Broker, tmp_path: Path
) -> None:
    from kafka_broker import create_topic

    topics = Topics.create(kafka.bootstrap, prefix="labels")  # only for a fresh name and group
    label_topic = topics.input.replace("-in", "-labels")
    create_topic(kafka.bootstrap, label_topic, 2)
    env = {
        "MODELDEPLOY_LABELS_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "MODELDEPLOY_LABELS_TOPIC": label_topic,
        "MODELDEPLOY_LABELS_GROUP_ID": topics.group,
        "MODELDEPLOY_LABELS_BATCH_MAX_WAIT_MS": "50",
        "MODELDEPLOY_JOINER_RETENTION_SECONDS": "86400",
    }
    n = 1000
    now = time.time()
    good = [json.dumps({"request_id": f"req-{i}", "label": i % 2}).encode() for i in range(n)]
    batch = json.dumps({"labels": [{"request_id": f"b-{i}", "label": 1} for i in range(10)]}).encode()
    bad = [
        json.dumps({"request_id": "nobody", "label": 1}).encode(),  # unknown
        json.dumps({"request_id": "old", "label": 1}).encode(),  # expired (older than the retention)
        json.dumps({"request_id": "req-0", "label": 0}).encode(),  # duplicate of its first label
        json.dumps({"request_id": "req-1", "label": 0}).encode(),  # conflict: req-1 already has label 1
        json.dumps({"request_id": "extra", "label": 5}).encode(),  # not a class of this model
        json.dumps({"request_id": "extra", "label": "yes"}).encode(),  # wrong type
        b"{not json",
        None,  # a tombstone
    ]
    with joiner_process(tmp_path, env) as joiner:
        predictions = [_prediction(f"req-{i}", now) for i in range(n)]
        predictions += [_prediction(f"b-{i}", now) for i in range(10)]
        predictions += [_prediction("extra", now), _prediction("old", now - 2 * 86400)]
        r = httpx.post(f"{joiner.url}/v1/predictions", json={"predictions": predictions}, timeout=30)
        assert r.json()["stored"] == n + 12
        # the bad records are interleaved with the good ones, on both partitions (keys spread them)
        values: list[bytes | None] = [*good[:500], *bad, batch, *good[500:]]
        produce(kafka.bootstrap, label_topic, values, keys=[b"%d" % i for i in range(len(values))])
        expected = {"joined": n + 10, "unknown_request": 1, "expired": 1, "duplicate": 1, "conflict": 1,
                    "invalid_label": 2, "invalid": 2}  # fmt: skip

        def outcomes() -> dict[str, float]:
            prefix = 'modeldeploy_joiner_labels_total{outcome="'
            return {k[len(prefix) : -2]: v for k, v in joiner.metrics().items() if k.startswith(prefix)}

        joiner.wait_for(
            lambda: sum(outcomes().values()) >= sum(expected.values()), "every label record counted"
        )
        assert outcomes() == expected
        # every offset committed (after the store write): the group is at the end of both partitions
        ends = _ends(kafka.bootstrap, label_topic, 2)
        joiner.wait_for(
            lambda: _committed(kafka.bootstrap, label_topic, topics.group, 2) == ends, "offsets committed"
        )
        quality = arm(joiner)
        assert quality is not None
        assert quality["labelled"] == n + 10
        log_text = joiner.log.read_text()
        assert f"label nobody (record {label_topic}/" in log_text  # logged with the record's place
        assert "unknown_request" in log_text
    # a restarted joiner (same group, same database) starts after the committed offsets: nothing again
    with joiner_process(tmp_path, env, name="joiner-restarted") as joiner:
        produce(kafka.bootstrap, label_topic, [json.dumps({"request_id": "extra", "label": 1}).encode()])
        joiner.wait_for(lambda: joiner.count("labels", "joined") >= 1, "the new label joined")
        assert {
            k: v for k, v in joiner.metrics().items() if k.startswith("modeldeploy_joiner_labels_total")
        } == {'modeldeploy_joiner_labels_total{outcome="joined"}': 1.0}


def _ends(bootstrap: str, topic: str, partitions: int) -> list[int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks", "enable.auto.commit": False})
    try:
        return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    finally:
        c.close()


# --- the label consumer's lag and recovery (points 1 and 2 of issue 15's follow-up) ---
def _label_topic(kafka: Broker, partitions: int = 2) -> tuple[str, str]:
    """A fresh label topic and consumer group."""
    from kafka_broker import create_topic

    topics = Topics.create(kafka.bootstrap, prefix="labels")  # only for a fresh name and group
    label_topic = topics.input.replace("-in", "-labels")
    create_topic(kafka.bootstrap, label_topic, partitions)
    return label_topic, topics.group


def _label_env(kafka: Broker, topic: str, group: str) -> dict[str, str]:
    return {
        "MODELDEPLOY_LABELS_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "MODELDEPLOY_LABELS_TOPIC": topic,
        "MODELDEPLOY_LABELS_GROUP_ID": group,
        "MODELDEPLOY_LABELS_BATCH_MAX_WAIT_MS": "50",
        "MODELDEPLOY_LABELS_LAG_INTERVAL_SECONDS": "0.2",
        "MODELDEPLOY_LABELS_RETRY_SECONDS": "0.5",
    }


def _lags(joiner: JoinerProcess, topic: str) -> dict[int, float]:
    """Partition -> modeldeploy_joiner_label_topic_lag of `topic`."""
    out = {}
    for key, value in joiner.metrics().items():
        name, _, labels = key.partition("{")
        if name == "modeldeploy_joiner_label_topic_lag":
            pairs = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            if pairs["topic"] == topic:
                out[int(pairs["partition"])] = value
    return out


def _outcomes(joiner: JoinerProcess) -> dict[str, float]:
    prefix = 'modeldeploy_joiner_labels_total{outcome="'
    return {k[len(prefix) : -2]: v for k, v in joiner.metrics().items() if k.startswith(prefix)}


def _post_predictions(joiner: JoinerProcess, ids: list[str]) -> None:
    now = time.time()
    r = httpx.post(
        f"{joiner.url}/v1/predictions", json={"predictions": [_prediction(i, now) for i in ids]}, timeout=60
    )
    assert r.json()["stored"] == len(ids)


def test_label_lag_is_exported_and_a_store_outage_and_a_poison_label_lose_nothing(
    kafka: Broker, tmp_path: Path
) -> None:
    """The real broker and the joiner's real SQLite file, where triggers make the store refuse labels:
    first every label (an outage: nothing committed, so the lag is exactly what was produced), then
    one (a poison label: skipped and counted, the rest joined, the lag back to 0)."""
    import sqlite3

    topic, group = _label_topic(kafka)
    n = 400
    ids = [f"req-{i}" for i in range(n)]
    with joiner_process(tmp_path, _label_env(kafka, topic, group)) as joiner:
        _post_predictions(joiner, [*ids, "poison"])
        db = sqlite3.connect(tmp_path / "joiner.db", isolation_level=None)
        db.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE OF label ON predictions "
            "BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
        )
        values = [json.dumps({"request_id": i, "label": k % 2}).encode() for k, i in enumerate(ids)]
        values.insert(n // 2, json.dumps({"request_id": "poison", "label": 1}).encode())
        produce(kafka.bootstrap, topic, values)
        ends = _ends(kafka.bootstrap, topic, 2)
        assert min(ends) > 0  # the keys spread the records over both partitions

        def batches(result: str) -> float:
            return joiner.metrics().get(
                f'modeldeploy_joiner_label_topic_batches_total{{result="{result}"}}', 0
            )

        joiner.wait_for(lambda: batches("store_failed") >= 2, "the store refused the batches (retried)")
        # nothing stored, nothing committed: every record is lag, exactly
        joiner.wait_for(lambda: _lags(joiner, topic) == {0: ends[0], 1: ends[1]}, "the lag is the topic")
        assert _outcomes(joiner).get("joined", 0) == 0
        text = httpx.get(f"{joiner.url}/metrics", timeout=10).text
        assert "# TYPE modeldeploy_joiner_label_topic_lag gauge" in text
        assert _committed(kafka.bootstrap, topic, group, 2) == [-1001, -1001]  # nothing committed

        db.execute("BEGIN")
        db.execute("DROP TRIGGER refuse")
        db.execute(
            "CREATE TRIGGER poison BEFORE UPDATE OF label ON predictions WHEN NEW.request_id = 'poison' "
            "BEGIN SELECT RAISE(ABORT, 'this one never fits'); END"
        )
        db.execute("COMMIT")
        db.close()
        joiner.wait_for(lambda: _lags(joiner, topic) == {0: 0, 1: 0}, "lag 0")
        assert _committed(kafka.bootstrap, topic, group, 2) == ends
        assert _outcomes(joiner) == {"joined": n, "store_refused": 1}
        quality = arm(joiner)
        assert quality is not None
        assert quality["labelled"] == n
        assert f"poison label poison (record {topic}/" in joiner.log.read_text()


def test_the_label_topic_waits_out_a_postgres_outage_and_joins_every_label_once(
    kafka: Broker,
    local_postgres: LocalPostgres,  # noqa: F811
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The joiner on the real PostgreSQL, its server stopped (as a crash) while labels keep coming on
    the topic: nothing is committed while the store cannot be reached (the lag is exactly what came
    meanwhile), no label is taken for a poison one, and once the server is back every label is joined
    exactly once, counted once, without restarting the joiner."""
    import psycopg

    topic, group = _label_topic(kafka)
    n = 400
    ids = [f"req-{i}" for i in range(n)]
    values = [json.dumps({"request_id": i, "label": k % 2}).encode() for k, i in enumerate(ids)]
    env = {**_label_env(kafka, topic, group), "MODELDEPLOY_JOINER_READINESS_CHECK_SECONDS": "0"}
    with joiner_process(tmp_path, env, database=postgres_url) as joiner:
        _post_predictions(joiner, ids)
        produce(kafka.bootstrap, topic, values[: n // 2])
        joiner.wait_for(lambda: _outcomes(joiner).get("joined", 0) == n // 2, "the first half joined")
        joiner.wait_for(
            lambda: _committed(kafka.bootstrap, topic, group, 2) == _ends(kafka.bootstrap, topic, 2),
            "first half committed",
        )
        before = _committed(kafka.bootstrap, topic, group, 2)

        def batches(result: str) -> float:
            return joiner.metrics().get(
                f'modeldeploy_joiner_label_topic_batches_total{{result="{result}"}}', 0
            )

        with local_postgres.stopped():
            produce(kafka.bootstrap, topic, values[n // 2 :])
            ends = _ends(kafka.bootstrap, topic, 2)
            joiner.wait_for(lambda: batches("store_failed") >= 2, "the batches refused (store unreachable)")
            joiner.wait_for(lambda: httpx.get(f"{joiner.url}/readyz").status_code == 503, "/readyz 503")
            # nothing committed meanwhile: the lag is exactly the second half
            joiner.wait_for(
                lambda: _lags(joiner, topic) == {p: ends[p] - before[p] for p in (0, 1)}, "lag = second half"
            )
            assert _committed(kafka.bootstrap, topic, group, 2) == before
            assert _outcomes(joiner) == {"joined": n // 2}
        joiner.wait_for(lambda: _lags(joiner, topic) == {0: 0, 1: 0}, "lag 0 once the server is back")
        assert _committed(kafka.bootstrap, topic, group, 2) == ends
        assert _outcomes(joiner) == {"joined": n}  # no duplicate, no store_refused: each label once
        assert httpx.get(f"{joiner.url}/readyz").status_code == 200
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute(
                "SELECT COUNT(*), SUM(label) FROM predictions WHERE label IS NOT NULL"
            ).fetchone()
        assert row == (n, n // 2)
        text = joiner.log.read_text()
        assert "poison" not in text
        assert text.count("store connection lost") == 1


def test_the_label_consumer_goes_on_after_the_broker_was_gone(kafka: Broker, tmp_path: Path) -> None:
    """The session's broker stopped and started again (same port, same log dir) while the joiner runs:
    HTTP feedback goes on meanwhile, the consumer reconnects by itself, and every label is joined
    exactly once (none lost, none consumed twice)."""
    topic, group = _label_topic(kafka)
    n = 600
    ids = [f"req-{i}" for i in range(n)]
    values = [json.dumps({"request_id": i, "label": k % 2}).encode() for k, i in enumerate(ids)]
    with joiner_process(tmp_path, _label_env(kafka, topic, group)) as joiner:
        _post_predictions(joiner, [*ids, "http-1"])
        produce(kafka.bootstrap, topic, values[: n // 2])
        joiner.wait_for(lambda: _outcomes(joiner).get("joined", 0) == n // 2, "the first half joined")
        joiner.wait_for(lambda: sum(_lags(joiner, topic).values()) == 0, "the first half committed")
        try:
            kafka.stop()
            r = httpx.post(f"{joiner.url}/v1/feedback", json={"request_id": "http-1", "label": 1}, timeout=30)
            assert r.json()["joined"] == 1  # the joiner does not need the broker to take labels
            assert httpx.get(f"{joiner.url}/readyz", timeout=10).status_code == 200
        finally:
            kafka.start()
        produce(kafka.bootstrap, topic, values[n // 2 :])
        ends = _ends(kafka.bootstrap, topic, 2)
        joiner.wait_for(lambda: _outcomes(joiner).get("joined", 0) == n + 1, "the second half joined")
        joiner.wait_for(lambda: _lags(joiner, topic) == {0: 0, 1: 0}, "lag 0 after the outage")
        assert _committed(kafka.bootstrap, topic, group, 2) == ends
        assert _outcomes(joiner) == {"joined": n + 1}  # no duplicates: nothing was consumed twice
        quality = arm(joiner)
        assert quality is not None
        assert quality["labelled"] == n + 1
        restarts = joiner.metrics().get("modeldeploy_joiner_label_consumer_restarts_total", 0)
        print(f"broker outage: consumer restarts {restarts}")
