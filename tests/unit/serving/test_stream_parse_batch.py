"""StreamRunner._parse on real confluent_kafka Message objects (no broker): records to score with
their request ids (header, V2 id, else topic-partition-offset), dead letters, the next offset per
partition, replays counted; and the batch of feature records without headers (no per-record loop)
giving the same answer as the general path."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from modeldeploy_contract.stream_settings import StreamSettings
from modeldeploy_serving.stream.records import INVALID, RecordError, RecordParser
from modeldeploy_serving.stream.runner import Batch, StreamRunner

confluent_kafka = pytest.importorskip("confluent_kafka")
FEATURES = ["a", "b"]


def runner() -> StreamRunner:
    settings = StreamSettings(
        bootstrap_servers="127.0.0.1:9", input_topic="in", output_topic="out", group_id="g"
    )
    metrics = SimpleNamespace(model="m-parse", version="v-parse")
    return StreamRunner(settings, SimpleNamespace(metrics=metrics))  # type: ignore[arg-type]


def message(partition: int, offset: int, value: bytes | None, headers: Any = None) -> Any:
    return confluent_kafka.Message(
        topic="in", partition=partition, offset=offset, value=value, headers=headers
    )


def replayed() -> float:
    labels = {"model": "m-parse", "version": "v-parse"}
    return REGISTRY.get_sample_value("modeldeploy_stream_replayed_records_total", labels) or 0.0


def parse(r: StreamRunner, messages: list[Any]) -> tuple[Any, ...]:
    batch = Batch(messages, SimpleNamespace(create_future=lambda: None))  # type: ignore[arg-type]
    good, parsed, ids, bad, matrix = r._parse(batch, RecordParser(FEATURES, ["y"], 1 << 20, 8))
    return good, list(parsed), ids, bad, matrix, batch.offsets


def test_ids_dead_letters_offsets_and_replays() -> None:
    r = runner()
    r._scored_up_to[("in", 1)] = 11  # offsets 9 and 10 of partition 1 were scored before
    v2 = b'{"id": "v2-id", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}'
    messages = [
        message(0, 5, b'{"a": 1, "b": 2}'),
        message(1, 9, b'{"a": 1, "b": null}', [("request-id", b"hdr-9")]),
        message(1, 10, b'{"a": 1}'),
        message(0, 6, v2),
        message(1, 11, b'{"a": true, "b": 2}', [("request-id", b"hdr-11")]),
        message(0, 7, b'{"a": 3, "b": 4}'),
    ]
    before = replayed()
    good, parsed, ids, bad, matrix, offsets = parse(r, messages)
    assert ids == ["in-0-5", "hdr-9", "v2-id", "in-0-7"]
    assert [m.offset() for m in good] == [5, 9, 6, 7]
    assert [(m.offset(), e.kind, rid) for m, e, rid in bad] == [
        (10, INVALID, "in-1-10"),
        (11, INVALID, "hdr-11"),
    ]
    assert all(isinstance(e, RecordError) for _, e, _ in bad)
    assert [p.rows for p in parsed] == [1, 1, 1, 1]
    assert matrix is None  # a V2 record among them: assemble() makes the matrix
    assert offsets == {("in", 0): 8, ("in", 1): 12}
    assert r._scored_up_to == {("in", 0): 8, ("in", 1): 12}
    assert replayed() - before == 2  # offsets 9 and 10 again


def test_feature_batch_without_headers_matches_the_general_path() -> None:
    values = [b'{"a": %d, "b": null, "id": "x"}' % i for i in range(5)]
    plain = [message(i % 2, 100 + i, v) for i, v in enumerate(values)]
    with_header = [*plain[:-1], message(0, 104, values[-1], [("other", b"1")])]  # general path
    before = replayed()
    fast, general = parse(runner(), plain), parse(runner(), with_header)
    assert fast[2] == general[2] == [f"in-{i % 2}-{100 + i}" for i in range(5)]
    assert [p.row for p in fast[1]] == [p.row for p in general[1]] == [[i, None] for i in range(5)]
    assert fast[3] == general[3] == []
    assert fast[4] is not None
    assert general[4] is not None
    assert np.array_equal(fast[4], general[4], equal_nan=True)
    assert fast[5] == general[5] == {("in", 0): 105, ("in", 1): 104}
    assert replayed() == before
