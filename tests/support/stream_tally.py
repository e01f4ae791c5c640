"""The output topic of a stream test read in a thread and tallied per input record (the pod-kill e2e
test: tests/e2e/test_stream_e2e.py)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import numpy as np
import orjson


class OutputTally:
    """Reads the output topic from its start in a thread and keeps, per input record (its key is its
    index), compact arrays: outputs seen, the first output's request id (input partition and offset)
    and the largest difference from the model's own probabilities; never the records themselves
    (1,000,000 outputs as Records would be about 1 GB).

    The positions read (read_up_to) are published only after a read chunk's outputs are counted: set
    per message as they were before 2026-12-05, they said "read to the end" while the last chunk's
    counts were still to be added, and a test checking scored() right then missed a whole chunk
    (tests/unit/serving/test_stream_output_tally.py)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        expected: np.ndarray,
        partitions: int,
        tolerance: float,
        consumer: Any = None,
    ) -> None:
        """`consumer`: a consumer already assigned to the topic (tests); by default one from its start."""
        n = len(expected)
        self.expected = expected
        self.tolerance = tolerance
        self.counts = np.zeros(n, np.int32)
        self.id_partition = np.full(n, -1, np.int16)
        self.id_offset = np.full(n, -1, np.int64)
        self.total = self.mismatched = self.other_ids = 0
        self.unexpected: list[str] = []  # outputs that are not of an input record, or malformed
        self.max_error = 0.0
        self.worst: tuple[float, int] = (0.0, -1)
        self.revisions: set[str] = set()
        self.first_ms, self.last_ms = 2**62, 0
        self.positions: dict[int, int] = {}
        self.error: BaseException | None = None
        if consumer is None:
            from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

            consumer = Consumer(
                {
                    "bootstrap.servers": bootstrap,
                    "group.id": f"tally-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                }
            )
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        self.consumer = consumer
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> OutputTally:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)
        self.consumer.close()

    def scored(self) -> int:
        """Input records with at least one output."""
        if self.error is not None:
            raise AssertionError("the output reader failed") from self.error
        return int(np.count_nonzero(self.counts))

    def missing(self) -> list[int]:
        """The input records (keys) with no output."""
        if self.error is not None:
            raise AssertionError("the output reader failed") from self.error
        return np.flatnonzero(self.counts == 0).tolist()

    def read_up_to(self, ends: dict[int, int]) -> bool:
        """Every output below these offsets read and counted."""
        return all(self.positions.get(p, 0) >= end for p, end in ends.items())

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                messages = self.consumer.consume(5000, 0.2)
                if messages:
                    self._tally(messages)
        except BaseException as error:  # reported by the test's thread (scored())
            self.error = error

    def _tally(self, messages: list[Any]) -> None:
        size = len(messages)
        index = np.empty(size, np.int64)
        probabilities = np.empty((size, 2), np.float64)
        partitions = np.empty(size, np.int16)
        offsets = np.empty(size, np.int64)
        positions: dict[int, int] = {}
        k = 0
        for m in messages:
            if m.error():
                continue
            positions[m.partition()] = m.offset() + 1
            self.total += 1
            key = m.key() or b""
            request_id = dict(m.headers() or []).get("request-id", b"").decode()
            body = orjson.loads(m.value())
            if not key.isdigit() or int(key) >= len(self.counts) or body["request_id"] != request_id:
                self.unexpected.append(f"{key!r} {request_id} {m.value()[:200]!r}")
                continue
            _, partition, offset = request_id.rsplit("-", 2)  # <topic>-<partition>-<offset>
            index[k], partitions[k], offsets[k] = int(key), int(partition), int(offset)
            probabilities[k] = body["outputs"]["probabilities"]
            self.revisions.add(body["revision"])
            stamp = m.timestamp()[1]
            self.first_ms, self.last_ms = min(self.first_ms, stamp), max(self.last_ms, stamp)
            k += 1
        index, probabilities, partitions, offsets = index[:k], probabilities[:k], partitions[:k], offsets[:k]
        error = np.abs(probabilities - self.expected[index]).max(axis=1) if k else np.zeros(0)
        if k and error.max() > self.max_error:
            self.max_error = float(error.max())
            self.worst = (self.max_error, int(index[error.argmax()]))
        self.mismatched += int(np.count_nonzero(error > self.tolerance))
        first = self.counts[index] == 0
        np.add.at(self.counts, index, 1)
        self.id_partition[index[first]] = partitions[first]
        self.id_offset[index[first]] = offsets[first]
        # A duplicate carries its first output's request id: the same input record scored again.
        same = (self.id_partition[index] == partitions) & (self.id_offset[index] == offsets)
        self.other_ids += int(np.count_nonzero(~same))
        # last: read_up_to() is true only once this chunk is counted (the test's thread reads the
        # counts right after it; one dict update is atomic under the GIL)
        self.positions.update(positions)
