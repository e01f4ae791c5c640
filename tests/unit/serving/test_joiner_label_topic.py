"""The joiner's label topic consumer with a fake Kafka consumer: per-item outcomes as over HTTP, offsets
committed only after the store write, a store failure commits nothing and the batch comes again."""

from __future__ import annotations

import asyncio
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


class Message:
    def __init__(self, value: bytes | None, offset: int, partition: int = 0) -> None:
        self._value, self._offset, self._partition = value, offset, partition

    def value(self) -> bytes | None:
        return self._value

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return self._partition

    def topic(self) -> str:
        return "labels"

    def error(self) -> None:
        return None


class FakeConsumer:
    """Hands out `batches` in order (a seek puts the last one back), records commits and seeks."""

    def __init__(self, batches: list[list[Message]], stop: asyncio.Event, loop: asyncio.AbstractEventLoop):
        self.batches = batches
        self.commits: list[dict[tuple[str, int], int]] = []
        self.seeks: list[tuple[str, int, int]] = []
        self.last: list[Message] = []
        self.stop, self.loop = stop, loop
        self.closed = False

    def subscribe(self, topics: list[str]) -> None:
        assert topics == ["labels"]

    def consume(self, n: int, timeout: float) -> list[Message]:
        if not self.batches:
            self.loop.call_soon_threadsafe(self.stop.set)
            return []
        self.last = self.batches.pop(0)
        return self.last

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        assert asynchronous is False  # the commit is done before the next batch is read
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
    await LabelTopicConsumer(LABELS, joiner, fake).run(stop)
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
        if len(calls) == 1:
            raise RuntimeError("database is locked")
        return real(*args)

    monkeypatch.setattr(store, "join_labels", flaky)
    await LabelTopicConsumer(LABELS, joiner, fake).run(stop)
    assert fake.seeks == [("labels", 0, 5)]
    assert fake.commits == [{("labels", 0): 6}]  # only after the write that worked
    counts = {s.labels[0]: s.value for s in _samples(joiner, "modeldeploy_joiner_labels_total")}
    assert counts == {"joined": 1}
    batches = {s.labels[0]: s.value for s in _samples(joiner, "modeldeploy_joiner_label_topic_batches_total")}
    assert batches == {"store_failed": 1, "committed": 1}


def _samples(joiner: Joiner, name: str) -> list[Any]:
    out = []
    for family in joiner.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                out.append(type("S", (), {"labels": list(sample.labels.values()), "value": sample.value}))
    return out
