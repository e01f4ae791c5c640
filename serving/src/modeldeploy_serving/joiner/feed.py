"""The model server's prediction records to the label joiner (spec.effectiveness).

Each live, answered request of a classifier becomes records `request id -> deployment, variant,
revision, model version, score, predicted class` POSTed to the joiner's /v1/predictions, so that
labels sent later through the router's feedback route find what they judge. The server sends them
(not the router) because only the server has the scores without parsing its own answer again.

Like the prediction log: never blocks or fails a prediction. `add()` appends to a bounded buffer (or
drops and counts when it is full: the joiner is slower than the traffic or down); one background
thread turns them into JSON and POSTs them in batches; a batch the joiner refuses is dropped and
counted. A request of n rows gives n records: the request id for one row, `<id>:<row>` for more
(docs/effectiveness.md).
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
    predicted = np.argmax(probabilities, axis=1).tolist()
    classes = int(probabilities.shape[1])
    rows = len(predicted)
    if classes == 2:
        scores = probabilities[:, 1].tolist()
    else:
        scores = probabilities[np.arange(rows), predicted].tolist()
    out = []
    for i in range(rows):
        out.append(
            {
                "request_id": request_id if rows == 1 else f"{request_id}:{i}",
                "deployment": settings.deployment,
                "variant": settings.variant,
                "revision": settings.revision,
                "model_version": model_version,
                # float32 probabilities may round a hair outside [0, 1]; the joiner refuses those
                "score": min(1.0, max(0.0, float(scores[i]))),
                "label": int(predicted[i]),
                "classes": classes,
                "time": at,
            }
        )
    return out


class JoinerFeed:
    """A bounded buffer in front of the joiner's intake, drained by one background thread."""

    def __init__(
        self,
        settings: JoinerFeedSettings,
        post: Post | None = None,
        count: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`count(outcome, n)`: told of records `sent`, `dropped` (buffer full) and `failed` (the joiner
        refused the batch or could not be reached). A sent record the joiner found a duplicate of is
        counted by the joiner (modeldeploy_joiner_predictions_total{outcome="duplicate"})."""
        self.settings = settings
        self._post = post or http_post(settings)
        self._count = count or (lambda _outcome, _n: None)
        self._clock = clock
        self._buffer: deque[tuple[str, str, Any, float]] = deque()
        self._wake = threading.Event()
        self._stop = False
        self.dropped = 0
        self.failed = 0
        self.sent = 0
        self._thread = threading.Thread(target=self._drain, name="joiner-feed", daemon=True)
        self._thread.start()

    def add(self, request_id: str, model_version: str, prediction: Any) -> bool:
        """Queue one answered request; never blocks, never raises."""
        if len(self._buffer) >= self.settings.capacity:
            self.dropped += 1
            self._count("dropped", 1)
            return False
        self._buffer.append((request_id, model_version, prediction, self._clock()))
        if len(self._buffer) == self.settings.batch:
            self._wake.set()
        return True

    def _drain(self) -> None:
        while True:
            self._wake.wait(0.1)
            self._wake.clear()
            while self._buffer:
                records: list[dict[str, Any]] = []
                while self._buffer and len(records) < self.settings.batch:
                    rid, version, prediction, at = self._buffer.popleft()
                    try:
                        records += records_of(rid, prediction, self.settings, version, at)
                    except Exception:  # one odd prediction must not stop the feed
                        log.exception("joiner record of %s failed", rid)
                if records:
                    self._send(records)
            if self._stop:
                return

    def _send(self, records: list[dict[str, Any]]) -> None:
        try:
            status = self._post(orjson.dumps({"predictions": records}))
        except Exception as exc:  # the joiner is down or slow: the batch is lost, serving goes on
            status = 0
            log.warning("joiner feed: %d records not sent: %s", len(records), exc)
        if status == 200:
            self.sent += len(records)
            self._count("sent", len(records))
        else:
            self.failed += len(records)
            self._count("failed", len(records))
            if status:
                log.warning(
                    "joiner feed: the joiner answered HTTP %d; %d records dropped", status, len(records)
                )

    def close(self, timeout: float = 10.0) -> None:
        """Send what is buffered (bounded in time)."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout)


def open_feed(
    settings: JoinerFeedSettings, count: Callable[[str, int], None] | None = None
) -> JoinerFeed | None:
    return JoinerFeed(settings, count=count) if settings.enabled else None
