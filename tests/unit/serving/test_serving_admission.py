"""Overload control of the data plane and the inference app, in process (no sockets)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from modeldeploy_contract.server_settings import ServerSettings
from modeldeploy_serving.app import ClientGoneError, _unless_gone
from modeldeploy_serving.batching import MicroBatcher
from modeldeploy_serving.dataplane import DataPlane
from modeldeploy_serving.drift.window import _own
from modeldeploy_serving.errors import OverloadedError
from modeldeploy_serving.rows import ListRows


def test_rows_beyond_max_queued_rows_are_refused_before_any_model_work() -> None:
    dataplane = DataPlane(ServerSettings(max_queued_rows=100))
    dataplane.thread_rows = 95  # a large request is being predicted in a thread
    with pytest.raises(OverloadedError) as caught:
        dataplane.infer(np.zeros((10, 3), np.float32))
    assert caught.value.status == 503
    assert caught.value.reason == "queued_rows"


def test_the_batcher_counts_its_queue_and_skips_callers_that_have_gone() -> None:
    calls: list[int] = []

    def predict(x: Any) -> Any:
        calls.append(x.shape[0])
        raise AssertionError("no caller is waiting: the model must not run")

    async def scenario() -> None:
        batcher = MicroBatcher(predict, max_rows=64, max_wait_seconds=0.0)
        future = batcher.submit(ListRows([1.0, 2.0], 1, 2))
        assert batcher.queued_rows == 1
        future.cancel()  # the request was abandoned (client gone)
        await asyncio.sleep(0)  # the batch closes at the next turn of the loop
        await asyncio.sleep(0)
        assert batcher.queued_rows == 0

    asyncio.run(scenario())
    assert calls == []


def test_a_client_that_goes_cancels_the_work() -> None:
    async def scenario() -> bool:
        work_cancelled = asyncio.Event()

        async def work() -> tuple[bytes, int | None, None]:
            try:
                await asyncio.Event().wait()  # never finishes by itself
            except asyncio.CancelledError:
                work_cancelled.set()
                raise
            return b"", None, None

        async def receive() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        with pytest.raises(ClientGoneError):
            await _unless_gone(work(), receive)
        await asyncio.wait_for(work_cancelled.wait(), 5)
        return True

    assert asyncio.run(scenario())


def test_window_rows_are_copied_only_when_they_view_a_foreign_buffer() -> None:
    body = b"\0" * (1 << 20) + np.ones(3, "<f4").tobytes()
    view = np.frombuffer(memoryview(body)[-12:], dtype="<f4").reshape(1, 3)
    kept = _own(view)
    assert kept is not view
    assert kept.base is None  # owns its 12 bytes, not the 1 MiB body
    owned = np.array([1.0, 2.0, 3.0], np.float32).reshape(1, 3)
    assert _own(owned) is owned  # a reshape of our own array: no copy
