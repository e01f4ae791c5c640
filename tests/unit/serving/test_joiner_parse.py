"""Property tests of the joiner's body parsers: any bytes give a per-item answer or one clear error."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy_serving.joiner.parse import (
    BodyError,
    Feedback,
    Invalid,
    PredictionRecord,
    TooManyItemsError,
    label_error,
    parse_feedback,
    parse_predictions,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
request_ids = st.text(min_size=1, max_size=256)
labels = st.integers(min_value=0, max_value=1)
good_label = st.fixed_dictionaries({"request_id": request_ids, "label": labels})
label_items = st.one_of(good_label, json_values)


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_fail_cleanly(body: bytes) -> None:
    for parser in (parse_feedback, parse_predictions):
        try:
            items = parser(body, 100)
        except (BodyError, TooManyItemsError):
            continue
        assert all(isinstance(i, Feedback | Invalid | PredictionRecord) for i in items)


@given(st.lists(label_items, max_size=30))
@settings(max_examples=200)
def test_every_item_of_a_batch_gets_one_answer_in_order(items: list[Any]) -> None:
    parsed = parse_feedback(orjson.dumps({"labels": items}), 1000)
    assert [p.index for p in parsed] == list(range(len(items)))
    for item, p in zip(items, parsed, strict=True):
        well_formed = (
            isinstance(item, dict)
            and isinstance(item.get("request_id"), str)
            and 0 < len(item["request_id"]) <= 256
            and "\x00" not in item["request_id"]
            and "label" in item
            and item.get("time") is None
        )
        if well_formed:
            assert isinstance(p, Feedback)
            assert (p.request_id, p.label) == (item["request_id"], item["label"])
        elif isinstance(p, Feedback):  # only an acceptable "time" makes other items valid
            assert isinstance(item, dict)
            assert isinstance(item.get("time"), int | float)


@given(st.lists(good_label, min_size=5, max_size=20))
def test_too_many_items_is_one_error(items: list[dict[str, Any]]) -> None:
    with pytest.raises(TooManyItemsError):
        parse_feedback(orjson.dumps({"labels": items}), 4)


@given(json_values, st.integers(min_value=2, max_value=10))
def test_label_error_accepts_exactly_the_classes(label: Any, classes: int) -> None:
    ok = type(label) is int and 0 <= label < classes
    assert (label_error(label, classes) is None) == ok


record = st.fixed_dictionaries(
    {
        "request_id": request_ids,
        "deployment": st.text(min_size=1, max_size=20),
        "variant": st.text(min_size=1, max_size=20),
        "revision": st.text(min_size=1, max_size=20),
        "model_version": st.text(min_size=1, max_size=20),
        "score": st.floats(min_value=0, max_value=1),
        "label": labels,
    },
    optional={"time": st.floats(min_value=0, max_value=4e9), "classes": st.just(2)},
)


@given(st.lists(st.one_of(record, json_values), max_size=20))
def test_prediction_records_round_trip(items: list[Any]) -> None:
    parsed = parse_predictions(orjson.dumps({"predictions": items}), 1000)
    assert [p.index for p in parsed] == list(range(len(items)))
    for item, p in zip(items, parsed, strict=True):
        if isinstance(p, PredictionRecord):
            assert p.request_id == item["request_id"]
            assert 0 <= p.score <= 1
            assert p.predicted in (0, 1) or p.classes > 2


def test_a_single_item_needs_no_batch_and_reasons_are_clear() -> None:
    [one] = parse_feedback(b'{"request_id": "a", "label": 1}', 10)
    assert isinstance(one, Feedback)
    [bad] = parse_feedback(b'{"request_id": "a"}', 10)
    assert isinstance(bad, Invalid)
    assert bad.reason == "'label' is missing"
    [bad_prediction] = parse_predictions(
        b'{"request_id": "a", "deployment": "d", "variant": "v", "revision": "r", '
        b'"model_version": "1", "score": 1.5, "label": 1}',
        10,
    )
    assert isinstance(bad_prediction, Invalid)
    assert "score" in bad_prediction.reason
    with pytest.raises(BodyError, match="must be a list"):
        parse_feedback(b'{"labels": 3}', 10)
