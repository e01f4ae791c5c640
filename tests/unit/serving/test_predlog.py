"""The prediction log's core: personal-data policy, record shape, bounded buffer, sinks."""

from __future__ import annotations

import io
import json
import threading
import time
from typing import Any

import pytest

from modeldeploy_serving.predlog import (
    TOKEN_PREFIX,
    WAKE_EVERY,
    JsonLinesSink,
    KafkaSink,
    LogRecord,
    PiiPolicy,
    PolicyError,
    PredictionLog,
    RecordEncoder,
    sampled,
)

KEY = b"k" * 32
MARKERS = {"email": "marker-7f3a@example.com", "account_id": "ACC-MARKER-991", "name": "Marker Person"}


def policy(**kw: Any) -> PiiPolicy:
    return PiiPolicy.from_lists(KEY, drop=["name"], pseudonymise=["email", "account_id"], keep=["plan"], **kw)


def record(i: int = 0, **kw: Any) -> LogRecord:
    base: dict[str, Any] = {
        "request_id": f"req-{i}", "time": 1.5, "deployment": "churn", "variant": "stable",
        "revision": "r3", "model_version": "v1",
        "inputs": {**MARKERS, "plan": "pro", "w1_active_users": 4},
        "outputs": {"label": 1}, "latency_ms": 0.4, "status": "ok", "sticky_key": "user-MARKER-55",
    }  # fmt: skip
    return LogRecord(**{**base, **kw})


def test_policy_drops_pseudonymises_keeps_and_defaults_to_drop() -> None:
    out = json.loads(record().encode(policy()))
    assert "name" not in out["inputs"]
    assert out["inputs"]["plan"] == "pro"
    assert "w1_active_users" not in out["inputs"]  # not named: the default, drop
    assert out["inputs"]["email"].startswith(TOKEN_PREFIX)
    assert out["sticky_key"].startswith(TOKEN_PREFIX)
    text = record().encode(policy())
    for marker in [*MARKERS.values(), "user-MARKER-55"]:
        assert marker.encode() not in text
    assert set(out) == {
        "request_id", "time", "deployment", "variant", "revision", "model_version", "inputs", "outputs",
        "latency_ms", "status", "sticky_key",
    }  # fmt: skip
    kept = json.loads(record().encode(policy(default="keep")))
    assert kept["inputs"]["w1_active_users"] == 4


def test_pseudonyms_join_but_depend_on_the_key() -> None:
    p = policy()
    assert p.token("a@b.c") == p.token("a@b.c")
    assert p.token("a@b.c") != p.token("a@b.d")
    assert p.token(1) != p.token("1")
    other = PiiPolicy.from_lists(b"x" * 32, pseudonymise=["email"])
    assert other.token("a@b.c") != p.token("a@b.c")  # a dictionary hashed without the key finds nothing


def test_minus_zero_and_zero_get_one_token_whichever_the_cache_saw_first() -> None:
    """-0.0 == 0.0, so the token LRU (by value and type) would answer for both with the first one
    seen: the token must not depend on that order (a join across processes)."""
    first, second = policy(), policy()
    a = [first.cached_token(-0.0), first.cached_token(0.0)]
    b = [second.cached_token(0.0), second.cached_token(-0.0)]
    assert a == b == [first.token(0.0)] * 2
    assert first.token(-0.0) == first.token(0.0)
    assert first.token(0) != first.token(0.0)  # 0 and 0.0 stay apart (their JSON types differ)


def test_policy_refuses_contradictions_and_short_keys() -> None:
    with pytest.raises(PolicyError, match="two actions"):
        PiiPolicy.from_lists(KEY, drop=["email"], keep=["email"])
    with pytest.raises(PolicyError, match="16 bytes"):
        PiiPolicy.from_lists(b"short")


def test_sampling_is_a_function_of_the_request_id() -> None:
    ids = [f"req-{i}" for i in range(20_000)]
    picked = [i for i in ids if sampled(i, 0.1)]
    assert 1_700 < len(picked) < 2_300
    assert picked == [i for i in ids if sampled(i, 0.1)]
    assert all(sampled(i, 1.0) for i in ids[:100])
    assert not any(sampled(i, 0.0) for i in ids[:100])


def test_json_lines_sink_writes_one_document_per_line() -> None:
    out = io.StringIO()
    plog = PredictionLog(JsonLinesSink(out), policy())
    for i in range(1_234):
        assert plog.log(record(i))
    plog.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1_234 == plog.written
    assert [json.loads(line)["request_id"] for line in lines] == [f"req-{i}" for i in range(1_234)]


class SlowSink:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.records: list[bytes] = []

    def write(self, lines: bytes, count: int) -> None:
        self.release.wait(10)
        assert lines.count(b"\n") == count
        self.records += lines.splitlines()

    def close(self) -> None:
        pass


def test_a_slow_sink_never_blocks_logging_records_are_dropped_and_counted() -> None:
    sink = SlowSink()
    plog = PredictionLog(sink, policy(), capacity=100, batch=10)
    start = time.perf_counter()
    results = [plog.log(record(i)) for i in range(5_000)]
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0  # 5,000 calls while the sink is stuck
    assert plog.dropped > 4_000
    # held: the buffer and the batches encoded by the caller count against the capacity; one batch
    # more is in the stuck sink's hands
    assert plog.logged <= 100 + 10
    assert plog.logged + plog.dropped == 5_000 == len(results)
    sink.release.set()
    plog.close()
    assert plog.written == plog.logged == len(sink.records)


class BrokenSink:
    def write(self, lines: bytes, count: int) -> None:
        raise OSError("disk full")

    def close(self) -> None:
        pass


def test_a_failing_sink_is_counted_not_raised() -> None:
    plog = PredictionLog(BrokenSink(), policy())
    for i in range(50):
        plog.log(record(i))
    plog.close()
    assert plog.failed == 50
    assert plog.written == 0


class FakeProducer:
    def __init__(self, room: int) -> None:
        self.room = room
        self.sent: list[tuple[str, bytes]] = []
        self.headers: list[dict[str, bytes]] = []
        self.callbacks: list[Any] = []

    def produce(self, topic: str, value: bytes, headers: Any = None, on_delivery: Any = None) -> None:
        if len(self.sent) >= self.room:
            raise BufferError("queue full")
        self.sent.append((topic, value))
        self.headers.append(dict(headers or []))
        self.callbacks.append(on_delivery)

    def poll(self, _timeout: float) -> int:
        for cb in self.callbacks:
            cb(None, None)
        self.callbacks = []
        return 0

    def flush(self, _timeout: float) -> int:
        return self.poll(0)


def test_kafka_sink_writes_batches_of_json_lines_and_drops_when_the_producer_queue_is_full() -> None:
    producer = FakeProducer(room=3)
    sink = KafkaSink(producer, "predictions")
    for batch in range(5):
        sink.write(b"".join(b'{"r":%d}\n' % (batch * 10 + i) for i in range(10)), 10)
    sink.close()
    assert len(producer.sent) == 3  # one message a batch; the queue held 3
    assert sink.dropped == 20  # the records of the 2 messages refused
    assert sink.delivered == 30
    assert {t for t, _ in producer.sent} == {"predictions"}
    records = [json.loads(line) for _, value in producer.sent for line in value.splitlines()]
    assert [r["r"] for r in records] == list(range(30))
    assert producer.headers[0] == {"content-type": b"application/jsonl", "modeldeploy-records": b"10"}


def test_kafka_messages_hold_whole_records_within_the_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from modeldeploy_serving import predlog

    monkeypatch.setattr(predlog, "MESSAGE_BYTES", 64)
    producer = FakeProducer(room=1_000)
    sink = KafkaSink(producer, "predictions")
    lines = [b'{"r":%d,"pad":"%s"}\n' % (i, b"x" * (i % 7) * 9) for i in range(40)] + [
        b'{"big":"%s"}\n' % (b"y" * 200)
    ]
    sink.write(b"".join(lines), len(lines))
    sink.close()
    values = [value for _, value in producer.sent]
    assert b"".join(values) == b"".join(lines)
    assert all(v.endswith(b"\n") and (len(v) <= 64 or v.count(b"\n") == 1) for v in values)
    assert [int(h["modeldeploy-records"]) for h in producer.headers] == [v.count(b"\n") for v in values]
    assert sink.delivered == len(lines)


def test_cached_tokens_equal_computed_ones_and_keep_json_types_apart() -> None:
    p = policy()
    for value in [1, 1.0, True, "1", None, 2.5, "a@b.c"]:
        assert p.cached_token(value) == p.token(value) == p.cached_token(value)
    assert len({p.cached_token(v) for v in [1, 1.0, True, "1"]}) == 4  # 1 == 1.0 == True in a dict
    assert p.cached_token([1, 2]) == p.token([1, 2])  # unhashable: computed, not cached


def test_rows_fast_path_matches_the_record_shape() -> None:
    """PiiPolicy.apply_rows (the REST drain's one pass over a request's rows) gives what apply() gives
    for the same columns, for a float32 matrix and for rows.ListRows, for either default."""
    import numpy as np

    from modeldeploy_serving.rows import ListRows

    index = {"plan": 0, "email": 1, "name": 2, "w1": 3}
    matrix = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.5]], dtype=np.float32)
    lists = ListRows([1, 2, 3, 4, 5, 6, None, 8.5], rows=2, features=4)
    for p in (policy(), policy(default="keep")):
        for rows in (matrix, lists):
            as_columns = {
                name: (rows.values[i::4] if isinstance(rows, ListRows) else rows[:, i].tolist())
                for name, i in index.items()
            }
            assert p.apply_rows(rows, index) == p.apply(as_columns)
            assert list(p.apply_rows(rows, index)) == list(p.apply(as_columns))  # the same key order
    assert list(policy().apply_rows(matrix, index)) == ["email", "plan"]  # name: dropped, w1: default


def test_numpy_outputs_are_written_as_their_values() -> None:
    import numpy as np

    from modeldeploy_serving.predlog import dumps

    outputs = {"probabilities": np.array([[0.81, 0.19]], dtype=np.float32), "label": np.array([0])}
    strided = np.arange(6, dtype=np.float32).reshape(2, 3)[:, 1]  # not contiguous: falls back to tolist
    doc = json.loads(dumps({"outputs": outputs, "column": strided}))
    assert doc == {"outputs": {"probabilities": [[0.81, 0.19]], "label": [0]}, "column": [1.0, 4.0]}
    with pytest.raises(TypeError):
        dumps({"x": object()})


class ThreadNoting(RecordEncoder):
    """Items (this, n): notes which thread encoded each run of records."""

    def __init__(self) -> None:
        self.threads: list[tuple[int, int]] = []  # (thread id, records)

    def body(self, item: tuple[Any, ...], policy: PiiPolicy) -> dict[str, Any]:
        return {"n": item[1]}

    def lines(self, items: list[tuple[Any, ...]], policy: PiiPolicy) -> bytes:
        self.threads.append((threading.get_ident(), len(items)))
        return super().lines(items, policy)


def wait_until(what: str, probe: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@pytest.mark.parametrize("in_caller", [True, False])
def test_full_batches_are_encoded_by_the_caller_and_the_rest_by_the_drain_thread(in_caller: bool) -> None:
    """With encode_in_caller (the default) a full batch is encoded where its records were made (the
    event loop), and the drain thread only writes; records of a batch not yet full are encoded by the
    drain thread when it wakes (every 0.1 s). Off: the drain thread encodes everything."""
    out = io.StringIO()
    encoder = ThreadNoting()
    plog = PredictionLog(JsonLinesSink(out), policy(), encode_in_caller=in_caller)
    me = threading.get_ident()
    n = 2 * WAKE_EVERY + 5
    for i in range(n):
        assert plog.defer((encoder, i))
    wait_until("every record written", lambda: plog.written == n)
    by_caller = sum(count for thread, count in encoder.threads if thread == me)
    assert by_caller == (2 * WAKE_EVERY if in_caller else 0)
    assert sum(count for _, count in encoder.threads) == n
    plog.close()
    assert [json.loads(line)["n"] for line in out.getvalue().splitlines()] == list(range(n))


class NotingEvent(threading.Event):
    """An Event that counts its set() calls (the drain thread's wake-ups asked for)."""

    def __init__(self) -> None:
        super().__init__()
        self.sets = 0

    def set(self) -> None:
        self.sets += 1
        super().set()


@pytest.mark.parametrize(("capacity", "woken"), [(10_000, False), (2 * WAKE_EVERY, True)])
def test_an_encoded_batch_wakes_the_drain_thread_only_when_it_fills_half_the_buffer(
    capacity: int, woken: bool
) -> None:
    """The caller that encodes a full batch does not wake the drain thread (each wake-up took the GIL
    from the event loop): the thread writes it when its 0.1 s wait ends. With encoded records at half
    the capacity it is woken, so that a small buffer does not drop records waiting for a write."""
    out = io.StringIO()
    encoder = ThreadNoting()
    plog = PredictionLog(JsonLinesSink(out), policy(), capacity=capacity)
    wake = NotingEvent()
    plog._wake = wake  # the drain thread waits on it from its next wait on (only defer and close set it)
    for i in range(WAKE_EVERY):
        assert plog.defer((encoder, i))
    assert (wake.sets > 0) is woken
    wait_until("the batch written", lambda: plog.written == WAKE_EVERY)
    assert encoder.threads == [(threading.get_ident(), WAKE_EVERY)]
    plog.close()
    assert [json.loads(line)["n"] for line in out.getvalue().splitlines()] == list(range(WAKE_EVERY))


class GateEvent(threading.Event):
    """An Event whose waits block until `opened` is set (the test decides when the drain thread next
    looks); `waiting` says a wait has begun."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()
        self.opened = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        self.opened.wait()
        return super().wait(timeout)


class NotingSink:
    """A sink noting the record count of each write."""

    def __init__(self) -> None:
        self.out = io.StringIO()
        self.writes: list[int] = []

    def write(self, lines: bytes, count: int) -> None:
        self.writes.append(count)
        self.out.write(lines.decode())

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("message_bytes", "writes"), [(256 * 1024, [5 * WAKE_EVERY]), (1, [WAKE_EVERY] * 5)])
def test_batches_encoded_in_one_wait_are_written_together_up_to_the_message_size(
    monkeypatch: pytest.MonkeyPatch, message_bytes: int, writes: list[int]
) -> None:
    """The batches the callers encode while the drain thread waits go to the sink in as few writes
    as MESSAGE_BYTES allows (one Kafka produce and delivery report per ~256 KB, not per 64 records);
    a batch over the limit alone still goes whole, in order."""
    from modeldeploy_serving import predlog

    monkeypatch.setattr(predlog, "MESSAGE_BYTES", message_bytes)
    sink = NotingSink()
    plog = PredictionLog(sink, policy())
    gate = GateEvent()
    plog._wake = gate
    assert gate.waiting.wait(10), "the drain thread reaches its next wait"
    encoder = ThreadNoting()
    for i in range(5 * WAKE_EVERY):
        assert plog.defer((encoder, i))
    assert encoder.threads == [(threading.get_ident(), WAKE_EVERY)] * 5  # all encoded here, none written
    assert sink.writes == []
    gate.opened.set()
    wait_until("the batches written", lambda: plog.written == 5 * WAKE_EVERY)
    plog.close()
    assert sink.writes == writes
    assert [json.loads(line)["n"] for line in sink.out.getvalue().splitlines()] == list(range(5 * WAKE_EVERY))
    assert plog._encoded_records == 0


class Refusing(ThreadNoting):
    def body(self, item: tuple[Any, ...], policy: PiiPolicy) -> dict[str, Any]:
        if item[1] == 3:
            raise ValueError("cannot encode this one")
        return super().body(item, policy)


def test_a_record_the_caller_cannot_encode_costs_only_itself() -> None:
    out = io.StringIO()
    plog = PredictionLog(JsonLinesSink(out), policy())
    encoder = Refusing()
    for i in range(WAKE_EVERY):  # one full batch: encoded by this thread
        assert plog.defer((encoder, i))
    plog.close()
    assert plog.failed == 1
    assert plog.written == WAKE_EVERY - 1
    assert [json.loads(line)["n"] for line in out.getvalue().splitlines()] == [
        i for i in range(WAKE_EVERY) if i != 3
    ]
