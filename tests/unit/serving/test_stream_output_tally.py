"""The pod-kill e2e test's output reader (tests/support/stream_tally.py): "read to the end" is never
true while outputs it has read are not counted yet. It was (2026-12-04): the positions were set per
message, the counts once per chunk after them, so the test's thread could see the topic read to its
end, check the counts, and miss the last chunk's records (reported as records committed without an
output)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from stream_tally import OutputTally


class FakeMessage:
    """What OutputTally reads of a confluent_kafka.Message; `on_value` runs when its value is read."""

    def __init__(self, key: int, partition: int, offset: int, on_value: Callable[[], None] | None = None):
        self._key, self._partition, self._offset, self._on_value = key, partition, offset, on_value
        self._id = f"events-{partition}-{offset}"

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"%d" % self._key

    def headers(self) -> list[tuple[str, bytes]]:
        return [("request-id", self._id.encode())]

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_000 + self._offset)

    def value(self) -> bytes:
        if self._on_value is not None:
            self._on_value()
        body = {"request_id": self._id, "revision": "r1", "outputs": {"probabilities": [0.25, 0.75]}}
        return orjson.dumps(body)


class NoConsumer:
    def close(self) -> None:
        pass


def test_the_end_is_read_only_once_every_record_read_is_counted() -> None:
    n = 6
    expected = np.tile([0.25, 0.75], (n, 1))
    tally = OutputTally("", "events-scores", expected, partitions=2, tolerance=1e-6, consumer=NoConsumer())
    ends = {0: 3, 1: 3}
    seen: list[tuple[bool, int]] = []

    def probe() -> None:  # what the test's thread could see at this moment
        seen.append((tally.read_up_to(ends), tally.scored()))

    messages: list[Any] = [FakeMessage(i, i % 2, i // 2) for i in range(n - 1)]
    messages.append(FakeMessage(n - 1, 1, 2, on_value=probe))  # the last record of the topic
    tally._tally(messages)
    assert seen == [(False, 0)]  # mid-chunk: not read to the end
    assert tally.read_up_to(ends)
    assert tally.scored() == n
    assert tally.missing() == []
    assert tally.mismatched == 0
    assert tally.other_ids == 0
    assert tally.unexpected == []


def test_missing_names_the_records_without_an_output() -> None:
    expected = np.tile([0.25, 0.75], (4, 1))
    tally = OutputTally("", "events-scores", expected, partitions=1, tolerance=1e-6, consumer=NoConsumer())
    tally._tally([FakeMessage(0, 0, 0), FakeMessage(2, 0, 1)])
    assert tally.missing() == [1, 3]
    assert tally.read_up_to({0: 2})
    assert not tally.read_up_to({0: 3})
