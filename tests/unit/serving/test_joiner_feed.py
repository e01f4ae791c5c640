"""The model server's prediction records for the label joiner: shape, batching, and that nothing the
joiner does (slow, down, refusing) ever blocks or fails a prediction."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import orjson
import pytest

from modeldeploy_contract.joiner_settings import JoinerFeedSettings
from modeldeploy_serving.joiner.feed import JoinerFeed, records_of, records_of_many
from modeldeploy_serving.model import to_prediction

SETTINGS = JoinerFeedSettings(
    url="http://churn-joiner:8090", deployment="churn", variant="b", revision="r2", batch=3, capacity=5
)


def binary(*p1: float) -> object:
    raw = np.array([[1 - p, p] for p in p1], dtype=np.float32)
    return to_prediction(raw, classification=True)


def test_a_one_row_request_is_one_record_under_its_request_id() -> None:
    [record] = records_of("req-1", binary(0.8), SETTINGS, "v2", 1000.0)
    assert record == {
        "request_id": "req-1",
        "deployment": "churn",
        "variant": "b",
        "revision": "r2",
        "model_version": "v2",
        "score": pytest.approx(0.8),
        "label": 1,
        "classes": 2,
        "time": 1000.0,
    }


def test_rows_of_a_batch_request_are_numbered() -> None:
    records = records_of("req-1", binary(0.2, 0.9, 0.5), SETTINGS, "v2", 0.0)
    assert [r["request_id"] for r in records] == ["req-1:0", "req-1:1", "req-1:2"]
    assert [r["label"] for r in records] == [0, 1, 0]  # argmax; a tie goes to class 0


def test_multiclass_records_carry_the_winning_probability_and_regressors_none() -> None:
    raw = np.array([[0.1, 0.7, 0.2]], dtype=np.float32)
    [record] = records_of("m", to_prediction(raw, classification=True), SETTINGS, "v1", 0.0)
    assert (record["label"], record["classes"], record["score"]) == (1, 3, pytest.approx(0.7))
    regression = to_prediction(np.array([[3.5]], dtype=np.float32), classification=False)
    assert records_of("r", regression, SETTINGS, "v1", 0.0) == []


def test_float32_scores_are_clipped_into_the_unit_interval() -> None:
    raw = np.array([[-1e-7, 1.0000001]], dtype=np.float32)
    [record] = records_of("x", to_prediction(raw, classification=True), SETTINGS, "v1", 0.0)
    assert record["score"] == 1.0


class FakeJoiner:
    def __init__(self, status: int = 200, fail: bool = False) -> None:
        self.status = status
        self.fail = fail
        self.bodies: list[dict[str, object]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, body: bytes) -> int:
        self.gate.wait(30)
        if self.fail:
            raise ConnectionError("connection refused")
        self.bodies.append(orjson.loads(body))
        return self.status


def test_records_are_sent_in_batches_and_counted() -> None:
    joiner = FakeJoiner()
    counts: dict[str, int] = {}
    feed = JoinerFeed(SETTINGS, joiner, lambda k, n: counts.__setitem__(k, counts.get(k, 0) + n))
    for i in range(5):
        assert feed.add(f"r{i}", "v2", binary(0.1 * i))
    feed.close()
    sent = [r["request_id"] for b in joiner.bodies for r in b["predictions"]]  # type: ignore[attr-defined]
    assert sent == [f"r{i}" for i in range(5)]
    assert all(len(b["predictions"]) <= 3 for b in joiner.bodies)  # type: ignore[arg-type]
    assert counts == {"sent": 5}


@pytest.mark.parametrize(
    "joiner",
    [FakeJoiner(status=400), FakeJoiner(status=503), FakeJoiner(fail=True)],
    ids=["refused", "unavailable", "down"],
)
def test_without_retries_a_batch_the_joiner_does_not_take_is_lost_counted(joiner: FakeJoiner) -> None:
    counts: dict[str, int] = {}
    settings = SETTINGS.model_copy(update={"retry_seconds": 0})
    feed = JoinerFeed(settings, joiner, lambda k, n: counts.__setitem__(k, counts.get(k, 0) + n))
    feed.add("r0", "v2", binary(0.5))
    feed.close()
    assert counts == {"failed": 1}
    assert feed.failed == 1


def _until(condition: Callable[[], bool], timeout: float = 30) -> bool:
    """Waits for a condition the feed's thread brings about (polled; never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


class OutageJoiner:
    """A joiner that answers `outage` (a status, or 0: connection refused) until told it is back."""

    def __init__(self, outage: int) -> None:
        self.outage = outage
        self.back = threading.Event()
        self.attempts = 0
        self.stored: list[str] = []
        self.tried = threading.Semaphore(0)

    def __call__(self, body: bytes) -> int:
        self.attempts += 1
        self.tried.release()
        if not self.back.is_set():
            if self.outage == 0:
                raise ConnectionError("connection refused")
            return self.outage
        self.stored += [r["request_id"] for r in orjson.loads(body)["predictions"]]
        return 200


@pytest.mark.parametrize("outage", [0, 503, 502, 429], ids=["down", "store-lost", "gateway", "busy"])
def test_records_sent_during_a_joiner_outage_reach_it_once_it_is_back(outage: int) -> None:
    """Issue 15: a joiner restart, or its PostgreSQL lost for a while (503), no longer loses the
    predictions of the meantime: the batch is sent again with backoff, and the records that arrived
    meanwhile wait in the buffer."""
    joiner = OutageJoiner(outage)
    counts: dict[str, int] = {}
    feed = JoinerFeed(
        SETTINGS, joiner, lambda k, n: counts.__setitem__(k, counts.get(k, 0) + n), backoff=(0.001, 0.01)
    )
    for i in range(3):
        feed.add(f"r{i}", "v2", binary(0.5))
    for _ in range(3):  # the first batch tried three times: the outage is seen
        assert joiner.tried.acquire(timeout=30)
    feed.add("r3", "v2", binary(0.5))  # during the outage: buffered
    joiner.back.set()
    assert _until(lambda: len(joiner.stored) == 4), joiner.stored
    feed.close()
    assert joiner.stored == ["r0", "r1", "r2", "r3"]
    assert counts["sent"] == 4
    assert counts["retried"] >= 3 * 2
    assert "failed" not in counts


def test_a_batch_not_taken_within_retry_seconds_is_dropped_and_the_feed_goes_on() -> None:
    joiner = OutageJoiner(503)
    counts: dict[str, int] = {}
    settings = SETTINGS.model_copy(update={"retry_seconds": 0.05})
    feed = JoinerFeed(
        settings, joiner, lambda k, n: counts.__setitem__(k, counts.get(k, 0) + n), backoff=(0.001, 0.01)
    )
    for i in range(3):
        feed.add(f"r{i}", "v2", binary(0.5))
    assert _until(lambda: counts.get("failed") == 3), counts  # given up after retry_seconds
    joiner.back.set()
    feed.add("r3", "v2", binary(0.5))
    feed.close()
    assert joiner.stored == ["r3"]


def test_closing_during_an_outage_does_not_wait_it_out() -> None:
    joiner = OutageJoiner(0)
    feed = JoinerFeed(SETTINGS.model_copy(update={"retry_seconds": 3600}), joiner, backoff=(3600, 3600))
    for i in range(3):
        feed.add(f"r{i}", "v2", binary(0.5))
    assert joiner.tried.acquire(timeout=30)  # the first attempt failed; the next is an hour away
    feed.close(timeout=30)
    assert not feed._thread.is_alive()
    assert feed.failed == 3


def test_a_full_buffer_drops_instead_of_waiting() -> None:
    joiner = FakeJoiner()
    joiner.gate.clear()  # the joiner hangs: the drain thread is stuck in its first POST
    counts: dict[str, int] = {}
    feed = JoinerFeed(SETTINGS, joiner, lambda k, n: counts.__setitem__(k, counts.get(k, 0) + n))
    added = [feed.add(f"r{i}", "v2", binary(0.5)) for i in range(20)]
    # At most `capacity` wait in the buffer (plus what the stuck thread took); the rest are dropped.
    assert added.count(False) >= 20 - SETTINGS.capacity - SETTINGS.batch
    assert counts["dropped"] == added.count(False)
    joiner.gate.set()
    feed.close()


def test_feed_settings_round_trip_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in SETTINGS.to_env().items():
        monkeypatch.setenv(key, value)
    assert JoinerFeedSettings() == SETTINGS
    assert JoinerFeedSettings(url="").enabled is False


# --- stream mode: one scored batch of many input records (add_many) ---
def test_a_stream_batch_becomes_one_record_per_row_under_each_records_request_id() -> None:
    records = records_of_many(["a", "b", "c"], [1, 2, 1], binary(0.9, 0.1, 0.6, 0.3), SETTINGS, "v2", 5.0)
    assert [(r["request_id"], r["label"]) for r in records] == [("a", 1), ("b:0", 0), ("b:1", 1), ("c", 0)]
    assert [r["score"] for r in records] == pytest.approx([0.9, 0.1, 0.6, 0.3])
    assert {(r["deployment"], r["variant"], r["revision"], r["model_version"]) for r in records} == {
        ("churn", "b", "r2", "v2")
    }
    with pytest.raises(ValueError, match="3 rows of requests for 4 rows"):
        records_of_many(["a", "b"], [1, 2], binary(0.9, 0.1, 0.6, 0.3), SETTINGS, "v2", 5.0)


def test_a_stream_batch_larger_than_a_post_is_split_and_counts_against_capacity() -> None:
    joiner = FakeJoiner()
    counts: dict[str, int] = {}
    settings = SETTINGS.model_copy(update={"capacity": 10})
    feed = JoinerFeed(settings, joiner, lambda k, n: counts.__setitem__(k, counts.get(k, 0) + n))
    assert feed.add_many([f"s{i}" for i in range(7)], [1] * 7, "v2", binary(*[0.5] * 7))
    assert not feed.add_many(["x"] * 11, [1] * 11, "v2", binary(*[0.5] * 11))  # over capacity: all dropped
    feed.close()
    sent = [r["request_id"] for b in joiner.bodies for r in b["predictions"]]  # type: ignore[attr-defined]
    assert sent == [f"s{i}" for i in range(7)]
    assert all(len(b["predictions"]) <= settings.batch for b in joiner.bodies)  # type: ignore[arg-type]
    assert counts == {"sent": 7, "dropped": 11}


def test_a_bad_stream_batch_is_logged_and_the_feed_goes_on() -> None:
    joiner = FakeJoiner()
    feed = JoinerFeed(SETTINGS, joiner)
    feed.add_many(["bad"], [2], "v2", binary(0.5))  # rows disagree with the outputs
    feed.add("good", "v2", binary(0.7))
    feed.close()
    assert [r["request_id"] for b in joiner.bodies for r in b["predictions"]] == ["good"]  # type: ignore[attr-defined]
