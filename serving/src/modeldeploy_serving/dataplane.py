"""The transport-neutral data plane: model lifecycle, readiness, inference, drift accounting.

HTTP code (app.py) decodes requests with the codecs and calls in here; nothing in this module knows
about ASGI or FastAPI.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt

from modeldeploy_contract.redact import scrub
from modeldeploy_contract.server_settings import ServerSettings
from modeldeploy_serving import metrics, workers
from modeldeploy_serving.batching import MicroBatcher
from modeldeploy_serving.drift.window import DriftWindow
from modeldeploy_serving.errors import (
    BundleError,
    NotFoundError,
    OverloadedError,
    RefusedBundleError,
    UnavailableError,
)
from modeldeploy_serving.model import LoadedModel, Prediction, load_model, same_version
from modeldeploy_serving.rows import Rows, as_array, row_count

log = logging.getLogger(__name__)

# Batches this large run in a thread (onnxruntime and xgboost release the GIL) so the event loop
# keeps answering probes and decoding other requests meanwhile; small ones run inline, where a
# thread hop would cost more than the prediction.
OFFLOAD_ROWS = 256
T = TypeVar("T")


class DataPlane:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.model: LoadedModel | None = None
        self.state: Literal["loading", "ready", "failed"] = "loading"
        self.error: str | None = None
        self.reason: str | None = None
        """Why loading failed, machine-readable: ModelVersionMismatch, ModelFormatMismatch or
        ModelLoadFailed."""
        self.refused: dict[str, str] | None = None
        """The bundle refused for its version, {"version", "sha256", "expectedVersion"}, or for its
        format, {"format", "version", "sha256", "expectedFormat"}."""
        self.unknown_metrics = metrics.ModelMetrics(metrics.UNKNOWN, metrics.UNKNOWN)
        self.metrics = self.unknown_metrics
        self._batcher: MicroBatcher | None = None
        self._window: DriftWindow | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="predict")
        self._decoder = ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode")
        self.in_flight = 0
        self.thread_rows = 0
        """Rows of model calls running in a thread now (the batcher counts its own queue)."""
        metrics.MODEL_READY.set(0)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Begin loading in the background: the HTTP server answers (not ready) meanwhile."""
        self._tasks.append(asyncio.create_task(self._load()))
        self._tasks.append(asyncio.create_task(self._flush_metrics_forever()))

    def flush_metrics(self) -> None:
        metrics.IN_FLIGHT.set(self.in_flight)
        if self._window is not None and self._window.skipped_rows:
            self.metrics.drift_skipped(self._window.skipped_rows)
            self._window.skipped_rows = 0
        self.unknown_metrics.flush()
        if self.metrics is not self.unknown_metrics:
            self.metrics.flush()

    async def _flush_metrics_forever(self) -> None:
        while True:
            await asyncio.sleep(metrics.FLUSH_SECONDS)
            self.flush_metrics()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._decoder.shutdown(wait=False, cancel_futures=True)

    async def _load(self) -> None:
        try:
            model = await asyncio.to_thread(load_model, self.settings)
        except Exception as exc:  # any failure keeps the server not-ready: fail closed
            # Shown on /v2/health/ready and logged: never a credential of the model URI.
            self.state, self.error = "failed", scrub(f"{type(exc).__name__}: {exc}")[:1000]
            self.reason = exc.reason if isinstance(exc, BundleError) else "ModelLoadFailed"
            if isinstance(exc, RefusedBundleError):
                self.refused = exc.refused()
            metrics.LOAD_FAILURES.inc()
            log.error("model load failed: %s", self.error)
            workers.mark("failed")
            return
        if self.settings.model_name:
            model.name = self.settings.model_name
        self._activate(model)
        workers.mark("ready")
        if self._window is not None:
            await self._drift_timer()

    def _activate(self, model: LoadedModel) -> None:
        s = self.settings
        self.metrics = metrics.ModelMetrics(model.name, model.version, s.drift_max_feature_series)
        metrics.MODEL_INFO.labels(model.name, model.version, model.manifest.format, model.digest).set(1)
        if s.batching_enabled:
            self._batcher = MicroBatcher(
                self._predict_and_account, s.batch_max_size, s.batch_max_wait_ms / 1000.0
            )
        if s.drift_enabled:
            self._window = DriftWindow(model.profile, s.drift_window_rows, s.drift_window_seconds)
        self.model = model
        # Everything loaded so far (frameworks, the model) lives as long as the process: moving it out
        # of the collector's generations keeps full collections from scanning it, which otherwise
        # shows up as multi-millisecond pauses in the latency tail under load.
        gc.collect()
        gc.freeze()
        self.state = "ready"
        metrics.MODEL_READY.set(1)

    async def _drift_timer(self) -> None:
        """Close windows that have rows but stopped filling (low traffic)."""
        interval = min(1.0, self.settings.drift_window_seconds / 4)
        while True:
            await asyncio.sleep(interval)
            if self._window is not None and self._window.expired():
                self._close_window()

    def health(self) -> dict[str, object]:
        """The /v2/health/ready body: readiness, and what was loaded or why not. The operator reads
        it once per pod: `model` (the manifest's name and version, and its sha256, the bundle's
        digest) goes into the revision's history; `reason` ModelVersionMismatch or
        ModelFormatMismatch becomes a condition."""
        body: dict[str, object] = {"ready": self.ready, "state": self.state}
        if self.error:
            body["error"] = self.error
        if self.reason:
            body["reason"] = self.reason
        if self.refused:
            body["refused"] = self.refused
        model = self.model
        if model is not None:
            body["model"] = {"name": model.name, "version": model.version, "sha256": model.digest}
        return body

    # -- requests --------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """This worker is ready and, with several workers, so is every other live one."""
        return self.state == "ready" and workers.all_ready(self.settings.workers)

    def resolve(self, name: str, version: str | None) -> LoadedModel:
        model = self.model
        if model is None:
            if self.settings.model_name and name != self.settings.model_name:
                raise NotFoundError(
                    f"unknown model {name!r}; this server serves {self.settings.model_name!r}"
                )
            if self.state == "failed":
                raise UnavailableError(f"the model failed to load: {self.error}")
            raise UnavailableError("the model is still loading")
        if name != model.name:
            raise NotFoundError(f"unknown model {name!r}; this server serves {model.name!r}")
        if version is not None and not same_version(version, model.version):  # "v2" names "2" too
            raise NotFoundError(
                f"model {name!r} has no version {version!r}; this server serves version {model.version!r}"
            )
        return model

    def metrics_for(self, model: LoadedModel | None) -> metrics.ModelMetrics:
        return self.metrics if model is not None else self.unknown_metrics

    def _predict(self, x: npt.NDArray[np.float32]) -> Prediction:
        """One model call (any thread)."""
        assert self.model is not None
        start = time.perf_counter()
        prediction = self.model.predict(x)
        self.metrics.model_call(time.perf_counter() - start, x.shape[0])
        return prediction

    def _predict_and_account(self, x: npt.NDArray[np.float32]) -> Prediction:
        """One model call and its accounting (event loop only): a micro-batch is counted once."""
        prediction = self._predict(x)
        self._account(x, prediction)
        return prediction

    def _account(self, x: npt.NDArray[np.float32], prediction: Prediction) -> None:
        self.metrics.predicted(x.shape[0])
        window = self._window
        if window is not None and window.add(x, prediction.scores):
            self._close_window()

    @property
    def queued_rows(self) -> int:
        """Rows accepted but not yet predicted: the micro-batch queue and model calls in threads."""
        return self.thread_rows + (self._batcher.queued_rows if self._batcher is not None else 0)

    def off_loop(self, fn: Callable[..., T], *args: object) -> Awaitable[T]:
        """fn(*args) in a decoding thread: large bodies are parsed without blocking the event loop."""
        return asyncio.get_running_loop().run_in_executor(self._decoder, fn, *args)

    def infer(self, rows: Rows) -> Awaitable[Prediction]:
        """The prediction of these rows, to be awaited: a micro-batch's future, a thread's result for
        large requests, or an already made one when batching is off. Raises OverloadedError (a fast
        503) when the rows would take the queue beyond max_queued_rows."""
        n = row_count(rows)
        if self.queued_rows + n > self.settings.max_queued_rows:
            raise OverloadedError(
                f"overloaded: {self.queued_rows} rows are waiting for the model; retry later", "queued_rows"
            )
        if self._batcher is not None and n < OFFLOAD_ROWS:
            return self._batcher.submit(rows)
        x = as_array(rows)
        if x.shape[0] >= OFFLOAD_ROWS:
            return self._infer_in_thread(x)
        return _ready(self._predict_and_account(x))

    async def replay(self, rows: Rows) -> Prediction:
        """A replay's prediction (preflight's golden set): the model's answer, counted nowhere (no
        rows or compute metrics, no drift window, no micro-batch shared with live requests)."""
        model = self.model
        assert model is not None
        x = as_array(rows)
        if x.shape[0] >= OFFLOAD_ROWS:
            return await asyncio.get_running_loop().run_in_executor(self._executor, model.predict, x)
        return model.predict(x)

    async def _infer_in_thread(self, x: npt.NDArray[np.float32]) -> Prediction:
        n = x.shape[0]
        self.thread_rows += n
        try:
            prediction = await asyncio.get_running_loop().run_in_executor(self._executor, self._predict, x)
        finally:
            self.thread_rows -= n
        self._account(x, prediction)
        return prediction

    def _close_window(self) -> None:
        """Compute and publish a window's statistics, then pause buffering to respect the CPU budget.

        This runs inline on the event loop (about 0.7 ms per 1,000 rows): in a background thread its
        pure-Python parts would hold the GIL against the event loop's many short GIL acquisitions
        (the convoy effect), which showed up as 60+ ms tail latency in the benchmark.
        """
        window = self._window
        assert window is not None
        start = time.perf_counter()
        try:
            result = window.close()
            self.metrics.publish_window(result)
        except Exception:  # drift accounting must never take serving down
            log.exception("drift window computation failed")
            return
        cost = time.perf_counter() - start
        share = self.settings.drift_max_cpu_share
        window.paused_until = time.monotonic() + cost * (1.0 / share - 1.0)
        log.debug(
            "drift window closed: %d rows, score PSI %.4f, %.2f ms", result.rows, result.score_psi, cost * 1e3
        )


async def _ready(prediction: Prediction) -> Prediction:
    """An awaitable of a prediction already made (no event-loop lookup: that is a system call)."""
    return prediction
