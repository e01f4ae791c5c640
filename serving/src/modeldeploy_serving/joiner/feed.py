"""The model server's prediction records to the label joiner (spec.effectiveness).

Each live, answered request of a classifier becomes records `request id -> deployment, variant,
revision, model version, score, predicted class` POSTed to the joiner's /v1/predictions, so that
labels sent later through the router's feedback route find what they judge. The server sends them
(not the router) because only the server has the scores without parsing its own answer again.

Like the prediction log: never blocks or fails a prediction. `add()` appends to a bounded buffer (or
drops and counts when it is full: the joiner is slower than the traffic or down); one background
thread turns them into JSON and POSTs them in batches. A batch the joiner could not take (down,
restarting, its database lost: no answer, or 429/502/503/504) is sent again with backoff for up to
`retry_seconds`, then dropped and counted; one it refuses otherwise (a 4xx) is dropped and counted at
once. A request of n rows gives n records: the request id for one row, `<id>:<row>` for more
(docs/effectiveness.md).

Stream pods (`modeldeploy stream`, output role) feed it too, one scored batch at a time (`add_many`):
each input record is one request under the request id of its output record, so a stream prediction
is labelled exactly like a REST one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from modeldeploy_contract.joiner_settings import FEED_PATH, JoinerFeedSettings

log = logging.getLogger(__name__)
Post = Callable[[bytes], int]
"""POST a body to the joiner's intake; returns the HTTP status (raises on a transport error)."""


def http_post(settings: JoinerFeedSettings) -> Post:
    import httpx

    client = httpx.Client(timeout=settings.timeout_seconds, follow_redirects=False)
    url = settings.url.rstrip("/") + FEED_PATH

    def post(body: bytes) -> int:
        return client.post(url, content=body, headers={"content-type": "application/json"}).status_code

    return post


def records_of(
    request_id: str, prediction: Any, settings: JoinerFeedSettings, model_version: str, at: float
) -> list[dict[str, Any]]:
    """The joiner records of one answered request (none for a regressor: no class to label)."""
    probabilities = prediction.outputs.get("probabilities")
    if probabilities is None or probabilities.ndim != 2 or probabilities.shape[1] < 2:
        return []
    return records_of_many(
        [request_id], [int(probabilities.shape[0])], prediction, settings, model_version, at
    )


def records_of_many(
    request_ids: list[str],
    rows: list[int],
    prediction: Any,
    settings: JoinerFeedSettings,
    model_version: str,
    at: float,
) -> list[dict[str, Any]]:
    """The joiner records of several requests scored as one batch: request_ids[i] owns the next
    rows[i] rows of the prediction's outputs (a stream batch). None for a regressor."""
    probabilities = prediction.outputs.get("probabilities")
    if probabilities is None or probabilities.ndim != 2 or probabilities.shape[1] < 2:
        return []
    if sum(rows) != probabilities.shape[0]:
        raise ValueError(f"{sum(rows)} rows of requests for {probabilities.shape[0]} rows of outputs")
    predicted = np.argmax(probabilities, axis=1).tolist()
    classes = int(probabilities.shape[1])
    if classes == 2:
        scores = probabilities[:, 1].tolist()
    else:
        scores = probabilities[np.arange(len(predicted)), predicted].tolist()
    common = {
        "deployment": settings.deployment,
        "variant": settings.variant,
        "revision": settings.revision,
        "model_version": model_version,
    }
    out = []
    row = 0
    for request_id, n in zip(request_ids, rows, strict=True):
        for i in range(n):
            out.append(
                {
                    "request_id": request_id if n == 1 else f"{request_id}:{i}",
                    **common,
                    # float32 probabilities may round a hair outside [0, 1]; the joiner refuses those
                    "score": min(1.0, max(0.0, float(scores[row]))),
                    "label": int(predicted[row]),
                    "classes": classes,
                    "time": at,
                }
            )
            row += 1
    return out


RETRYABLE = frozenset({0, 429, 502, 503, 504})
"""Answers after which a batch is sent again: 0 for no answer (refused, reset, timed out); the joiner
answers 503 while its store is unreachable (docs/effectiveness.md, store outages)."""
BACKOFF_SECONDS = (0.5, 10.0)
"""First and longest wait between two sends of a batch; each wait doubles the one before."""


class JoinerFeed:
    """A bounded buffer in front of the joiner's intake, drained by one background thread."""

    def __init__(
        self,
        settings: JoinerFeedSettings,
        post: Post | None = None,
        count: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] = time.time,
        backoff: tuple[float, float] = BACKOFF_SECONDS,
    ) -> None:
        """`count(outcome, n)`: told of records `sent`, `dropped` (buffer full), `retried` (sent again
        after the joiner could not take them) and `failed` (refused, or not taken within
        `retry_seconds`). A sent record the joiner found a duplicate of is counted by the joiner
        (modeldeploy_joiner_predictions_total{outcome="duplicate"})."""
        self.settings = settings
        self._post = post or http_post(settings)
        self._count = count or (lambda _outcome, _n: None)
        self._clock = clock
        self._backoff = backoff
        # (request ids, rows of each or None for a single request, model version, prediction, time)
        self._buffer: deque[tuple[list[str], list[int] | None, str, Any, float]] = deque()
        self._queued = 0  # requests in the buffer (a stream batch is many); capacity bounds it
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._closing = threading.Event()  # ends a wait between two sends of a batch
        self.dropped = 0
        self.failed = 0
        self.sent = 0
        self.retried = 0
        self._thread = threading.Thread(target=self._drain, name="joiner-feed", daemon=True)
        self._thread.start()

    def add(self, request_id: str, model_version: str, prediction: Any) -> bool:
        """Queue one answered request; never blocks, never raises."""
        return self._queue([request_id], None, model_version, prediction)

    def add_many(self, request_ids: list[str], rows: list[int], model_version: str, prediction: Any) -> bool:
        """Queue a batch of requests scored by one model call (stream mode): request_ids[i] owns the
        next rows[i] rows of `prediction`. All or nothing against the capacity; never blocks."""
        return self._queue(list(request_ids), list(rows), model_version, prediction)

    def _queue(self, ids: list[str], rows: list[int] | None, version: str, prediction: Any) -> bool:
        n = len(ids)
        with self._lock:
            full = self._queued + n > self.settings.capacity
            if not full:
                self._queued += n
                self._buffer.append((ids, rows, version, prediction, self._clock()))
                queued = self._queued
        if full:
            self.dropped += n
            self._count("dropped", n)
            return False
        if queued >= self.settings.batch:
            self._wake.set()
        return True

    def _drain(self) -> None:
        batch = self.settings.batch
        while True:
            self._wake.wait(0.1)
            self._wake.clear()
            while self._buffer:
                records: list[dict[str, Any]] = []
                while self._buffer and len(records) < batch:
                    with self._lock:
                        ids, rows, version, prediction, at = self._buffer.popleft()
                        self._queued -= len(ids)
                    try:
                        if rows is None:
                            records += records_of(ids[0], prediction, self.settings, version, at)
                        else:
                            records += records_of_many(ids, rows, prediction, self.settings, version, at)
                    except Exception:  # one odd prediction must not stop the feed
                        log.exception("joiner records of %s failed", ids[0] if ids else "?")
                # a stream batch may hold more records than one POST may carry
                for start in range(0, len(records), batch):
                    self._send(records[start : start + batch])
            if self._stop:
                return

    def _send(self, records: list[dict[str, Any]]) -> None:
        """One batch, sent again while the joiner cannot take it, for up to `retry_seconds`."""
        body = orjson.dumps({"predictions": records})
        give_up = time.monotonic() + self.settings.retry_seconds
        first, longest = self._backoff
        wait = first
        while True:
            status, why = self._post_once(body)
            if status == 200:
                self.sent += len(records)
                self._count("sent", len(records))
                return
            if status not in RETRYABLE or self._closing.is_set() or time.monotonic() + wait > give_up:
                break
            if wait == first:  # once per outage of this batch, not per attempt
                log.warning("joiner feed: %d records not taken (%s); sending them again", len(records), why)
            # Closing ends the wait: one more try, not an outage's worth (close() is bounded in time).
            self._closing.wait(wait)
            wait = min(2 * wait, longest)
            self.retried += len(records)
            self._count("retried", len(records))
        self.failed += len(records)
        self._count("failed", len(records))
        log.warning("joiner feed: %d records dropped (%s)", len(records), why)

    def _post_once(self, body: bytes) -> tuple[int, str]:
        try:
            status = self._post(body)
        except Exception as exc:  # the joiner is down or slow: serving goes on
            return 0, f"{type(exc).__name__}: {exc}"[:200]
        return status, f"HTTP {status}"

    def close(self, timeout: float = 10.0) -> None:
        """Send what is buffered (bounded in time)."""
        self._stop = True
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout)


def open_feed(
    settings: JoinerFeedSettings, count: Callable[[str, int], None] | None = None
) -> JoinerFeed | None:
    return JoinerFeed(settings, count=count) if settings.enabled else None
