"""The joiner's label topic consumer with a fake Kafka consumer: per-item outcomes as over HTTP, offsets
committed only after the store write, a store failure commits nothing and the batch comes again, a
poison label is skipped, a failed commit is made up for, a failed consumer is replaced. The same
against the real broker: tests/integration/stream/test_stream_joiner.py."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from modeldeploy_contract.joiner_settings import JoinerSettings
from modeldeploy_contract.stream_settings import LabelTopicSettings
from modeldeploy_serving.joiner.app import Joiner
from modeldeploy_serving.joiner.labels_kafka import LabelTopicConsumer, items_of
from modeldeploy_serving.joiner.parse import Feedback, Invalid

T0 = 1_800_000_000.0
DAY = 86_400.0
LABELS = LabelTopicSettings(bootstrap_servers="unused:9092", topic="labels", group_id="g", retry_seconds=0.01)


class FatalError:
    def fatal(self) -> bool:
        return True

    def __str__(self) -> str:
        return "KafkaError{code=_FENCED,val=-144,str=fenced}"


class Message:
    def __init__(self, value: bytes | None, offset: int, partition: int = 0, error: Any = None) -> None:
        self._value, self._offset, self._partition, self._error = value, offset, partition, error

    def value(self) -> bytes | None:
        return self._value

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return self._partition

    def topic(self) -> str:
        return "labels"

    def error(self) -> Any:
        return self._error


class FakeConsumer:
    """Hands out `batches` in order (a seek puts the last one back), records commits and seeks."""

    def __init__(
        self,
        batches: list[list[Message]],
        stop: asyncio.Event | None,
        loop: asyncio.AbstractEventLoop,
        failing_commits: int = 0,
    ):
        """`stop`: set when the batches are out (None: never); `failing_commits`: the first ones raise."""
        self.batches = batches
        self.commits: list[dict[tuple[str, int], int]] = []
        self.seeks: list[tuple[str, int, int]] = []
        self.last: list[Message] = []
        self.stop, self.loop = stop, loop
        self.failing_commits = failing_commits
        self.closed = False

    def subscribe(self, topics: list[str], on_revoke: Any = None) -> None:
        assert topics == ["labels"]

    def assignment(self) -> list[Any]:
        return []  # no lag read (the real broker's test reads it)

    def consume(self, n: int, timeout: float) -> list[Message]:
        if not self.batches:
            if self.stop is not None:
                self.loop.call_soon_threadsafe(self.stop.set)
            return []
        self.last = self.batches.pop(0)
        return self.last

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        assert asynchronous is False  # the commit is done before the next batch is read
        if self.failing_commits:
            self.failing_commits -= 1
            raise RuntimeError("KafkaError{code=_TRANSPORT}: the broker is away")
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))
        self.batches.insert(0, self.last)

    def close(self) -> None:
        self.closed = True


def _record(rid: str, at: float = T0, classes: int = 2) -> dict[str, Any]:
    return {"request_id": rid, "deployment": "churn", "variant": "a", "revision": "r1",
            "model_version": "v1", "score": 0.7, "label": 1, "classes": classes, "time": at}  # fmt: skip


@pytest.fixture
async def joiner(tmp_path: Path) -> Any:
    j = Joiner(
        JoinerSettings(database=f"sqlite:///{tmp_path / 'j.db'}", retention_seconds=30 * DAY), lambda: T0
    )
    await j.start(background=False)
    body = {"predictions": [_record("p1"), _record("p2"), _record("p3"), _record("old", T0 - 31 * DAY)]}
    assert (await j.add_predictions(orjson.dumps(body)))["stored"] == 4
    yield j
    await j.stop()


def test_items_of_records_index_across_the_batch_and_unreadable_records_are_one_invalid_item() -> None:
    messages = [
        Message(b'{"request_id": "a", "label": 1}', 0),
        Message(b'{"labels": [{"request_id": "b", "label": 0}, {"label": 1}]}', 1),
        Message(None, 2),
        Message(b"{not json", 3),
        Message(b"[1, 2]", 4),
        Message(orjson.dumps({"labels": [{"request_id": "x", "label": 1}] * 3}), 5),
    ]
    items, where = items_of(messages, max_items=2)
    assert [i.index for i in items] == list(range(len(items)))
    kinds = [type(i).__name__ for i in items]
    assert kinds == ["Feedback", "Feedback", "Invalid", "Invalid", "Invalid", "Invalid", "Invalid"]
    assert where == [
        "labels/0/0",
        "labels/0/1",
        "labels/0/1",
        "labels/0/2",
        "labels/0/3",
        "labels/0/4",
        "labels/0/5",
    ]
    reasons = [i.reason for i in items if isinstance(i, Invalid)]
    assert "request_id" in reasons[0]
    assert "no value" in reasons[1]
    assert "not JSON" in reasons[2]
    assert "must be an object" in reasons[3]
    assert "3 items in one request" in reasons[4]
    assert isinstance(items[0], Feedback)
    assert items[0].request_id == "a"


async def test_bad_labels_are_counted_the_rest_joined_and_offsets_committed_after(joiner: Joiner) -> None:
    stop = asyncio.Event()
    batch = [
        Message(b'{"request_id": "p1", "label": 1}', 10),
        Message(b'{"request_id": "nobody", "label": 1}', 11),  # unknown request id
        Message(b'{"request_id": "old", "label": 1}', 12),  # expired
        Message(b'{"request_id": "p2", "label": 7}', 13),  # not a class of this model
        Message(b'{"request_id": "p2", "label": "yes"}', 14),  # wrong type
        Message(b"garbage", 15),  # unreadable
        Message(b'{"request_id": "p3", "label": 0}', 16, partition=1),
    ]
    again = [
        Message(b'{"request_id": "p1", "label": 1}', 17),
        Message(b'{"request_id": "p3", "label": 1}', 3, 1),
    ]
    fake = FakeConsumer([batch, again], stop, asyncio.get_running_loop())
    await LabelTopicConsumer(LABELS, joiner, lambda: fake).run(stop)
    assert fake.commits == [{("labels", 0): 16, ("labels", 1): 17}, {("labels", 0): 18, ("labels", 1): 4}]
    assert fake.closed
    counts = {s.labels[0]: s.value for s in _samples(joiner, "modeldeploy_joiner_labels_total")}
    assert counts == {"joined": 2, "unknown_request": 1, "expired": 1, "invalid_label": 2, "invalid": 1,
                      "duplicate": 1, "conflict": 1}  # fmt: skip
    batches = {s.labels[0]: s.value for s in _samples(joiner, "modeldeploy_joiner_label_topic_batches_total")}
    assert batches == {"committed": 2}


async def test_a_store_failure_commits_nothing_and_the_batch_is_joined_again(
    joiner: Joiner, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = asyncio.Event()
    fake = FakeConsumer([[Message(b'{"request_id": "p1", "label": 1}', 5)]], stop, asyncio.get_running_loop())
    store = joiner.store
    assert store is not None
    real = store.join_labels
    calls = []

    def flaky(*args: Any) -> Any:
        calls.append(1)
        if len(calls) <= 2:  # the batch, then its one label alone: the store refuses everything
            raise RuntimeError("database is locked")
        return real(*args)

    monkeypatch.setattr(store, "join_labels", flaky)
    await LabelTopicConsumer(LABELS, joiner, lambda: fake).run(stop)
    assert fake.seeks == [("labels", 0, 5)]
    assert fake.commits == [{("labels", 0): 6}]  # only after the write that worked
    counts = {s.labels[0]: s.value for s in _samples(joiner, "modeldeploy_joiner_labels_total")}
    assert counts == {"joined": 1}
    batches = {s.labels[0]: s.value for s in _samples(joiner, "modeldeploy_joiner_label_topic_batches_total")}
    assert batches == {"store_failed": 1, "committed": 1}


async def test_a_poison_label_is_skipped_counted_and_the_rest_of_its_batch_joined(
    joiner: Joiner, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A label the store refuses alone, while it stores the others of the batch, never holds its
    partition back; a store that refuses everything is down (the batch comes again)."""
    stop = asyncio.Event()
    batch = [
        Message(b'{"request_id": "p1", "label": 1}', 7),
        Message(b'{"labels": [{"request_id": "p2", "label": 0}, {"request_id": "p3", "label": 1}]}', 8),
        Message(b'{"request_id": "nobody", "label": 1}', 9),
    ]
    fake = FakeConsumer([batch], stop, asyncio.get_running_loop())
    store = joiner.store
    assert store is not None
    real = store.join_labels

    def refuses_p2(labels: list[Feedback], *args: Any) -> Any:
        if any(f.request_id == "p2" for f in labels):
            raise RuntimeError("value too long for type character varying")
        return real(labels, *args)

    monkeypatch.setattr(store, "join_labels", refuses_p2)
    await LabelTopicConsumer(LABELS, joiner, lambda: fake).run(stop)
    assert fake.seeks == []
    assert fake.commits == [{("labels", 0): 10}]
    counts = {s.labels[0]: s.value for s in _samples(joiner, "modeldeploy_joiner_labels_total")}
    assert counts == {"joined": 2, "unknown_request": 1, "store_refused": 1}
    assert "poison label p2 (record labels/0/8) skipped" in caplog.text
    summary = await joiner.summary(fresh=True)
    assert summary.deployments[0].windows[0].arms[0].quality.labelled == 2


async def test_an_unreachable_store_is_waited_out_whole_never_split_into_poison_labels(
    joiner: Joiner, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The store's database cannot be reached (store.py says so: StoreUnavailableError), for the whole
    batch or only once the batch was split after a refusal: a lost connection is no poison, so no label
    is skipped; nothing is committed until the whole batch is joined in one transaction, counted once."""
    from modeldeploy_serving.joiner.store import StoreUnavailableError

    stop = asyncio.Event()
    batch = [
        Message(b'{"request_id": "p1", "label": 1}', 3),
        Message(b'{"labels": [{"request_id": "p2", "label": 0}, {"request_id": "p3", "label": 1}]}', 4),
    ]
    fake = FakeConsumer([batch], stop, asyncio.get_running_loop())
    store = joiner.store
    assert store is not None
    real = store.join_labels
    calls: list[list[str]] = []

    def outage(labels: list[Feedback], *args: Any) -> Any:
        calls.append([f.request_id for f in labels])
        if len(calls) <= 2:  # twice down
            raise StoreUnavailableError("the database cannot be reached: connection refused", 3)
        if len(calls) == 3:  # then a refusal (the batch is split) and down again for its first label
            raise RuntimeError("canceling statement due to lock timeout")
        if len(calls) == 4:
            raise StoreUnavailableError("the database cannot be reached: connection refused", 1)
        return real(labels, *args)

    monkeypatch.setattr(store, "join_labels", outage)
    await LabelTopicConsumer(LABELS, joiner, lambda: fake).run(stop)
    whole = ["p1", "p2", "p3"]
    assert calls[:4] == [whole, whole, whole, ["p1"]]  # never split while the store is unreachable
    assert calls[4] == whole  # joined whole, in one transaction
    assert fake.seeks == [("labels", 0, 3)] * 3
    assert fake.commits == [{("labels", 0): 5}]
    counts = {s.labels[0]: s.value for s in _samples(joiner, "modeldeploy_joiner_labels_total")}
    assert counts == {"joined": 3}
    batches = {s.labels[0]: s.value for s in _samples(joiner, "modeldeploy_joiner_label_topic_batches_total")}
    assert batches == {"store_failed": 3, "committed": 1}
    assert "poison" not in caplog.text
    assert "cannot be reached" not in caplog.text  # the store logs its outage, not every batch


async def test_a_failed_commit_is_made_up_for_by_the_next_one(joiner: Joiner) -> None:
    """The broker away at commit time: the stored batch's offsets are kept and committed with the next
    batch (or alone), so they are not consumed again."""
    stop = asyncio.Event()
    first = [Message(b'{"request_id": "p1", "label": 1}', 3, partition=1)]
    second = [Message(b'{"request_id": "p2", "label": 0}', 9)]
    fake = FakeConsumer([first, second], stop, asyncio.get_running_loop(), failing_commits=1)
    await LabelTopicConsumer(LABELS, joiner, lambda: fake).run(stop)
    assert fake.commits == [{("labels", 1): 4, ("labels", 0): 10}]
    batches = {s.labels[0]: s.value for s in _samples(joiner, "modeldeploy_joiner_label_topic_batches_total")}
    assert batches == {"commit_failed": 1, "committed": 1}

    stop.clear()  # alone: a failed commit with no batch after it is retried every retry_seconds
    fake = FakeConsumer([[Message(b'{"request_id": "p3", "label": 1}', 4)]], None, asyncio.get_running_loop(),
                        failing_commits=2)  # fmt: skip
    task = asyncio.create_task(LabelTopicConsumer(LABELS, joiner, lambda: fake).run(stop))
    while not fake.commits:
        await asyncio.sleep(0.01)
    stop.set()
    await task
    assert fake.commits == [{("labels", 0): 5}]


async def test_a_failed_consumer_is_replaced_and_goes_on(
    joiner: Joiner, caplog: pytest.LogCaptureFixture
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    broken = FakeConsumer([[Message(None, 0, error=FatalError())]], None, loop)
    working = FakeConsumer([[Message(b'{"request_id": "p1", "label": 1}', 0)]], stop, loop)
    made = iter([broken, working])
    await LabelTopicConsumer(LABELS, joiner, lambda: next(made)).run(stop)
    assert broken.closed
    assert broken.commits == []
    assert working.commits == [{("labels", 0): 1}]
    assert [s.value for s in _samples(joiner, "modeldeploy_joiner_label_consumer_restarts_total")] == [1]
    assert "the label consumer failed; a new one starts in" in caplog.text
    assert "_FENCED" in caplog.text


async def test_a_consumer_that_cannot_be_made_is_retried_with_a_growing_pause(joiner: Joiner) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    attempts: list[float] = []

    def refuse() -> Any:  # in the consumer's thread
        attempts.append(time.monotonic())
        if len(attempts) == 4:
            loop.call_soon_threadsafe(stop.set)
        raise ValueError('Configuration property "sasl.mechanism" set to invalid value')

    consumer = LabelTopicConsumer(LABELS, joiner, refuse)
    await consumer.run(stop)
    assert len(attempts) == 4
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[2] >= 3.5 * LABELS.retry_seconds  # 0.01, 0.02, 0.04: doubling
    assert consumer._restart_delay == pytest.approx(LABELS.retry_seconds * 8)
    assert [s.value for s in _samples(joiner, "modeldeploy_joiner_label_consumer_restarts_total")] == [4]


def _samples(joiner: Joiner, name: str) -> list[Any]:
    out = []
    for family in joiner.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                out.append(type("S", (), {"labels": list(sample.labels.values()), "value": sample.value}))
    return out
