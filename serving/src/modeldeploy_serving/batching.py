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

Pending = tuple[npt.NDArray[np.float32], "asyncio.Future[Prediction]"]


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

    async def submit(self, x: npt.NDArray[np.float32]) -> Prediction:
        loop = asyncio.get_running_loop()
        if self._pending and self._rows + x.shape[0] > self.max_rows:
            self._flush()
        future: asyncio.Future[Prediction] = loop.create_future()
        self._pending.append((x, future))
        self._rows += x.shape[0]
        if self._rows >= self.max_rows:
            self._flush()
        elif self._handle is None:
            self._handle = (
                loop.call_soon(self._flush)
                if self.max_wait <= 0
                else loop.call_later(self.max_wait, self._flush)
            )
        return await future

    def _flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        pending, self._pending, self._rows = self._pending, [], 0
        if not pending:
            return
        try:
            if len(pending) == 1:
                results = [self._predict(pending[0][0])]
            else:
                merged = self._predict(np.concatenate([x for x, _ in pending]))
                results, start = [], 0
                for x, _ in pending:
                    results.append(merged.rows(start, start + x.shape[0]))
                    start += x.shape[0]
        except Exception as exc:  # the model call failed: every waiting request gets the error
            for _, future in pending:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(pending, results, strict=True):
            if not future.done():  # a cancelled (disconnected) request is skipped
                future.set_result(result)
