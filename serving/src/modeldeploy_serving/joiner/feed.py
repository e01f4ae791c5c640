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
once. When the server stops (the ASGI lifespan's shutdown, after uvicorn drained the requests in
flight), `close()` sends what is held for up to `shutdown_seconds`, trying a joiner that cannot take
it every second; what is still unsent then is counted `lost_at_shutdown` and logged once with its
count, never dropped silently (docs/serving.md has the budget against the pod's grace period). A
request of n rows gives n records: the request id for one row, `<id>:<row>` for more
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
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modeldeploy_contract.joiner_settings import FEED_PATH, JoinerFeedSettings

log = logging.getLogger(__name__)
Post = Callable[[bytes, float], int]
"""POST a body to the joiner's intake with a timeout in seconds; returns the HTTP status (raises on a
transport error)."""


def http_post(settings: JoinerFeedSettings) -> Post:
    import httpx

    client = httpx.Client(timeout=settings.timeout_seconds, follow_redirects=False)
    url = settings.url.rstrip("/") + FEED_PATH

    def post(body: bytes, timeout: float) -> int:
        headers = {"content-type": "application/json"}
        return client.post(url, content=body, headers=headers, timeout=timeout).status_code

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
STOPPING_BACKOFF_SECONDS = 1.0
"""Longest wait between two sends while the server stops: a joiner restarting in the same rolling
update gets a try every second until the deadline, not one every 10 s (two or three in 15 s)."""
JOIN_GRACE_SECONDS = 1.0
"""How long past its deadline close() waits for the drain thread before it counts what that thread
holds as lost: each POST is already bounded by the time left, so only a joiner trickling its answer
byte by byte (httpx's timeouts bound each read, not the whole answer) gets this far."""

SENT, FAILED, LOST_AT_SHUTDOWN, RETRY = "sent", "failed", "lost_at_shutdown", "retry"


@dataclass(frozen=True)
class Step:
    """What becomes of a batch after one POST: `outcome` (sent, failed, lost_at_shutdown, or retry
    after `wait` seconds)."""

    outcome: str
    wait: float = 0.0


def after_attempt(status: int, *, now: float, wait: float, give_up: float, stop_by: float | None) -> Step:
    """The decision after one POST of a batch answered `status` (0: no answer) at `now` (monotonic
    seconds), `wait` being the backoff due before the next try.

    - 200: sent. Any other answer but RETRYABLE: failed (refused; sending it again would not help).
    - Its `give_up` time (first try + retry_seconds) before the next try: failed, as while serving.
    - The server stopping (`stop_by`: close()'s deadline) before the next try: lost_at_shutdown. While
      stopping, the wait is at most STOPPING_BACKOFF_SECONDS.
    - Else: sent again after `wait`.
    """
    if status == 200:
        return Step(SENT)
    if status not in RETRYABLE:
        return Step(FAILED)
    if stop_by is not None:
        wait = min(wait, STOPPING_BACKOFF_SECONDS)
    next_try = now + wait
    if next_try > give_up and (stop_by is None or give_up <= stop_by):
        return Step(FAILED)
    if stop_by is not None and next_try >= stop_by:
        return Step(LOST_AT_SHUTDOWN)
    return Step(RETRY, wait)


Entry = tuple[list[str], list[int] | None, str, Any, float]
"""(request ids, rows of each or None for a single request, model version, prediction, time)."""


class JoinerFeed:
    """A bounded buffer in front of the joiner's intake, drained by one background thread."""

    def __init__(
        self,
        settings: JoinerFeedSettings,
        post: Post | None = None,
        count: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] = time.time,
        backoff: tuple[float, float] = BACKOFF_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        pause: Callable[[float], object] | None = None,
    ) -> None:
        """`count(outcome, n)`: told of records `sent`, `dropped` (buffer full), `retried` (sent again
        after the joiner could not take them), `failed` (refused, or not taken within
        `retry_seconds`) and `lost_at_shutdown` (still unsent at close()'s deadline). A sent record
        the joiner found a duplicate of is counted by the joiner
        (modeldeploy_joiner_predictions_total{outcome="duplicate"}).

        `monotonic` and `pause` (the wait between two sends; by default one that close() ends early)
        are the feed's clock, replaceable by a fake one in tests."""
        self.settings = settings
        self._post = post or http_post(settings)
        self._count = count or (lambda _outcome, _n: None)
        self._clock = clock
        self._backoff = backoff
        self._monotonic = monotonic
        self._closing = threading.Event()  # ends a wait between two sends of a batch
        self._pause = pause or self._wait
        self._buffer: deque[Entry] = deque()
        self._queued = 0  # requests in the buffer (a stream batch is many); capacity bounds it
        self._in_hand = 0  # records taken from the buffer and not yet sent, failed or lost
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop_by: float | None = None  # close()'s deadline (monotonic); None: serving
        self._stop_seconds = settings.shutdown_seconds  # how long close() gave it, for the log
        self._finished = False  # what was unsent at the deadline is counted; nothing more is sent
        self.dropped = 0
        self.failed = 0
        self.sent = 0
        self.retried = 0
        self.lost = 0
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
        entry = (ids, rows, version, prediction, self._clock())
        with self._lock:
            finished = self._finished
            full = self._queued + n > self.settings.capacity
            if not full and not finished:
                self._queued += n
                self._buffer.append(entry)
                queued = self._queued
        if finished:  # answered after the feed stopped (uvicorn's drain overran): counted, not kept
            self._lose(len(self._records([entry])), "answered after the feed had stopped")
            return False
        if full:
            self.dropped += n
            self._count("dropped", n)
            return False
        if queued >= self.settings.batch:
            self._wake.set()
        return True

    def _records(self, entries: list[Entry]) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for ids, rows, version, prediction, at in entries:
            try:
                if rows is None:
                    records += records_of(ids[0], prediction, self.settings, version, at)
                else:
                    records += records_of_many(ids, rows, prediction, self.settings, version, at)
            except Exception:  # one odd prediction must not stop the feed
                log.exception("joiner records of %s failed", ids[0] if ids else "?")
        return records

    def _take(self) -> list[dict[str, Any]]:
        """Up to a batch of records from the buffer (a stream batch may give more), now in hand."""
        batch = self.settings.batch
        records: list[dict[str, Any]] = []
        while len(records) < batch:
            with self._lock:
                if not self._buffer:
                    break
                entry = self._buffer.popleft()
                self._queued -= len(entry[0])
            taken = self._records([entry])
            with self._lock:
                late = self._finished  # close() gave up on this thread meanwhile
                if not late:
                    self._in_hand += len(taken)
            if late:
                self._lose(len(taken), "taken after the stop deadline")
                break
            records += taken
        return records

    def _drain(self) -> None:
        while True:
            self._wake.wait(0.1)
            self._wake.clear()
            while self._buffer and not self._past_stop():
                if not self._send_all(self._take()):
                    break
            if self._stop_by is not None:
                self._finish()
                return

    def _send_all(self, records: list[dict[str, Any]]) -> bool:
        """False when the stop deadline came first: what is left is in hand, for _finish to count."""
        batch = self.settings.batch
        for start in range(0, len(records), batch):  # a stream batch may exceed one POST
            if self._past_stop() or self._send(records[start : start + batch]) == LOST_AT_SHUTDOWN:
                return False
        return True

    def _wait(self, seconds: float) -> None:
        if not self._closing.is_set():
            self._closing.wait(seconds)  # close() ends it: the next try is at once
        else:  # a wait decided before close() came may be long: cut it to the stopping backoff
            time.sleep(min(seconds, STOPPING_BACKOFF_SECONDS))

    def _past_stop(self) -> bool:
        return self._stop_by is not None and self._monotonic() >= self._stop_by

    def _send(self, records: list[dict[str, Any]]) -> str:
        """One batch, sent again while the joiner cannot take it, for up to `retry_seconds` (or
        until close()'s deadline, whichever comes first)."""
        body = orjson.dumps({"predictions": records})
        give_up = self._monotonic() + self.settings.retry_seconds
        first, longest = self._backoff
        wait = first
        while True:
            stop_by = self._stop_by
            timeout = self.settings.timeout_seconds
            if stop_by is not None:  # no POST outlives the deadline
                timeout = min(timeout, max(stop_by - self._monotonic(), 0.001))
            status, why = self._post_once(body, timeout)
            step = after_attempt(
                status, now=self._monotonic(), wait=wait, give_up=give_up, stop_by=self._stop_by
            )
            if step.outcome != RETRY:
                break
            if wait == first:  # once per outage of this batch, not per attempt
                log.warning("joiner feed: %d records not taken (%s); sending them again", len(records), why)
            self._pause(step.wait)
            wait = min(2 * step.wait, longest)
            self.retried += len(records)
            self._count("retried", len(records))
        if step.outcome == SENT:
            if self._settle(len(records)):
                self.sent += len(records)
                self._count(SENT, len(records))
        elif step.outcome == FAILED and self._settle(len(records)):
            self.failed += len(records)
            self._count(FAILED, len(records))
            log.warning("joiner feed: %d records dropped (%s)", len(records), why)
        # LOST_AT_SHUTDOWN: still in hand; _finish counts it with everything else unsent
        return step.outcome

    def _settle(self, n: int) -> bool:
        """Records in hand are done with; False when close() already counted them lost."""
        with self._lock:
            if self._finished:
                return False
            self._in_hand -= n
            return True

    def _post_once(self, body: bytes, timeout: float) -> tuple[int, str]:
        try:
            status = self._post(body, timeout)
        except Exception as exc:  # the joiner is down or slow: serving goes on
            return 0, f"{type(exc).__name__}: {exc}"[:200]
        return status, f"HTTP {status}"

    def _finish(self) -> None:
        """Count what is unsent at the deadline (in hand and buffered) as lost_at_shutdown, once."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            entries = list(self._buffer)
            self._buffer.clear()
            self._queued = 0
            in_hand, self._in_hand = self._in_hand, 0
        unsent = in_hand + len(self._records(entries))
        if unsent:
            self._lose(unsent, f"not sent within the {self._stop_seconds:g} s stop deadline")
        else:
            log.info("joiner feed: stopped with nothing unsent (sent %d, failed %d)", self.sent, self.failed)

    def _lose(self, n: int, why: str) -> None:
        """Count records that will never be sent; the first loss is logged (with its count), so a
        stop logs its one line and a straggler after it does not log one per request."""
        if not n:
            return
        with self._lock:
            first = self.lost == 0
            self.lost += n
        self._count(LOST_AT_SHUTDOWN, n)
        if first:
            log.error("joiner feed: %d prediction records lost at shutdown (%s)", n, why)

    def close(self, deadline: float | None = None) -> int:
        """Send what is held within `deadline` seconds (`shutdown_seconds` by default), trying the
        joiner every STOPPING_BACKOFF_SECONDS while it cannot take them; what is still unsent then is
        counted `lost_at_shutdown` and logged once with its count. Returns the records lost. Only the
        first call sets the deadline; later ones wait for it too."""
        seconds = self.settings.shutdown_seconds if deadline is None else deadline
        with self._lock:
            first = self._stop_by is None
            if first:
                self._stop_by = self._monotonic() + seconds
                self._stop_seconds = seconds
                held, in_hand = self._queued, self._in_hand
        if first and (held or in_hand):
            log.info(
                "joiner feed: stopping with %d buffered requests and %d records in hand; sending them"
                " for up to %g s",
                held,
                in_hand,
                seconds,
            )
        self._closing.set()
        self._wake.set()
        self._thread.join(seconds + JOIN_GRACE_SECONDS)
        if self._thread.is_alive():  # stuck in a POST past its timeout: what it holds is lost
            self._finish()
        return self.lost


def open_feed(
    settings: JoinerFeedSettings, count: Callable[[str, int], None] | None = None
) -> JoinerFeed | None:
    return JoinerFeed(settings, count=count) if settings.enabled else None
