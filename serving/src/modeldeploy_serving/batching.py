"""Adaptive micro-batching: requests that arrive together share one model call.

With max_wait 0 the batch closes at the next turn of the event loop: every request whose bytes
arrived in the same loop iteration joins, and a lone request waits only one iteration. A batch
also closes as soon as it holds max_rows rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from modeldeploy_serving.model import Prediction
from modeldeploy_serving.rows import Rows, as_array, row_count, stack

Pending = tuple[Rows, "asyncio.Future[Prediction]"]


class MicroBatcher:
    def __init__(
        self, predict: Callable[[npt.NDArray[np.float32]], Prediction], max_rows: int, max_wait_seconds: float
    ) -> None:
        self._predict = predict
        self.max_rows = max_rows
        self.max_wait = max_wait_seconds
        self._pending: list[Pending] = []
        self._rows = 0
        self._handle: asyncio.Handle | None = None
        # asyncio.get_running_loop() costs a getpid() system call in CPython 3.11 (fork detection):
        # look the loop up once, not per request.
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def queued_rows(self) -> int:
        return self._rows

    def submit(self, x: Rows) -> asyncio.Future[Prediction]:
        """The future of this request's rows' prediction (a plain future: one coroutine frame less
        per request than an async method)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        n = row_count(x)
        if self._pending and self._rows + n > self.max_rows:
            self._flush()
        future: asyncio.Future[Prediction] = loop.create_future()
        self._pending.append((x, future))
        self._rows += n
        if self._rows >= self.max_rows:
            self._flush()
        elif self._handle is None:
            self._handle = (
                loop.call_soon(self._flush)
                if self.max_wait <= 0
                else loop.call_later(self.max_wait, self._flush)
            )
        return future

    def _flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        pending, self._pending, self._rows = self._pending, [], 0
        pending = [p for p in pending if not p[1].done()]  # a caller that has gone costs no model work
        if not pending:
            return
        try:
            if len(pending) == 1:
                results = [self._predict(as_array(pending[0][0]))]
            else:
                merged = self._predict(stack([x for x, _ in pending]))
                results, start = [], 0
                for x, _ in pending:
                    n = row_count(x)
                    results.append(merged.rows(start, start + n))
                    start += n
        except Exception as exc:  # the model call failed: every waiting request gets the error
            for _, future in pending:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(pending, results, strict=True):
            if not future.done():  # a cancelled (disconnected) request is skipped
                future.set_result(result)
