"""The model server's prediction records for the label joiner: shape, batching, and that nothing the
joiner does (slow, down, refusing) ever blocks or fails a prediction."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable

import httpx
import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from modeldeploy_contract.joiner_settings import JoinerFeedSettings
from modeldeploy_serving.joiner.feed import (
    STOPPING_BACKOFF_SECONDS,
    JoinerFeed,
    Step,
    after_attempt,
    records_of,
    records_of_many,
)
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

    def __call__(self, body: bytes, timeout: float) -> int:
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

    def __call__(self, body: bytes, timeout: float) -> int:
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


def test_closing_ends_a_long_wait_between_two_sends() -> None:
    """The server stops while a batch waits an hour for its next try: close() ends the wait, so the
    joiner, back by then, gets the batch at once instead of the stop running out its deadline."""
    joiner = OutageJoiner(0)
    feed = JoinerFeed(SETTINGS.model_copy(update={"retry_seconds": 3600}), joiner, backoff=(1800, 1800))
    for i in range(3):
        feed.add(f"r{i}", "v2", binary(0.5))
    assert joiner.tried.acquire(timeout=30)  # the first attempt fails; the next is half an hour away
    joiner.back.set()
    assert feed.close(deadline=60) == 0
    assert not feed._thread.is_alive()
    assert joiner.stored == ["r0", "r1", "r2"]
    assert (feed.sent, feed.failed, feed.lost) == (3, 0, 0)


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


# --- stopping: what is held is sent within a deadline, and what is not is counted (issue 15) ---
def decide(
    status: int, now: float = 100.0, wait: float = 2.0, give_up: float = 220.0, stop_by: float | None = None
) -> Step:
    return after_attempt(status, now=now, wait=wait, give_up=give_up, stop_by=stop_by)


def test_the_decision_after_one_post() -> None:
    """The pure rule of _send, on a fake clock: `now` and the deadlines are plain numbers."""
    assert decide(200) == Step("sent")
    for refused in (400, 404, 413, 422, 500):
        assert decide(refused) == Step("failed")
    for busy in (0, 429, 502, 503, 504):
        assert decide(busy) == Step("retry", 2.0)
    assert decide(503, now=219.0) == Step("failed")  # retry_seconds are over
    assert decide(503, give_up=100.0) == Step("failed")  # retry_seconds 0
    # Stopping: the wait shrinks to a second, and the deadline ends the retries as lost_at_shutdown.
    assert decide(503, wait=10.0, stop_by=115.0) == Step("retry", STOPPING_BACKOFF_SECONDS)
    assert decide(503, now=114.0, wait=10.0, stop_by=115.0) == Step("lost_at_shutdown")
    assert decide(503, now=116.0, wait=10.0, stop_by=115.0) == Step("lost_at_shutdown")
    assert decide(200, now=116.0, stop_by=115.0) == Step("sent")  # an answer is an answer
    assert decide(400, stop_by=115.0) == Step("failed")
    # A batch whose own retry window ends before the deadline fails as it would have while serving.
    assert decide(503, give_up=100.5, stop_by=115.0) == Step("failed")


class FakeClock:
    """Monotonic seconds that move only when the feed waits or a fake POST takes its time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.now += seconds


class ScriptedJoiner:
    """Answers attempt k with answer(k): a status, or an exception to raise (no answer, garbage).
    Its first POST waits at `gate` (the joiner slow to answer when the server is told to stop); each
    POST takes `post_seconds` of the fake clock. Records (fake time, timeout, ids) of every attempt."""

    def __init__(
        self, clock: FakeClock, answer: Callable[[int], int | Exception], post_seconds: float = 0.05
    ):
        self.clock = clock
        self.answer = answer
        self.post_seconds = post_seconds
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)
        self.attempts: list[tuple[float, float, list[str]]] = []
        self.stored: list[str] = []

    def __call__(self, body: bytes, timeout: float) -> int:
        ids = [r["request_id"] for r in orjson.loads(body)["predictions"]]
        self.entered.release()
        self.gate.wait(30)
        self.attempts.append((self.clock.now, timeout, ids))
        self.clock.now += self.post_seconds
        answer = self.answer(len(self.attempts) - 1)
        if isinstance(answer, Exception):
            raise answer
        if answer == 200:
            self.stored += ids
        return answer


STOPPING = SETTINGS.model_copy(update={"capacity": 10, "retry_seconds": 3600})
HELD = ["r0", "r1", "r2", "r3", "r4", "s0", "s1:0", "s1:1"]  # 7 requests, 8 records


def stopping_feed(joiner: ScriptedJoiner, counts: dict[str, int]) -> JoinerFeed:
    feed = JoinerFeed(
        STOPPING,
        joiner,
        lambda k, n: counts.__setitem__(k, counts.get(k, 0) + n),
        monotonic=joiner.clock,
        pause=joiner.clock.pause,
    )
    for i in range(5):
        assert feed.add(f"r{i}", "v2", binary(0.5))
    assert feed.add_many(["s0", "s1"], [1, 2], "v2", binary(0.5, 0.6, 0.7))  # a stream batch
    return feed


def stop(feed: JoinerFeed, joiner: ScriptedJoiner, deadline: float = 15.0) -> int:
    """close() while the drain thread's first POST waits for its answer: every answer after it is
    decided under the stop's rules. Returns what close() returned."""
    assert joiner.entered.acquire(timeout=30)
    result: list[int] = []
    closer = threading.Thread(target=lambda: result.append(feed.close(deadline)))
    closer.start()
    assert _until(lambda: feed._stop_by is not None)
    joiner.gate.set()
    closer.join(60)
    assert not closer.is_alive()
    assert not feed._thread.is_alive()
    return result[0]


def test_a_stopping_server_sends_what_it_holds_once_the_joiner_takes_it() -> None:
    """The joiner answers 503 for the first six tries (restarting in the same rolling update), then
    takes everything: nothing is lost, and while stopping the tries are a second apart at most."""
    clock = FakeClock()
    joiner = ScriptedJoiner(clock, lambda k: 503 if k < 6 else 200)
    counts: dict[str, int] = {}
    feed = stopping_feed(joiner, counts)
    started = clock.now
    assert stop(feed, joiner) == 0
    assert joiner.stored == HELD  # every record once, in order
    assert counts["sent"] == 8
    assert "failed" not in counts
    assert "lost_at_shutdown" not in counts
    times = [at for at, _, _ in joiner.attempts]
    assert all(b - a <= STOPPING_BACKOFF_SECONDS + joiner.post_seconds for a, b in itertools.pairwise(times))
    assert clock.now - started < 15


@pytest.mark.parametrize(
    "answer",
    [503, 429, ConnectionError("connection refused"), httpx.RemoteProtocolError("illegal status line")],
    ids=["unavailable", "busy", "down", "garbage"],
)
def test_what_is_unsent_at_the_deadline_is_counted_and_logged_once(
    answer: int | Exception, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    joiner = ScriptedJoiner(clock, lambda _k: answer)
    counts: dict[str, int] = {}
    feed = stopping_feed(joiner, counts)
    with caplog.at_level(logging.INFO, logger="modeldeploy_serving.joiner.feed"):
        assert stop(feed, joiner, deadline=15.0) == 8
        assert feed.close() == 8  # a second close (atexit's) changes nothing and logs nothing
    assert counts.get("lost_at_shutdown") == 8
    assert feed.lost == 8
    assert "sent" not in counts
    assert "failed" not in counts
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        "joiner feed: 8 prediction records lost at shutdown (not sent within the 15 s stop deadline)"
    ]
    # Tried until the deadline, never past it: each POST's timeout ends by the deadline.
    stop_by = feed._stop_by
    assert stop_by is not None
    stopping = [(at, timeout) for at, timeout, _ in joiner.attempts[1:]]
    assert len(stopping) >= 10
    assert all(at < stop_by and at + timeout <= stop_by + 1e-9 for at, timeout in stopping)


def test_a_joiner_refusing_during_the_stop_fails_the_records_at_once() -> None:
    """A 4xx is not worth sending again: each batch is tried once and counted failed, and the stop
    does not wait for its deadline."""
    clock = FakeClock()
    joiner = ScriptedJoiner(clock, lambda _k: 400)
    counts: dict[str, int] = {}
    feed = stopping_feed(joiner, counts)
    started = clock.now
    assert stop(feed, joiner) == 0
    assert counts == {"failed": 8}
    assert len(joiner.attempts) == 3  # 3 + 3 + the stream batch's 2 records
    assert clock.now - started < 1


def test_close_does_not_wait_for_a_joiner_that_never_answers() -> None:
    """A POST stuck past its timeout (a joiner trickling its answer): close() returns once its
    deadline and JOIN_GRACE_SECONDS are over and counts what the stuck thread holds; if the answer
    comes after all, it is not counted a second time."""
    joiner = FakeJoiner()
    joiner.gate.clear()  # never answers until the test says so (after close() returned)
    counts: dict[str, int] = {}
    feed = JoinerFeed(SETTINGS, joiner, lambda k, n: counts.__setitem__(k, counts.get(k, 0) + n))
    for i in range(5):
        assert feed.add(f"r{i}", "v2", binary(0.5))
    feed._wake.set()
    assert _until(lambda: feed._in_hand > 0)  # the first batch is in the stuck POST
    assert feed.close(deadline=0.1) == 5
    assert feed._thread.is_alive()  # still waiting for its answer: close() did not wait for it
    joiner.gate.set()  # the answer comes after all: 200
    feed._thread.join(30)
    assert not feed._thread.is_alive()
    assert counts == {"lost_at_shutdown": 5}  # not also "sent"


def test_records_answered_after_the_feed_stopped_are_counted_lost() -> None:
    counts: dict[str, int] = {}
    feed = JoinerFeed(SETTINGS, FakeJoiner(), lambda k, n: counts.__setitem__(k, counts.get(k, 0) + n))
    assert feed.close() == 0
    assert not feed.add("late", "v2", binary(0.5, 0.6))
    assert counts == {"lost_at_shutdown": 2}
    assert feed.lost == 2


def test_a_zero_deadline_sends_nothing_and_counts_everything() -> None:
    joiner = FakeJoiner()
    joiner.gate.clear()
    counts: dict[str, int] = {}
    feed = JoinerFeed(
        SETTINGS.model_copy(update={"shutdown_seconds": 0}),
        joiner,
        lambda k, n: counts.__setitem__(k, counts.get(k, 0) + n),
    )
    for i in range(2):
        feed.add(f"r{i}", "v2", binary(0.5))
    assert feed.close() == 2
    joiner.gate.set()
    assert counts == {"lost_at_shutdown": 2}


@pytest.mark.parametrize("value", ["-1", "301", "soon", ""])
def test_a_bad_shutdown_deadline_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELDEPLOY_FEED_SHUTDOWN_SECONDS", value)
    with pytest.raises(ValidationError, match="shutdown_seconds"):
        JoinerFeedSettings()
