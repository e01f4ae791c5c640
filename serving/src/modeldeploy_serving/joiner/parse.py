"""Parsers of the joiner's request bodies: one bad item never spoils the rest of a batch.

A body is JSON: one item (an object) or a batch ({"labels": [...]} / {"predictions": [...]}).
A body that is not such JSON is one error for the whole request (HTTP 400); inside a batch each
item is checked alone and a bad one becomes an `Invalid` with its reason (reported per item).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

MAX_ID_LENGTH = 256
MAX_NAME_LENGTH = 253
MAX_CLASSES = 1_000


class BodyError(Exception):
    """The body as a whole is unusable (HTTP 400)."""


class TooManyItemsError(Exception):
    """More items than the joiner accepts in one request (HTTP 413)."""


@dataclass(frozen=True, slots=True)
class Invalid:
    index: int
    request_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Feedback:
    index: int
    request_id: str
    label: Any
    """As sent: checked against the prediction's classes when it is joined (wrong type or class is
    reported then, as "invalid_label")."""
    time: float | None


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    index: int
    request_id: str
    deployment: str
    variant: str
    revision: str
    model_version: str
    score: float
    predicted: int
    classes: int
    time: float | None


def _items(body: bytes, key: str, max_items: int) -> list[Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError(f"the body is not JSON: {exc}") from None
    if isinstance(doc, dict) and key in doc:
        items = doc[key]
        if not isinstance(items, list):
            raise BodyError(f"'{key}' must be a list")
        if len(items) > max_items:
            raise TooManyItemsError(f"{len(items)} items in one request; at most {max_items}")
        return items
    if isinstance(doc, dict):
        return [doc]
    raise BodyError(f"the body must be an object: one item, or {{{key!r}: [items]}}")


def _text(value: Any, max_length: int) -> str | None:
    """`value` if it is a string of 1 to max_length characters without NUL, else None. PostgreSQL's
    text cannot hold NUL: one such id failed its whole transaction, so a label topic's batch was
    refused again on every retry (a poison record) and an HTTP batch was refused whole with 503."""
    if isinstance(value, str) and 0 < len(value) <= max_length and "\x00" not in value:
        return value
    return None


def _request_id(item: dict[str, Any]) -> str | None:
    return _text(item.get("request_id"), MAX_ID_LENGTH)


def _time(item: dict[str, Any]) -> float | str | None:
    """The item's "time" (Unix seconds), None if absent, or an error text."""
    value = item.get("time")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return "'time' must be a non-negative number of Unix seconds"
    return float(value)


def parse_feedback(body: bytes, max_items: int) -> list[Feedback | Invalid]:
    """Labels keyed by request id: {"request_id": "...", "label": 1} or {"labels": [...]}."""
    out: list[Feedback | Invalid] = []
    for i, item in enumerate(_items(body, "labels", max_items)):
        if not isinstance(item, dict):
            out.append(Invalid(i, None, "an item must be an object with request_id and label"))
            continue
        rid = _request_id(item)
        if rid is None:
            out.append(
                Invalid(
                    i, None, f"'request_id' must be a string of 1 to {MAX_ID_LENGTH} characters without NUL"
                )
            )
            continue
        if "label" not in item:
            out.append(Invalid(i, rid, "'label' is missing"))
            continue
        t = _time(item)
        if isinstance(t, str):
            out.append(Invalid(i, rid, t))
            continue
        out.append(Feedback(i, rid, item["label"], t))
    return out


def label_error(label: Any, classes: int) -> str | None:
    """Why `label` cannot be a label of a classifier with classes 0..classes-1, or None."""
    if isinstance(label, bool) or not isinstance(label, int):
        return f"label must be an integer class, got {type(label).__name__} {label!r}"[:200]
    if not 0 <= label < classes:
        return f"label {label} is not a class of this model (0..{classes - 1})"
    return None


def _name(item: dict[str, Any], key: str) -> str | None:
    return _text(item.get(key), MAX_NAME_LENGTH)


def parse_predictions(body: bytes, max_items: int) -> list[PredictionRecord | Invalid]:
    """Prediction records: request id -> deployment, variant, revision, model version, score (P(class 1)
    or the predicted class's probability), predicted label, number of classes, time."""
    out: list[PredictionRecord | Invalid] = []
    for i, item in enumerate(_items(body, "predictions", max_items)):
        if not isinstance(item, dict):
            out.append(Invalid(i, None, "a record must be an object"))
            continue
        rid = _request_id(item)
        if rid is None:
            out.append(
                Invalid(
                    i, None, f"'request_id' must be a string of 1 to {MAX_ID_LENGTH} characters without NUL"
                )
            )
            continue
        names = {k: _name(item, k) for k in ("deployment", "variant", "revision", "model_version")}
        bad = [k for k, v in names.items() if v is None]
        if bad:
            out.append(
                Invalid(
                    i,
                    rid,
                    f"{', '.join(bad)}: must be strings of 1 to {MAX_NAME_LENGTH} characters without NUL",
                )
            )
            continue
        score = item.get("score")
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0.0 <= score <= 1.0:
            out.append(Invalid(i, rid, "'score' must be a number in [0, 1]"))
            continue
        classes = item.get("classes", 2)
        if isinstance(classes, bool) or not isinstance(classes, int) or not 2 <= classes <= MAX_CLASSES:
            out.append(Invalid(i, rid, f"'classes' must be an integer from 2 to {MAX_CLASSES}"))
            continue
        predicted = item.get("label")
        why = label_error(predicted, classes)
        if why is not None:
            out.append(Invalid(i, rid, f"predicted {why}"))
            continue
        t = _time(item)
        if isinstance(t, str):
            out.append(Invalid(i, rid, t))
            continue
        assert isinstance(predicted, int)
        out.append(
            PredictionRecord(
                i,
                rid,
                names["deployment"] or "",
                names["variant"] or "",
                names["revision"] or "",
                names["model_version"] or "",
                float(score),
                predicted,
                classes,
                t,
            )
        )
    return out
